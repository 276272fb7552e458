# SPDX-License-Identifier: Apache-2.0
"""What runs in the bed's pods: each app's command and files, the sidecar's
HAProxy config, the web pods' bodies and the digests the checker expects.
The web pods' nginx config is web-nginx.conf, the checker is checker.py."""
import hashlib
import os

from .env import HERE, BedError, bookinfo, istio_pod

APP_UID = 65534
PROXY_UID = istio_pod.PROXY_UID
WEB_FILES = {"1k": 1024, "16k": 16384}
BOOK_IDS = (0, 1, 2, 3)
APP_PORT = {"dns": 53, "productpage": 9080, "details": 9080, "reviews": 9080, "ratings": 9080, "web": 80}
WEB_NGINX_CONF = os.path.join(HERE, "web-nginx.conf")
CHECKER = os.path.join(HERE, "checker.py")


def web_nginx_conf(inner):
    """The web pods' nginx.conf for a pod whose dir is INNER inside its containers."""
    with open(WEB_NGINX_CONF) as f:
        return f.read().replace("@DIR@", inner)


def web_bodies():
    """The web pods' files: deterministic bytes (the checker knows their digests)."""
    out = {}
    for name, size in WEB_FILES.items():
        seed = hashlib.sha256(b"meshcut web " + name.encode()).digest()
        data = bytearray()
        while len(data) < size:
            seed = hashlib.sha256(seed).digest()
            data += seed
        out["/%s.bin" % name] = bytes(data[:size])
    return out


def expected_digests():
    """URL (by service name, as the apps see it) -> sha256 of the right body."""
    want = {}
    for i in BOOK_IDS:
        want["http://productpage:9080/productpage?id=%d" % i] = hashlib.sha256(
            bookinfo.expected_productpage(i)).hexdigest()
    for svc in ("web-n1", "web-n2"):
        for path, body in web_bodies().items():
            want["http://%s:80%s" % (svc, path)] = hashlib.sha256(body).hexdigest()
    return want


def app_argv(p, d):
    """The app container's command; D: the pod's dir (as /bed/pods/<name> inside)."""
    inner = "/bed/pods/" + p.name
    if p.app == "client":
        return ["/bin/busybox", "sleep", "2147483647"]
    if p.app == "dns":
        return ["/usr/bin/python3", "/bookinfo/dns.py", "--addr", "0.0.0.0", "--port", "53",
                "--records", "/bed/dns.json"]
    if p.app == "productpage":
        return ["/usr/bin/python3", "/bookinfo/productpage.py", "--port", "9080"]
    if p.app == "reviews":
        return ["/usr/bin/python3", "/bookinfo/reviews.py", "--port", "9080", "--version",
                p.name.rsplit("-", 1)[-1]]
    if p.app == "details":
        return ["/usr/bin/node", "/bookinfo/details.js", "--port", "9080"]
    if p.app == "ratings":
        bookinfo.write_ratings_root(d)
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(bookinfo.nginx_conf(inner, 9080))
        return ["/usr/sbin/nginx", "-c", inner + "/nginx.conf", "-p", inner + "/", "-e", "stderr"]
    if p.app == "web":
        os.makedirs(os.path.join(d, "www"))
        for path, body in web_bodies().items():
            with open(os.path.join(d, "www", path[1:]), "wb") as f:
                f.write(body)
        with open(os.path.join(d, "nginx.conf"), "w") as f:
            f.write(web_nginx_conf(inner))
        return ["/usr/sbin/nginx", "-c", inner + "/nginx.conf", "-p", inner + "/", "-e", "stderr"]
    raise BedError("unknown app " + p.app)


def sidecar_cfg(services, sidecar_threads):
    """A meshed pod's HAProxy config: every TCP service's ClusterIP routed to its endpoints."""
    routes, backends = "", ""
    for s in services:
        if s.proto != "tcp" or not s.endpoints:
            continue
        b = "svc_" + s.name.replace("-", "_")
        routes += "    use_backend %s if { dst %s } { dst_port %d }\n" % (b, s.cluster_ip, s.port)
        backends += "backend %s\n    balance roundrobin\n" % b + "".join(
            "    server ep%d %s:%d\n" % (i, ip, port) for i, (ip, port) in enumerate(s.endpoints))
    return istio_pod.HAPROXY_CFG.format(
        maxconn=8192, idle="1h", bind="0.0.0.0", out_port=15001, in_port=15006,
        in_src=istio_pod.INBOUND_PASSTHROUGH_SRC, outbound_routes=routes, service_backends=backends,
        extra_global="    nbthread %d\n" % sidecar_threads, extra_defaults="")
