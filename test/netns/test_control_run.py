#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""netns_control_run: `meshcut-control run` against two nodes' meshcutd
(issue 16, "with root, in the bed's smallest form"): the controller's action
reaches both nodes' tables and the windows of both come back.

Topology (twonode.Cluster, the bed's two nodes without containerd): nodes n1
and n2 with a flannel-style vxlan, kube-proxy rules, the meshcut CNI chain and
a meshcutd per node in its node's netns. Service default/web at 10.96.0.30:80
has backends s1 (n1) and s2 (n2) on :8080; callers premium-c1 (n1) and
free-c2 (n2) run mcload, connection per request, at a fixed rate. The pods
have no sidecar (intraPod off), so their connects to the ClusterIP are what
connect4 routes and admits. Each node's API listens on its underlay address
with a bearer token; the controller runs in the outside host's netns and
reaches both over the underlay, as a Deployment would.

Runs:
  1. search, --keep-on-exit: every control window read both nodes and pushed
     to both; the merged offered load is the two callers' rate; both nodes'
     tables hold the controller's last generation and both routed connects
     with it; the controller's /metrics pass promtool.
  2. n2's API made unreachable (its packets dropped): the controller times
     out on n2 within the window and keeps n1 controlled (new generations).
  3. a wrong token: every node's refusal names HTTP 401 and the fix.
  4. a clean stop clears both nodes' actions (they fail open at once).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mcnet  # noqa: E402
import twonode  # noqa: E402
from http_backend import Backend  # noqa: E402
from mcnet import log  # noqa: E402

VIP = "10.96.0.30"
API_PORT = 9465
RATE = 60.0  # requests/s per caller


def services_doc(s1, s2):
    def ep(pod, node):
        return {"addresses": [pod.ip], "targetRef": {"name": pod.name}, "nodeName": node,
                "conditions": {"ready": True}}

    return {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"clusterIP": VIP, "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-a", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "ports": [{"port": 8080}],
         "endpoints": [ep(s1, "n1"), ep(s2, "n2")]},
        {"apiVersion": "meshcut.io/v1alpha1", "kind": "CallerClasses",
         "spec": {"classes": [{"name": "premium", "pods": ["premium-*"]}, {"name": "freemium", "pods": ["free-*"]}]}},
    ]}


OBJECTIVES = """apiVersion: meshcut.io/v1alpha1
kind: Objectives
spec:
  windowSeconds: 1
  services:
  - service: default/web
    latency: {percentile: 95, boundMs: 50}
    classWeights: {premium: 3, freemium: 1}
  grid: {routingStep: 0.25, admissionStep: 0.25}
"""


def control_bin():
    return os.environ.get("MESHCUT_CONTROL", os.path.join(mcnet.BUILD, "controller", "meshcut-control"))


def mcload_bin():
    return os.path.join(mcnet.BUILD, "bench", "loadgen", "mcload")


def run_control(cl, tmp, name, nodes, token_file, windows, learn, extra=(), during=None, timeout=120):
    """meshcut-control run in the outside host's netns; returns (rc, ticks, stderr)."""
    logf = os.path.join(tmp, name + ".jsonl")
    cmd = [control_bin(), "run", "--objectives", os.path.join(tmp, "objectives.yaml"),
           "--services", os.path.join(tmp, "services.json"), "--nodes", nodes, "--api-token-file", token_file,
           "--windows", str(windows), "--learn", str(learn), "--json", "--log", logf] + list(extra)
    # stdout and stderr go to files: a pipe nobody reads while DURING runs would stall the controller.
    with open(logf + ".out", "w+b") as out, open(logf + ".err", "w+b") as errf:
        p = mcnet.spawn(cmd, netns=cl.ext, stdout=out, stderr=errf)
        if during:
            during(p)
        p.wait(timeout=timeout)
        out.seek(0)
        errf.seek(0)
        ticks = [json.loads(line) for line in out.read().decode().splitlines() if line.startswith("{")]
        return p.returncode, ticks, errf.read().decode()


def status(n, token_file):
    r = n.daemon.cli("objectives", "status", "--json", "--api-addr", "%s:%d" % (n.underlay_ip, API_PORT),
                     "--api-token-file", token_file, check=False)
    return json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=10)
    ap.add_argument("--learn", type=int, default=20)
    args = ap.parse_args()
    mcnet.require_root()
    for b in (control_bin(), mcload_bin()):
        if not os.access(b, os.X_OK):
            mcnet.skip_or_fail("%s is not built (cmake --build build)" % b)
    ck = mcnet.Checks()
    cg = mcnet.Cgroup("ctlrun")
    cg.join()
    tmp = tempfile.mkdtemp(prefix="mc-ctlrun-")
    mcnet._cleanups.append(lambda: subprocess.run(["rm", "-rf", tmp]))
    os.chmod(tmp, 0o755)
    token_file = os.path.join(tmp, "token")
    with open(token_file, "w") as f:
        f.write("t0ken-%d\n" % os.getpid())
    svc_file = os.path.join(tmp, "services.json")
    with open(svc_file, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": []}, f)
    with open(os.path.join(tmp, "objectives.yaml"), "w") as f:
        f.write(OBJECTIVES)

    def daemon_args(n):
        return ["--services", svc_file, "--api-addr", "%s:%d" % (n.underlay_ip, API_PORT),
                "--api-token-file", token_file]

    # One cgroup per node, as on real nodes: each node's connect4 sees only its own callers.
    node_cg = {"n1": mcnet.Cgroup("ctlrun-n1"), "n2": mcnet.Cgroup("ctlrun-n2")}
    cl = twonode.Cluster(cg, meshcut=True, cross_node=True, daemon_extra=daemon_args,
                         meshcut_conf={"intraPod": False}, daemon_cgroup=lambda n: node_cg[n.name]).up()
    n1, n2 = cl.nodes["n1"], cl.nodes["n2"]
    c1, s1 = cl.add_pod("n1", "premium-c1"), cl.add_pod("n1", "s1")
    c2, s2 = cl.add_pod("n2", "free-c2"), cl.add_pod("n2", "s2")
    cl.set_services([twonode.Service("web", VIP, 80, [(s1.ip, 8080), (s2.ip, 8080)])])
    # One server each (requests queue), so that latency rises with the load a probe routes there. Each
    # listener is made from inside its node's cgroup (accepted sockets inherit it), as a pod's sockets are on
    # a real node: a same-node request is then measured where the shortcut carries it (sk_msg), not missed.
    backends = []
    for pod, delay in ((s1, 0.004), (s2, 0.008)):
        node_cg[pod.node.name].join()
        backends.append(Backend(pod.ns, pod.ip, 8080, delay=lambda i, d=delay: d, servers=1))
    cg.join()
    with open(svc_file + ".tmp", "w") as f:
        json.dump(services_doc(s1, s2), f)
    os.replace(svc_file + ".tmp", svc_file)
    for n in (n1, n2):
        st = {}
        for _ in range(100):
            st = status(n, token_file)
            if st.get("services") and st.get("enabled"):
                break
            time.sleep(0.1)
        ck.check(st.get("services") and st.get("enabled"), "%s: meshcutd manages default/web" % n.name, st)

    nodes = "n1=%s:%d,n2=%s:%d" % (n1.underlay_ip, API_PORT, n2.underlay_ip, API_PORT)
    duration = args.windows + args.learn + 30
    loads = []
    for pod in (c1, c2):
        loads.append(mcnet.spawn([mcload_bin(), "--connect", "%s:80" % VIP, "--host", "web", "--path", "/",
                                  "--per-request", "--rate", str(RATE), "--arrival", "constant",
                                  "--duration", str(duration), "--json", os.path.join(tmp, pod.name + ".json")],
                                 netns=pod.ns, cgroup=node_cg[pod.node.name], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE))
    time.sleep(2)  # the nodes have windows with load before the controller starts
    routed0 = {n.name: status(n, token_file).get("counters", {}).get("routed", 0) for n in (n1, n2)}

    # 1. search, keep the last action.
    metrics_port = 9466
    scrape = {}

    def scrape_metrics(p):
        time.sleep(args.learn + 4)
        def get():
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % metrics_port, timeout=3) as r:
                return r.read().decode()
        try:
            scrape["text"] = mcnet.in_netns(cl.ext, get)
        except OSError as e:
            scrape["text"] = ""
            log("scrape failed: %s" % e)

    rc, ticks, err = run_control(cl, tmp, "search", nodes, token_file, args.windows + args.learn, args.learn,
                                 ["--keep-on-exit", "--metrics-addr", "127.0.0.1:%d" % metrics_port,
                                  "--ttl-ms", "60000"], during=scrape_metrics)
    ck.check(rc == 0, "run (search) exits 0 (%s)" % err[-400:])
    control = [t for t in ticks if t["phase"] == "control"]
    log("per window (tick:windows n1/n2, tick ms, n1 cursor, merged duration): " + " ".join(
        "%s:%s/%s@%.0fms,c%s,d%.2f" % (t["tick"], t["nodes"][0]["windows"], t["nodes"][1]["windows"], t["tick_ms"],
                                      t["nodes"][0]["cursor"], t["window"].get("duration_s", 0)) for t in ticks))
    fit = subprocess.run([control_bin(), "fit", "--windows", os.path.join(tmp, "search.jsonl")],
                         capture_output=True, text=True)
    log("fit from the run's log:\n%s%s" % (fit.stdout, fit.stderr))
    ck.check(fit.returncode == 0 and "10.244." in fit.stdout,
             "meshcut-control fit fits both backends from the run's log", fit.stdout + fit.stderr)
    # The model covers both backends within the learning windows, so the rest are controlled: the
    # objective (p95 <= 50 ms) holds and the load is carried, not blocked (the backends' capacity is ~4x it).
    ck.check(len(ticks) == args.windows + args.learn and len(control) >= args.windows,
             "run: %d windows, %d controlled (learning %d)" % (len(ticks), len(control), args.learn))
    met = [t for t in control if t["services"][0].get("met")]
    carried = sum(t["services"][0].get("carried_rps", 0) for t in control)
    offered_c = sum(t["services"][0].get("offered_rps", 0) for t in control)
    ck.check(control and len(met) >= 0.8 * len(control) and carried >= 0.8 * offered_c,
             "controlled windows: objective met in %d of %d, carried %.0f of %.0f req offered"
             % (len(met), len(control), carried, offered_c),
             [(t["services"][0].get("measured_ms"), t["services"][0].get("predicted_ms")) for t in control])
    # The first read only sets each node's cursor; learning pushes a new probe every 5 windows.
    both = [t for t in ticks[1:] if t["nodes_answered"] == 2 and all(n["windows"] >= 1 for n in t["nodes"])
            and (t["action"] is None or t["nodes_pushed"] == 2)]
    pushed = [t for t in ticks if t["action"] is not None]
    ck.check(len(both) >= len(ticks) - 3 and len(pushed) >= args.windows,
             "windows read from both nodes in %d of %d windows, every one of the %d actions pushed to both"
             % (len(both), len(ticks), len(pushed)), [t["nodes"] for t in ticks[1:] if t not in both][:3])
    offered = sorted(t["services"][0]["offered_rps"] for t in ticks[1:])
    med = offered[len(offered) // 2] if offered else 0
    ck.check(abs(med - 2 * RATE) <= 0.2 * 2 * RATE, "the merged window's offered load is both callers': median "
             "%.1f/s vs %.0f/s sent" % (med, 2 * RATE), offered)
    last = ticks[-1]["action"] if ticks else None
    gen = last.get("generation") if isinstance(last, dict) else None
    for n in (n1, n2):
        st = status(n, token_file)
        ck.check(gen and st.get("action", {}).get("generation") == gen,
                 "%s: the table holds the controller's last action (generation %s, node %s)"
                 % (n.name, gen, st.get("action", {}).get("generation")))
        routed = st.get("counters", {}).get("routed", 0) - routed0[n.name]
        ck.check(routed >= len(ticks) * RATE * 0.8, "%s: connect4 routed %d connects under the controller"
                 % (n.name, routed), (st.get("counters"), last))
    text = scrape.get("text", "")
    ck.check('meshcut_control_node_up{node="n1"} 1' in text and 'meshcut_control_node_up{node="n2"} 1' in text,
             "the controller's /metrics: both nodes up", text[:300])
    prom = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True)
    ck.check(text and prom.returncode == 0, "the controller's /metrics pass promtool",
             (prom.stdout + prom.stderr).decode()[-300:])
    ck.check("cpu" in err and "of one core" in err, "run reports its CPU use (%s)"
             % next((ln for ln in err.splitlines() if "of one core" in ln), ""))

    # 2. n2 does not answer: its packets are dropped (a node lost, or late beyond the timeout).
    n2.run("iptables", "-I", "INPUT", "-p", "tcp", "--dport", str(API_PORT), "-j", "DROP")
    try:
        g_before = status(n1, token_file).get("action", {}).get("generation", 0)
        t0 = time.monotonic()
        rc, ticks, err = run_control(cl, tmp, "lost", nodes, token_file, 5, 0,
                                     ["--keep-on-exit", "--ttl-ms", "60000", "--timeout-ms", "300"])
        took = time.monotonic() - t0
    finally:
        n2.run("iptables", "-D", "INPUT", "-p", "tcp", "--dport", str(API_PORT), "-j", "DROP", check=False)
    ck.check(rc == 0 and len(ticks) == 5, "run with n2 unreachable exits 0 after its 5 windows (%d, %s)"
             % (len(ticks), err[-300:]))
    ck.check(took < 5 * 1.0 + 4, "... and keeps to its 1 s windows (%.1f s for 5)" % took)
    ck.check(all(t["nodes"][1]["fetched"] is False and t["nodes"][0]["fetched"] for t in ticks),
             "n2 counted as not answering, n1 read, in every window")
    ck.check(all(t["nodes"][0]["pushed"] for t in ticks[1:]), "n1 got every action")
    g_after = status(n1, token_file).get("action", {}).get("generation", 0)
    ck.check(g_after > g_before, "n1's table moved on without n2 (generation %s -> %s)" % (g_before, g_after))

    # 3. a wrong token.
    bad_tok = os.path.join(tmp, "bad-token")
    with open(bad_tok, "w") as f:
        f.write("wrong\n")
    rc, ticks, err = run_control(cl, tmp, "badtoken", nodes, bad_tok, 2, 0, ["--policy", "none"])
    errs = [n["error"] for t in ticks for n in t["nodes"]]
    ck.check(ticks and all("HTTP 401" in e for e in errs), "a wrong token: every node's refusal says HTTP 401",
             errs[:2])
    ck.check(errs and all("--api-token-file" in e for e in errs), "... and the fix is named (%s)" % errs[:1])

    # 4. a clean stop clears both nodes' actions.
    rc, ticks, err = run_control(cl, tmp, "clear", nodes, token_file, 3, 0)
    ck.check(rc == 0, "run (3 windows, then exit) exits 0 (%s)" % err[-200:])
    for n in (n1, n2):
        g = status(n, token_file).get("action", {}).get("generation")
        ck.check(g == 0, "%s: no action after the controller's clean stop (generation %s)" % (n.name, g))

    for p in loads:
        p.terminate()
        p.wait(timeout=10)
    served = [b.requests for b in backends]
    ck.check(all(served), "both backends served requests (%s): the routes span the nodes" % served)
    ck.done()


if __name__ == "__main__":
    main()
