# SPDX-License-Identifier: Apache-2.0
"""Counter snapshots (meshcutd's, the kernel's): what grew between two."""


def delta(before, after, skip=()):
    """AFTER - BEFORE per numeric counter of AFTER (a counter that appeared in
    between counts from 0); keys in SKIP are left out."""
    return {k: v - before.get(k, 0) for k, v in after.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}
