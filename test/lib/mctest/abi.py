# SPDX-License-Identifier: Apache-2.0
"""Constants the C side owns, read from the kernel/user ABI header
(bpf/include/meshcut_kern_user.h), never copied into a test."""
import os
import re

HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                      "bpf", "include", "meshcut_kern_user.h")


def _defines(path=HEADER):
    out = {}
    with open(path) as f:
        for m in re.finditer(r"^#define\s+(MC_\w+)\s+(0x[0-9a-fA-F]+|\d+)u?\b", f.read(), re.M):
            out[m.group(1)] = int(m.group(2), 0)
    return out


DEFINES = _defines()
MC_TC_HANDLE = DEFINES["MC_TC_HANDLE"]
MC_TC_PRIO = DEFINES["MC_TC_PRIO"]
# How `tc filter show` prints meshcut's filter: its preference and handle.
TC_OURS = ("pref %d" % MC_TC_PRIO, "handle 0x%x" % MC_TC_HANDLE)
TC_DEL_ARGS = ["pref", str(MC_TC_PRIO), "handle", "0x%x" % MC_TC_HANDLE, "bpf"]


def is_ours(tc_show_output):
    """True when `tc filter show` output lists meshcut's filter."""
    return all(x in tc_show_output for x in TC_OURS)
