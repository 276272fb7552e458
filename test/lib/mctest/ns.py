# SPDX-License-Identifier: Apache-2.0
"""Entering a network namespace (python 3.11 has no os.setns)."""
import ctypes
import os

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(path, nstype=CLONE_NEWNET):
    """Moves the calling thread into the namespace file PATH; OSError with the
    errno text on failure."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, nstype) != 0:
            e = ctypes.get_errno()
            raise OSError(e, "setns(%s): %s" % (path, os.strerror(e)))
    finally:
        os.close(fd)
