# SPDX-License-Identifier: Apache-2.0
"""The check collector: every assertion printed as it is made, a count at the end."""
import sys
import time


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


class Checks:
    """check(cond, what[, detail]) prints "ok   WHAT" or "FAIL WHAT: DETAIL" and
    returns COND; done() prints "N passed, M failed" and exits 1 if any failed.
    Subclasses hook cleanup into finish() (mcnet: sweep, keep logs on failure)."""

    def __init__(self, out=log):
        self.failed = 0
        self.passed = 0
        self.failures = []
        self._out = out

    def check(self, cond, what, detail=None):
        if cond:
            self.passed += 1
            self._out("ok   " + what)
        else:
            self.failed += 1
            self.failures.append(what)
            self._out("FAIL " + what + ("" if detail in (None, "") else ": %s" % (detail,)))
        return cond

    __call__ = check

    def finish(self):
        pass

    def done(self):
        self.finish()
        print("%d passed, %d failed" % (self.passed, self.failed))
        sys.exit(1 if self.failed else 0)
