# SPDX-License-Identifier: Apache-2.0
"""Shared code of the meshcut Bookinfo demo apps (Python 3.11 stdlib only).

Graph: productpage -> details (details.js); productpage -> reviews -> ratings
(static files served by nginx). Every response body is a pure function of
data.json and the request, so any replica gives byte-identical bodies and the
checker can compare sha256 digests with expected_productpage() computed
offline. Replica-specific values go only in headers (X-Served-By, X-Version).

Canonical JSON (shared with details.js): json.dumps(sort_keys=True,
separators=(",", ":"), ensure_ascii=True), integers only, no trailing newline.
"""

import hashlib
import html
import http.client
import json
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
DATA_PATH = os.path.join(HERE, "data.json")

with open(DATA_PATH, encoding="ascii") as _f:
    BOOKS = json.load(_f)["books"]

_ID_RE = re.compile(r"0|[1-9][0-9]{0,8}")


def log(msg):
    """One line on stderr (startup and errors only, never per request)."""
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def ids():
    return sorted(int(k) for k in BOOKS)


def parse_id(text):
    """The int id for a canonical decimal string naming a known book, else None."""
    if text is None or not _ID_RE.fullmatch(text) or text not in BOOKS:
        return None
    return int(text)


def canonical_json(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode("ascii")


def _as_obj(value):
    """Accept either parsed JSON or its raw bytes/str."""
    if isinstance(value, (bytes, bytearray, str)):
        return json.loads(value)
    return value


# ---------------------------------------------------------------- bodies

def details_body(book_id):
    return canonical_json(BOOKS[str(book_id)]["details"])


def ratings_body(book_id):
    return canonical_json({"id": int(book_id),
                           "ratings": BOOKS[str(book_id)]["ratings"]})


def reviews_body(book_id, ratings_json):
    """Reviews of a book joined with the stars from the ratings response."""
    stars = _as_obj(ratings_json).get("ratings", {})
    reviews = []
    for r in BOOKS[str(book_id)]["reviews"]:
        n = stars.get(r["reviewer"])
        rating = {"stars": n} if isinstance(n, int) else {"error": "unavailable"}
        reviews.append({"reviewer": r["reviewer"], "text": r["text"],
                        "rating": rating})
    return canonical_json({"id": int(book_id), "reviews": reviews})


_STYLE = """<style>
body { font-family: sans-serif; margin: 2em auto; max-width: 50em; color: #222; }
h1 { border-bottom: 2px solid #466bb0; padding-bottom: .3em; }
table { border-collapse: collapse; width: 100%; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #eef2f8; }
.stars { color: #b8860b; white-space: nowrap; }
.error { color: #a00; }
nav ul { list-style: none; padding: 0; } nav li { display: inline; margin-right: 1em; }
footer { margin-top: 2em; font-size: 80%; color: #666; font-family: monospace; }
</style>"""


def _nav():
    """Navigation bar listing every book of data.json."""
    items = "".join(f"<li><a href=\"/productpage?id={i}\">"
                    f"{_e(BOOKS[str(i)]['title'])}</a></li>\n" for i in ids())
    return ("<nav class=\"navbar\">\n<a class=\"brand\" href=\"/productpage?id=0\">"
            f"BookInfo Sample</a>\n<ul>\n{items}</ul>\n</nav>")


def _e(value):
    return html.escape(str(value), quote=True)


def _stars(n):
    n = max(0, min(5, int(n)))
    return "&#9733;" * n + "&#9734;" * (5 - n)


def productpage_body(book_id, details_json, reviews_json):
    """The HTML product page built from the details and reviews responses."""
    book = BOOKS[str(book_id)]
    details = _as_obj(details_json)
    reviews = _as_obj(reviews_json)["reviews"]
    out = [f"<h1>{_e(book['title'])}</h1>",
           f"<p class=\"summary\">{_e(book['summary'])}</p>",
           "<h2>Book Details</h2>", "<table>"]
    for key in sorted(details):
        out.append(f"<tr><th>{_e(key)}</th><td>{_e(details[key])}</td></tr>")
    out += ["</table>", "<h2>Book Reviews</h2>",
            "<table>", "<tr><th>Reviewer</th><th>Review</th><th>Rating</th></tr>"]
    total = count = 0
    for r in reviews:
        rating = r.get("rating", {})
        if "stars" in rating:
            total += int(rating["stars"])
            count += 1
            cell = (f"<span class=\"stars\" title=\"{int(rating['stars'])} of 5\">"
                    f"{_stars(rating['stars'])}</span>")
        else:
            cell = f"<span class=\"error\">{_e(rating.get('error', 'no rating'))}</span>"
        out.append(f"<tr><td>{_e(r['reviewer'])}</td><td>{_e(r['text'])}</td>"
                   f"<td>{cell}</td></tr>")
    out.append("</table>")
    if count:
        out.append(f"<p>Average rating: {total * 100 // count // 100}."
                   f"{total * 100 // count % 100:02d} of 5 ({count} ratings)</p>")
    # Histogram of the ratings: stars -> number of reviews.
    hist = [0] * 6
    for r in reviews:
        if "stars" in r.get("rating", {}):
            hist[max(0, min(5, int(r["rating"]["stars"])))] += 1
    out += ["<h2>Ratings Histogram</h2>", "<table>",
            "<tr><th>Stars</th><th>Reviews</th><th>Share</th></tr>"]
    for n in range(5, 0, -1):
        share = hist[n] * 100 // count if count else 0
        out.append(f"<tr><td class=\"stars\">{_stars(n)}</td><td>{hist[n]}</td>"
                   f"<td>{share}%</td></tr>")
    out.append("</table>")
    content = "\n".join(out) + "\n"
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()
    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>Bookinfo: {_e(book['title'])}</title>\n{_STYLE}\n</head>\n<body>\n"
            f"{_nav()}\n"
            f"{content}<footer>content sha256 {digest}</footer>\n</body>\n</html>\n")
    return page.encode("ascii", errors="xmlcharrefreplace")


def expected_productpage(book_id):
    """The full expected page, composed offline exactly like the live graph."""
    reviews = reviews_body(book_id, ratings_body(book_id))
    return productpage_body(book_id, details_body(book_id), reviews)


# ---------------------------------------------------------------- nginx (ratings)

_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def write_ratings_root(root):
    """Write <root>/ratings/<id> for every id, and nginx's temp dirs."""
    os.makedirs(os.path.join(root, "ratings"), exist_ok=True)
    for name in _TEMP_DIRS:
        os.makedirs(os.path.join(root, "tmp", name), exist_ok=True)
    for book_id in ids():
        with open(os.path.join(root, "ratings", str(book_id)), "wb") as f:
            f.write(ratings_body(book_id))


def nginx_conf(root, port=9080):
    """nginx.conf serving <root>/ratings/ for `nginx -c CONF -p ROOT/ -e stderr`,
    in the foreground, as a non-root user (no `user` directive)."""
    root = os.path.abspath(root)
    temps = "\n".join(f"    {name}_temp_path {root}/tmp/{name};" for name in _TEMP_DIRS)
    return f"""# SPDX-License-Identifier: Apache-2.0
# Generated by bookinfo.nginx_conf(): the ratings service of the Bookinfo demo.
daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log stderr warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    log_not_found off;
{temps}
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    sendfile on;
    tcp_nodelay on;
    server_tokens off;
    default_type application/octet-stream;

    server {{
        listen {int(port)} backlog=4096;
        server_name _;
        root {root};
        add_header X-Served-By $hostname always;

        location /ratings/ {{
            default_type application/json;
        }}
        location = /healthz {{
            default_type text/plain;
            return 200 "ok\\n";
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""


# ---------------------------------------------------------------- HTTP client

class UpstreamError(Exception):
    pass


class Upstream:
    """Keep-alive HTTP/1.1 client for one upstream base URL, with one
    persistent connection per calling thread. The host name is resolved by
    the system resolver (getaddrinfo) at each (re)connect."""

    def __init__(self, name, url, timeout=5.0):
        u = urlsplit(url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"{name}: unsupported URL {url!r}")
        self.name, self.url, self.timeout = name, url, timeout
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = u.path.rstrip("/")
        self._local = threading.local()

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _drop(self):
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def get(self, path):
        """GET prefix+path -> (status, body). A connection error before any
        response was read (e.g. a stale keep-alive connection) reconnects and
        retries once; errors after that (or timeouts) raise UpstreamError."""
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request("GET", self.prefix + path)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                if attempt == 2 or isinstance(e, TimeoutError):
                    raise UpstreamError(f"{type(e).__name__}: {e}") from e
                continue
            try:
                body = resp.read()  # response started: never retried
            except (OSError, http.client.HTTPException) as e:
                self._drop()
                raise UpstreamError(f"{type(e).__name__}: {e}") from e
            if resp.will_close:
                self._drop()
            return resp.status, body

    def get_json(self, path):
        """GET a 200 JSON response and parse it, else UpstreamError."""
        status, body = self.get(path)
        if status != 200:
            raise UpstreamError(f"HTTP {status}")
        try:
            return json.loads(body)
        except ValueError as e:
            raise UpstreamError(f"bad JSON: {e}") from e


# ---------------------------------------------------------------- HTTP server

class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # client went away: one line, no traceback
            log(f"client {client_address[0]}:{client_address[1]}: {exc!r}")
        else:
            super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    """Keep-alive handler; subclasses implement route(path, query) ->
    (status, body, content_type, extra_headers)."""
    protocol_version = "HTTP/1.1"
    server_version = "bookinfo"
    sys_version = ""
    timeout = 75              # idle keep-alive timeout, as nginx and details.js
    disable_nagle_algorithm = True
    served_by = socket.gethostname()
    extra_headers = {}        # e.g. {"X-Version": "v1"}

    def log_message(self, fmt, *args):
        pass

    def log_error(self, fmt, *args):
        msg = fmt % args
        if not msg.startswith("Request timed out"):
            log(f"{self.client_address[0]}: {msg}")

    def reply(self, status, body, ctype="text/plain; charset=utf-8", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", self.served_by)
        for k, v in {**self.extra_headers, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path == "/healthz":
            self.reply(200, b"ok\n")
        else:
            self.reply(*self.route(path, query))

    do_HEAD = do_GET

    def route(self, path, query):
        return 404, b"not found\n", "text/plain; charset=utf-8", None


def serve(name, handler, port, info=""):
    """Bind 0.0.0.0:port and serve forever."""
    server = Server(("0.0.0.0", port), handler)
    log(f"{name}: listening on 0.0.0.0:{port} {info}".rstrip())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
