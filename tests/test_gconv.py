import jax
import jax.numpy as jnp
import numpy as np
import pytest

import canon_jax as cj
from canon_jax import nn as cnn
from canon_jax.nn import gconv as cgconv
from helpers import (assert_equivariant, elements, on_images, on_logits, on_regular,
                     smooth_disk_images)

KEY = jax.random.PRNGKey(0)



@pytest.mark.parametrize("name,padding", [("C4", "SAME"), ("D4", "SAME"),
                                          ("D2", "SAME"), ("C4", "VALID"),
                                          ("D4", "VALID")])
@pytest.mark.parametrize("basis", ["pixel", "steerable"])
def test_lifting_and_group_conv_are_exactly_equivariant(name, padding, basis):
  g = cj.from_name(name)
  x = jax.random.normal(KEY, (2, 11, 11, 2))
  lift = cnn.LiftingConv(g, features=3, kernel_size=5, filters=cnn.FilterBasis(basis),
                         padding=padding)
  gconv = cnn.GroupConv(g, features=2, kernel_size=3, filters=cnn.FilterBasis(basis))
  lv = lift.init(KEY, x)
  lapply, gapply = jax.jit(lift.apply), jax.jit(gconv.apply)
  f = lapply(lv, x)
  side = 11 if padding == "SAME" else 7
  assert f.shape == (2, side, side, 3, g.order)
  gv = gconv.init(KEY, f)
  assert_equivariant(lambda x: lapply(lv, x), x, g, on_images, on_regular)
  assert_equivariant(lambda f: gapply(gv, f), f, g, on_regular, on_regular)


def test_c8_steerable_layers_exact_at_90_degrees_close_at_45():
  g = cj.cyclic(8)
  x = smooth_disk_images(KEY, 2, 32, channels=2, cutoff=0.08)
  net = cnn.LiftingConv(g, features=4, kernel_size=5)
  v = net.init(KEY, x)
  f = net.apply(v, x)
  f2 = net.apply(v, cj.transform_images(x, g, elements(2, 2)))
  np.testing.assert_allclose(f2, on_regular(f, g, 2), atol=1e-5)
  f1 = net.apply(v, cj.transform_images(x, g, elements(1, 2)))
  rel = jnp.linalg.norm(f1 - on_regular(f, g, 1)) / jnp.linalg.norm(f)
  assert rel < 0.1, float(rel)


@pytest.mark.parametrize("name,k,rings,steered,padding", [
    ("C8", 5, 1, True, "SAME"), ("D8", 5, 1, True, "SAME"), ("D4", 5, 1, True, "SAME"),
    ("C6", 7, 2, True, "SAME"), ("C8", 5, 1, True, "VALID"),
    ("C6", 7, 2, True, "VALID"), ("D8", 9, 3, True, "SAME")])
def test_steerable_lift_equals_the_expanded_kernel(name, k, rings, steered, padding):
  # features=8: LiftingConv correlates with the basis (only its untransformed copy:
  # the copies are linear combinations of it), then mixes.
  g = cj.from_name(name)
  assert (cgconv._steering_matrices(g, k, 1, rings, 1.0) is not None) == steered
  x = jax.random.normal(KEY, (2, 13, 12, 3))
  lift = cnn.LiftingConv(g, features=8, kernel_size=k, padding=padding,
                         filters=cnn.FilterBasis("steerable", num_rings=rings))
  v = lift.init(KEY, x)
  basis = jnp.asarray(cnn.steerable_basis(g, k, 1, rings))

  def expanded(params, x):
    copies = jnp.tensordot(basis, params["filters"]["coefficients"], axes=(-1, 0))
    return jnp.stack([
        jax.lax.conv_general_dilated(x, copies[h], (1, 1), padding,
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        for h in range(g.order)], axis=-1) + params["bias"][:, None]

  np.testing.assert_allclose(lift.apply(v, x), expanded(v["params"], x), atol=2e-5,
                             rtol=1e-5)
  loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))
  got = jax.grad(loss(lambda p, x: lift.apply({"params": p}, x)), argnums=(0, 1))(
      v["params"], x)
  want = jax.grad(loss(expanded), argnums=(0, 1))(v["params"], x)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,k,rings", [("C8", 5, 1), ("D8", 5, 1), ("C4", 5, 1),
                                          ("D2", 5, 1), ("C8", 9, 3), ("D6", 7, 2)])
def test_basis_copies_are_combinations_of_the_plain_basis(name, k, rings):
  # Every harmonic pair (cos, sin)(m phi) of a copy is a rotation (and, for
  # mirrored elements, a reflection) of the untransformed pair, up to the grid
  # normalisation of each function; outer rings too (their harmonics vanish at
  # the centre pixel, which every element fixes).
  g = cj.from_name(name)
  basis = cnn.steerable_basis(g, k, 2, rings)
  centre = basis[:, k // 2, k // 2]                  # (|G|, nb)
  assert np.count_nonzero(np.abs(centre) > 1e-7, axis=1).tolist() == [rings] * g.order
  steer = cgconv._steering_matrices(g, k, 2, rings, 1.0)
  assert steer.shape == (g.order,) + basis.shape[-1:] * 2
  np.testing.assert_allclose(np.einsum("xyi,hij->hxyj", basis[0], steer), basis,
                             atol=1e-6)
  np.testing.assert_allclose(steer[0], np.eye(basis.shape[-1]), atol=1e-6)


def test_steerable_basis_keeps_rotated_filters_strong():
  # The reference rotates 5x5 pixel filters bilinearly and loses ~39% of their L2
  # norm at 45 degrees. Evaluating the basis at rotated coordinates does not.
  b = cnn.steerable_basis(cj.cyclic(8), 5)
  assert b.shape == (8, 5, 5, 3)
  norms = np.sqrt((b ** 2).sum(axis=(1, 2)))       # (|G|, nb)
  np.testing.assert_allclose(norms[0], 1.0, rtol=1e-5)
  np.testing.assert_allclose(norms, 1.0, atol=0.03)
  # A random filter keeps its norm too, and its 90-degree copy is a permutation.
  w = np.random.default_rng(0).normal(size=3)
  filt = b @ w
  n = np.linalg.norm(filt.reshape(8, -1), axis=1)
  assert n.min() / n.max() > 0.97
  np.testing.assert_allclose(filt[2], np.rot90(filt[0]), atol=1e-6)
  # Higher frequency and more rings are available.
  assert cnn.steerable_basis(cj.dihedral(8), 7, max_frequency=2, num_rings=2).shape[-1] == 10


def test_wide_resnet_is_exactly_equivariant_for_c4():
  g = cj.cyclic(4)
  net = cnn.GroupWideResNet(g, stage_features=(4, 6), blocks_per_stage=1, kernel_size=3)
  x = jax.random.normal(KEY, (2, 16, 16, 3))
  v = net.init(KEY, x)
  logits, upd = net.apply(v, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (2, 4) and "batch_stats" in upd
  apply = jax.jit(net.apply)
  assert_equivariant(lambda x: apply(v, x), x, g, on_images, on_logits)


def test_bad_layer_arguments():
  x = jnp.zeros((1, 8, 8, 1))
  with pytest.raises(ValueError, match="kernel_size must be a positive odd int"):
    cnn.LiftingConv("C4", 2, kernel_size=4).init(KEY, x)
  with pytest.raises(ValueError, match="basis='pixel' is only exact"):
    cnn.LiftingConv("C8", 2, kernel_size=5, filters=cnn.FilterBasis("pixel")).init(KEY, x)
  with pytest.raises(ValueError, match="padding must be 'SAME' or 'VALID'"):
    cnn.LiftingConv("C4", 2, kernel_size=3, padding="same").init(KEY, x)
  with pytest.raises(ValueError, match="needs H, W >= kernel_size=9; got 8x8"):
    cnn.LiftingConv("C4", 2, kernel_size=9, padding="VALID").init(KEY, x)
  with pytest.raises(ValueError, match=r"regular features \(B, H, W, C, \|G\|=4\)"):
    cnn.GroupConv("C4", 2).init(KEY, jnp.zeros((1, 8, 8, 2, 8)))
  with pytest.raises(ValueError, match="even H and W"):
    cnn.group_avg_pool(jnp.zeros((1, 7, 7, 2, 4)))


@pytest.mark.parametrize("name", ["C8", "C4", "C6", "C2"])
def test_pointwise_group_conv_in_the_group_fourier_basis_equals_the_dense_one(
    name, monkeypatch):
  # Above _MIN_FOURIER_MACS a 1 x 1 C_n layer (n even) mixes channels per frequency of
  # the group axis; values and gradients (input and weights) must be the dense ones,
  # and the layer must stay equivariant.
  g = cj.from_name(name)
  f = jax.random.normal(KEY, (2, 5, 5, 3, g.order))
  layer = cnn.GroupConv(g, features=4, kernel_size=1)
  v = layer.init(KEY, f)
  v = {"params": {**v["params"], "bias": jax.random.normal(jax.random.PRNGKey(2), (4,))}}
  ct = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 5, 4, g.order))

  def value_and_grads(threshold):
    monkeypatch.setattr(cgconv, "_MIN_FOURIER_MACS", threshold)
    y, vjp = jax.vjp(layer.apply, v, f)
    return y, vjp(ct)

  dense, fourier = value_and_grads(10**12), value_and_grads(0)
  for a, b in zip(jax.tree.leaves(dense), jax.tree.leaves(fourier)):
    np.testing.assert_allclose(b, a, atol=2e-5, rtol=1e-5)
  y = fourier[0]
  for k in range(g.order):                 # pointwise: the group axis alone moves
    perm = g.regular_permutation(k)        # (k . f)[..., h] = f[..., k^-1 h]
    np.testing.assert_allclose(layer.apply(v, f[..., perm]), y[..., perm], atol=2e-5)
