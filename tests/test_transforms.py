import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import canon_jax as cj
from helpers import elements, smooth_disk_images

KEY = jax.random.PRNGKey(0)


def _generators(g):
  return [1 % g.order] + ([g.n] if g.reflections else [])


@pytest.fixture(scope="module")
def x():
  return jax.random.normal(KEY, (2, 9, 9, 3))


@pytest.mark.parametrize("name", ["C2", "C4", "D1", "D2", "D4"])
def test_images_action_is_exact_homomorphism(x, name):
  g = cj.from_name(name)
  for a, b in itertools.product(_generators(g), range(g.order)):
    lhs = cj.transform_images(cj.transform_images(x, g, elements(b, 2)), g, elements(a, 2))
    rhs = cj.transform_images(x, g, elements(g.compose(a, b), 2))
    np.testing.assert_array_equal(lhs, rhs)


def test_conventions_match_numpy(x):
  # C4 element 1 is one counter-clockwise quarter turn (np.rot90), D_n element n is a
  # horizontal flip (mirror of the width axis), D4 element 5 = rot 1 after flip.
  xn = np.asarray(x)
  np.testing.assert_array_equal(cj.transform_images(x, "C4", elements(1, 2)),
                                np.rot90(xn, 1, axes=(1, 2)))
  np.testing.assert_array_equal(cj.transform_images(x, "D4", elements(4, 2)),
                                xn[:, :, ::-1])
  np.testing.assert_array_equal(cj.transform_images(x, "D4", elements(5, 2)),
                                np.rot90(xn[:, :, ::-1], 1, axes=(1, 2)))
  # A pixel right of the centre moves to the top: counter-clockwise as displayed.
  img = np.zeros((1, 5, 5, 1), np.float32)
  img[0, 2, 4] = 1
  out = np.asarray(cj.transform_images(jnp.asarray(img), "C4", elements(1, 1)))
  assert out[0, 0, 2, 0] == 1


def test_per_sample_elements(x):
  out = cj.transform_images(x, "D4", jnp.array([1, 6]))
  np.testing.assert_array_equal(out[0], cj.transform_images(x, "D4", elements(1, 2))[0])
  np.testing.assert_array_equal(out[1], cj.transform_images(x, "D4", elements(6, 2))[1])


def test_interpolated_rotations_agree_with_exact_ones(x):
  # C8's 90-degree elements and rotate_images at pi/2 move pixels exactly.
  np.testing.assert_array_equal(cj.transform_images(x, "C8", elements(2, 2)),
                                cj.transform_images(x, "C4", elements(1, 2)))
  np.testing.assert_array_equal(cj.transform_images(x, "D8", elements(8 + 6, 2)),
                                cj.transform_images(x, "D4", elements(4 + 3, 2)))
  np.testing.assert_array_equal(cj.rotate_images(x, jnp.full((2,), jnp.pi / 2)),
                                cj.transform_images(x, "C4", elements(1, 2)))
  np.testing.assert_array_equal(cj.rotate_images(x, jnp.full((2,), -jnp.pi)),
                                cj.transform_images(x, "C4", elements(2, 2)))
  # all_transforms copies the 90-degree elements of C8/D8 with rot90 (no gathers).
  np.testing.assert_array_equal(cj.all_transforms(x, "C8")[::2], cj.all_transforms(x, "C4"))
  np.testing.assert_array_equal(cj.all_transforms(x, "D8")[8::2], cj.all_transforms(x, "D4")[4:])


@pytest.mark.parametrize("name", ["C8", "D8", "C6", "D3", "C16"])
def test_all_transforms_equal_one_element_transforms(name):
  # all_transforms stacks every element's copy of the batch; each copy must equal that
  # element applied on its own (transform_images resamples per sample).
  g = cj.from_name(name)
  x = jax.random.uniform(KEY, (2, 9, 9, 3))
  copies = cj.all_transforms(x, g)
  assert copies.shape == (g.order,) + x.shape
  for e in range(g.order):
    np.testing.assert_allclose(copies[e], cj.transform_images(x, g, elements(e, 2)),
                               atol=2e-6, err_msg=f"{name} element {e}")


def test_c8_action_on_smooth_images_is_close_to_homomorphism():
  x = smooth_disk_images(KEY, 2, 48, cutoff=0.06)
  g = cj.cyclic(8)
  for a, b in [(1, 1), (1, 3), (5, 7)]:
    lhs = cj.transform_images(cj.transform_images(x, g, elements(b, 2)), g, elements(a, 2))
    rhs = cj.transform_images(x, g, elements(g.compose(a, b), 2))
    assert float(jnp.abs(lhs - rhs).mean()) < 0.05 * float(jnp.abs(x).mean())


def test_rotation_matches_equiadapt_pad_rotate_crop():
  # Edge padding by ceil(W/2), bilinear rotation, centre crop == clamped sampling.
  x = jax.random.uniform(KEY, (1, 8, 8, 1))
  w = 8
  p = int(np.ceil(w / 2))
  padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="edge")
  angle = jnp.array([0.6])
  big = cj.rotate_images(padded, angle)
  np.testing.assert_allclose(big[:, p:p + w, p:p + w], cj.rotate_images(x, angle),
                             atol=1e-6)


@pytest.mark.parametrize("name", ["C4", "D4", "C8", "D8"])
def test_weighted_transform_equals_hard_transform_for_one_hot(x, name):
  g = cj.from_name(name)
  e = jnp.array([1, g.order - 1])
  w = jax.nn.one_hot(e, g.order)
  np.testing.assert_allclose(cj.transform_images_weighted(x, g, w),
                             cj.transform_images(x, g, e), atol=1e-5)


@pytest.mark.parametrize("name", ["C8", "D4"])
def test_weighted_transform_is_the_weighted_sum_of_all_copies_with_its_gradients(x, name):
  g = cj.from_name(name)
  w = jax.nn.softmax(jax.random.normal(KEY, (x.shape[0], g.order)))
  ct = jax.random.normal(jax.random.key(5), x.shape)

  def reference(x, w):            # the stacked copies, contracted with the weights
    return jnp.einsum("gbhwc,bg->bhwc", cj.all_transforms(x, g), w)

  np.testing.assert_allclose(cj.transform_images_weighted(x, g, w), reference(x, w),
                             atol=1e-5)
  got = jax.grad(lambda x, w: jnp.sum(cj.transform_images_weighted(x, g, w) * ct),
                 argnums=(0, 1))(x, w)
  want = jax.grad(lambda x, w: jnp.sum(reference(x, w) * ct), argnums=(0, 1))(x, w)
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_label_maps_nearest_and_exact():
  labels = jax.random.randint(KEY, (2, 7, 7), 0, 5)
  for k in range(8):
    out = cj.transform_label_maps(labels, "D4", elements(k, 2))
    assert out.dtype == labels.dtype
    ref = cj.transform_images(labels[..., None].astype(jnp.float32), "D4", elements(k, 2))
    np.testing.assert_array_equal(out, ref[..., 0].astype(labels.dtype))
  out = cj.transform_label_maps(labels, "C8", elements(1, 2))
  assert set(np.unique(out)) <= set(np.unique(labels))  # nearest: no new values


def _mask_of_box(box, size):
  m = np.zeros((size, size), np.float32)
  x0, y0, x1, y1 = [int(v) for v in box]
  m[y0:y1, x0:x1] = 1
  return m


def _box_of_mask(m):
  rows, cols = np.nonzero(m)
  return np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)


@pytest.mark.parametrize("k", range(8))
def test_boxes_follow_masks(k):
  size = 12
  boxes = jnp.array([[[1, 2, 5, 9], [6, 0, 12, 3]]], jnp.float32)
  out = cj.transform_boxes(boxes, "D4", elements(k, 1), (size, size))
  for i in range(2):
    m = _mask_of_box(np.asarray(boxes[0, i]), size)
    mt = cj.transform_images(jnp.asarray(m)[None, :, :, None], "D4", elements(k, 1))
    np.testing.assert_array_equal(out[0, i], _box_of_mask(np.asarray(mt[0, ..., 0])))


def test_continuous_boxes_contain_rotated_masks():
  size = 32
  box = np.array([10, 8, 20, 14], np.float32)
  angle = jnp.array([0.5])
  out = np.asarray(cj.rotate_boxes(jnp.asarray(box)[None, None], angle, (size, size)))[0, 0]
  m = cj.rotate_images(jnp.asarray(_mask_of_box(box, size))[None, :, :, None], angle,
                       method="nearest")
  got = _box_of_mask(np.asarray(m[0, ..., 0]))
  assert got[0] >= out[0] - 1 and got[1] >= out[1] - 1
  assert got[2] <= out[2] + 1 and got[3] <= out[3] + 1


@pytest.mark.parametrize("name", ["C4", "D4"])
def test_regular_feature_maps_action(name):
  g = cj.from_name(name)
  f = jax.random.normal(KEY, (2, 5, 5, 3, g.order))
  # On the generators (rotation 1, flip n) for every b: enough for all pairs.
  for a, b in itertools.product(_generators(g), range(g.order)):
    lhs = cj.transform_feature_maps(
        cj.transform_feature_maps(f, g, elements(b, 2)), g, elements(a, 2))
    rhs = cj.transform_feature_maps(f, g, elements(g.compose(a, b), 2))
    np.testing.assert_array_equal(lhs, rhs)
  s = cj.transform_feature_maps(f[..., 0], g, elements(1, 2), "scalar")
  np.testing.assert_array_equal(s, cj.transform_images(f[..., 0], g, elements(1, 2)))


def test_bad_inputs_are_rejected(x):
  with pytest.raises(ValueError, match=r"images must have rank 4.*got rank 3"):
    cj.transform_images(x[0], "C4", elements(0, 2))
  with pytest.raises(ValueError, match="looks like NCHW"):
    cj.transform_images(jnp.zeros((2, 3, 16, 16)), "C4", elements(0, 2))
  with pytest.raises(TypeError, match="images must have a floating dtype.*uint8"):
    cj.transform_images(jnp.zeros((2, 8, 8, 3), jnp.uint8), "C4", elements(0, 2))
  with pytest.raises(TypeError, match="elements must have an integer dtype.*float32"):
    cj.transform_images(x, "C4", jnp.zeros((2,), jnp.float32))
  with pytest.raises(ValueError, match=r"elements must lie in \[0, 4\).*\[0, 4\]"):
    cj.transform_images(x, "C4", jnp.array([0, 4]))
  with pytest.raises(ValueError, match="elements must have batch size 2"):
    cj.transform_images(x, "C4", jnp.array([0, 1, 2]))
  with pytest.raises(ValueError, match="must be square.*H=9, W=8"):
    cj.transform_images(x[:, :, :8], "C4", elements(0, 2))
  cj.transform_images(x[:, :, :8], "D2", elements(3, 2))  # 180 degrees: any shape
  with pytest.raises(ValueError, match="group must be"):
    cj.transform_images(x, "Q8", elements(0, 2))
  with pytest.raises(ValueError, match="group must be"):
    cj.transform_images(x, "C0", elements(0, 2))
  bad = np.array(x)
  bad[0, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="images must be finite; got 1 NaN/Inf"):
    cj.transform_images(bad, "C4", elements(0, 2), check_finite=True)
  with pytest.raises(ValueError, match="boxes must have 4 coordinates"):
    cj.transform_boxes(jnp.zeros((1, 2, 3)), "C4", elements(0, 1), (8, 8))
  with pytest.raises(ValueError, match=r"group axis of size \|G\|=8"):
    cj.transform_feature_maps(jnp.zeros((1, 4, 4, 2, 4)), "D4", elements(0, 1))
  with pytest.raises(ValueError, match="method must be"):
    cj.rotate_images(x, jnp.zeros((2,)), method="cubic")


@jax.debug_nans(False)
def test_jit_and_finite_check_under_jit(x):
  f = jax.jit(lambda im, e: cj.transform_images(im, "C8", e, check_finite=True))
  np.testing.assert_array_equal(f(x, elements(2, 2)),
                                cj.transform_images(x, "C4", elements(1, 2)))
  with pytest.raises(Exception, match="images must be finite"):
    bad = np.array(x)
    bad[0, 0, 0, 0] = np.inf
    jax.block_until_ready(f(jnp.asarray(bad), elements(2, 2)))
