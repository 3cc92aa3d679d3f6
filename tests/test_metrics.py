import jax
import jax.numpy as jnp
import numpy as np
import pytest

import canon_jax as cj


def test_per_element_and_group_averaged_accuracy_by_hand():
  preds = jnp.array([[0, 1, 2, 3], [0, 1, 0, 0], [1, 1, 1, 1]])  # (|G|=3, B=4)
  labels = jnp.array([0, 1, 2, 3])
  np.testing.assert_allclose(cj.per_element_accuracy(preds, labels), [1.0, 0.5, 0.25])
  np.testing.assert_allclose(cj.group_averaged_accuracy(preds, labels), 1.75 / 3)
  mask = jnp.array([1.0, 1.0, 0.0, 0.0])
  np.testing.assert_allclose(cj.per_element_accuracy(preds, labels, mask), [1, 1, 0.5])
  # logits are argmaxed
  logits = jax.nn.one_hot(preds, 4)
  np.testing.assert_allclose(cj.per_element_accuracy(logits, labels), [1.0, 0.5, 0.25])
  # invariance: only sample 1 has the same prediction everywhere
  np.testing.assert_allclose(cj.invariance_rate(preds), 0.25)


def test_identity_rate_and_alignment():
  e = jnp.array([0, 0, 1, 3])
  np.testing.assert_allclose(cj.identity_rate(e), 0.5)
  a = cj.orientation_alignment(e, None, 4)
  np.testing.assert_allclose(a["histogram"], [0.5, 0.25, 0.0, 0.25])
  np.testing.assert_allclose(a["total_variation"], 0.5)
  np.testing.assert_allclose(a["kl"], -np.log(0.5), rtol=1e-4)
  u = cj.orientation_alignment(jnp.array([0, 1, 2, 3]), jnp.ones(4) / 4, 4)
  np.testing.assert_allclose(u["kl"], 0.0, atol=1e-5)
  np.testing.assert_allclose(u["total_variation"], 0.0, atol=1e-7)


def test_evaluate_under_group_with_an_invariant_and_a_non_invariant_model():
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8, 1))
  labels = jnp.zeros((6,), jnp.int32)
  invariant = lambda im: jnp.stack([jnp.ones(im.shape[0]), im.mean((1, 2, 3))], -1)
  r = cj.evaluate_under_group(invariant, x, labels, "D4")
  assert float(r["g_averaged_accuracy"]) == 1.0 and float(r["invariance_rate"]) == 1.0
  # class = "top row brighter than bottom row": changes under rotation.
  upright = lambda im: jnp.stack([im[:, 0].mean((1, 2)), im[:, -1].mean((1, 2))], -1)
  labels = jnp.argmax(upright(x), -1).astype(jnp.int32)
  r = cj.evaluate_under_group(upright, x, labels, "C4")
  assert float(r["accuracy"]) == 1.0
  assert float(r["per_element_accuracy"][2]) == 0.0  # upside down: always wrong
  assert float(r["invariance_rate"]) == 0.0


def test_metric_errors():
  with pytest.raises(TypeError, match="labels must have an integer dtype"):
    cj.per_element_accuracy(jnp.zeros((2, 3), jnp.int32), jnp.zeros(3))
  with pytest.raises(ValueError, match="mask must have batch size 3"):
    cj.identity_rate(jnp.zeros(3, jnp.int32), jnp.ones(2))
  with pytest.raises(ValueError, match=r"prior must have shape \(4,\)"):
    cj.orientation_alignment(jnp.zeros(3, jnp.int32), jnp.ones(3) / 3, 4)


def test_evaluate_under_group_reports_the_frame_averaging_curve():
  g = cj.dihedral(4)
  x = jax.random.normal(jax.random.PRNGKey(0), (8, 12, 12, 2))
  canon = cj.ImageCanonicalizer(group=g, features=4, num_layers=2, resize=None,
                                input_crop_ratio=1.0)
  v = canon.init(jax.random.PRNGKey(0), x)
  w = jax.random.normal(jax.random.PRNGKey(1), (12 * 12 * 2, 3))
  predictor = lambda im: im.reshape(im.shape[0], -1) @ w
  hard = lambda im: predictor(canon.apply(v, im).canonical)
  labels = jnp.argmax(predictor(x), -1).astype(jnp.int32)
  r = cj.evaluate_under_group(hard, x, labels, g,
                              canonicalizer_fn=lambda im: canon.apply(v, im).logits,
                              predictor_fn=predictor)
  assert r["top_k_accuracy"].shape == (8,) and r["top_k_g_averaged_accuracy"].shape == (8,)
  # k = 1 is the hard canonicalized model; with an equivariant canonicalizer every
  # k is invariant, so G-averaged accuracy equals accuracy as is, for every k.
  np.testing.assert_allclose(r["top_k_accuracy"][0], r["accuracy"])
  np.testing.assert_allclose(r["top_k_g_averaged_accuracy"][0], r["g_averaged_accuracy"])
  np.testing.assert_allclose(r["top_k_g_averaged_accuracy"], r["top_k_accuracy"])
  plain = cj.evaluate_under_group(hard, x, labels, g)
  assert "top_k_accuracy" not in plain
  with pytest.raises(ValueError, match="must be given together"):
    cj.evaluate_under_group(hard, x, labels, g, predictor_fn=predictor)
