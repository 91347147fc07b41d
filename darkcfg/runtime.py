"""Process-wide settings for fast CPU inference (opt-in; nothing here runs on import)."""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["tune_malloc"]

# glibc mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_MAX = -4


def tune_malloc(keep_mb: int = 1024) -> bool:
    """Make glibc keep freed memory for reuse instead of returning it to the OS.

    PyTorch's CPU allocator gets every layer output from malloc. glibc serves large blocks with
    mmap and unmaps them on free, so each forward pass pays page faults (and zeroing) for every
    big activation again; on a VM or a loaded machine that can cost more than the convolutions.
    This serves them from the heap and keeps up to `keep_mb` MiB of freed memory around.
    Process-wide, like the MALLOC_* environment variables it mirrors; returns False where the C
    library is not glibc (nothing is changed then)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    keep = max(0, min(int(keep_mb), 2047)) * 2**20
    return bool(mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, keep)
                and mallopt(_M_TOP_PAD, 64 * 2**20))
