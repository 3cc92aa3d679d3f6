"""What the benchmark runs: shared constants, batch sizes of each mode and the inputs.

Both libraries get the same numpy inputs (:func:`make_images`, :func:`make_clouds`),
converted to jax / torch arrays, the same architectures, losses and optimizer.
"""
from __future__ import annotations

import dataclasses

import numpy as np

ROWS = ("canonicalizer", "train_step", "pointcloud", "inference")
"""Row names, in the order they run."""
DTYPES = ("float32", "bfloat16")
"""Compute dtypes of the image predictor (``--dtype``)."""
PREDICTOR_DTYPE_ROWS = ("train_step", "inference")
"""The rows whose image predictor ``--dtype`` sets."""

GROUP = "C8"
LIFT_PADDING = "VALID"      # equiadapt's custom network: 5x5 lift without padding
PRIOR_WEIGHT = 100.0        # equiadapt's prior weight for images
ROTATION_PRIOR_WEIGHT = 1.0
NUM_CLASSES = 10            # images (CIFAR-10 in the paper)
NUM_CLOUD_CLASSES = 40      # ModelNet40
NUM_NEIGHBORS = 20          # equiadapt's VN canonicalizer: n_knn 20
LEARNING_RATE = 1e-3
MOMENTUM = 0.9


@dataclasses.dataclass(frozen=True)
class Sizes:
  """Shapes and repetitions of one benchmark mode.

  Attributes:
    canon_batch, canon_size: row 1 batch and image side (also the side the row-2
      canonicalizer resizes its input to).
    train_batch, image_size: row 2 batch and image side.
    predictor: canon_jax model name of the image predictor (torch rows need
      "resnet50", torchvision's).
    cloud_batch, num_points, pointnet: row 3 batch, points per cloud, and the
      PointNet (features, head) widths.
    infer_batch: row 4 batch (the averaging runs the predictor on 8x as many).
    warmup, iters: untimed steps after compilation, timed steps per side.
    predictor_dtype: compute dtype of the image predictor ("float32" or
      "bfloat16", :data:`DTYPES`); parameters and everything else stay float32.
  """
  canon_batch: int
  train_batch: int
  cloud_batch: int
  infer_batch: int
  warmup: int
  iters: int
  canon_size: int = 96
  image_size: int = 224
  predictor: str = "resnet50"
  num_points: int = 1024
  pointnet: tuple[tuple[int, ...], tuple[int, ...]] = ((64, 128, 1024), (512, 256))
  predictor_dtype: str = "float32"


MODES = {
    "full": Sizes(canon_batch=64, train_batch=32, cloud_batch=32, infer_batch=32,
                  warmup=2, iters=10),
    # About 4 min on 2 cores. 7 timed steps: with 3, the medians of
    # row 2 moved by up to 3% between runs of the same code.
    "quick": Sizes(canon_batch=4, train_batch=2, cloud_batch=8, infer_batch=2,
                   warmup=1, iters=7),
    # Test-sized: dominated by JAX compilation (10-30 s a row on 2 shared cores); the
    # torch image train step has no torchvision counterpart of "resnet_tiny" and is
    # skipped.
    "tiny": Sizes(canon_batch=2, train_batch=2, cloud_batch=2, infer_batch=2, warmup=1,
                  iters=2, canon_size=24, image_size=40, predictor="resnet_tiny",
                  num_points=32, pointnet=((8, 16, 32), (16,))),
}
"""``--quick``, ``--tiny`` or neither (``full``)."""


def make_images(batch: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(B, S, S, 3) float32 smooth images in [0, 1] and (B,) int32 labels."""
  rng = np.random.default_rng(seed)
  coarse = rng.random((batch, 8, 8, 3), dtype=np.float32)
  idx = np.arange(size) * 8 // size
  images = coarse[:, idx][:, :, idx] * 0.5 + 0.5 * rng.random(
      (batch, size, size, 3), dtype=np.float32)
  return images, rng.integers(0, NUM_CLASSES, batch).astype(np.int32)


def make_clouds(batch: int, points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(B, N, 3) float32 points on randomly stretched ellipsoids and (B,) labels."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, points, 3))
  x /= np.linalg.norm(x, axis=-1, keepdims=True)
  x *= rng.uniform(0.5, 1.5, (batch, 1, 3))
  return x.astype(np.float32), rng.integers(0, NUM_CLOUD_CLASSES, batch).astype(np.int32)
