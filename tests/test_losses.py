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


# -- data-driven priors ---------------------------------------------------------------

TEMPLATE = jnp.zeros((16, 16)).at[0:2, 0:6].set(1.0)  # a bar: top rows, left part


def _upright_only_predictor(images):
  """3 classes; confident (class 0) only when the bar sits upright, else uniform-ish
  over classes 1 and 2. Every D4 pose of the bar is distinct."""
  overlap = jnp.sum(images[..., 0] * TEMPLATE, axis=(1, 2)) / jnp.sum(TEMPLATE)
  c = 10.0 * overlap - 5.0
  return jnp.stack([c, jnp.zeros_like(c), jnp.zeros_like(c)], -1)


def _bar_images(batch):
  noise = 0.05 * jax.random.normal(jax.random.PRNGKey(4), (batch, 16, 16, 2))
  return noise + TEMPLATE[None, :, :, None]


@pytest.mark.parametrize("name", ["C4", "D4"])
@pytest.mark.parametrize("metric", ["max_prob", "neg_entropy"])
def test_model_confidence_prior_peaks_at_the_pose_the_predictor_likes(name, metric):
  g = cj.from_name(name)
  upright = _bar_images(3)
  for a in range(g.order):
    x = cj.transform_images(upright, g, jnp.full((3,), a, jnp.int32))
    scores = cj.losses.model_confidence_scores(_upright_only_predictor, x, g,
                                               metric=metric)
    assert scores.shape == (3, g.order)
    prior = cj.losses.model_confidence_prior(scores, tau=0.1)
    np.testing.assert_allclose(prior.sum(-1), 1.0, rtol=1e-6)
    assert bool(jnp.all(prior >= 0))
    np.testing.assert_array_equal(jnp.argmax(prior, -1), a)
    # canonicalizing with the prior's mode gives the upright image back
    np.testing.assert_array_equal(
        cj.transform_images(x, g, g.inverse(jnp.argmax(prior, -1))), upright)
  # a usable per-sample prior for prior_loss
  loss = cj.prior_loss(jnp.zeros((3, g.order)), prior)
  assert np.isfinite(float(loss)) and float(loss) > 0


def test_model_confidence_prior_by_hand_and_temperature():
  scores = jnp.array([[0.9, 0.5, 0.5, 0.1]])
  p = cj.losses.model_confidence_prior(scores, tau=0.2)
  e = np.exp(np.array([0.9, 0.5, 0.5, 0.1]) / 0.2)
  np.testing.assert_allclose(p, (e / e.sum())[None], rtol=1e-6)
  flat = cj.losses.model_confidence_prior(scores, tau=1e3)
  np.testing.assert_allclose(flat, 0.25, atol=1e-3)
  # a constant target: no gradient flows back to the scores
  g = jax.grad(lambda s: cj.prior_loss(jnp.ones((1, 4)),
                                       cj.losses.model_confidence_prior(s)))(scores)
  np.testing.assert_array_equal(g, 0.0)


def test_dataset_prior():
  dp = cj.losses.dataset_prior
  np.testing.assert_allclose(dp(jnp.array([0, 0, 1, 3]), 4), [0.5, 0.25, 0.0, 0.25])
  np.testing.assert_allclose(dp(jnp.array([0, 0, 1, 3]), 4, smoothing=1.0),
                             np.array([3, 2, 1, 2]) / 8)
  np.testing.assert_allclose(
      dp(jnp.array([0, 0, 1, 3]), 4, mask=jnp.array([1.0, 0.0, 1.0, 0.0])),
      [0.5, 0.5, 0.0, 0.0])
  np.testing.assert_allclose(dp(jnp.array([2.0, 0.0, 1.0, 1.0]), 4, smoothing=0.5),
                             np.array([2.5, 0.5, 1.5, 1.5]) / 6)
  # a shared (|G|,) prior in prior_loss equals the broadcast per-sample one
  prior = dp(jnp.array([0, 0, 1, 3, 2]), 4, smoothing=0.1)
  np.testing.assert_allclose(prior.sum(), 1.0, rtol=1e-6)
  logits = jax.random.normal(jax.random.PRNGKey(0), (5, 4))
  np.testing.assert_allclose(cj.prior_loss(logits, prior),
                             cj.prior_loss(logits, jnp.tile(prior, (5, 1))), rtol=1e-6)
  np.testing.assert_allclose(jax.jit(dp, static_argnums=1)(jnp.array([1, 1]), 4),
                             [0, 1, 0, 0])


def test_bad_data_priors():
  dp = cj.losses.dataset_prior
  with pytest.raises(ValueError, match=r"observations must lie in \[0, 4\)"):
    dp(jnp.array([0, 4]), 4)
  with pytest.raises(ValueError, match=r"a float histogram must have shape \(4,\)"):
    dp(jnp.ones(3), 4)
  with pytest.raises(ValueError, match="smoothing must be >= 0"):
    dp(jnp.array([0]), 4, smoothing=-1.0)
  with pytest.raises(ValueError, match="needs at least one observation"):
    dp(jnp.zeros(4), 4)
  with pytest.raises(ValueError, match="tau must be > 0"):
    cj.losses.model_confidence_prior(jnp.zeros((2, 4)), tau=0.0)
  with pytest.raises(ValueError, match="metric must be 'max_prob' or 'neg_entropy'"):
    cj.losses.model_confidence_scores(_upright_only_predictor, _bar_images(1), "C4",
                                      metric="entropy")
