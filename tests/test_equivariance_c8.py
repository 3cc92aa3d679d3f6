"""Non-90-degree equivariance of every image canonicalizer network, by construction.

The paper's recipe trains the canonicalizer on upright data with the identity prior
only, so a C8/D8 network must be (nearly) equivariant under 45-degree rotations at
initialisation: a C8 network that only C4 holds exactly maps 45-degree poses badly.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import canon_jax as cj
from canon_jax import nn as cnn
from helpers import (assert_equivariant, elements, on_images, on_logits, on_regular,
                     shift_rate, smooth_disk_images)
from train.configs import digits_c8

SEEDS = (0, 1, 2)


def _digits_canonicalizer(group: str, **overrides) -> cj.ImageCanonicalizer:
  """The digits demo's canonicalizer (train/configs/digits_c8.py), sizes overridable."""
  fields = {**digits_c8.get_config().canonicalizer.to_dict(), **overrides}
  return cj.ImageCanonicalizer(group=group, **fields)


def _pooled_rate(make, size: int, group: str, num: int = 100) -> float:
  g, m = cj.from_name(group), make()
  apply = jax.jit(lambda v, x: m.apply(v, x).logits)   # compiled once for all seeds
  rates = []
  for seed in SEEDS:
    x = smooth_disk_images(jax.random.PRNGKey(100 + seed), num, size, cutoff=0.08)
    v = jax.jit(m.init)(jax.random.PRNGKey(seed), x[:1])
    rates.append(shift_rate(lambda x: apply(v, x), x, g))
  return float(np.mean(rates))


@pytest.mark.parametrize("group", ["C8", "D8"])
@pytest.mark.parametrize("sizes", ["digits", "64px_3_stages"])
def test_wrn_45_degree_rotation_shifts_argmax_by_one(group, sizes):
  if sizes == "digits":
    make, size, num = lambda: _digits_canonicalizer(group), 32, 100
  else:
    make, size, num = lambda: _digits_canonicalizer(
        group, num_layers=12, resize=64), 64, 64
  assert make().network == "wrn"
  rate = _pooled_rate(make, size, group, num)
  assert rate >= 0.95, rate


def test_wrn_without_coset_averaging_acts_like_c4():
  # What coset averaging fixes: the k x k layers' 45-degree discretisation errors add
  # up with depth (measured ~50-65% at these sizes). If this ever passes 0.9, the
  # default (coset_average=None -> on for "wrn") may be worth revisiting.
  make = lambda: _digits_canonicalizer("C8", coset_average=False)
  assert _pooled_rate(make, 32, "C8") < 0.9


def test_gcnn_45_degree_rotation_shifts_argmax_by_one():
  make = lambda: cj.ImageCanonicalizer(group="C8", features=8, num_layers=3,
                                       resize=32, input_crop_ratio=1.0)
  assert _pooled_rate(make, 32, "C8") >= 0.95


def test_coset_averaged_logits_definition():
  # L(x)[h] = mean_j N(r_j . x)[r_j o h] with r_j the rotation by 2 pi j / n.
  g = cj.dihedral(8)
  x = smooth_disk_images(jax.random.PRNGKey(0), 3, 16)
  w = jax.random.normal(jax.random.PRNGKey(1), (16 * 16 * 3, g.order))
  net = lambda z: z.reshape(z.shape[0], -1) @ w
  got = cnn.coset_averaged_logits(net, x, g)
  r1 = cj.rotate_images(x, jnp.full((3,), jnp.pi / 4))
  want = 0.5 * (net(x) + net(r1)[:, g.table[1]])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert cnn.grid_coset_size(g) == 2
  assert [cnn.grid_coset_size(cj.from_name(n)) for n in ("C4", "D4", "C6", "C3")] == [
      1, 1, 3, 3]
  # m = 1: the network itself.
  np.testing.assert_array_equal(cnn.coset_averaged_logits(net, x, cj.cyclic(4)), net(x))


@pytest.mark.parametrize("sigma", [0.0, 0.7, 1.5])
def test_blur_pool_commutes_exactly_with_the_grid_group(sigma):
  g = cj.dihedral(4)
  f = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 12, 3, g.order))
  assert cnn.group_blur_pool(f, sigma).shape == (2, 6, 6, 3, g.order)
  assert_equivariant(lambda f: cnn.group_blur_pool(f, sigma), f, g, on_regular,
                     on_regular)
  # The blur keeps the mean of an interior bump (normalised taps).
  if sigma:
    bump = jnp.zeros((1, 12, 12, 1)).at[0, 6, 6, 0].set(1.0)
    np.testing.assert_allclose(jnp.sum(cnn.gaussian_blur(bump, sigma)), 1.0, rtol=1e-5)
  with pytest.raises(ValueError, match="even H and W"):
    cnn.group_blur_pool(f[:, :11], sigma)


def test_two_stage_wrn_is_exactly_d4_equivariant():
  g = cj.dihedral(4)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  m = cj.ImageCanonicalizer(group=g, network="wrn", features=4, kernel_size=3,
                            num_layers=8, resize=16, input_crop_ratio=1.0)
  v = m.init(jax.random.PRNGKey(1), x)
  assert_equivariant(jax.jit(lambda x: m.apply(v, x).logits), x, g, on_images,
                     on_logits, atol=1e-4, rtol=1e-4)


def test_continuous_angle_shifts_exactly_with_the_logits():
  logits = jax.random.normal(jax.random.PRNGKey(0), (5, 8))
  a0 = cj.continuous_angle(logits)
  for s in range(8):
    a = cj.continuous_angle(jnp.roll(logits, s, axis=-1))
    d = np.angle(np.exp(1j * (np.asarray(a) - np.asarray(a0) - 2 * np.pi * s / 8)))
    np.testing.assert_allclose(d, 0.0, atol=1e-5)
  np.testing.assert_allclose(cj.continuous_angle(logits + 3.0), a0, atol=1e-5)


@pytest.mark.parametrize("network", ["gcnn", "wrn"])
def test_continuous_readout_moves_45_degrees_at_initialisation(network):
  g = cj.cyclic(8)
  hits, apply = [], None
  for seed in SEEDS:
    x = smooth_disk_images(jax.random.PRNGKey(200 + seed), 100, 32, cutoff=0.08)
    if network == "gcnn":
      m = cj.ImageCanonicalizer(group=g, features=8, num_layers=3, resize=32,
                                input_crop_ratio=1.0, readout="continuous")
    else:
      m = _digits_canonicalizer("C8", readout="continuous")
    apply = apply or jax.jit(lambda v, x: m.apply(v, x).angle)
    v = m.init(jax.random.PRNGKey(seed), x[:1])
    angle = lambda x, v=v: apply(v, x)
    moved = np.asarray(angle(cj.transform_images(x, g, elements(1, 100))))
    d = np.degrees(np.angle(np.exp(1j * (moved - np.asarray(angle(x)) - np.pi / 4))))
    hits.append(np.abs(d) <= 3.0)
  assert np.mean(hits) >= 0.9, np.mean(hits)
