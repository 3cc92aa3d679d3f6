import jax
import jax.numpy as jnp
import numpy as np
import pytest

from canon_jax.selection import gumbel_straight_through_weights

LOGITS = jnp.array([[1.0, 0.0, -0.5, 2.0], [0.3, 0.3, -1.0, 0.0]])


def test_forward_is_one_hot_of_the_perturbed_argmax():
  key = jax.random.PRNGKey(3)
  w = jax.jit(gumbel_straight_through_weights)(LOGITS, key)
  assert w.shape == LOGITS.shape and w.dtype == LOGITS.dtype
  np.testing.assert_array_equal(np.sort(np.asarray(w), -1), [[0, 0, 0, 1]] * 2)
  # the hot element is argmax(logits + g) with the same noise
  g = jax.random.gumbel(key, LOGITS.shape)
  np.testing.assert_array_equal(jnp.argmax(w, -1), jnp.argmax(LOGITS + g, -1))
  # tau only shapes the gradient
  np.testing.assert_array_equal(gumbel_straight_through_weights(LOGITS, key, 0.1), w)


@pytest.mark.parametrize("tau", [0.5, 1.0, 3.0])
def test_gradient_is_the_relaxed_softmax_gradient(tau):
  key = jax.random.PRNGKey(1)
  target = jnp.array([0.0, 1.0, 2.0, -1.0])
  loss = lambda l: jnp.sum(gumbel_straight_through_weights(l, key, tau) * target)
  grad = jax.grad(loss)(LOGITS)
  assert bool(jnp.all(jnp.isfinite(grad))) and float(jnp.abs(grad).max()) > 0
  g = jax.random.gumbel(key, LOGITS.shape)
  want = jax.grad(lambda l: jnp.sum(jax.nn.softmax((l + g) / tau) * target))(LOGITS)
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)


def test_samples_follow_softmax_of_the_logits():
  logits = jnp.array([1.0, 0.0, -0.5, 2.0, 0.5])
  n = 20000
  keys = jax.random.split(jax.random.PRNGKey(0), n)
  w = jax.jit(jax.vmap(gumbel_straight_through_weights, (None, 0)))(logits, keys)
  assert set(np.unique(np.asarray(w)).tolist()) == {0.0, 1.0}  # exactly one-hot
  counts = np.asarray(w.sum(0))
  expected = n * np.asarray(jax.nn.softmax(logits))
  chi2 = float(np.sum((counts - expected) ** 2 / expected))
  # 4 degrees of freedom: P(chi2 > 18.5) < 0.001.
  assert chi2 < 18.5, (counts, expected, chi2)


def test_bad_arguments():
  key = jax.random.PRNGKey(0)
  with pytest.raises(ValueError, match="tau must be > 0; got 0"):
    gumbel_straight_through_weights(LOGITS, key, 0.0)
  with pytest.raises(TypeError, match="logits must have a floating dtype"):
    gumbel_straight_through_weights(jnp.zeros((2, 4), jnp.int32), key)
  with pytest.raises(ValueError, match="logits must have a last axis"):
    gumbel_straight_through_weights(jnp.float32(1.0), key)
