"""Keep glibc's malloc from handing large freed blocks back to the OS (the
benchmark's opt-in ``--malloc retain``; nothing in the library or trainer uses it).

XLA:CPU allocates every executable's temporaries as one block per step (451 MB for
the C8 + ResNet50 train step at batch 2, ~7 GB at batch 32). glibc serves blocks
that large with a fresh ``mmap`` (from any thread but the main one even when
``mmap`` is disabled, because a thread arena's heap is at most 64 MB) and unmaps
them on free, so every step faults and zeroes its whole temporary buffer again in
4 KiB pages: 114 k minor faults per batch-2 step, 1.7 M per batch-32 step. The
batch-32 step ran 13-19% faster without them on a 2-core CPU (at batch 2 the
difference was within the noise).

:func:`retain_freed_memory` sets, with ``mallopt``: one arena for every thread
(``M_ARENA_MAX`` 1), no ``mmap`` for large blocks (``M_MMAP_MAX`` 0: they come from
the main heap) and no automatic trimming of the heap (``M_TRIM_THRESHOLD`` -1), so
freed blocks are reused. The cost: the process keeps its peak resident memory until
``malloc_trim(0)`` (:func:`release_freed_memory`) returns the free pages; and all
threads share one arena's lock. Call it first thing, before JAX (or torch) starts
its threads: a thread that already allocated keeps its own arena.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied = False


@functools.lru_cache(maxsize=1)
def _libc():
  """glibc's handle, or None where the C library is not glibc (macOS, musl).

  Looked up once: ``find_library`` runs ``ldconfig``."""
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return None
  name = ctypes.util.find_library("c") or "libc.so.6"
  try:
    libc = ctypes.CDLL(name)
  except OSError:
    return None
  return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def retain_freed_memory() -> bool:
  """Makes glibc reuse freed memory instead of unmapping it (see the module doc).

  Returns True when the settings were applied (now or by an earlier call), False
  where the C library is not glibc (nothing is changed there). Raises RuntimeError
  if glibc rejects a setting.
  """
  global _applied
  if _applied:
    return True
  libc = _libc()
  if libc is None:
    return False
  for param, value, name in ((_M_ARENA_MAX, 1, "M_ARENA_MAX"),
                             (_M_MMAP_MAX, 0, "M_MMAP_MAX"),
                             (_M_TRIM_THRESHOLD, -1, "M_TRIM_THRESHOLD")):
    if libc.mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
      raise RuntimeError(f"glibc mallopt({name}, {value}) failed.")
  _applied = True
  return True


def is_retaining() -> bool:
  """Whether :func:`retain_freed_memory` has been applied in this process."""
  return _applied


def release_freed_memory() -> None:
  """Returns the heap's free pages to the OS (``malloc_trim(0)``; glibc only)."""
  libc = _libc()
  if libc is not None:
    libc.malloc_trim(0)
