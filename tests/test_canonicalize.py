import jax
import jax.numpy as jnp
import numpy as np
import pytest

import canon_jax as cj
from helpers import (assert_equivariant, elements, invariant, on_images, on_logits,
                     smooth_disk_images)

KEY = jax.random.PRNGKey(0)


def _tiny(group, **kw):
  kw = {"features": 4, "num_layers": 2, "resize": 24, **kw}
  return cj.ImageCanonicalizer(group=group, **kw)


@pytest.mark.parametrize("name,padding", [("C4", "SAME"), ("D4", "SAME"),
                                          ("D4", "VALID")])
def test_exact_groups_canonical_image_is_invariant(name, padding):
  g = cj.from_name(name)
  x = jax.random.normal(KEY, (4, 30, 30, 3))
  m = _tiny(name, lift_padding=padding)
  v = m.init(KEY, x)
  apply = jax.jit(m.apply)
  base = apply(v, x)
  assert_equivariant(lambda x: apply(v, x).canonical, x, g, on_images, invariant)
  assert_equivariant(lambda x: apply(v, x).logits, x, g, on_images, on_logits)
  assert_equivariant(lambda x: apply(v, x).element, x, g, on_images,
                     lambda e, g, k: g.compose(jnp.full(e.shape, k), e))
  # canonical = element^-1 . x
  np.testing.assert_array_equal(
      base.canonical, cj.transform_images(x, g, g.inverse(base.element)))


def _shift_rate(m, v, x, g):
  apply = jax.jit(m.apply)
  base = apply(v, x)
  rot = apply(v, cj.transform_images(x, g, elements(1, x.shape[0])))
  hit = np.asarray(rot.element) == (np.asarray(base.element) + 1) % g.n
  return hit.mean(), base, rot, hit


def test_c8_45_degree_rotation_shifts_element_by_one():
  g = cj.cyclic(8)
  rates = []
  for seed in range(2):
    # Smooth on the pixel grid, as real photos downsampled for the network are.
    x = smooth_disk_images(jax.random.PRNGKey(100 + seed), 100, 96, cutoff=0.05)
    m = cj.ImageCanonicalizer(group=g, features=8, num_layers=3, resize=64)
    v = m.init(jax.random.PRNGKey(seed), x[:1])
    rate, base, rot, hit = _shift_rate(m, v, x, g)
    rates.append(rate)
    # Where the element shifts by one, the canonical images agree up to
    # interpolation error (one bilinear rotation vs two).
    err = jnp.abs(rot.canonical - base.canonical)[hit].mean()
    assert float(err) < 0.05 * float(jnp.abs(x).mean()), float(err)
  assert min(rates) >= 0.95, rates


def test_d4_invert_undoes_transform_for_every_element():
  # The reference gets the reflection flag backwards; check all 2n elements.
  for name in ["D4", "D8"]:
    g = cj.from_name(name)
    x = smooth_disk_images(KEY, 2, 48, cutoff=0.05)
    for k in range(g.order):
      e = elements(k, 2)
      canonical = cj.transform_images(x, g, g.inverse(e))
      res = cj.CanonicalizationResult(canonical, jnp.zeros((2, g.order)), e,
                                      jax.nn.one_hot(e, g.order), group=g)
      back = cj.invert(canonical, res)
      if g.exact_on_grid:
        np.testing.assert_array_equal(back, x)
      else:
        assert float(jnp.abs(back - x).mean()) < 0.05 * float(jnp.abs(x).mean())


def test_invert_maps_outputs_back_for_an_equivariant_task():
  # A per-pixel "segmentation" on the canonical image, inverted, is equivariant.
  g = cj.dihedral(4)
  x = jax.random.normal(KEY, (3, 20, 20, 2))
  m = _tiny(g)
  v = m.init(KEY, x)
  seg = lambda im: (im[..., :1] > 0).astype(jnp.int32)[..., 0]        # (B, H, W)
  boxes = jnp.tile(jnp.array([[[2.0, 3.0, 9.0, 15.0]]]), (3, 1, 1))
  r0 = m.apply(v, x)
  out0 = cj.invert(seg(r0.canonical), r0, kind="labels")
  b0 = cj.invert(cj.transform_boxes(boxes, g, g.inverse(r0.element), (20, 20)), r0,
                 kind="boxes", image_size=(20, 20))
  np.testing.assert_array_equal(b0, boxes)
  for k in range(g.order):
    xk = cj.transform_images(x, g, elements(k, 3))
    rk = m.apply(v, xk)
    np.testing.assert_array_equal(cj.invert(seg(rk.canonical), rk, kind="labels"),
                                  cj.transform_label_maps(out0, g, elements(k, 3)))
    np.testing.assert_allclose(cj.invert(rk.canonical, rk), xk, atol=1e-6)
  f = jax.random.normal(KEY, (3, 20, 20, 2, 8))
  fr = cj.invert(f, r0, kind="regular")
  np.testing.assert_array_equal(fr, cj.transform_feature_maps(f, g, r0.element))


@pytest.mark.parametrize("name", ["C4", "D4", "C8"])
def test_straight_through_gradients_reach_every_layer(name):
  x = smooth_disk_images(KEY, 4, 24)
  target = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  m = _tiny(name, num_layers=3)
  v = m.init(KEY, x)

  def task_loss(params):
    r = m.apply({"params": params}, x, train=True)
    return jnp.mean((r.canonical - target) ** 2)

  grads = jax.grad(task_loss)(v["params"])
  leaves = jax.tree_util.tree_leaves_with_path(grads)
  assert leaves
  for path, leaf in leaves:
    assert bool(jnp.all(jnp.isfinite(leaf))), path
    # The last layer's bias adds the same constant to every logit, which the
    # softmax ignores: its gradient is zero by design. Everything else learns.
    if jax.tree_util.keystr(path) != "['network']['gconv2']['bias']":
      assert float(jnp.abs(leaf).max()) > 0, path
  # Forward value in training equals the hard canonicalization.
  r_train = m.apply(v, x, train=True)
  r_eval = m.apply(v, x)
  np.testing.assert_allclose(r_train.canonical, r_eval.canonical, atol=1e-5)
  np.testing.assert_array_equal(r_train.element, r_eval.element)


def test_continuous_readout_is_equivariant_to_quarter_turns():
  g = cj.cyclic(4)
  x = smooth_disk_images(KEY, 3, 32)
  m = _tiny(g, readout="continuous")
  v = m.init(KEY, x)
  r0 = m.apply(v, x)
  assert r0.angle.shape == (3,)
  r1 = m.apply(v, cj.transform_images(x, g, elements(1, 3)))
  d = np.angle(np.exp(1j * (np.asarray(r1.angle) - np.asarray(r0.angle) - np.pi / 2)))
  np.testing.assert_allclose(d, 0.0, atol=1e-4)
  np.testing.assert_allclose(r1.canonical, r0.canonical, atol=1e-3)
  back = cj.invert(r0.canonical, r0)
  inner = cj.soft_disk_mask(32, 0.5, 0.6)[None, :, :, None]
  assert float(jnp.abs((back - x) * inner).mean()) < 0.05 * float(jnp.abs(x).mean())
  grads = jax.grad(lambda p: jnp.sum(m.apply({"params": p}, x, train=True).canonical ** 3))(
      v["params"])
  assert all(bool(jnp.all(jnp.isfinite(l))) for l in jax.tree_util.tree_leaves(grads))


def test_wrn_canonicalizer_with_batch_stats():
  g = cj.cyclic(4)
  x = jax.random.normal(KEY, (2, 16, 16, 3))
  m = cj.ImageCanonicalizer(group=g, network="wrn", features=4, kernel_size=3,
                            num_layers=4, resize=16, input_crop_ratio=1.0)
  v = m.init(KEY, x)
  r, upd = m.apply(v, x, train=True, mutable=["batch_stats"])
  assert r.canonical.shape == x.shape and "batch_stats" in upd
  r0 = m.apply(v, x)
  r1 = m.apply(v, cj.transform_images(x, g, elements(3, 2)))
  np.testing.assert_allclose(r1.canonical, r0.canonical, atol=1e-5)


def test_canonicalizer_rejects_bad_input():
  m = _tiny("C4")
  x = jnp.zeros((2, 16, 16, 3))
  v = m.init(KEY, x)
  with pytest.raises(ValueError, match="looks like NCHW"):
    m.apply(v, jnp.zeros((2, 3, 16, 16)))
  with pytest.raises(ValueError, match="images must have rank 4"):
    m.apply(v, jnp.zeros((16, 16, 3)))
  with pytest.raises(TypeError, match="floating dtype.*uint8"):
    m.apply(v, jnp.zeros((2, 16, 16, 3), jnp.uint8))
  with pytest.raises(ValueError, match="must be square"):
    m.apply(v, jnp.zeros((2, 16, 12, 3)))
  with pytest.raises(ValueError, match="group must be"):
    _tiny("Q8").init(KEY, x)
  with pytest.raises(ValueError, match="readout='continuous' needs a cyclic group"):
    _tiny("D4", readout="continuous").init(KEY, x)
  with pytest.raises(ValueError, match="network must be"):
    _tiny("C4", network="resnet").init(KEY, x)
  with pytest.raises(ValueError, match="lift_padding must be 'SAME' or 'VALID'"):
    _tiny("C4", lift_padding="valid").init(KEY, x)
  with pytest.raises(ValueError, match="lift_padding='VALID' is only for"):
    _tiny("C4", network="wrn", lift_padding="VALID").init(KEY, x)
  bad = np.zeros((2, 16, 16, 3), np.float32)
  bad[1, 3, 3, 0] = np.nan
  for mode in (True, None):  # None (the default) checks eager calls too
    with pytest.raises(ValueError, match="images must be finite; got 1 NaN/Inf"):
      _tiny("C4", check_finite=mode).apply(v, bad)
  with pytest.raises(TypeError, match="check_finite must be True, False or None"):
    _tiny("C4", check_finite="yes").apply(v, x)
  with pytest.raises(TypeError, match="result must be a CanonicalizationResult"):
    cj.invert(x, {"element": 0})


def test_finite_check_modes_under_jit():
  """Traced calls carry the NaN/Inf host callback only with check_finite=True; the
  default (None) keeps it out of jitted training steps, False skips even eager
  calls."""
  x = jax.random.normal(KEY, (2, 16, 16, 3))
  v = _tiny("C4").init(KEY, x)
  jaxpr = lambda mode: str(jax.make_jaxpr(
      lambda x: _tiny("C4", check_finite=mode).apply(v, x, train=True).canonical)(x))
  assert "debug_callback" in jaxpr(True)
  assert "debug_callback" not in jaxpr(None)
  assert "debug_callback" not in jaxpr(False)
  bad = np.array(x)
  bad[0, 0, 0, 0] = np.inf
  with jax.debug_nans(False):
    # A concrete JAX array is checked where it lives (default mode).
    with pytest.raises(ValueError, match="images must be finite; got 1 NaN/Inf"):
      _tiny("C4").apply(v, jnp.asarray(bad))
    # Also when a traced function closes over it (checked at trace time); a finite
    # closed-over batch traces through.
    for images, raises in ((jnp.asarray(bad), True), (x, False)):
      f = jax.jit(lambda p: _tiny("C4").apply({"params": p}, images).logits)
      if raises:
        with pytest.raises(ValueError, match="images must be finite; got 1 NaN/Inf"):
          f(v["params"])
      else:
        assert f(v["params"]).shape == (2, 4)
    out = _tiny("C4", check_finite=False).apply(v, bad)  # no check: runs through
    assert out.canonical.shape == x.shape
    with pytest.raises(Exception, match="images must be finite"):
      jax.block_until_ready(jax.jit(_tiny("C4", check_finite=True).apply)(
          v, jnp.asarray(bad)).canonical)


def test_gumbel_selection_samples_the_element_in_training_only():
  g = cj.cyclic(4)
  x = jax.random.normal(KEY, (64, 16, 16, 3))
  m = _tiny(g, resize=16, selection="gumbel", beta=0.05)   # flat softmax: varied samples
  v = m.init(KEY, x)
  r = m.apply(v, x, train=True, rngs={"gumbel": jax.random.key(1)})
  np.testing.assert_array_equal(jnp.sum(r.weights, -1), 1.0)
  np.testing.assert_array_equal(jnp.argmax(r.weights, -1), r.element)
  np.testing.assert_allclose(
      r.canonical, cj.transform_images(x, g, g.inverse(r.element)), atol=1e-6)
  r_eval = m.apply(v, x)
  np.testing.assert_array_equal(r_eval.element, jnp.argmax(r_eval.logits, -1))
  # With beta = 0.05 the samples differ from the argmax for most inputs.
  assert float(jnp.mean(r.element != r_eval.element)) > 0.3
  grads = jax.grad(lambda p: jnp.sum(m.apply({"params": p}, x, train=True,
                                             rngs={"gumbel": jax.random.key(1)}
                                             ).canonical ** 2))(v["params"])
  leaves = jax.tree_util.tree_leaves(grads)
  assert all(bool(jnp.all(jnp.isfinite(l))) for l in leaves)
  assert any(float(jnp.abs(l).max()) > 0 for l in leaves)
  with pytest.raises(ValueError, match="selection must be"):
    _tiny(g, selection="argmax").init(KEY, x)
