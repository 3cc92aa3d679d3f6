"""Group-equivariant canonicalization networks for images: (B, H, W, C) -> (B, |G|).

The logits for element h are the mean of the last regular feature map's h-th group
slice over space and channels, so ``logits(g . x)[h] = logits(x)[g^-1 h]``: the
argmax moves from h to g h when the input is transformed by g.
"""
from __future__ import annotations

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from canon_jax.groups import DiscreteGroup, from_name
from canon_jax.nn.gconv import (Basis, GroupBatchNorm, GroupConv, LiftingConv,
                                group_avg_pool, pool_to_logits)


class GroupConvNet(nn.Module):
  """equiadapt's default canonicalizer: lift (k x k), then 1 x 1 group convs, ReLU.

  Attributes:
    group: C_n / D_n (or its name).
    features: channels per group element (32 in equiadapt).
    kernel_size: lifting kernel size (5 in equiadapt).
    num_layers: total layers including the lift (3 in equiadapt).
    basis, max_frequency, num_rings, sigma: lifting filter parametrisation
      (see :mod:`canon_jax.nn.gconv`).
    padding: the lift's padding, "SAME" (maps keep H x W) or "VALID" (H - k + 1;
      equiadapt's ``CustomEquivariantNetwork``); the later layers are 1 x 1.
  """
  group: DiscreteGroup | str
  features: int = 32
  kernel_size: int = 5
  num_layers: int = 3
  basis: Basis = "auto"
  max_frequency: int = 1
  num_rings: int = 1
  sigma: float = 1.0
  padding: Literal["SAME", "VALID"] = "SAME"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    del train  # no batch statistics
    group = from_name(self.group)
    f = LiftingConv(group, self.features, self.kernel_size, basis=self.basis,
                    max_frequency=self.max_frequency, num_rings=self.num_rings,
                    sigma=self.sigma, padding=self.padding, name="lift")(x)
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
  with exact 2x2 average pooling between stages (input sides must stay even), then
  GroupBatchNorm, ReLU and mean pooling to (B, |G|). Batch statistics live in the
  ``batch_stats`` collection.

  The paper's COCO canonicalizer is 64 channels, kernel 9, 12 layers on 128 x 128
  inputs (C4); defaults here are that size.
  """
  group: DiscreteGroup | str
  stage_features: tuple[int, ...] = (64, 64, 64)
  blocks_per_stage: int = 2
  kernel_size: int = 9
  basis: Basis = "auto"
  max_frequency: int = 1
  num_rings: int = 3
  sigma: float = 1.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    group = from_name(self.group)
    conv = lambda feats, name: GroupConv(
        group, feats, self.kernel_size, basis=self.basis,
        max_frequency=self.max_frequency, num_rings=self.num_rings,
        sigma=self.sigma, name=name)
    f = LiftingConv(group, self.stage_features[0], self.kernel_size, basis=self.basis,
                    max_frequency=self.max_frequency, num_rings=self.num_rings,
                    sigma=self.sigma, name="lift")(x)
    for s, feats in enumerate(self.stage_features):
      if s > 0:
        f = group_avg_pool(f)
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
