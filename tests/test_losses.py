import jax
import jax.numpy as jnp
import numpy as np
import pytest

import canon_jax as cj


def test_identity_prior_is_cross_entropy_to_element_zero():
  logits = jnp.array([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, -1.0]])
  # by hand: -log(e^2 / (e^2 + 3)) and -log(1 / (1 + e + 1 + e^-1))
  want = np.mean([-np.log(np.e**2 / (np.e**2 + 3)),
                  -np.log(1 / (2 + np.e + np.exp(-1)))])
  np.testing.assert_allclose(cj.prior_loss(logits), want, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(cj.prior_loss)(logits), want, rtol=1e-6)
  np.testing.assert_allclose(cj.prior_loss(logits, jnp.array([1.0, 0, 0, 0])), want,
                             rtol=1e-6)


def test_general_prior_is_kl():
  logits = jnp.array([[0.5, -0.2, 1.0]])
  p = np.array([0.2, 0.3, 0.5])
  q = np.exp([0.5, -0.2, 1.0]) / np.exp([0.5, -0.2, 1.0]).sum()
  np.testing.assert_allclose(cj.prior_loss(logits, p), np.sum(p * np.log(p / q)),
                             rtol=1e-5)
  # per-sample prior (B, |G|) and a prior that equals q gives 0
  np.testing.assert_allclose(cj.prior_loss(logits, jnp.asarray(q)[None]), 0.0, atol=1e-6)


def test_gradient_step_raises_identity_probability():
  logits = jax.random.normal(jax.random.PRNGKey(0), (8, 8))
  g = jax.grad(cj.prior_loss)(logits)
  after = logits - 0.5 * g
  p0 = jax.nn.softmax(logits)[:, 0]
  p1 = jax.nn.softmax(after)[:, 0]
  assert bool(jnp.all(p1 > p0))


def test_rotation_prior_loss_by_hand():
  c, s = np.cos(0.3), np.sin(0.3)
  r = np.array([[[c, -s, 0], [s, c, 0], [0, 0, 1]]], np.float32)
  want = (2 * (c - 1) ** 2 + 2 * s**2) / 9
  np.testing.assert_allclose(cj.rotation_prior_loss(jnp.asarray(r)), want, rtol=1e-5)
  assert float(cj.rotation_prior_loss(jnp.eye(3)[None])) == 0.0


def test_bad_priors():
  logits = jnp.zeros((2, 4))
  with pytest.raises(ValueError, match="prior must be a probability distribution"):
    cj.prior_loss(logits, jnp.array([0.5, 0.5, 0.5, 0.0]))
  with pytest.raises(ValueError, match=r"prior must have \|G\|=4 entries"):
    cj.prior_loss(logits, jnp.ones(3) / 3)
  with pytest.raises(ValueError, match="prior must have batch size 2"):
    cj.prior_loss(logits, jnp.ones((3, 4)) / 4)
  with pytest.raises(ValueError, match="logits must have rank 2"):
    cj.prior_loss(jnp.zeros(4))
  with pytest.raises(ValueError, match=r"rotations must be square matrices"):
    cj.rotation_prior_loss(jnp.zeros((2, 3, 2)))
