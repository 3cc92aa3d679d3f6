"""Group-equivariant canonicalization networks for images: (B, H, W, C) -> (B, |G|).

The logits for element h are the mean of the last regular feature map's h-th group
slice over space and channels, so ``logits(g . x)[h] = logits(x)[g^-1 h]``: the
argmax moves from h to g h when the input is transformed by g.
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from canon_jax import transforms
from canon_jax.groups import DiscreteGroup, from_name
from canon_jax.nn.gconv import (FilterBasis, GroupBatchNorm, GroupConv, LiftingConv,
                                group_blur_pool, pool_to_logits)


class GroupConvNet(nn.Module):
  """equiadapt's default canonicalizer: lift (k x k), then 1 x 1 group convs, ReLU.

  Attributes:
    group: C_n / D_n (or its name).
    features: channels per group element (32 in equiadapt).
    kernel_size: lifting kernel size (5 in equiadapt).
    num_layers: total layers including the lift (3 in equiadapt).
    filters: the lifting filters' parametrisation (:class:`FilterBasis`).
    padding: the lift's padding, "SAME" (maps keep H x W) or "VALID" (H - k + 1;
      equiadapt's ``CustomEquivariantNetwork``); the later layers are 1 x 1.
  """
  group: DiscreteGroup | str
  features: int = 32
  kernel_size: int = 5
  num_layers: int = 3
  filters: FilterBasis = FilterBasis()
  padding: Literal["SAME", "VALID"] = "SAME"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no batch statistics
    group = from_name(self.group)
    f = LiftingConv(group, self.features, self.kernel_size, filters=self.filters,
                    padding=self.padding, name="lift")(x)
    for i in range(self.num_layers - 1):
      h = nn.relu(f)
      if i == self.num_layers - 2:
        # The last 1x1 layer is affine per pixel and the logits are a spatial mean:
        # pooling first gives the same logits for a fraction of the work.
        h = jnp.mean(h, axis=(1, 2), keepdims=True)
      f = GroupConv(group, self.features, 1, name=f"gconv{i + 1}")(h)
    return pool_to_logits(f)


class GroupWideResNet(nn.Module):
  """Group-equivariant wide ResNet for segmentation-scale canonicalizers.

  Lift (k x k), then ``len(stage_features)`` stages of ``blocks_per_stage``
  pre-activation residual blocks (GroupBatchNorm, ReLU, k x k GroupConv, twice),
  with an isotropic Gaussian blur (``downsample_sigma`` pixels) and 2x2 average
  pooling between stages (:func:`group_blur_pool`; input sides must stay even), then
  GroupBatchNorm, ReLU and mean pooling to (B, |G|). Batch statistics live in the
  ``batch_stats`` collection.

  Every layer is exactly equivariant under the grid's 90-degree rotations and flips.
  Under other rotations (C8's 45 degrees) each k x k layer adds a small
  discretisation error and the errors add up with depth: for C8/D8 wrap the network
  in :func:`coset_averaged_logits` (:class:`canon_jax.ImageCanonicalizer` does).

  The paper's COCO canonicalizer is 64 channels, kernel 9, 12 layers on 128 x 128
  inputs (C4); defaults here are that size.
  """
  group: DiscreteGroup | str
  stage_features: tuple[int, ...] = (64, 64, 64)
  blocks_per_stage: int = 2
  kernel_size: int = 9
  filters: FilterBasis = FilterBasis()
  downsample_sigma: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    group = from_name(self.group)
    conv = lambda feats, name: GroupConv(group, feats, self.kernel_size,
                                         filters=self.filters, name=name)
    f = LiftingConv(group, self.stage_features[0], self.kernel_size,
                    filters=self.filters, name="lift")(x)
    for s, feats in enumerate(self.stage_features):
      if s > 0:
        f = group_blur_pool(f, self.downsample_sigma)
      for b in range(self.blocks_per_stage):
        name = f"stage{s}_block{b}"
        h = nn.relu(GroupBatchNorm(name=f"{name}_bn1")(f, train))
        shortcut = f if f.shape[-2] == feats else GroupConv(
            group, feats, 1, use_bias=False, name=f"{name}_proj")(h)
        h = conv(feats, f"{name}_conv1")(h)
        h = nn.relu(GroupBatchNorm(name=f"{name}_bn2")(h, train))
        f = shortcut + conv(feats, f"{name}_conv2")(h)
    f = nn.relu(GroupBatchNorm(name="final_bn")(f, train))
    return pool_to_logits(f)


def grid_coset_size(group: DiscreteGroup) -> int:
  """m = |G| / |H|, H the subgroup of G that the pixel grid carries exactly.

  H holds the rotations of G by multiples of 90 degrees (and, for D_n, their
  mirrored copies): C_gcd(n, 4) or D_gcd(n, 4). The rotations ``r_j`` by
  ``2 pi j / n``, j = 0 .. m - 1, are one representative of each coset r_j H.
  C4, D4, C2, ...: m = 1; C8, D8: m = 2; C6: m = 3.
  """
  return group.n // math.gcd(group.n, 4)


def coset_averaged_logits(network: Callable[[jax.Array], jax.Array], x: jax.Array,
                          group: DiscreteGroup) -> jax.Array:
  """Symmetrises a network that is exactly equivariant on the grid over the cosets.

  ``L(x)[h] = mean_j N(r_j . x)[r_j h]``, j = 0 .. m - 1 (:func:`grid_coset_size`),
  where ``r_j . x`` rotates the input counter-clockwise by ``2 pi j / n``
  (:func:`canon_jax.rotate_images`, bilinear). If N is exactly equivariant under H
  (``N(k . x)[k h] = N(x)[h]`` for k in H, as every layer here is for rotations by
  90 degrees), then for the generator r_1: ``L(r_1 . x)[r_1 h] = L(x)[h]`` up to the
  difference between the resampled ``r_1 . (r_{m-1} . x)`` and the exactly rotated
  ``r_m . x`` (r_m is in H): only the input's interpolation error remains, not the
  network's own discretisation error, which grows with depth. Mirrored elements
  need no representative of their own (H holds the flips). Costs m forward passes.

  Args:
    network: (B', S, S, C) -> (B', |G|) logits; called once on the m B stacked
      copies (batch statistics see all of them).
    x: (B, S, S, C) network input, square.
    group: C_n or D_n.

  Returns:
    (B, |G|) logits; for m = 1, ``network(x)`` itself.
  """
  m = grid_coset_size(group)
  if m == 1:
    return network(x)
  b = x.shape[0]
  copies = [x] + [transforms.rotate_images(x, jnp.full((b,), 2 * jnp.pi * j / group.n,
                                                       x.dtype)) for j in range(1, m)]
  logits = network(jnp.concatenate(copies)).reshape(m, b, group.order)
  table = jnp.asarray(group.table[:m])                   # table[j, h] = r_j o h
  return jnp.mean(jnp.stack([logits[j][:, table[j]] for j in range(m)]), axis=0)
