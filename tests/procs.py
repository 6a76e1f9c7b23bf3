"""Child processes started by tests die with the test run, even when pytest itself is killed (no finally runs):
Linux PR_SET_PDEATHSIG. Pass `preexec_fn=die_with_parent` to subprocess/asyncio process creation."""
from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
