#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Unit tests of mctest, the one Python helper library (no root)."""
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mctest import Checks, abi, delta, pct  # noqa: E402


class Pct(unittest.TestCase):
    def test_nearest_rank(self):
        xs = list(range(100, 0, -1))  # unsorted input
        self.assertEqual([pct(xs, p) for p in (0, 1, 50, 90, 99, 99.9, 100)], [1, 1, 50, 90, 99, 100, 100])
        self.assertEqual(pct([7], 99), 7)
        self.assertEqual(pct([1, 2], 50), 1)   # at least half the sample at or below
        self.assertEqual(pct([1, 2], 51), 2)

    def test_empty_is_nan(self):
        self.assertNotEqual(pct([], 50), pct([], 50))


class Delta(unittest.TestCase):
    def test_before_after(self):
        self.assertEqual(delta({"a": 1, "gone": 5}, {"a": 4, "new": 2}), {"a": 3, "new": 2})

    def test_skip_and_non_numbers(self):
        after = {"a": 2, "all": {"x": 1}, "s": "text", "flag": True, "f": 1.5}
        self.assertEqual(delta({"f": 0.5}, after, skip=("a",)), {"f": 1.0})


class CheckCollector(unittest.TestCase):
    def test_counts_and_lines(self):
        lines = []
        ck = Checks(out=lines.append)
        self.assertTrue(ck.check(True, "one"))
        self.assertFalse(ck(False, "two", "why"))
        self.assertEqual((ck.passed, ck.failed, ck.failures), (1, 1, ["two"]))
        self.assertEqual(lines, ["ok   one", "FAIL two: why"])

    def test_done_exit_code(self):
        ck = Checks(out=lambda m: None)
        ck.check(False, "x")
        with self.assertRaises(SystemExit) as e:
            ck.done()
        self.assertEqual(e.exception.code, 1)


class Abi(unittest.TestCase):
    def test_tc_filter_from_the_header(self):
        self.assertIn("MC_TC_PRIO", abi.DEFINES)
        self.assertTrue(0 < abi.MC_TC_PRIO < 0x10000 and 0 < abi.MC_TC_HANDLE)
        shown = "filter protocol all pref %d bpf chain 0 handle 0x%x mc_tc_veth direct-action" % (
            abi.MC_TC_PRIO, abi.MC_TC_HANDLE)
        self.assertTrue(abi.is_ours(shown))
        self.assertFalse(abi.is_ours("filter protocol all pref 1 bpf chain 0 handle 0x1 foreign"))


if __name__ == "__main__":
    unittest.main()
