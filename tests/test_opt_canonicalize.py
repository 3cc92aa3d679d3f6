import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import canon_jax as cj
from canon_jax import opt_canonicalize as oc
from helpers import elements, smooth_disk_images

KEY = jax.random.PRNGKey(0)


class SmallCNN(nn.Module):
  """Deliberately non-equivariant: strided convs, then flatten + Dense."""
  features: int = 6

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.relu(nn.Conv(8, (3, 3), strides=2)(x))
    return nn.Dense(self.features)(x.reshape(x.shape[0], -1))


def _discrete(group, **kw):
  kw = {"resize": None, "input_crop_ratio": 1.0, **kw}
  return oc.OptimizedGroupCanonicalizer(SmallCNN(), group=group, **kw)


def _check_invariance(m, v, x, g, **apply_kw):
  apply = jax.jit(lambda v, x: m.apply(v, x, **apply_kw))
  base = apply(v, x)
  b = x.shape[0]
  for k in range(g.order):
    r = apply(v, cj.transform_images(x, g, elements(k, b)))
    np.testing.assert_array_equal(r.canonical, base.canonical)
    np.testing.assert_array_equal(r.element, g.compose(jnp.full((b,), k), base.element))
    # logits(k . x)[h] = logits(x)[k^-1 h]
    np.testing.assert_allclose(r.logits, base.logits[:, g.regular_permutation(k)],
                               atol=1e-6)
  np.testing.assert_array_equal(
      base.canonical, cj.transform_images(x, g, g.inverse(base.element)))
  return base


@pytest.mark.parametrize("name,crop", [("C4", 1.0), ("D4", 1.0), ("D4", 0.75)])
def test_canonical_image_is_exactly_invariant_with_a_non_equivariant_cnn(name, crop):
  g = cj.from_name(name)
  x = jax.random.normal(KEY, (4, 16, 16, 3))
  m = _discrete(name, input_crop_ratio=crop)
  v = m.init(KEY, x)
  # f itself is not equivariant: its features on a rotated input are not a
  # permutation of those on the input.
  f = lambda im: SmallCNN().apply({"params": v["params"]["network"]}, im)
  xc = cj.preprocess_images(x, g, crop, None, "none")
  assert not np.allclose(np.sort(f(jnp.rot90(xc, 1, (1, 2))), 0), np.sort(f(xc), 0),
                         atol=1e-3)
  base = _check_invariance(m, v, x, g)
  assert base.features.shape == (4, g.order, 6)
  assert len(set(np.asarray(base.element).tolist())) > 1  # not a constant answer


def test_resnet18_canonicalizer_is_invariant_and_trains_batch_stats():
  g = cj.cyclic(4)
  x = jax.random.normal(KEY, (2, 32, 32, 3))
  m = oc.OptimizedGroupCanonicalizer(cj.models.ResNet18(num_classes=8), group=g,
                                     resize=None, input_crop_ratio=1.0)
  v = m.init(KEY, x)
  assert v["params"]["reference"].shape == (8,)
  _check_invariance(m, v, x, g)
  r, new = m.apply(v, x, train=True, mutable=["batch_stats"])
  assert r.train and r.features.shape == (2, 4, 8)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), v["batch_stats"],
                         new["batch_stats"])
  assert all(jax.tree.leaves(changed))


def test_training_weights_and_gradients_reach_network_and_reference():
  g = cj.dihedral(4)
  x = jax.random.normal(KEY, (3, 16, 16, 2))
  m = _discrete(g, logit_scale=5.0)
  v = m.init(KEY, x)
  r = m.apply(v, x, train=True)
  hard = m.apply(v, x)
  np.testing.assert_array_equal(r.element, hard.element)
  np.testing.assert_allclose(r.canonical, hard.canonical, atol=1e-6)

  def loss(params):
    res = m.apply({"params": params}, x, train=True)
    task = jnp.mean(res.canonical[:, :4] ** 2)  # depends on the selected pose
    return task + oc.optimization_loss(res) + cj.prior_loss(res.logits)

  grads = jax.grad(loss)(v["params"])
  norms = jax.tree.map(lambda a: float(jnp.abs(a).max()), grads)
  assert norms["reference"] > 0
  assert all(n > 0 and np.isfinite(n) for n in jax.tree.leaves(norms["network"]))


def test_gumbel_selection_samples_poses_and_needs_its_rng():
  g = cj.cyclic(4)
  x = jax.random.normal(KEY, (8, 16, 16, 1))
  m = _discrete(g, selection="gumbel", beta=3.0)
  v = m.init(KEY, x)
  apply = jax.jit(lambda v, x, k: m.apply(v, x, train=True, rngs={"gumbel": k}))
  seen = set()
  for s in range(6):
    r = apply(v, x, jax.random.PRNGKey(s))
    np.testing.assert_array_equal(np.sort(np.asarray(r.weights), -1)[:, :-1], 0.0)
    np.testing.assert_array_equal(r.element, jnp.argmax(r.weights, -1))
    np.testing.assert_allclose(
        r.canonical, cj.transform_images(x, g, g.inverse(r.element)), atol=1e-6)
    seen |= set(np.asarray(r.element).tolist())
  assert len(seen) > 1
  # evaluation stays the hard argmax and needs no rng
  np.testing.assert_array_equal(m.apply(v, x).element, jnp.argmax(r.logits, -1))
  with pytest.raises(Exception, match="gumbel"):
    m.apply(v, x, train=True)


def test_fixed_reference_has_no_parameter():
  x = jax.random.normal(KEY, (2, 16, 16, 1))
  m = _discrete("C4", reference="fixed")
  v = m.init(KEY, x)
  assert "reference" not in v["params"]
  _check_invariance(m, v, x, cj.cyclic(4))


def test_orthogonality_loss_by_hand():
  f = jnp.array([[[1.0, 0.0], [1.0, 1.0], [0.0, -2.0]]])  # (B=1, |G|=3, D=2)
  c = 1 / np.sqrt(2)
  # off-diagonal cosines: (0,1) c, (0,2) 0, (1,2) -c; each twice, over 3 * 2 entries
  want = 2 * (c**2 + 0 + c**2) / 6
  np.testing.assert_allclose(oc.orthogonality_loss(f), want, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(oc.orthogonality_loss)(3 * f), want, rtol=1e-6)
  np.testing.assert_allclose(oc.orthogonality_loss(jnp.eye(4)[None] * 2.0), 0.0)
  np.testing.assert_allclose(oc.orthogonality_loss(jnp.ones((2, 4, 3))), 1.0, rtol=1e-6)


def test_artefact_loss_is_zero_for_c4_and_positive_for_c8():
  x = smooth_disk_images(KEY, 2, 16, 2)
  for name, zero in (("C4", True), ("C8", False)):
    m = _discrete(name, artefact=True)
    v = m.init(KEY, x)
    r = m.apply(v, x, train=True, rngs={"artefact": jax.random.PRNGKey(1)})
    assert r.round_trip_features.shape == r.features.shape
    loss = float(oc.artefact_loss(r.features, r.round_trip_features))
    assert (loss == 0.0) if zero else (loss > 1e-6), (name, loss)
    # evaluation runs f once
    assert m.apply(v, x).round_trip_features is None
  by_hand = oc.artefact_loss(jnp.zeros((1, 2, 2)), jnp.array([[[1.0, 2.0], [0, 0]]]))
  np.testing.assert_allclose(by_hand, 5 / 4)


def test_rotation_regression_loss_by_hand():
  phi = jnp.array([0.3, -2.0, 3.0])
  theta = jnp.array([0.3, 1.0, -3.0])
  v = jnp.stack([jnp.cos(phi), jnp.sin(phi)], -1) * jnp.array([[2.0], [0.5], [1.0]])
  rot = lambda a: jnp.array([[jnp.cos(a), -jnp.sin(a)], [jnp.sin(a), jnp.cos(a)]])
  want = np.mean([np.mean((rot(p) - rot(t)) ** 2) for p, t in zip(phi, theta)])
  np.testing.assert_allclose(oc.rotation_regression_loss(v, theta), want, rtol=1e-5)
  np.testing.assert_allclose(want, np.mean(1 - np.cos(phi - theta)), rtol=1e-5)


def _rotation_canonicalizer(**kw):
  net = nn.Sequential([nn.Conv(4, (3, 3), strides=2), nn.relu,
                       lambda y: y.reshape(y.shape[0], -1), nn.Dense(2)])
  kw = {"resize": None, "input_crop_ratio": 1.0, **kw}
  return oc.OptimizedRotationCanonicalizer(net, **kw)


def test_rotation_canonicalizer_readout():
  x = smooth_disk_images(KEY, 4, 16, 2)
  m = _rotation_canonicalizer(group="C8")
  v = m.init(KEY, x)
  r = m.apply(v, x)
  np.testing.assert_allclose(r.angle, jnp.arctan2(r.vectors[:, 1], r.vectors[:, 0]))
  np.testing.assert_array_equal(r.canonical, cj.rotate_images(x, -r.angle))
  np.testing.assert_array_equal(r.element, jnp.argmax(r.logits, -1))
  np.testing.assert_array_equal(
      r.element, np.round(np.asarray(r.angle) / (np.pi / 4)).astype(int) % 8)
  assert r.augmented_vectors is None and float(oc.optimization_loss(r)) == 0.0
  # invert maps the canonical frame back with +angle
  np.testing.assert_array_equal(cj.invert(r.canonical, r),
                                cj.rotate_images(r.canonical, r.angle))
  r = m.apply(v, x, train=True, rngs={"rotation": jax.random.PRNGKey(2)})
  assert r.augmented_vectors.shape == (4, 2) and r.augmented_angles.shape == (4,)
  assert bool(jnp.all((r.augmented_angles >= 0) & (r.augmented_angles < 2 * jnp.pi)))


def test_rotation_regression_teaches_the_network_the_angle():
  x = smooth_disk_images(jax.random.PRNGKey(5), 8, 16, 1, cutoff=0.2)
  m = _rotation_canonicalizer(group="C8")
  v = m.init(KEY, x)
  opt = optax.adam(3e-2)
  state = opt.init(v["params"])

  @jax.jit
  def step(params, state, key):
    def loss(p):
      return oc.optimization_loss(m.apply({"params": p}, x, train=True,
                                          rngs={"rotation": key}))
    val, grads = jax.value_and_grad(loss)(params)
    updates, state = opt.update(grads, state)
    return optax.apply_updates(params, updates), state, val

  params, losses = v["params"], []
  for i in range(300):
    params, state, val = step(params, state, jax.random.PRNGKey(i))
    losses.append(float(val))
  assert np.mean(losses[:10]) > 0.6 and np.mean(losses[-10:]) < 0.4, (
      np.mean(losses[:10]), np.mean(losses[-10:]))


def test_bad_configurations():
  x = jnp.zeros((2, 16, 16, 1))
  with pytest.raises(ValueError, match="selection must be 'softmax' or 'gumbel'"):
    _discrete("C4", selection="hard").init(KEY, x)
  with pytest.raises(ValueError, match="reference must be 'learned' or 'fixed'"):
    _discrete("C4", reference="zero").init(KEY, x)
  with pytest.raises(ValueError, match=r"network must map .* to \(N, D\) vectors"):
    oc.OptimizedGroupCanonicalizer(nn.Conv(2, (3, 3)), group="C4",
                                   resize=None).init(KEY, x)
  with pytest.raises(ValueError, match=r"network must map .* to \(N, 2\) vectors"):
    oc.OptimizedRotationCanonicalizer(SmallCNN(3), resize=None).init(KEY, x)
  with pytest.raises(ValueError, match="group must be a cyclic group"):
    _rotation_canonicalizer(group="D4").init(KEY, x)
  with pytest.raises(ValueError, match="images must be square"):
    _discrete("C4").init(KEY, jnp.zeros((2, 16, 12, 1)))
  with pytest.raises(TypeError, match="result must be an OptimizedCanonicalizationRes"):
    oc.optimization_loss(cj.ImageCanonicalizer(features=2, num_layers=1, resize=16,
                                               group="C4").init_with_output(KEY, x)[0])
