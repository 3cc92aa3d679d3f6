"""Equivariant promptable segmentation: exact C4 / D4 equivariance for any predictor."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import canon_jax as cj
from canon_jax import coco_eval, segmentation as seg
from canon_jax.data import synthetic_instances
from helpers import elements, smooth_disk_images

KEY = jax.random.PRNGKey(0)
SIZE = 24


def toy_predict(images, boxes):
  """A deliberately non-equivariant promptable predictor: (B,H,W,C),(B,M,4) -> logits, scores.

  Mixes a horizontal finite difference, position ramps, an anisotropic box prior
  (only the top 3/4 of the box counts) and scores that depend on the box position.
  """
  b, h, w, _ = images.shape
  feat = (images[..., 0] - jnp.roll(images[..., 1], 1, axis=2)
          + 0.05 * jnp.arange(w)[None, None, :] - 0.03 * jnp.arange(h)[None, :, None])
  ys, xs = jnp.mgrid[:h, :w] + 0.5
  x0, y0, x1, y1 = (boxes[..., i, None, None] for i in range(4))
  inside = (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y0 + 0.75 * (y1 - y0))
  logits = feat[:, None] + 3.0 * inside - 1.5 + 0.01 * x0
  scores = jax.nn.sigmoid(0.1 * boxes[..., 0] - 0.05 * boxes[..., 3])
  return logits, scores


def _boxes(batch):
  rng = np.random.default_rng(0)
  lo = rng.integers(0, SIZE // 2, (batch, 3, 2))
  hi = lo + rng.integers(3, SIZE // 2, (batch, 3, 2))
  return jnp.asarray(np.concatenate([lo, hi], -1), jnp.float32)


@pytest.fixture(scope="module")
def data():
  return smooth_disk_images(KEY, 4, SIZE), _boxes(4)


_PIPELINES = {}


def _pipeline(group: str):
  """A tiny segmentation-scale canonicalizer and the jitted pipeline, once per group."""
  if group not in _PIPELINES:
    m = seg.segmentation_canonicalizer(group, features=4, kernel_size=3, num_layers=4,
                                       resize=32)
    v = jax.jit(m.init)(KEY, jnp.zeros((1, SIZE, SIZE, 3)))
    _PIPELINES[group] = jax.jit(
        lambda im, bx, predict=toy_predict: seg.segment_images(m, v, predict, im, bx),
        static_argnames="predict")
  return _PIPELINES[group]


@pytest.mark.parametrize("name", ["C4", "D4"])
def test_masks_for_transformed_image_are_transformed_masks_exactly(data, name):
  x, boxes = data
  g = cj.from_name(name)
  run = _pipeline(name)
  base = run(x, boxes)
  assert base.masks.any() and not base.masks.all()
  for k in range(g.order):
    e = elements(k, x.shape[0])
    out = run(cj.transform_images(x, g, e), cj.transform_boxes(boxes, g, e, (SIZE, SIZE)))
    np.testing.assert_array_equal(out.canonicalization.element,
                                  g.compose(e, base.canonicalization.element))
    moved = seg.transform_instances(
        seg.Instances(base.masks, base.boxes, None, jnp.ones(base.boxes.shape[:2], bool)),
        g, e)
    np.testing.assert_array_equal(out.masks, moved.masks)
    np.testing.assert_array_equal(
        out.mask_logits,
        jnp.moveaxis(cj.transform_images(jnp.moveaxis(base.mask_logits, 1, -1), g, e), -1, 1))
    np.testing.assert_array_equal(out.boxes, moved.boxes)
    np.testing.assert_array_equal(out.scores, base.scores)
    np.testing.assert_array_equal(out.prompts, base.prompts)


def test_without_canonicalization_the_toy_predictor_is_not_equivariant(data):
  x, boxes = data
  e = elements(1, x.shape[0])
  predict = jax.jit(toy_predict)
  logits, _ = predict(x, boxes)
  rot_logits, _ = predict(cj.transform_images(x, "C4", e),
                              cj.transform_boxes(boxes, "C4", e, (SIZE, SIZE)))
  moved = cj.transform_label_maps(jnp.moveaxis(logits > 0, 1, -1), "C4", e)
  assert (jnp.moveaxis(rot_logits > 0, 1, -1) != moved).mean() > 0.05


def test_boxes_from_masks_agree_with_inverted_canonical_boxes(data):
  x, boxes = data
  out = _pipeline("D4")(x, boxes)
  r = out.canonicalization
  canonical_masks = jnp.moveaxis(cj.transform_label_maps(
      jnp.moveaxis(out.masks, 1, -1), r.group, r.group.inverse(r.element)), -1, 1)
  inverted = cj.invert(seg.masks_to_boxes(canonical_masks), r, kind="boxes",
                       image_size=(SIZE, SIZE))
  np.testing.assert_array_equal(out.boxes, inverted)


def test_masks_to_boxes_edge_convention():
  m = np.zeros((2, 5, 6), bool)
  m[0, 1:4, 2:6] = True
  got = seg.masks_to_boxes(jnp.asarray(m))
  np.testing.assert_array_equal(got, [[2, 1, 6, 4], [0, 0, 0, 0]])


def test_training_mode_gradient_reaches_the_canonicalizer(data):
  x, boxes = data
  canon = cj.ImageCanonicalizer(group="C4", features=4, num_layers=2, resize=None)
  v = canon.init(KEY, x[:1])

  def loss(params):
    r = canon.apply({"params": params}, x, train=True)
    out = seg.segment(lambda im, bx: toy_predict(im, bx)[0], r, boxes)
    return jnp.mean(jax.nn.sigmoid(out.mask_logits) * jnp.arange(SIZE)[None, None, :, None])

  grads = jax.jit(jax.grad(loss))(v["params"])
  norms = [float(jnp.abs(l).sum()) for l in jax.tree_util.tree_leaves(grads)]
  assert all(np.isfinite(norms)) and sum(norms) > 0


def test_segment_rejects_bad_predictor_output(data):
  x, boxes = data
  run = _pipeline("C4")
  with pytest.raises(ValueError, match=r"\(B, M, H, W\)"):
    run(x, boxes, predict=lambda im, bx: jnp.zeros((4, 3, SIZE)))
  with pytest.raises(ValueError, match="boxes must"):
    run(x, boxes[..., :3])


def contrast_predict(images, boxes):
  """A training-free box-prompted predictor for the synthetic shapes, upright-biased.

  Inside the box, a pixel is foreground when its colour differs from the mean colour
  of the box's four corner pixels; like a model trained on upright photos it ignores
  the bottom fifth of the box. (B, H, W, 3), (B, M, 4) -> logits (B, M, H, W).
  """
  b, h, w, _ = images.shape
  x0, y0, x1, y1 = (boxes[..., i].astype(jnp.int32) for i in range(4))
  xs = jnp.stack([x0, x1 - 1, x0, x1 - 1], -1).clip(0, w - 1)
  ys = jnp.stack([y0, y0, y1 - 1, y1 - 1], -1).clip(0, h - 1)
  corners = jax.vmap(lambda im, yy, xx: im[yy, xx])(images, ys, xs)  # (B, M, 4, 3)
  ref = corners.mean(axis=2)[:, :, None, None, :]
  contrast = jnp.abs(images[:, None] - ref).max(axis=-1)  # (B, M, H, W)
  rows, cols = jnp.mgrid[:h, :w] + 0.5
  inside = ((cols >= boxes[..., 0, None, None]) & (cols <= boxes[..., 2, None, None])
            & (rows >= boxes[..., 1, None, None])
            & (rows <= boxes[..., 1, None, None] + 0.8 * (boxes[..., 3, None, None]
                                                         - boxes[..., 1, None, None])))
  return jnp.where(inside, 20.0 * (contrast - 0.15), -10.0)


def test_synthetic_instances_are_deterministic_and_consistent():
  d = synthetic_instances.make_synthetic_instances(6, image_size=32, max_instances=3, seed=3)
  again = synthetic_instances.make_synthetic_instances(4, image_size=32, max_instances=3,
                                                       seed=3)
  np.testing.assert_array_equal(d.images[:4], again.images)
  other = synthetic_instances.make_synthetic_instances(4, image_size=32, max_instances=3,
                                                       seed=4)
  assert not np.array_equal(d.images[:4], other.images)
  inst = d.instances
  assert d.images.dtype == np.float32 and 0 <= d.images.min() and d.images.max() <= 1
  assert inst.valid.sum() >= 6
  # Visible masks are disjoint, padding is empty, boxes are the masks' tight boxes.
  assert inst.masks.sum(axis=1).max() == 1
  assert not inst.masks[~inst.valid].any() and (inst.labels[~inst.valid] == 0).all()
  assert (inst.labels[inst.valid] >= 1).all()
  np.testing.assert_array_equal(inst.boxes, seg.masks_to_boxes(inst.masks))
  batches = list(d.batches(4))
  assert [len(b[0]) for b in batches] == [4, 2]


def test_end_to_end_synthetic_map_and_c4_averaged_map():
  pytest.importorskip("pycocotools")
  data = synthetic_instances.make_synthetic_instances(6, image_size=SIZE, max_instances=3,
                                                      seed=0, min_area=8)
  run = _pipeline("C4")
  predict = jax.jit(contrast_predict)

  def canonicalized(images, truth):
    return seg.as_predictions(run(images, jnp.asarray(truth.boxes), predict=contrast_predict),
                              truth)

  def bare(images, truth):
    logits = predict(images, jnp.asarray(truth.boxes))
    masks = logits > 0
    return seg.Instances(masks, seg.masks_to_boxes(masks), truth.labels, truth.valid,
                         seg.mask_confidence(logits, 0.0))

  plain = coco_eval.coco_map(data.instances, bare(data.images, data.instances))
  assert plain["segm/AP50"] > 0.5, plain

  res = coco_eval.group_averaged_map(bare, data.batches(4), "C4")
  np.testing.assert_equal(res.per_element[0], plain)
  aps = [p["segm/AP"] for p in res.per_element]
  assert max(aps) - min(aps) > 0.02, aps  # the upright bias costs AP at other poses

  res = coco_eval.group_averaged_map(canonicalized, data.batches(4), "C4")
  for p in res.per_element[1:]:  # equivariant: the same AP at every pose
    np.testing.assert_equal(p, res.per_element[0])
  np.testing.assert_equal(res.mean, res.per_element[0])
  assert 0 < res.mean["segm/AP"] <= 1 and 0 < res.mean["bbox/AP"] <= 1


def test_coco_sam_config_builds_the_paper_canonicalizer():
  from train.configs import coco_sam_c4

  config = coco_sam_c4.get_config()
  canon = seg.segmentation_canonicalizer(config.group, **config.canonicalizer)
  size = config.data.image_size
  shapes = jax.eval_shape(canon.init, KEY, jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  assert sum(x.size for x in jax.tree_util.tree_leaves(shapes["params"])) == 15_943_296
  assert config.training.task_weight == 0 and config.training.prior_weight == 100
  r = jax.eval_shape(canon.apply, shapes, jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))
  assert r.logits.shape == (2, 4)
