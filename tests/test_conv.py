"""canon_jax.nn.conv.pointwise: one (C_in, C_out) matrix applied to the last axis."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from canon_jax.nn.conv import pointwise


def test_pointwise_is_a_1x1_convolution():
  x = jax.random.normal(jax.random.key(6), (2, 4, 5, 3))
  m = jax.random.normal(jax.random.key(7), (3, 6))
  want = jax.lax.conv_general_dilated(x, m[None, None], (1, 1), "VALID",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(pointwise(x, m), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(3,), (4, 3), (2, 5, 3, 3)])
def test_pointwise_mixes_the_last_axis_of_any_rank(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  m = jax.random.normal(jax.random.key(1), (3, 2))
  got = pointwise(x, m)
  assert got.shape == shape[:-1] + (2,)
  np.testing.assert_allclose(got, jnp.einsum("...i,io->...o", x, m), rtol=1e-6, atol=1e-6)


def test_pointwise_rejects_a_matrix_of_the_wrong_shape():
  with pytest.raises(ValueError, match="matrix must be"):
    pointwise(jnp.zeros((2, 3)), jnp.zeros((4, 2)))
  with pytest.raises(ValueError, match="matrix must be"):
    pointwise(jnp.zeros((2, 3)), jnp.zeros((3,)))
