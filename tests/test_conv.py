"""canon_jax.nn.conv.pointwise: a 1 x 1 convolution as one matmul."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from canon_jax.nn import conv as cconv


@pytest.mark.parametrize("shape", [(5, 3), (2, 4, 6, 3), (2, 4, 6, 2, 3)])
def test_pointwise_is_a_1x1_convolution_at_every_position(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  m = jax.random.normal(jax.random.key(1), (3, 7))
  got = cconv.pointwise(x, m)
  assert got.shape == shape[:-1] + (7,)
  np.testing.assert_allclose(got, jnp.einsum("...c,cd->...d", x, m), rtol=1e-5, atol=1e-5)
  if len(shape) == 4:   # NHWC: the same as XLA's 1 x 1 convolution
    ref = jax.lax.conv_general_dilated(x, m[None, None], (1, 1), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_pointwise_rejects_mismatched_channels():
  with pytest.raises(ValueError, match="C_in = 3"):
    cconv.pointwise(jnp.zeros((2, 3)), jnp.zeros((4, 5)))
