"""Dense 2-D convolutions whose gradients XLA:CPU computes fast.

``lax.conv_general_dilated`` runs fast forwards on XLA:CPU, but its *kernel* gradient
(a convolution whose "filter" is the output cotangent) takes 1.3-6x the forward's time
(6x for ResNet's 7x7/2 stem), and its input gradient of small outputs is dominated by
flipping and transposing the kernel (train/BENCHMARKS.md, 2026-11-28 20:20). The
functions here compute the same numbers with matmuls where that is faster:

* :func:`pointwise`: a 1 x 1 convolution as one 2-D matmul.
* :class:`Dense`: ``flax.linen.Dense`` (same parameters, names and numbers) on the
  input flattened to ``(prod(leading axes), C_in)``: the gradients of a dot with
  3-5 leading axes are far slower on XLA:CPU than those of the 2-D matmul (a ViT-Ti/16
  train step at B=4 929.7 -> 691.2 ms; train/BENCHMARKS.md, tenth pass).
* :func:`conv2d`: ``lax.conv_general_dilated`` forward; kernel gradient as matmuls
  over the kernel's taps, input gradient (outputs up to 112 x 112) as a matmul and
  col2im (a ``jax.custom_vjp``).
* :func:`max_pool2d`: max pooling over the window's strided views; its gradient
  routes the cotangent to each window's first maximum and adds it back by col2im.
* :func:`window_taps`: those views (im2col without the stacking).

The hand-written gradients are XLA:CPU tunings: :func:`matmul_gradients` decides, at
trace time, whether :func:`conv2d` (and the group-conv bias of
:func:`canon_jax.nn.gconv.add_channel_bias`) use them — by default only when JAX's
default backend is the CPU and that CPU has no AVX-512 (with AVX-512, XLA:CPU hands
its convolutions to YNNPACK and its own gradients were 2-9% faster; BENCHMARKS.md,
fix 27); on GPUs and TPUs XLA's own convolution gradients (cuDNN, the TPU's
convolution units) run. :func:`set_matmul_gradients` forces either.

Layouts: images NHWC ``(B, H, W, C_in)``, kernels HWIO ``(kh, kw, C_in, C_out)``;
correlation (no kernel flip), as in ``lax.conv_general_dilated`` and ``torch.nn.Conv2d``.
Extra leading batch axes are supported through ``jax.vmap``.
"""
from __future__ import annotations

import functools
from typing import Sequence, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Padding = Union[str, Sequence[tuple[int, int]]]

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
# Kernel gradients with at most this many rows (kh * kw * C_in) build the whole patch
# matrix (one matmul, memory kh * kw times the input); larger ones accumulate one
# matmul per tap. Measured on XLA:CPU (BENCHMARKS.md): the stem 7x7x3 is 1.3x faster
# as one matmul at B=32, a 3x3x64 kernel 1.2x faster tap by tap.
_MAX_PATCH_ROWS = 256
# Input gradients of outputs with at most this many pixels (H' * W') run as a matmul and
# col2im; larger ones as XLA's transposed convolution. XLA:CPU flips and transposes the
# kernel for the latter and, for strided layers, works on a zero-dilated cotangent (B=2:
# ResNet's 7x7/2 stem 21 -> 12.5 ms, 3x3 56x56x64 14.5 -> 9.2 ms, 7x7x512 18.3 -> 7.9
# ms; only 28x28x128 is ~10% slower, BENCHMARKS.md). Up to ResNet's stem output.
_MAX_COL2IM_PIXELS = 112 * 112
# Convolutions below this many multiply-adds (B H' W' kh kw C_in C_out) run as plain
# ``lax.conv_general_dilated``: the matmul gradients gain nothing measurable there and
# double XLA's compile time (a ResNet-tiny train step: 5.5 -> 12.3 s).
_MIN_CUSTOM_MACS = 50_000_000


# None: the hand-written gradients when JAX's default backend is a CPU without AVX-512
# (they were measured on XLA:CPU only); True / False force them on / off.
_MATMUL_GRADIENTS: bool | None = None


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
  """The feature flags of the host CPU as the kernel reports them (the first
  ``flags`` line of ``path``); empty where that file is missing (not Linux) or has
  no such line."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith("flags"):
          return frozenset(line.partition(":")[2].split())
  except OSError:
    pass
  return frozenset()


@functools.lru_cache(maxsize=None)
def _host_has_avx512() -> bool:
  return "avx512f" in cpu_flags()


def matmul_gradients() -> bool:
  """Whether :func:`conv2d` and the group-conv bias take their hand-written XLA:CPU
  gradients (matmuls, col2im, a row-sum matmul) instead of XLA's own.

  Decided when a function is traced: ``jax.default_backend() == "cpu"`` on a CPU
  without AVX-512 (:func:`cpu_flags`), unless :func:`set_matmul_gradients` forced it.
  Both paths compute the same numbers. Measured (train/BENCHMARKS.md): without
  AVX-512 the hand-written gradients made the C8 + ResNet50 step 1.2x faster; with
  AVX-512, where XLA:CPU runs its convolutions through YNNPACK, XLA's own were 2-9%
  faster (fix 27).
  """
  if _MATMUL_GRADIENTS is None:
    return jax.default_backend() == "cpu" and not _host_has_avx512()
  return _MATMUL_GRADIENTS


def set_matmul_gradients(enabled: bool | None) -> bool | None:
  """Forces the hand-written gradients on (``True``), off (``False``) or back to the
  backend's default (``None``); returns the previous setting.

  Applies to functions traced afterwards: a function already jitted keeps the path it
  was compiled with until it is traced again (a new ``jax.jit`` or new shapes).
  """
  global _MATMUL_GRADIENTS
  if enabled is not None and not isinstance(enabled, bool):
    raise TypeError(f"set_matmul_gradients takes True, False or None; got {enabled!r}")
  previous, _MATMUL_GRADIENTS = _MATMUL_GRADIENTS, enabled
  return previous


def pointwise(x: jax.Array, matrix: jax.Array) -> jax.Array:
  """``(..., C_in) @ (C_in, C_out)`` as one 2-D matmul.

  XLA:CPU runs the gradients of the 2-D form ~30% faster than those of a 4-D einsum,
  and ~50x faster than a 1 x 1 convolution's kernel gradient (BENCHMARKS.md).
  """
  return (x.reshape(-1, x.shape[-1]) @ matrix).reshape(x.shape[:-1] + matrix.shape[-1:])


class Dense(nn.Dense):
  """``flax.linen.Dense`` over the last axis, computed as one 2-D matmul.

  ``(..., C_in) -> (..., features)``. Parameters (``kernel`` (C_in, features),
  ``bias``), their initialisers, dtypes and automatic names (``Dense_0``, ...) are
  those of ``flax.linen.Dense``, so checkpoints and converted weights load unchanged.
  """

  def __call__(self, inputs: jax.Array) -> jax.Array:
    lead = inputs.shape[:-1]
    out = super().__call__(inputs.reshape(-1, inputs.shape[-1]))
    return out.reshape(*lead, out.shape[-1])


def conv2d(x: jax.Array, kernel: jax.Array, strides: int | tuple[int, int] = 1,
           padding: Padding = "SAME") -> jax.Array:
  """2-D correlation ``(B, H, W, C_in) x (kh, kw, C_in, C_out) -> (B, H', W', C_out)``.

  The same function as ``lax.conv_general_dilated(x, kernel, strides, padding,
  dimension_numbers=("NHWC", "HWIO", "NHWC"))`` (no dilation, no groups), with a
  kernel gradient computed by matmuls. 1 x 1 kernels without padding are a strided
  subsampling and a matmul (:func:`pointwise`) on every backend; convolutions under
  5e7 multiply-adds, and all of them where :func:`matmul_gradients` is off (by
  default GPUs, TPUs and CPUs with AVX-512), are plain ``lax`` convolutions (faster to
  compile, as fast to run).

  Args:
    x: NHWC images or feature maps.
    kernel: HWIO kernel; ``kernel.shape[2]`` must equal ``x.shape[-1]``.
    strides: one stride for both axes, or ``(sh, sw)``.
    padding: ``"SAME"``, ``"VALID"`` or ``((top, bottom), (left, right))`` (>= 0).
  """
  if x.ndim != 4:
    raise ValueError(f"conv2d expects NHWC inputs of rank 4, got shape {x.shape}")
  if kernel.ndim != 4 or kernel.shape[2] != x.shape[-1]:
    raise ValueError(f"kernel must be (kh, kw, C_in, C_out) with C_in = {x.shape[-1]} "
                     f"channels of x; got kernel shape {kernel.shape}")
  strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
  pads = _explicit_padding(x.shape[1:3], kernel.shape[:2], strides, padding)
  if kernel.shape[:2] == (1, 1) and pads == ((0, 0), (0, 0)):
    return pointwise(x[:, ::strides[0], ::strides[1]], kernel[0, 0])
  out_h, out_w = _output_shape(x.shape[1:3], kernel.shape[:2], strides, pads)
  if (not matmul_gradients()
      or x.shape[0] * out_h * out_w * np.prod(kernel.shape) < _MIN_CUSTOM_MACS):
    return _lax_conv(x, kernel, strides, pads)
  return _conv(x, kernel, strides, pads)


def max_pool2d(x: jax.Array, window: int | tuple[int, int], strides: int | tuple[int, int],
               padding: Padding = "VALID") -> jax.Array:
  """Max pooling ``(B, H, W, C) -> (B, H', W', C)`` over the window's strided views
  (padding with -inf, like ``flax.linen.max_pool``), with a hand-written gradient.

  Same values as ``nn.max_pool`` (NaN propagates). The gradient goes to the first
  maximum of each window in row-major window order, as in ``torch.nn.MaxPool2d``;
  the forward keeps only that index (int8) for the backward, which is col2im of the
  routed cotangent (no select-and-scatter, no recomputation of the window's maxima).
  """
  if x.ndim != 4:
    raise ValueError(f"max_pool2d expects NHWC inputs of rank 4, got shape {x.shape}")
  window = (window, window) if isinstance(window, int) else tuple(window)
  strides = (strides, strides) if isinstance(strides, int) else tuple(strides)
  pads = _explicit_padding(x.shape[1:3], window, strides, padding)
  return _max_pool(x, window, strides, pads)


def _pool_argmax(x, window, strides, pads):
  """(max, index of the first maximum in the window) of every output pixel."""
  xp = jnp.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-jnp.inf)
  taps = window_taps(xp, window, strides, ((0, 0), (0, 0)))
  dtype = jnp.int8 if len(taps) <= 127 else jnp.int32
  best, arg = taps[0], jnp.zeros(taps[0].shape, dtype)
  for t, tap in enumerate(taps[1:], 1):
    take = (tap > best) | (jnp.isnan(tap) & ~jnp.isnan(best))
    best = jnp.where(take, tap, best)
    arg = jnp.where(take, jnp.asarray(t, dtype), arg)
  return best, arg


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, pads):
  return _pool_argmax(x, window, strides, pads)[0]


def _max_pool_fwd(x, window, strides, pads):
  best, arg = _pool_argmax(x, window, strides, pads)
  # The input's height, width and dtype, carried by an empty array.
  return best, (arg, jnp.zeros((0,) + x.shape[1:3] + (0,), x.dtype))


def _max_pool_bwd(window, strides, pads, residuals, ct):
  arg, like = residuals
  (kh, kw), (b, ho, wo, c) = window, ct.shape
  x_shape = (b,) + like.shape[1:3] + (c,)
  cols = jnp.stack([jnp.where(arg == t, ct, jnp.zeros((), ct.dtype))
                    for t in range(kh * kw)], axis=3).reshape(b, ho, wo, kh, kw, c)
  return (_col2im(cols, x_shape, strides, pads).astype(like.dtype),)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def _explicit_padding(spatial, window, strides, padding) -> tuple[tuple[int, int], ...]:
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"padding must be 'SAME', 'VALID' or ((top, bottom), (left, right)); "
                       f"got {padding!r}")
    return tuple(lax.padtype_to_pads(spatial, window, strides, padding.upper()))
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  if len(pads) != 2 or min(min(p) for p in pads) < 0:
    raise ValueError(f"padding must be two non-negative (low, high) pairs; got {padding!r}")
  return pads


def _output_shape(spatial, window, strides, pads) -> tuple[int, int]:
  """(H', W') of a correlation with explicit padding."""
  return tuple((size + lo + hi - k) // s + 1
               for size, k, s, (lo, hi) in zip(spatial, window, strides, pads))


def _lax_conv(x, kernel, strides, pads):
  return lax.conv_general_dilated(x, kernel, strides, pads,
                                  dimension_numbers=_DIMENSION_NUMBERS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, strides, pads):
  return _lax_conv(x, kernel, strides, pads)


def _conv_fwd(x, kernel, strides, pads):
  return _lax_conv(x, kernel, strides, pads), (x, kernel)


def _conv_bwd(strides, pads, residuals, ct):
  x, kernel = residuals
  if ct.shape[1] * ct.shape[2] <= _MAX_COL2IM_PIXELS:
    dx = _input_gradient(x.shape, ct, kernel, strides, pads)
  else:
    _, input_vjp = jax.vjp(lambda x: _lax_conv(x, kernel, strides, pads), x)
    dx = input_vjp(ct)[0]
  return dx, _kernel_gradient(x, ct, kernel.shape, strides, pads).astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def window_taps(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
                pads: Sequence[tuple[int, int]], out_shape: tuple[int, int] | None = None
                ) -> list[jax.Array]:
  """The ``kh * kw`` strided views a correlation reads, row-major over the window.

  Tap ``dy * kw + dx`` is ``(B, H', W', C)``: the (zero-padded) input pixels that
  ``kernel[dy, dx]`` multiplies. Stacking the taps gives im2col patches.
  ``out_shape`` is ``(H', W')``; computed from the input when omitted.
  """
  (kh, kw), (sh, sw) = window, strides
  xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  ho, wo = out_shape or _output_shape(x.shape[1:3], window, strides, pads)
  return [xp[:, dy:dy + sh * (ho - 1) + 1:sh, dx:dx + sw * (wo - 1) + 1:sw, :]
          for dy in range(kh) for dx in range(kw)]


def _kernel_gradient(x, ct, kernel_shape, strides, pads):
  """``d<ct, conv(x, w)>/dw``: for every tap, the input pixels it reads ``(N, C_in)``,
  transposed, times the cotangent ``(N, C_out)``."""
  kh, kw, cin, cout = kernel_shape
  taps = window_taps(x, (kh, kw), strides, pads, ct.shape[1:3])
  ct = ct.reshape(-1, cout)
  if kh * kw * cin <= _MAX_PATCH_ROWS:
    patches = jnp.stack(taps, axis=3).reshape(-1, kh * kw * cin)
    grad = _transposed_matmul(patches, ct)
  else:
    grad = jnp.stack([_transposed_matmul(t.reshape(-1, cin), ct) for t in taps])
  return grad.reshape(kernel_shape)


def _input_gradient(x_shape, ct, kernel, strides, pads):
  """``d<ct, conv(x, w)>/dx`` as one matmul ``ct (N, C_out) @ w.T -> (N, kh kw C_in)``
  and col2im: every tap's columns added back where that tap read them.

  col2im by parity class: padded input row ``sh * m + a`` receives tap ``dy = a + sh t``
  of output row ``m - t`` (columns alike), so each of the ``sh * sw`` classes is a
  sum of shifted (zero-padded) tap columns, one elementwise fusion; the classes are
  interleaved after. No scatter, and no work on the zeros a transposed convolution
  dilates its input with.
  """
  kh, kw, cin, cout = kernel.shape
  b, ho, wo, _ = ct.shape
  cols = lax.dot_general(ct.reshape(-1, cout), kernel.reshape(-1, cout),
                         (((1,), (1,)), ((), ()))).reshape(b, ho, wo, kh, kw, cin)
  return _col2im(cols, x_shape, strides, pads)


def _col2im(cols, x_shape, strides, pads):
  """Adds columns ``(B, H', W', kh, kw, C)`` back onto the input pixels each tap read:
  ``(B, H, W, C)``, the transpose of :func:`window_taps` (by parity class, see
  :func:`_input_gradient`)."""
  b, ho, wo, kh, kw, cin = cols.shape
  sh, sw = strides
  (top, bottom), (left, right) = pads
  # Rows/columns per parity class covering the padded input; since the last output
  # row's taps end inside it (sh (ho - 1) + kh <= padded height), every shifted tap
  # below fits (mh - ho - t >= 0).
  mh = -(-(x_shape[1] + top + bottom) // sh)
  mw = -(-(x_shape[2] + left + right) // sw)
  classes = []
  for a in range(sh):
    row = []
    for c in range(sw):
      acc = jnp.zeros((b, mh, mw, cin), cols.dtype)
      for t in range(-(-(kh - a) // sh)):
        for u in range(-(-(kw - c) // sw)):
          acc = acc + jnp.pad(cols[:, :, :, a + sh * t, c + sw * u, :],
                              ((0, 0), (t, mh - ho - t), (u, mw - wo - u), (0, 0)))
      row.append(acc)
    classes.append(jnp.stack(row, axis=3))                     # (b, mh, mw, sw, cin)
  dxp = jnp.stack(classes, axis=2).reshape(b, mh * sh, mw * sw, cin)
  return dxp[:, top:top + x_shape[1], left:left + x_shape[2], :]


def _transposed_matmul(a, b):
  """``a.T @ b`` accumulated in float32 at least."""
  return lax.dot_general(a, b, (((0,), (0,)), ((), ())),
                         preferred_element_type=jnp.promote_types(a.dtype, jnp.float32))
