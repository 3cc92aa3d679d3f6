"""PointNet classifier (Qi et al., CVPR 2017), without the input/feature T-Nets.

A canonicalizer replaces the T-Net's job (undoing the pose), so this is the plain
PointNet used as the pretrained predictor: shared per-point MLP 64-128-1024 (each
a dense layer + batch norm + ReLU, the last without ReLU), max pool over the
points, then 512-256 fully connected with batch norm, ReLU and dropout 0.4 before
the classifier (the common PyTorch PointNet classifier's layout).

Input (B, N, 3) float32 points (x, y, z rows); output (B, num_classes) logits.
Batch norm uses momentum 0.9 (= torch 0.1) and eps 1e-5; in training call
``apply(..., train=True, mutable=["batch_stats"], rngs={"dropout": key})``.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from canon_jax import pointcloud


class PointNet(nn.Module):
  """PointNet classifier.

  Attributes:
    num_classes: number of logits (ModelNet40: 40).
    features: widths of the shared per-point MLP.
    head: widths of the hidden fully connected layers after the max pool.
    dropout_rate: dropout before the last hidden layer's batch norm (training
      only).
  """
  num_classes: int = 40
  features: Sequence[int] = (64, 128, 1024)
  head: Sequence[int] = (512, 256)
  dropout_rate: float = 0.4

  @nn.compact
  def __call__(self, points: jax.Array, train: bool = False) -> jax.Array:
    """(B, N, 3) points -> (B, num_classes) logits."""
    pointcloud.check_points(points, "points")
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=0.9, epsilon=1e-5)
    # The shared MLP on the points flattened to (B * N, C) rows; batch norm
    # averages over batch and points.
    b, n, _ = points.shape
    x = points.reshape(b * n, 3)
    for i, width in enumerate(self.features):
      x = norm()(nn.Dense(width)(x))
      if i < len(self.features) - 1:
        x = nn.relu(x)
    x = jnp.max(x.reshape(b, n, -1), axis=1)              # (B, features[-1])
    for i, width in enumerate(self.head):
      x = nn.Dense(width)(x)
      if i == len(self.head) - 1:
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
      x = nn.relu(norm()(x))
    return nn.Dense(self.num_classes)(x)


# A PointNet with a few thousand parameters for tests (same layout, narrow widths).
PointNetTiny = functools.partial(PointNet, features=(8, 16, 32), head=(16,))
