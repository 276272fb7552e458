# SPDX-License-Identifier: Apache-2.0
"""Where the bed's pieces are and the helpers it builds on (benchlib, mcnet,
twonode, istio_pod, bookinfo, images), imported once for the package.
MESHCUT_BUILD (default <repo>/build) names the build tree."""
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOKINFO = os.path.join(REPO, "e2e", "bookinfo")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True
for _d in (os.path.join(REPO, "bench"), os.path.join(REPO, "e2e", "cri"), BOOKINFO):
    sys.path.insert(0, _d)
import benchlib  # noqa: E402

BUILD = os.path.abspath(os.environ.get("MESHCUT_BUILD", os.path.join(REPO, "build")))
mcnet, twonode, istio_pod = benchlib.import_netns_helpers(BUILD, "mcnet", "twonode", "istio_pod")
import bookinfo  # noqa: E402,F401
import images  # noqa: E402,F401


def log(msg):
    print("[%s] meshbed: %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


class BedError(RuntimeError):
    pass

