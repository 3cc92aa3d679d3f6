"""Input validation shared by the public functions (private).

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument and states the expected and the actual value.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
  """True when ``x`` holds values now (not a tracer inside jit/grad/vmap)."""
  return not isinstance(x, jax.core.Tracer)


def check_choice(value, name: str, choices: Sequence[str]) -> None:
  """``value`` must be one of ``choices``: "name must be 'a', 'b' or 'c'; got ..."."""
  if value not in choices:
    quoted = [repr(c) for c in choices]
    options = quoted[0] if len(quoted) == 1 else (
        ", ".join(quoted[:-1]) + " or " + quoted[-1])
    raise ValueError(f"{name} must be {options}; got {value!r}.")


def check_rank(x, name: str, rank: int | Sequence[int], layout: str = "") -> None:
  ranks = (rank,) if isinstance(rank, int) else tuple(rank)
  if jnp.ndim(x) not in ranks:
    expected = " or ".join(str(r) for r in ranks)
    hint = f" ({layout})" if layout else ""
    raise ValueError(
        f"{name} must have rank {expected}{hint}; got rank {jnp.ndim(x)} with "
        f"shape {tuple(jnp.shape(x))}.")


def check_floating(x, name: str) -> None:
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(
        f"{name} must have a floating dtype (e.g. float32); got {dtype}. "
        "Convert integer images with x.astype(jnp.float32) / 255.")


def check_integer(x, name: str) -> None:
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.integer):
    raise TypeError(f"{name} must have an integer dtype; got {dtype}.")


def check_finite(x, name: str, mode: bool | None = True) -> None:
  """Raises ValueError if ``x`` has NaN/Inf.

  On concrete arrays the check runs now (unless ``mode`` is False). Under ``jit``,
  with ``mode=True``, it is compiled into the computation as a host callback that
  raises when the step runs (the error then surfaces wrapped in a runtime error
  carrying this message); with ``mode=None`` traced arrays are not checked, so a
  compiled step carries no callback; ``mode=False`` checks nothing.
  """
  if mode is False:
    return
  if mode is not None and not isinstance(mode, bool):
    raise TypeError(f"check_finite must be True, False or None; got {mode!r}.")
  if is_concrete(x):
    # JAX arrays are counted where they live (one scalar comes back; works for
    # arrays sharded over several hosts, which np.asarray cannot gather), now, even
    # when a concrete array is closed over by a function being traced.
    if isinstance(x, jax.Array):
      with jax.ensure_compile_time_eval():
        bad = int(x.size - jnp.count_nonzero(jnp.isfinite(x)))
    else:
      bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
      raise ValueError(
          f"{name} must be finite; got {bad} NaN/Inf values out of {np.size(x)}.")
    return
  if mode is None:
    return

  def _host_check(ok):
    if not bool(ok):
      raise ValueError(f"{name} must be finite; got NaN/Inf values.")

  jax.debug.callback(_host_check, jnp.all(jnp.isfinite(x)))


def check_nhwc(images, name: str = "images") -> None:
  """Checks a (B, H, W, C) float image batch and catches NCHW mistakes."""
  check_rank(images, name, 4, "B, H, W, C: NHWC, channels last")
  check_floating(images, name)
  b, h, w, c = images.shape
  if c > 4 and h <= 4 and h < w:
    raise ValueError(
        f"{name} must be NHWC (channels last); shape {images.shape} looks like "
        f"NCHW (C={h}). Transpose with images.transpose(0, 2, 3, 1).")


def check_square(images, name: str = "images") -> None:
  h, w = images.shape[1], images.shape[2]
  if h != w:
    raise ValueError(
        f"{name} must be square (H == W) for rotations by 90 degrees; got "
        f"H={h}, W={w}. Pad or crop to a square first.")


def check_batch(x, name: str, batch: int) -> None:
  if jnp.shape(x)[0] != batch:
    raise ValueError(
        f"{name} must have batch size {batch} (the images' batch); got "
        f"shape {tuple(jnp.shape(x))}.")
