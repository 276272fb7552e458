// SPDX-License-Identifier: Apache-2.0
// Bookinfo details (Node.js, no npm packages): GET /details/N -> the canonical
// JSON of data.json's details of book N, byte-identical to Python's
// bookinfo.details_body(N); GET /healthz -> "ok\n"; 404 otherwise.
'use strict';

const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');

// Same bytes as json.dumps(v, sort_keys=True, separators=(",", ":"),
// ensure_ascii=True) for JSON data with integer numbers.
function canonical(v) {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'boolean': return v ? 'true' : 'false';
    case 'number':
      if (!Number.isSafeInteger(v)) throw new Error(`non-integer number ${v}`);
      return String(v);
    case 'string':
      // JSON.stringify escapes like Python (\" \\ \b \f \n \r \t, \u00xx);
      // ensure_ascii also escapes U+007F and above (as UTF-16 code units).
      return JSON.stringify(v).replace(/[\u007f-\uffff]/g,
        (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
    case 'object':
      if (Array.isArray(v)) return '[' + v.map(canonical).join(',') + ']';
      return '{' + Object.keys(v).sort()
        .map((k) => canonical(k) + ':' + canonical(v[k])).join(',') + '}';
    default:
      throw new Error(`unsupported JSON value of type ${typeof v}`);
  }
}

function parseArgs(argv) {
  const args = { port: 9080 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--port' && i + 1 < argv.length) args.port = Number(argv[++i]);
    else if (argv[i].startsWith('--port=')) args.port = Number(argv[i].slice(7));
    else throw new Error(`usage: node details.js [--port 9080] (bad argument ${argv[i]})`);
  }
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
    throw new Error(`bad port ${args.port}`);
  }
  return args;
}

const args = parseArgs(process.argv.slice(2));
const books = JSON.parse(fs.readFileSync(path.join(__dirname, 'data.json'), 'ascii')).books;
// Pre-rendered bodies, keyed by the canonical decimal id ("0", "1", ...).
const bodies = new Map(Object.keys(books).map(
  (id) => [`/details/${id}`, Buffer.from(canonical(books[id].details), 'ascii')]));
const servedBy = os.hostname();

function reply(res, status, body, type) {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': body.length,
    'X-Served-By': servedBy,
  });
  res.end(body);
}

const server = http.createServer((req, res) => {
  const url = req.url.split('?')[0];
  const body = bodies.get(url);
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    reply(res, 405, Buffer.from('method not allowed\n'), 'text/plain; charset=utf-8');
  } else if (body) {
    reply(res, 200, body, 'application/json');
  } else if (url === '/healthz') {
    reply(res, 200, Buffer.from('ok\n'), 'text/plain; charset=utf-8');
  } else {
    reply(res, 404, Buffer.from('not found\n'), 'text/plain; charset=utf-8');
  }
});
server.keepAliveTimeout = 75000;
server.headersTimeout = 76000; // must exceed keepAliveTimeout
server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
});
server.listen({ host: '0.0.0.0', port: args.port, backlog: 4096 }, () => {
  const { port } = server.address();
  console.error(`${new Date().toISOString()} details: listening on 0.0.0.0:${port}`);
});

