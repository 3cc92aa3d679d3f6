"""Part-segmentation networks for point clouds: per-point labels.

Both return per-point logits (B, N, num_classes) for clouds (B, N, 3) (rows
x, y, z), built as in the PointNet / DGCNN segmentation networks: per-point
features and a global feature (max over the points) are concatenated at every
point and a shared per-point MLP classifies each point. The object category is
not an input (a canonicalizer in front sees the cloud only); the T-Nets are left
out, as in :mod:`canon_jax.models.pointnet` (a canonicalizer does their job).

Batch norm: momentum 0.9 (= torch 0.1), eps 1e-5; in training call
``apply(..., train=True, mutable=["batch_stats"], rngs={"dropout": key})``.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from canon_jax import pointcloud
from canon_jax.models.dgcnn import DGCNN


def _per_point_head(local: jax.Array, global_feature: jax.Array, widths: Sequence[int],
                    num_classes: int, dropout_rate: float, train: bool, act) -> jax.Array:
  """[local (B, N, C) | global (B, G) at every point] -> shared MLP -> (B, N, K).

  Dense + batch norm + ``act`` per hidden width, dropout before the last hidden
  layer, on the points flattened to rows (B * N, C).
  """
  b, n, _ = local.shape
  x = jnp.concatenate(
      [local, jnp.broadcast_to(global_feature[:, None, :], (b, n, global_feature.shape[-1]))],
      axis=-1).reshape(b * n, -1)
  for i, width in enumerate(widths):
    if i == len(widths) - 1:
      x = nn.Dropout(dropout_rate, deterministic=not train)(x)
    x = nn.Dense(width)(x)
    x = act(nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(x))
  return nn.Dense(num_classes)(x).reshape(b, n, num_classes)


class PointNetSegmentation(nn.Module):
  """PointNet part segmentation (Qi et al. 2017, without T-Nets and category input).

  A shared per-point MLP (``features``; dense + BN + ReLU each), the max over the
  points of its last layer as the global feature, then for every point the
  concatenation of all per-point layers' outputs and the global feature through the
  shared ``head`` MLP (dense + BN + ReLU, dropout before its last layer) and a dense
  classifier.

  Attributes:
    num_classes: part labels K (ShapeNet-part: 50).
    features: widths of the per-point MLP (the last is the global feature's).
    head: widths of the per-point classifier's hidden layers.
    dropout_rate: dropout before the last hidden layer (training only).
  """
  num_classes: int = 50
  features: Sequence[int] = (64, 128, 128, 512, 1024)
  head: Sequence[int] = (256, 256, 128)
  dropout_rate: float = 0.2

  @nn.compact
  def __call__(self, points: jax.Array, train: bool = False) -> jax.Array:
    """(B, N, 3) points -> (B, N, num_classes) per-point logits."""
    pointcloud.check_points(points, "points")
    b, n, _ = points.shape
    x = points.reshape(b * n, 3)
    layers = []
    for width in self.features:
      x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9,
                               epsilon=1e-5)(nn.Dense(width)(x)))
      layers.append(x)
    local = jnp.concatenate(layers, axis=-1).reshape(b, n, -1)
    global_feature = jnp.max(layers[-1].reshape(b, n, -1), axis=1)
    return _per_point_head(local, global_feature, self.head, self.num_classes,
                           self.dropout_rate, train, nn.relu)


class DGCNNSegmentation(DGCNN):
  """DGCNN part segmentation (Wang et al. 2019, without the transform net).

  EdgeConv layers (``features``; edge feature [h_j - h_i, h_i] on a kNN graph
  recomputed in each layer's feature space, dense without bias + BN +
  LeakyReLU(0.2), max over the k neighbours), their outputs concatenated, embedded
  to ``embedding`` channels (dense + BN + LeakyReLU) and max-pooled over the points
  as the global feature; for every point, [EdgeConv outputs | global] through the
  shared ``head`` MLP and a dense classifier.

  Attributes:
    num_classes: part labels K.
    num_neighbors: k (the point itself included).
    features: EdgeConv widths.
    embedding: width of the global embedding.
    head: widths of the per-point classifier's hidden layers.
    dropout_rate: dropout before the last hidden layer (training only).
    negative_slope: of the LeakyReLUs.
  """
  num_classes: int = 50
  features: Sequence[int] = (64, 64, 64)
  head: Sequence[int] = (256, 256, 128)

  @nn.compact
  def __call__(self, points: jax.Array, train: bool = False) -> jax.Array:
    """(B, N, 3) points -> (B, N, num_classes) per-point logits."""
    local, embedded, _, act = self._edge_convs(points, train)
    return _per_point_head(local, jnp.max(embedded, axis=1), self.head, self.num_classes,
                           self.dropout_rate, train, act)


# Test-sized variants (same layouts, a few thousand parameters).
PointNetSegmentationTiny = functools.partial(PointNetSegmentation, features=(8, 16, 32),
                                             head=(16,))
DGCNNSegmentationTiny = functools.partial(DGCNNSegmentation, num_neighbors=8,
                                          features=(8, 8), embedding=32, head=(16,))
