// SPDX-License-Identifier: Apache-2.0
// Node.js http server for test_real_apps.py: GET /big (8 MiB) and /small
// (1 KiB) from random buffers made at start, with Content-Length and an
// x-sha256 header; keep-alive. Prints "ready" once listening.
'use strict';
const http = require('http');
const crypto = require('crypto');
const [host, port] = [process.argv[2], Number(process.argv[3])];
const bodies = {};
for (const [p, n] of [['/big', 8 << 20], ['/small', 1024]]) {
  const b = crypto.randomBytes(n);
  bodies[p] = { b, sha: crypto.createHash('sha256').update(b).digest('hex') };
}
const srv = http.createServer((req, res) => {
  const x = bodies[req.url];
  if (!x) { res.writeHead(404, { 'content-length': 0 }); res.end(); return; }
  req.resume();
  res.writeHead(200, { 'content-type': 'application/octet-stream',
                       'content-length': x.b.length, 'x-sha256': x.sha });
  res.end(x.b);
});
srv.keepAliveTimeout = 60000;
srv.listen(port, host, () => console.log('ready'));
process.on('SIGTERM', () => process.exit(0));
