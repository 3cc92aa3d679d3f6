"""Part-segmentation data: generated shapes with labelled parts (``canon_parts``) and
the ShapeNet-part HDF5 release (``shapenet_part_hdf5``, manual download).

``canon_parts``: five categories made of primitives (see :mod:`canon_jax.data.shapes`),
each point labelled with the part it was sampled on; part labels are global (as in
ShapeNet-part, where the 16 categories share 50 labels), each category owning a
range of them (:data:`CATEGORY_PARTS`):

==========  ===================================  ======
category    parts                                labels
==========  ===================================  ======
mug         body, handle                         0-1
chair       seat, back, legs                     2-4
table       top, legs                            5-6
lamp        pole, shade (cone on top)            7-8
airplane    fuselage, wings, tail fin            9-11
==========  ===================================  ======

Sampling as :func:`canon_jax.data.make_shapes`: points uniform on the surface (by
area), an anisotropic scale per axis in [0.8, 1.2], centring, scaling to unit
maximum radius, Gaussian jitter (sigma 0.01, clipped at 0.05). Upright along +z.
Deterministic in ``seed`` (shape i of category c depends only on (seed, c, i)).

``shapenet_part_hdf5``: the PointNet authors' ShapeNet-part HDF5 release
(``shapenet_part_seg_hdf5_data``: ``ply_data_{train,val,test}{i}.h5`` with ``data``
(n, 2048, 3) float32, ``label`` (n, 1) category in [0, 16), ``pid`` (n, 2048) part
labels in [0, 50)). Upright along +y.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from canon_jax.data import modelnet40, shapes
from canon_jax.data.sources import _open_records
from canon_jax.data.array_record import ArrayRecordBuilder, SyntheticBuilder

CATEGORY_PARTS = {"mug": (0, 1), "chair": (2, 3, 4), "table": (5, 6), "lamp": (7, 8),
                  "airplane": (9, 10, 11)}
"""Category -> its part labels (``canon_parts``)."""
CATEGORY_NAMES = tuple(CATEGORY_PARTS)
NUM_PARTS = 12


def _labelled_parts(name: str, rng: np.random.Generator
                    ) -> list[tuple[shapes._Part, int]]:
  """(surface, part label) pairs of one random instance of category ``name``."""
  u = rng.uniform
  if name == "mug":
    r, h = u(0.4, 0.55), u(0.9, 1.3)
    handle = shapes._torus(u(0.22, 0.3), u(0.05, 0.08), arc=np.pi)
    return [(shapes._cylinder(r, h, top=False), 0),
            (shapes._placed(handle, (r, 0.0, 0.0), rotation=shapes._about_x(np.pi / 2)
                            @ shapes._rot_z(-np.pi / 2)), 1)]
  if name == "chair":
    w, d, seat_z = u(0.4, 0.55), u(0.4, 0.55), u(0.5, 0.8)
    back_h, t = u(0.6, 1.0), 0.05
    return ([(shapes._placed(shapes._box((w, d, t)), (0.0, 0.0, seat_z)), 2),
             (shapes._placed(shapes._box((w, t, back_h / 2)),
                             (0.0, -d + t, seat_z + back_h / 2)), 3)]
            + [(leg, 4) for leg in shapes._legs(w, d, seat_z, seat_z, 0.06)])
  if name == "table":
    w, d, top_z, t = u(0.7, 1.0), u(0.4, 0.7), u(0.6, 0.9), 0.05
    return ([(shapes._placed(shapes._box((w, d, t)), (0.0, 0.0, top_z)), 5)]
            + [(leg, 6) for leg in shapes._legs(w, d, top_z, top_z, 0.07)])
  if name == "lamp":  # a pole on a base disk, a shade (open cone) on top
    pole_h, shade_h = u(1.2, 1.6), u(0.4, 0.6)
    return [(shapes._cylinder(u(0.05, 0.08), pole_h), 7),
            (shapes._placed(shapes._cone(u(0.3, 0.45), shade_h),
                            (0.0, 0.0, (pole_h + shade_h) / 2)), 8)]
  if name == "airplane":  # fuselage along +x, wings across y, fin up at the tail
    length, radius = u(1.6, 2.0), u(0.12, 0.18)
    span, chord = u(1.4, 1.9), u(0.25, 0.4)
    fin_h = u(0.3, 0.45)
    about_y = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    return [(shapes._placed(shapes._cylinder(radius, length), rotation=about_y), 9),
            (shapes._placed(shapes._box((chord / 2, span / 2, 0.03)),
                            (u(-0.1, 0.2), 0.0, 0.0)), 10),
            (shapes._placed(shapes._box((chord / 3, 0.03, fin_h / 2)),
                            (-length / 2 + chord / 3, 0.0, radius + fin_h / 2)), 11)]
  raise ValueError(f"category must be one of {CATEGORY_NAMES}; got {name!r}.")


def sample_part_shape(name: str, num_points: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
  """One normalised, jittered cloud of category ``name`` and its part labels.

  Returns:
    points (num_points, 3) float32 and labels (num_points,) int32.
  """
  parts = _labelled_parts(name, rng)
  areas = np.array([p.area for p, _ in parts])
  counts = rng.multinomial(num_points, areas / areas.sum())
  pts = np.concatenate([p.sample(rng, c) for (p, _), c in zip(parts, counts)])
  labels = np.concatenate([np.full(c, k, np.int32) for (_, k), c in zip(parts, counts)])
  order = rng.permutation(num_points)
  pts, labels = pts[order] * rng.uniform(0.8, 1.2, 3), labels[order]
  pts = pts - pts.mean(axis=0)
  pts = pts / np.linalg.norm(pts, axis=-1).max()
  pts = pts + np.clip(rng.normal(0.0, 0.01, pts.shape), -0.05, 0.05)
  return pts.astype(np.float32), labels


def make_parts(num_per_category: int, num_points: int, seed: int
               ) -> dict[str, np.ndarray]:
  """Generates the ``canon_parts`` data set.

  Args:
    num_per_category: shapes per category.
    num_points: points per cloud.
    seed: integer seed; the output is a deterministic function of the arguments.

  Returns:
    ``{'points': (M, num_points, 3) float32, 'label': (M, num_points) int32 part
    labels, 'category': (M,) int32 indices into CATEGORY_NAMES}``, M =
    num_per_category * 5, shuffled by a permutation fixed by ``seed``.
  """
  if num_per_category < 1 or num_points < 1:
    raise ValueError("num_per_category and num_points must be >= 1; got "
                     f"num_per_category={num_per_category}, num_points={num_points}.")
  samples = [sample_part_shape(name, num_points, np.random.default_rng([seed, c, i]))
             for c, name in enumerate(CATEGORY_NAMES) for i in range(num_per_category)]
  category = np.repeat(np.arange(len(CATEGORY_NAMES), dtype=np.int32), num_per_category)
  order = np.random.default_rng([seed, len(CATEGORY_NAMES)]).permutation(len(category))
  return {"points": np.stack([s[0] for s in samples])[order],
          "label": np.stack([s[1] for s in samples])[order], "category": category[order]}


def part_mask_table(category_parts: Mapping[str, Sequence[int]], num_parts: int
                    ) -> np.ndarray:
  """(num_categories, num_parts) bool: row c marks the parts of category c."""
  table = np.zeros((len(category_parts), num_parts), bool)
  for c, parts in enumerate(category_parts.values()):
    table[c, list(parts)] = True
  return table


def _part_features(num_points: int, categories: Sequence[str]
                   ) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      "points": tfds.features.Tensor(shape=(num_points, 3), dtype=np.float32),
      "label": tfds.features.Tensor(shape=(num_points,), dtype=np.int32),
      "category": tfds.features.ClassLabel(names=categories),
  })


class CanonParts(SyntheticBuilder):
  """TFDS builder ``canon_parts``: :func:`make_parts` as train/test splits.

  Records: ``points`` (num_points, 3) float32, ``label`` (num_points,) int32 part
  labels in [0, 12), ``category`` int64 in [0, 5). Array_record, no TensorFlow.
  """
  name = "canon_parts"
  RELEASE_NOTES = {"1.0.0": "Five categories, twelve labelled parts."}
  DESCRIPTION = "Primitive-made shapes with per-point part labels."
  BUILDER_CONFIGS = shapes.point_cloud_configs()

  def _features(self) -> tfds.features.FeaturesDict:
    return _part_features(self.builder_config.num_points, CATEGORY_NAMES)

  def _split_sizes(self) -> dict[str, int]:
    cfg = self.builder_config
    return {"train": cfg.train_per_class, "test": cfg.test_per_class}

  def _make(self, size: int, seed: int) -> dict:
    return make_parts(size, self.builder_config.num_points, seed)


# ---------------------------------------------------------------------------------
# ShapeNet-part, HDF5 release.
# ---------------------------------------------------------------------------------

SHAPENET_PART_FOLDER = "shapenet_part_seg_hdf5_data"
SHAPENET_NUM_POINTS = 2048
SHAPENET_CATEGORY_PARTS = {
    "airplane": (0, 1, 2, 3), "bag": (4, 5), "cap": (6, 7), "car": (8, 9, 10, 11),
    "chair": (12, 13, 14, 15), "earphone": (16, 17, 18), "guitar": (19, 20, 21),
    "knife": (22, 23), "lamp": (24, 25, 26, 27), "laptop": (28, 29),
    "motorbike": (30, 31, 32, 33, 34, 35), "mug": (36, 37), "pistol": (38, 39, 40),
    "rocket": (41, 42, 43), "skateboard": (44, 45, 46), "table": (47, 48, 49)}
"""The release's 16 categories (its ``label`` order) and their 50 part labels."""
SHAPENET_NUM_PARTS = 50

_SHAPENET_INSTRUCTIONS = f"""\
Get {SHAPENET_PART_FOLDER}.zip (the PointNet authors' ShapeNet-part HDF5 release:
ply_data_train0.h5 ... ply_data_train5.h5, ply_data_val0.h5, ply_data_test0.h5,
ply_data_test1.h5), unzip it, and pass the folder holding the .h5 files (or its
parent) as download_config=tfds.download.DownloadConfig(manual_dir=...).
"""


def find_part_files(manual_dir, split: str) -> list[epath.Path]:
  """The ShapeNet-part release's ``ply_data_{split}{i}.h5`` files, ordered by i
  (FileNotFoundError naming the files and folders when there are none)."""
  return modelnet40.find_split_files(manual_dir, split,
                                     release_folder=SHAPENET_PART_FOLDER,
                                     dataset="ShapeNet-part",
                                     instructions=_SHAPENET_INSTRUCTIONS)


def read_part_h5(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(points (n, P, 3) float32, categories (n,) int64, part labels (n, P) int32)
  from one release file, checked against the release's layout."""
  points, categories, pid = modelnet40.read_h5_datasets(
      path, ("data", "label", "pid"), "ShapeNet-part")
  points = points.astype(np.float32)
  categories = categories.reshape(-1).astype(np.int64)
  pid = pid.astype(np.int32)
  n = points.shape[0]
  if points.ndim != 3 or points.shape[2] != 3 or pid.shape != points.shape[:2]:
    raise ValueError(f"{path}: 'data' must be (n, P, 3) and 'pid' (n, P); got "
                     f"{points.shape} and {pid.shape}.")
  if categories.shape != (n,):
    raise ValueError(f"{path}: 'label' must have one category per cloud ({n}); got "
                     f"shape {categories.shape}.")
  table = part_mask_table(SHAPENET_CATEGORY_PARTS, SHAPENET_NUM_PARTS)
  if n and (categories.min() < 0 or categories.max() >= len(table)
            or pid.min() < 0 or pid.max() >= SHAPENET_NUM_PARTS
            or not np.all(np.take_along_axis(table[categories], pid.astype(np.int64),
                                             axis=1))):
    raise ValueError(f"{path}: categories must lie in [0, 16) and every part label in "
                     "its category's range (SHAPENET_CATEGORY_PARTS).")
  return points, categories, pid


class ShapenetPartHdf5(ArrayRecordBuilder):
  """ShapeNet-part (16 categories, 50 parts, 2048 points) from the HDF5 release
  (manual download). Records: ``points`` (2048, 3) float32, ``label`` (2048,) int32
  part labels, ``category`` int64 in [0, 16). Splits train, val, test."""
  name = "shapenet_part_hdf5"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "ShapeNet-part from shapenet_part_seg_hdf5_data."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _SHAPENET_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    features = _part_features(SHAPENET_NUM_POINTS, tuple(SHAPENET_CATEGORY_PARTS))
    return tfds.core.DatasetInfo(
        builder=self, features=features,
        description="ShapeNet-part segmentation (PointNet's HDF5 release).",
        homepage="https://cs.stanford.edu/~ericyi/project_page/part_annotation/")

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(find_part_files(dl_manager.manual_dir, split))
            for split in ("train", "val", "test")}

  def _generate_examples(self, files):
    for path in files:
      points, categories, pid = read_part_h5(path)
      if points.shape[1] != SHAPENET_NUM_POINTS:
        raise ValueError(f"{path}: clouds must have {SHAPENET_NUM_POINTS} points; got "
                         f"{points.shape[1]}.")
      for i in range(points.shape[0]):
        yield f"{path.name}_{i}", {"points": points[i], "label": pid[i],
                                   "category": int(categories[i])}


# ---------------------------------------------------------------------------------
# Random access for the training system.
# ---------------------------------------------------------------------------------

PART_DATASETS = {
    "canon_parts": (CATEGORY_PARTS, NUM_PARTS, 2),
    "shapenet_part_hdf5": (SHAPENET_CATEGORY_PARTS, SHAPENET_NUM_PARTS, 1),
}
"""Name -> (category parts, number of part labels, vertical axis)."""


@dataclasses.dataclass(frozen=True)
class PartsDataset:
  """One split of a part-segmentation dataset with random access.

  ``dataset[i]`` is ``{'points': float32 (N, 3), 'label': int32 (N,) part labels,
  'category': int32 scalar}``.

  Attributes:
    name, split: as requested.
    num_classes: number of part labels K.
    input_shape: (N, 3); ``label_shape``: (N,).
    up_axis: the clouds' vertical axis.
    part_mask: (num_categories, K) bool, the parts of each category.
    records: the raw TFDS records.
  """
  name: str
  split: str
  num_classes: int
  input_shape: tuple[int, int]
  up_axis: int
  part_mask: np.ndarray
  records: Sequence[Mapping[str, Any]]
  input_key = "points"

  @property
  def label_shape(self) -> tuple[int]:
    return self.input_shape[:1]

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    r = self.records[index]
    return {"points": np.asarray(r["points"], np.float32),
            "label": np.asarray(r["label"], np.int32),
            "category": np.int32(r["category"])}


def get_parts_dataset(name: str, split: str, *, data_dir: str | None = None
                      ) -> PartsDataset:
  """Opens a split of ``canon_parts`` (``/tiny``, ``/small``; prepared here on first
  use) or ``shapenet_part_hdf5`` (prepared beforehand from the manual download)."""
  base, _, config = name.partition("/")
  if base == "canon_parts":
    builder = CanonParts(config=config or "default", data_dir=data_dir)
    if not builder.is_prepared():
      builder.download_and_prepare()
  elif base == "shapenet_part_hdf5":
    builder = ShapenetPartHdf5(data_dir=data_dir)
    if not builder.is_prepared():
      raise ValueError(
          f"name={name!r}: ShapeNet-part is not prepared in data_dir="
          f"{data_dir or '~/tensorflow_datasets'!r}. It needs the manual download:\n"
          + _SHAPENET_INSTRUCTIONS + "then: canon_jax.data.ShapenetPartHdf5(data_dir="
          "DATA_DIR).download_and_prepare(download_config=tfds.download.DownloadConfig("
          "manual_dir=FOLDER))")
  else:
    raise ValueError(f"part dataset name must be 'canon_parts[/tiny|/small]' or "
                     f"'shapenet_part_hdf5'; got {name!r}.")
  category_parts, num_parts, up_axis = PART_DATASETS[base]
  records = _open_records(builder, name, split, data_dir)
  return PartsDataset(
      name=name, split=split, num_classes=num_parts,
      input_shape=tuple(int(d) for d in builder.info.features["points"].shape),
      up_axis=up_axis, part_mask=part_mask_table(category_parts, num_parts),
      records=records)
