import jax
import jax.numpy as jnp
import numpy as np
import pytest

import canon_jax as cj
from canon_jax import frame_averaging as fa
from helpers import elements

KEY = jax.random.PRNGKey(0)
B, S, C, K = 4, 12, 2, 5
W_PRED = jax.random.normal(jax.random.PRNGKey(1), (S * S * C, K))
W_BAD = jax.random.normal(jax.random.PRNGKey(2), (S * S * C, 8))


def predictor(images):
  """Not invariant: a linear map of the raw pixels."""
  return images.reshape(images.shape[0], -1) @ W_PRED


def _canonicalizer(group):
  m = cj.ImageCanonicalizer(group=group, features=4, num_layers=2, resize=None,
                            input_crop_ratio=1.0)
  x = jax.random.normal(KEY, (B, S, S, C))
  v = m.init(KEY, x)
  return jax.jit(lambda im: m.apply(v, im)), x


def test_top_k_weights():
  logits = jnp.array([[0.0, 2.0, 1.0, 2.0], [1.0, -1.0, 0.5, 0.0]])
  w1 = fa.top_k_weights(logits, 1)
  np.testing.assert_array_equal(w1, jax.nn.one_hot(jnp.argmax(logits, -1), 4))
  w2 = fa.top_k_weights(logits, 2, beta=2.0)
  q = np.exp(2 * np.asarray(logits))
  np.testing.assert_allclose(w2[0], [0, 0.5, 0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(w2[1], [q[1, 0], 0, q[1, 2], 0] / (q[1, 0] + q[1, 2]),
                             rtol=1e-6)
  np.testing.assert_allclose(fa.top_k_weights(logits, 4), jax.nn.softmax(logits),
                             rtol=1e-6)
  with pytest.raises(ValueError, match=r"k must be an int in \[1, \|G\|=4\]; got 5"):
    fa.top_k_weights(logits, 5)


def test_k1_is_the_hard_canonicalized_prediction():
  g = cj.dihedral(4)
  canon, x = _canonicalizer(g)
  r = canon(x)
  p1 = fa.frame_average(predictor, x, r.logits, g, 1)
  want = jax.nn.softmax(predictor(r.canonical))
  np.testing.assert_allclose(p1, want, rtol=1e-5, atol=1e-7)
  np.testing.assert_array_equal(jnp.argmax(p1, -1), jnp.argmax(predictor(r.canonical), -1))


@pytest.mark.parametrize("name", ["C4", "D4"])
def test_curve_matches_frame_average_and_every_k_is_invariant(name):
  g = cj.from_name(name)
  canon, x = _canonicalizer(g)
  logits = canon(x).logits
  curve = jax.jit(fa.frame_averaging_curve, static_argnums=(0, 3))(
      predictor, x, logits, g)
  assert curve.shape == (g.order, B, K)
  np.testing.assert_allclose(curve.sum(-1), 1.0, rtol=1e-5)
  for k in range(1, g.order + 1):
    np.testing.assert_allclose(curve[k - 1], fa.frame_average(predictor, x, logits, g, k),
                               rtol=1e-5, atol=1e-6)
  for a in range(1, g.order):
    xa = cj.transform_images(x, g, elements(a, B))
    moved = fa.frame_averaging_curve(predictor, xa, canon(xa).logits, g)
    np.testing.assert_allclose(moved, curve, rtol=1e-5, atol=1e-6)
  # the averages differ between k's: the curve is not a constant
  assert float(jnp.abs(curve[-1] - curve[0]).max()) > 1e-3


def test_full_average_needs_an_equivariant_canonicalizer():
  g = cj.cyclic(4)
  _, x = _canonicalizer(g)
  bad = lambda im: im.reshape(im.shape[0], -1) @ W_BAD[:, :4]  # not equivariant
  base = fa.frame_average(predictor, x, bad(x), g, 4)
  xa = cj.transform_images(x, g, elements(1, B))
  assert not np.allclose(fa.frame_average(predictor, xa, bad(xa), g, 4), base,
                         atol=1e-3)


def test_bad_logits():
  g = cj.cyclic(4)
  x = jnp.zeros((B, S, S, C))
  with pytest.raises(ValueError, match=r"logits must have shape \(B, \|G\|\) = \(4, 4\)"):
    fa.frame_average(predictor, x, jnp.zeros((B, 8)), g, 1)
  with pytest.raises(ValueError, match=r"k must be an int in \[1, \|G\|=4\]; got 0"):
    fa.frame_average(predictor, x, jnp.zeros((B, 4)), g, 0)
