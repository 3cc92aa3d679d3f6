"""Random-access point-cloud datasets read from TFDS ``array_record`` files.

:func:`get_point_cloud_dataset` opens one split of a prepared point-cloud dataset
and returns a :class:`PointCloudDataset`, a sequence of examples::

    {'points': float32 (N, 3) rows (x, y, z), 'label': int32 scalar}

Names:

* ``'canon_shapes'`` (``'canon_shapes/tiny'``, ``'canon_shapes/small'``): the
  shapes this project generates (:mod:`canon_jax.data.shapes`), prepared offline
  on first use (a few seconds). Upright along +z.
* ``'modelnet40_hdf5'``: ModelNet40 from the PointNet HDF5 release
  (:mod:`canon_jax.data.modelnet40`); prepare it once from the manual download.
  Upright along +y (``up_axis=1`` for z-axis augmentation).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from canon_jax.data import modelnet40, shapes
from canon_jax.data.sources import _open_records

Example = dict[str, np.ndarray]

UP_AXES = {"canon_shapes": 2, "modelnet40_hdf5": 1}
"""Vertical axis of each dataset's clouds (the axis of "z" rotations)."""


@dataclasses.dataclass(frozen=True)
class PointCloudDataset:
  """One split of a point-cloud classification dataset with random access.

  ``dataset[i]`` is ``{'points': float32 (N, 3), 'label': int32 scalar}``; a grain
  ``RandomAccessDataSource`` like :class:`canon_jax.data.ImageDataset`.

  Attributes:
    name: dataset name as requested (e.g. ``'canon_shapes/small'``).
    split: TFDS split string.
    num_classes: number of label values.
    input_shape: ``(N, 3)`` of every cloud.
    up_axis: the clouds' vertical axis (0, 1 or 2).
    records: the raw TFDS records (``points``, ``label``).
  """
  name: str
  split: str
  num_classes: int
  input_shape: tuple[int, int]
  up_axis: int
  records: Sequence[Mapping[str, Any]]
  input_key = "points"

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> Example:
    record = self.records[index]
    return {"points": np.asarray(record["points"], np.float32),
            "label": np.int32(record["label"])}


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  base, _, config = name.partition("/")
  if base == "canon_shapes":
    builder = shapes.CanonShapes(config=config or "default", data_dir=data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare()
    return builder
  if base == "modelnet40_hdf5":
    return modelnet40.Modelnet40Hdf5(data_dir=data_dir)
  raise ValueError(f"point-cloud dataset name must be 'canon_shapes[/tiny|/small]' or "
                   f"'modelnet40_hdf5'; got {name!r}.")


def get_point_cloud_dataset(name: str, split: str, *, data_dir: str | None = None
                            ) -> PointCloudDataset:
  """Opens one split of a point-cloud dataset (TFDS, array_record).

  Args:
    name: ``'canon_shapes'`` (optionally ``/tiny`` or ``/small``), prepared here on
      first use, or ``'modelnet40_hdf5'``, prepared beforehand from the manual
      download (see :class:`canon_jax.data.Modelnet40Hdf5`).
    split: TFDS split string, e.g. ``'train'``, ``'test'``, ``'train[:90%]'``.
    data_dir: TFDS data directory (``None``: ``~/tensorflow_datasets``).

  Returns:
    A :class:`PointCloudDataset`.

  Raises:
    ValueError: unknown name, dataset not prepared (the message says how), or a
      missing split.
  """
  builder = _builder(name, data_dir)
  if name.startswith("modelnet40_hdf5") and not builder.is_prepared():
    raise ValueError(
        f"name={name!r}: ModelNet40 is not prepared in data_dir="
        f"{data_dir or '~/tensorflow_datasets'!r}. It needs the manual download:\n"
        + modelnet40.Modelnet40Hdf5.MANUAL_DOWNLOAD_INSTRUCTIONS
        + "then: canon_jax.data.Modelnet40Hdf5(data_dir=DATA_DIR).download_and_prepare("
        "download_config=tfds.download.DownloadConfig(manual_dir=FOLDER))")
  records = _open_records(builder, name, split, data_dir)
  features = builder.info.features
  return PointCloudDataset(
      name=name, split=split, num_classes=int(features["label"].num_classes),
      input_shape=tuple(int(d) for d in features["points"].shape),
      up_axis=UP_AXES[name.split("/")[0]], records=records)
