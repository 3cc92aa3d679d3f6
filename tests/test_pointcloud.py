"""SO(3)/O(3) point-cloud canonicalization: equivariance, invariance, errors."""
import functools

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from canon_jax import losses
from canon_jax.pointcloud import (PointCloudCanonicalizer, frame_from_vectors,
                                  knn_indices)

B, N, K = 2, 64, 8
TOL = 1e-4
# Tests compile many small graphs once each: XLA's cheapest backend optimisation
# level halves compile times here (same float32 arithmetic).
fast_jit = functools.partial(jax.jit, compiler_options={
    "xla_backend_optimization_level": 0})


def _rel(a, b) -> float:
  return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


def _clouds(seed: int, batch: int = B) -> np.ndarray:
  """Anisotropic, off-centre Gaussian blobs: no symmetry, no kNN ties."""
  x = np.random.default_rng(seed).normal(size=(batch, N, 3))
  return (x * [1.0, 0.6, 0.3] + [0.3, -0.2, 0.1]).astype(np.float32)


def _rotate(x, q):
  """Rotates clouds (B, N, 3) or vectors (B, V, 3) by (B, 3, 3): x @ q.T."""
  return np.einsum("bnj,bij->bni", x, q)


CONFIGS = {
    "e3nn-SO3": dict(network="e3nn", group="SO3", num_layers=2, channels=8),
    "vn-SO3-max": dict(network="vn", group="SO3", num_layers=2, channels=8,
                       pooling="max"),
    "vn-O3": dict(network="vn", group="O3", num_layers=2, channels=8),
}


@functools.cache
def _setup(name: str):
  """(module, variables, forward) for CONFIGS[name], compiled once per session.

  ``forward(variables, points)`` returns the evaluation-mode output and the
  gradient of the rotation prior loss with respect to the parameters (one compile
  serves the equivariance and the gradient checks).
  """
  module = PointCloudCanonicalizer(num_neighbors=K, **CONFIGS[name])
  # An rbg key compiles the parameter initialisation much faster than threefry.
  variables = fast_jit(module.init)(jax.random.key(0, impl="rbg"), _clouds(0))

  def forward(variables, points):
    def loss_fn(params):
      out = module.apply({**variables, "params": params}, points)
      return losses.rotation_prior_loss(out.rotation), out
    (_, out), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
    return out, grads

  return module, variables, fast_jit(forward)


def test_e3nn_1o_components_are_xyz():
  """The network reads e3nn-jax's 1o outputs as (x, y, z): check that order."""
  rng = np.random.default_rng(1)
  v = rng.normal(size=(5, 3)).astype(np.float32)
  q = np.asarray(e3nn.rand_matrix(jax.random.key(2)))
  sh = e3nn.spherical_harmonics("1o", v, normalize=False, normalization="norm")
  np.testing.assert_allclose(sh.array, v, rtol=1e-6)
  rotated = e3nn.IrrepsArray("1o", v).transform_by_matrix(q).array
  np.testing.assert_allclose(rotated, v @ q.T, atol=1e-6)
  # Not (y, z, x), the order of older e3nn versions:
  assert not np.allclose(sh.array, v[:, [1, 2, 0]], atol=1e-3)


def test_e3nn_message_matches_e3nn_tensor_products():
  """The fused weighted tensor product (pieces split once, each gathered on its own)
  against e3nn-jax's own ``tensor_product`` path by path: values and gradients."""
  from canon_jax.nn import e3nn_net
  rng = np.random.default_rng(3)
  irreps = e3nn.Irreps("3x0e + 2x1o + 1x2e")
  sh_irreps = e3nn.Irreps.spherical_harmonics(2)
  h = rng.normal(size=(2, 10, irreps.dim)).astype(np.float32)
  neighbors = rng.integers(0, 10, size=(2, 10, 4)).astype(np.int32)
  sh = e3nn.spherical_harmonics(sh_irreps, rng.normal(size=(2, 10, 4, 3)),
                                normalize=True, normalization="component")
  paths = e3nn_net._paths(irreps, sh_irreps, e3nn.Irreps("0e + 1o + 1e + 2e"))
  assert len(paths) > 10                          # several outputs per pair
  weights = rng.normal(size=(2, 10, 4, sum(irreps[p[0]].mul for p in paths)))
  weights = weights.astype(np.float32)

  def fused(h, weights):
    return e3nn_net._mean_weighted_tensor_product(
        e3nn.IrrepsArray(irreps, h), neighbors, sh, weights, paths).array

  def reference(h, weights):
    h_j = e3nn.IrrepsArray(irreps, jax.vmap(lambda f, i: f[i])(h, neighbors))
    outputs, offset = [], 0
    for i1, i2, ir_out in paths:                   # one path: e3nn's order is moot
      x1 = e3nn.IrrepsArray(e3nn.Irreps([irreps[i1]]), h_j.chunks[i1].reshape(
          h_j.shape[:-1] + (-1,)))
      x2 = e3nn.IrrepsArray(e3nn.Irreps([sh_irreps[i2]]), sh.chunks[i2].reshape(
          sh.shape[:-1] + (-1,)))
      tp = e3nn.tensor_product(x1, x2, filter_ir_out=[ir_out], regroup_output=False)
      mul = irreps[i1].mul
      per_edge = tp.chunks[0] * weights[..., offset:offset + mul, None]
      outputs.append(per_edge.mean(axis=2).reshape(h.shape[:2] + (-1,)))
      offset += mul
    return jnp.concatenate(outputs, axis=-1)

  np.testing.assert_allclose(fast_jit(fused)(h, weights),
                             fast_jit(reference)(h, weights), rtol=1e-5, atol=1e-5)
  dim_out = sum(irreps[i1].mul * ir_out.dim for i1, _, ir_out in paths)
  cotangent = rng.normal(size=(2, 10, dim_out)).astype(np.float32)
  grads = [fast_jit(jax.grad(lambda h, w, f=f: jnp.sum(f(h, w) * cotangent),
                             argnums=(0, 1)))(h, weights) for f in (fused, reference)]
  for a, b in zip(*grads):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_frame_from_vectors_is_an_equivariant_rotation():
  rng = np.random.default_rng(3)
  v1, v2, v3 = rng.normal(size=(3, 16, 3)).astype(np.float32)
  q = np.asarray(e3nn.rand_matrix(jax.random.key(4), (16,)))
  m = q * np.array([-1.0, 1.0, 1.0], np.float32)[:, None]  # det -1
  rot = lambda v, q: np.einsum("bj,bij->bi", v, q)
  frame = fast_jit(frame_from_vectors)
  r, r_q = np.asarray(frame(v1, v2)), np.asarray(frame(rot(v1, q), rot(v2, q)))
  r3 = np.asarray(frame(v1, v2, v3))
  r3_m = np.asarray(frame(rot(v1, m), rot(v2, m), rot(v3, m)))

  np.testing.assert_allclose(np.einsum("bji,bjk->bik", r, r),
                             np.broadcast_to(np.eye(3), r.shape), atol=1e-6)
  np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-5)
  # b1 is v1's direction; b2 lies in span(v1, v2) on v2's side.
  np.testing.assert_allclose(r[..., 0] * np.linalg.norm(v1, axis=-1, keepdims=True),
                             v1, atol=1e-5)
  assert np.all(np.sum(r[..., 1] * v2, -1) > 0)
  np.testing.assert_allclose(np.sum(r[..., 2] * v2, -1), 0.0, atol=1e-5)
  np.testing.assert_allclose(r_q, q @ r, atol=1e-5)
  # O(3) version: det = sign det[v1 v2 v3], equivariant to reflections too.
  np.testing.assert_allclose(
      np.linalg.det(r3), np.sign(np.linalg.det(np.stack([v1, v2, v3], -1))), atol=1e-5)
  np.testing.assert_allclose(r3_m, m @ r3, atol=1e-5)
  # Zero vectors give no NaN (the norms are smoothed).
  assert np.all(np.isfinite(frame(np.zeros((1, 3)), np.zeros((1, 3)))))


def test_knn_indices_nearest_first():
  x = _clouds(4)
  idx = np.asarray(knn_indices(x, K))
  assert idx.shape == (B, N, K)
  np.testing.assert_array_equal(idx[..., 0], np.broadcast_to(np.arange(N), (B, N)))
  d2 = np.sum((x[:, :, None] - x[:, None]) ** 2, -1)
  np.testing.assert_array_equal(np.sort(idx, -1), np.sort(np.argsort(d2, -1)[..., :K], -1))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def canonicalizer(request):
  return _setup(request.param)


def test_equivariance_and_invariance(canonicalizer):
  """R(x Q^T + t) = Q R(x); canonical invariant to Q, t and point order."""
  module, variables, forward = canonicalizer
  rng = np.random.default_rng(5)
  x = _clouds(6)
  q = np.array(e3nn.rand_matrix(jax.random.key(7), (B,)))
  if module.group == "O3":  # one reflection
    q[0] = -q[0]
  # A shift of the cloud's size: much larger ones round the float32 input itself
  # (x + 5 keeps ~3 fewer bits of x), which no network can undo.
  moved = (_rotate(x, q) + rng.normal(size=(B, 1, 3))).astype(np.float32)
  perm = rng.permutation(N)
  with jax.default_matmul_precision("highest"):
    out, grads = jax.device_get(
        forward(variables, np.concatenate([x, moved, x[:, perm]])))
  r, r_moved, r_perm = np.split(out.rotation, 3)
  c, c_moved, c_perm = np.split(out.canonical, 3)
  v, v_moved, _ = np.split(out.vectors, 3)

  assert out.rotation.shape == (3 * B, 3, 3) and out.canonical.shape == (3 * B, N, 3)
  assert out.vectors.shape == (3 * B, 2 if module.group == "SO3" else 3, 3)
  assert _rel(r_moved, q @ r) <= TOL
  assert _rel(v_moved, _rotate(v, q)) <= TOL
  assert _rel(c_moved, c) <= TOL
  assert _rel(r_perm, r) <= TOL
  assert _rel(c_perm, c[:, perm]) <= TOL
  dets = np.linalg.det(out.rotation)
  if module.group == "SO3":
    np.testing.assert_allclose(dets, 1.0, atol=1e-5)
  else:
    np.testing.assert_allclose(np.abs(dets), 1.0, atol=1e-5)
    np.testing.assert_allclose(dets[B:2 * B], np.linalg.det(q) * dets[:B], atol=1e-5)
  np.testing.assert_allclose(out.centroid[:B], x.mean(1), atol=1e-5)
  np.testing.assert_allclose(c, (x - x.mean(1, keepdims=True)) @ r, atol=1e-5)
  # Sanity: the frame depends on the cloud, and a rotated cloud changes it.
  assert _rel(r_moved, r) > 0.1
  # Gradients are finite (no NaN from the zero-length self edges of the kNN graph
  # or from the Gram-Schmidt norms) and reach every parameter but the VN max
  # pool's direction (an argmax: no gradient, as in the paper).
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert np.all(np.isfinite(g)), path
    if "edge_pool" not in jax.tree_util.keystr(path):
      assert np.abs(g).max() > 0, path


def test_vn_training_is_equivariant_and_updates_stats():
  """Training mode (batch statistics; no dropout on vectors) stays equivariant,
  and a pure train step gives finite gradients and new batch statistics."""
  module, variables, _ = _setup("vn-SO3-max")
  x = _clouds(8)
  q = np.asarray(e3nn.rand_matrix(jax.random.key(9), (B,)))

  @fast_jit
  def train_step(variables, batch):
    def loss_fn(params):
      out, updates = module.apply({**variables, "params": params}, batch,
                                  train=True, mutable=["batch_stats"])
      return losses.rotation_prior_loss(out.rotation), (out, updates)
    (loss, (out, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        variables["params"])
    return loss, out, updates, grads

  loss, out, updates, grads = jax.device_get(
      train_step(variables, np.concatenate([x, _rotate(x, q)])))
  r, r_rot = np.split(out.rotation, 2)
  assert _rel(r_rot, q @ r) <= TOL
  assert np.isfinite(loss)
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
  assert any(np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)),
                         updates["batch_stats"], jax.device_get(variables["batch_stats"]))
  assert all(jax.tree.leaves(changed))


@pytest.mark.parametrize("shape, message", [
    ((1, N, 2), r"points must have 3 coordinates on its last axis .*got shape "
                r"\(1, 64, 2\) with last axis 2"),
    ((N, 3), r"points must have rank 3 .*got rank 2 with shape \(64, 3\)"),
    ((1, 8, 3), r"points must have at least 16 points .*got N=8"),
])
def test_shape_errors(shape, message):
  with pytest.raises(ValueError, match=message):
    PointCloudCanonicalizer(num_neighbors=16).init(jax.random.key(0), np.ones(shape))


def test_nan_points_error():
  x = _clouds(11)  # numpy: conftest's NaN debugging would stop jnp.nan at once
  x[1, 3, 2] = np.nan
  with pytest.raises(ValueError, match=r"points must be finite; got 1 NaN/Inf"):
    PointCloudCanonicalizer(num_neighbors=K).init(jax.random.key(0), x)


def test_nan_points_error_under_jit():
  """With check_finite=True the check runs with the jitted computation and raises
  there; by default (None) a traced call carries no host callback at all."""
  module, variables, _ = _setup("vn-O3")
  x = _clouds(12)
  x[0, 0, 0] = np.nan
  checked = module.clone(check_finite=True)
  # conftest's NaN debugging would stop at the NaN input before the check runs.
  with jax.debug_nans(False), pytest.raises(Exception, match="points must be finite"):
    jax.block_until_ready(fast_jit(checked.apply)(variables, x).rotation)
  jaxpr = lambda m: str(jax.make_jaxpr(m.apply)(variables, _clouds(12)))
  assert "debug_callback" in jaxpr(checked)
  assert "debug_callback" not in jaxpr(module)
  assert "debug_callback" not in jaxpr(module.clone(check_finite=False))


def test_bad_options():
  with pytest.raises(ValueError, match=r"network must be one of \('e3nn', 'vn'\); "
                                       r"got 'pointnet'"):
    PointCloudCanonicalizer(network="pointnet").init(jax.random.key(0), _clouds(0))
  with pytest.raises(ValueError, match=r"group must be one of \('SO3', 'O3'\); got 'SE3'"):
    PointCloudCanonicalizer(group="SE3").init(jax.random.key(0), _clouds(0))
