"""PointNet / DGCNN predictors, alone and behind a point-cloud canonicalizer."""
import functools

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from canon_jax import losses, models
from canon_jax.models.dgcnn import DGCNN, DGCNNTiny
from canon_jax.models.pointnet import PointNet, PointNetTiny
from canon_jax.pointcloud import PointCloudCanonicalizer, to_input_frame

B, N, K, CLASSES = 4, 64, 8, 5
# XLA's cheapest backend optimisation level halves compile times (same arithmetic).
fast_jit = functools.partial(jax.jit, compiler_options={
    "xla_backend_optimization_level": 0})


def _clouds(seed: int, batch: int = B) -> np.ndarray:
  x = np.random.default_rng(seed).normal(size=(batch, N, 3))
  return (x * [1.0, 0.6, 0.3]).astype(np.float32)


def _rotate(x, q):
  return np.einsum("bnj,bij->bni", x, q)


def _rel(a, b) -> float:
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def _kernel_shapes(module, points):
  """Shapes of the Dense kernels in creation order, without running anything."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), points)["params"]
  return [leaf.shape for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]
          if path[-1].key == "kernel"]


def test_default_sizes_are_modelnet40():
  points = jax.ShapeDtypeStruct((2, 1024, 3), np.float32)
  pointnet = _kernel_shapes(PointNet(), points)
  assert sorted(pointnet) == sorted([(3, 64), (64, 128), (128, 1024), (1024, 512),
                                     (512, 256), (256, 40)])
  dgcnn = _kernel_shapes(DGCNN(), points)
  assert sorted(dgcnn) == sorted([(6, 64), (128, 64), (128, 128), (256, 256),
                                  (512, 1024), (2048, 512), (512, 256), (256, 40)])
  assert DGCNN().num_neighbors == 20
  assert jax.eval_shape(PointNet().init, jax.random.key(0), points)[
      "batch_stats"] is not None
  assert isinstance(models.get_model("pointnet"), PointNet)
  assert isinstance(models.get_model("dgcnn_tiny", num_classes=3), DGCNN)


@pytest.mark.parametrize("make", [PointNetTiny, DGCNNTiny], ids=["pointnet", "dgcnn"])
def test_classifier_train_and_eval(make):
  module = make(num_classes=CLASSES)
  x = _clouds(0)
  variables = fast_jit(module.init)(jax.random.key(0, impl="rbg"), x)
  perm = np.random.default_rng(1).permutation(N)

  @fast_jit
  def run(variables, x, rng):
    logits = module.apply(variables, x)
    train_logits, updates = module.apply(variables, x, train=True,
                                         mutable=["batch_stats"],
                                         rngs={"dropout": rng})
    return logits, train_logits, updates

  logits, train_logits, updates = jax.device_get(run(
      variables, np.concatenate([x, x[:, perm]]), jax.random.key(2, impl="rbg")))
  assert logits.shape == (2 * B, CLASSES) and train_logits.shape == (2 * B, CLASSES)
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(train_logits))
  # Invariant to the order of the points (eval mode).
  np.testing.assert_allclose(logits[B:], logits[:B], rtol=1e-4, atol=1e-5)
  # Training: batch statistics move; dropout and batch statistics change logits.
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), updates["batch_stats"],
                         jax.device_get(variables["batch_stats"]))
  assert all(jax.tree.leaves(changed))
  assert _rel(train_logits, logits) > 1e-3


def _numpy_pointnet(variables, x, train: bool, eps: float = 1e-5) -> np.ndarray:
  """PointNet's documented layout in numpy: per-point Dense + batch norm (+ ReLU but
  the last) over (B, N), max over points, Dense + batch norm + ReLU, classifier."""
  params = jax.device_get(variables["params"])
  stats = jax.device_get(variables["batch_stats"])

  def norm(h, i, axes):
    scale, bias = params[f"BatchNorm_{i}"]["scale"], params[f"BatchNorm_{i}"]["bias"]
    if train:
      mean, var = h.mean(axis=axes), h.var(axis=axes)
    else:
      mean, var = stats[f"BatchNorm_{i}"]["mean"], stats[f"BatchNorm_{i}"]["var"]
    return (h - mean) / np.sqrt(var + eps) * scale + bias

  def dense(h, i):
    return h @ params[f"Dense_{i}"]["kernel"] + params[f"Dense_{i}"]["bias"]

  h, layer = x.astype(np.float64), 0
  widths = PointNetTiny().features
  for i in range(len(widths)):
    h = norm(dense(h, layer), layer, (0, 1))
    h = np.maximum(h, 0) if i < len(widths) - 1 else h
    layer += 1
  h = h.max(axis=1)
  for _ in PointNetTiny().head:
    h = np.maximum(norm(dense(h, layer), layer, (0,)), 0)
    layer += 1
  return dense(h, layer)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_pointnet_matches_a_numpy_reference(train):
  module = PointNetTiny(num_classes=CLASSES, dropout_rate=0.0)
  x = _clouds(3)
  variables = fast_jit(module.init)(jax.random.key(0, impl="rbg"), x)
  # Non-trivial running statistics for the eval mode.
  _, updates = module.apply(variables, x * 2.0 + 0.5, train=True, mutable=["batch_stats"])
  variables = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
  if train:
    logits, _ = module.apply(variables, x, train=True, mutable=["batch_stats"])
  else:
    logits = module.apply(variables, x)
  expected = _numpy_pointnet(variables, x, train)
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=2e-4, atol=2e-4)


def test_classifier_shape_errors():
  with pytest.raises(ValueError, match=r"points must have 3 coordinates .*last axis 4"):
    PointNetTiny().init(jax.random.key(0), np.zeros((1, N, 4), np.float32))
  with pytest.raises(ValueError, match=r"points must have at least 20 points .*N=10"):
    DGCNN().init(jax.random.key(0), np.zeros((1, 10, 3), np.float32))


class _Canonicalized(nn.Module):
  """Canonicalizer followed by a classifier on the canonical cloud."""
  canonicalizer: nn.Module
  predictor: nn.Module

  def __call__(self, points, train: bool = False):
    canon = self.canonicalizer(points, train=train)
    return self.predictor(canon.canonical, train=train), canon


@functools.cache
def _composed():
  """(model, variables): a VN canonicalizer + tiny PointNet, initialised once."""
  model = _Canonicalized(
      PointCloudCanonicalizer(network="vn", num_neighbors=K, num_layers=2, channels=8),
      PointNetTiny(num_classes=CLASSES))
  return model, fast_jit(model.init)(jax.random.key(0, impl="rbg"), _clouds(3))


def test_canonicalized_pointnet_is_rotation_invariant():
  model, variables = _composed()
  x = _clouds(4)
  q = np.asarray(e3nn.rand_matrix(jax.random.key(4), (B,)))
  with jax.default_matmul_precision("highest"):
    logits, canon = jax.device_get(
        fast_jit(model.apply)(variables, np.concatenate([x, _rotate(x, q)])))
  assert logits.shape == (2 * B, CLASSES)
  assert _rel(logits[B:], logits[:B]) <= 1e-4
  # The predictor sees different clouds for different inputs (not a constant map).
  assert _rel(logits[1:B], logits[:B - 1]) > 1e-2
  # Vectors predicted in the canonical frame, mapped back, are equivariant.
  probe = canon.canonical[:, :2]  # any canonical-frame vectors
  back = np.asarray(to_input_frame(probe, canon.rotation))
  np.testing.assert_allclose(back[B:], _rotate(back[:B], q), atol=1e-4)


def test_pure_train_step():
  """One optax step of canonicalizer + PointNet, batch_stats a mutable collection."""
  model, variables = _composed()
  x = _clouds(5)
  labels = np.arange(B) % CLASSES
  tx = optax.adam(1e-2)
  opt_state = tx.init(variables["params"])

  @fast_jit
  def train_step(params, batch_stats, opt_state, points, labels, rng):
    def loss_fn(params):
      (logits, canon), updates = model.apply(
          {"params": params, "batch_stats": batch_stats}, points, train=True,
          mutable=["batch_stats"], rngs={"dropout": rng})
      task = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return task + 100.0 * losses.rotation_prior_loss(canon.rotation), updates
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    step, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, step), updates["batch_stats"], opt_state,
            loss, grads)

  params, batch_stats, opt_state, loss, grads = jax.device_get(train_step(
      variables["params"], variables["batch_stats"], opt_state, x, labels,
      jax.random.key(6, impl="rbg")))
  assert np.isfinite(loss)
  for part in ("canonicalizer", "predictor"):
    leaves = jax.tree.leaves(grads[part])
    assert all(np.all(np.isfinite(g)) for g in leaves)
    assert any(np.abs(g).max() > 0 for g in leaves)
  assert set(batch_stats) == {"canonicalizer", "predictor"}
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), batch_stats,
                         jax.device_get(variables["batch_stats"]))
  assert all(jax.tree.leaves(changed))
  moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), params["predictor"],
                       jax.device_get(variables["params"]["predictor"]))
  assert all(jax.tree.leaves(moved))
