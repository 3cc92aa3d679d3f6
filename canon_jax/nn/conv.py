"""Channel mixing of feature maps: ``pointwise``, a 1 x 1 convolution as a matmul.

Layout: any ``(..., C_in)`` array (NHWC maps, regular features flattened to
``C * |G|``, vector-neuron features) times a ``(C_in, C_out)`` matrix.
"""
from __future__ import annotations

import jax


def pointwise(x: jax.Array, matrix: jax.Array) -> jax.Array:
  """``(..., C_in) @ (C_in, C_out) -> (..., C_out)``: the same matrix at every position.

  Computed on ``x`` flattened to ``(prod(leading axes), C_in)``: one plain 2-D
  matmul, whatever the number of leading axes.
  """
  if matrix.ndim != 2 or x.shape[-1] != matrix.shape[0]:
    raise ValueError(f"matrix must be (C_in, C_out) with C_in = {x.shape[-1]} (the last "
                     f"axis of x); got matrix shape {matrix.shape}.")
  return (x.reshape(-1, x.shape[-1]) @ matrix).reshape(x.shape[:-1] + matrix.shape[-1:])
