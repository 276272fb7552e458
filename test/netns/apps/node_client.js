// SPDX-License-Identifier: Apache-2.0
// Node.js http client for test_real_apps.py: sequential GETs over one
// keep-alive socket (Agent, maxSockets 1), each body's sha256 checked against
// the server's x-sha256 (or an expected value). A request slower than the
// timeout is a stall: recorded, the socket destroyed, the run goes on.
// Usage: node node_client.js HOST PORT TIMEOUT_MS /big=20 /small=20 [sha:/big=HEX ...]
// Prints one JSON object.
'use strict';
const http = require('http');
const crypto = require('crypto');
const [host, port, timeoutMs] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const plan = [];
const want = {};
for (const a of process.argv.slice(5)) {
  if (a.startsWith('sha:')) { const [p, h] = a.slice(4).split('='); want[p] = h; continue; }
  const [p, n] = a.split('=');
  for (let i = 0; i < Number(n); i++) plan.push(p);
}
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const sockets = new Set();

function get(path) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const sec = () => Number(process.hrtime.bigint() - t0) / 1e9;
    let bytes = 0;
    let done = false;
    const finish = (r) => { if (!done) { done = true; clearTimeout(timer); resolve(r); } };
    const req = http.get({ host, port, path, agent }, (res) => {
      const h = crypto.createHash('sha256');
      res.on('data', (d) => { bytes += d.length; h.update(d); });
      res.on('end', () => {
        const sha = h.digest('hex');
        const exp = want[path] || res.headers['x-sha256'];
        const ok = res.statusCode === 200 && sha === exp &&
                   bytes === Number(res.headers['content-length']);
        finish({ path, bytes, sec: sec(), ok,
                 err: ok ? null : `${path}: status ${res.statusCode}, ${bytes} B, sha ${sha.slice(0, 12)}` });
      });
      res.on('error', (e) => finish({ path, bytes, sec: sec(), ok: false, err: `${path}: ${e}` }));
    });
    req.on('socket', (s) => sockets.add(s));
    req.on('error', (e) => finish({ path, bytes, sec: sec(), ok: false, err: `${path}: ${e}` }));
    const timer = setTimeout(() => {
      finish({ path, bytes, sec: sec(), ok: false, err: `${path}: stalled, ${bytes} B after ${timeoutMs} ms` });
      req.destroy();
    }, timeoutMs);
  });
}

(async () => {
  const out = { requests: [], errors: [] };
  for (const p of plan) {
    const r = await get(p);
    if (r.err) out.errors.push(r.err);
    delete r.err;
    out.requests.push(r);
  }
  out.connects = sockets.size;
  console.log(JSON.stringify(out));
  agent.destroy();
  process.exit(0);
})();
