# SPDX-License-Identifier: Apache-2.0
"""mctest: the one Python library of meshcut's tests, test bed and benchmarks.

Each helper exists once here (percentiles, counter deltas, the check
collector, setns); modules that need a throw-away node build on top of it
(test/netns/mcnet.py). Import it after putting test/lib on sys.path (mcnet
does that for everything that imports mcnet).
"""
from .checks import Checks  # noqa: F401
from .counters import delta  # noqa: F401
from .ns import setns, CLONE_NEWNET  # noqa: F401
from .stats import pct  # noqa: F401
