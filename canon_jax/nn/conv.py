"""Channel mixing of feature maps.

:func:`pointwise` applies one ``(C_in, C_out)`` matrix to the last axis of an array of
any rank: a 1 x 1 convolution of NHWC maps, or a linear map of per-point features.
Convolutions, dense layers and pooling in the models are Flax's own (``nn.Conv``,
``nn.Dense``, ``nn.max_pool``), differentiated by JAX.
"""
from __future__ import annotations

import jax


def pointwise(x: jax.Array, matrix: jax.Array) -> jax.Array:
  """``(..., C_in) @ (C_in, C_out) -> (..., C_out)``, computed as one 2-D matmul over
  the flattened leading axes."""
  if matrix.ndim != 2 or x.shape[-1] != matrix.shape[0]:
    raise ValueError(f"matrix must be (C_in, C_out) with C_in = {x.shape[-1]} channels of "
                     f"x; got matrix shape {matrix.shape}")
  return (x.reshape(-1, x.shape[-1]) @ matrix).reshape(x.shape[:-1] + matrix.shape[-1:])
