"""TFDS builder ``modelnet40_hdf5``: ModelNet40 from its HDF5 release.

The release ``modelnet40_ply_hdf5_2048`` (Qi et al., PointNet) holds
``ply_data_train0.h5`` ... ``ply_data_train4.h5`` and ``ply_data_test0.h5``,
``ply_data_test1.h5``, each with datasets ``data`` (n, 2048, 3) float32 (clouds
centred and scaled into the unit sphere, upright along +y as in the release) and
``label`` (n, 1) integer class indices into :data:`CLASS_NAMES` (the release's
``shape_names.txt`` order). 9843 train and 2468 test clouds.

It cannot be downloaded here: put the files (or the unzipped
``modelnet40_ply_hdf5_2048`` folder) into a manual directory and build with
``Modelnet40Hdf5(data_dir=...).download_and_prepare(download_config=
tfds.download.DownloadConfig(manual_dir=...))``; then read with
``tfds.data_source("modelnet40_hdf5", data_dir=...)``. Written as array_record
(no TensorFlow needed). Reading the HDF5 files needs ``h5py``.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from canon_jax.data.array_record import ArrayRecordBuilder

NUM_POINTS = 2048
RELEASE_FOLDER = "modelnet40_ply_hdf5_2048"
RELEASE_URL = "https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip"
CLASS_NAMES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car",
    "chair", "cone", "cup", "curtain", "desk", "door", "dresser", "flower_pot",
    "glass_box", "guitar", "keyboard", "lamp", "laptop", "mantel", "monitor",
    "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa",
    "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe",
    "xbox")

_INSTRUCTIONS = f"""\
Get {RELEASE_FOLDER}.zip, the PointNet authors' HDF5 release of ModelNet40
(originally {RELEASE_URL}; that host may be offline, copies of the same zip are
mirrored elsewhere), unzip it, and pass the folder holding ply_data_train0.h5 ...
ply_data_train4.h5 and ply_data_test0.h5, ply_data_test1.h5 (or its parent) as
download_config=tfds.download.DownloadConfig(manual_dir=...).
"""


def find_split_files(manual_dir, split: str, *, release_folder: str = RELEASE_FOLDER,
                     dataset: str = "ModelNet40", instructions: str = _INSTRUCTIONS
                     ) -> list[epath.Path]:
  """An HDF5 release's ``ply_data_{split}{i}.h5`` files, ordered by i.

  Looks in ``manual_dir`` and in ``manual_dir / release_folder`` (ModelNet40's
  ``modelnet40_ply_hdf5_2048`` by default; ShapeNet-part's release has the same
  layout). Raises FileNotFoundError naming the expected files, where it looked, and
  (``instructions``) where to get them, when there are none.
  """
  manual_dir = epath.Path(manual_dir)
  folders = [manual_dir, manual_dir / release_folder]
  pattern = re.compile(rf"ply_data_{split}(\d+)\.h5$")
  for folder in folders:
    if folder.is_dir():
      found = [(int(m.group(1)), f) for f in folder.iterdir()
               if (m := pattern.match(f.name))]
      if found:
        return [f for _, f in sorted(found)]
  raise FileNotFoundError(
      f"{dataset} HDF5 files ply_data_{split}*.h5 (ply_data_{split}0.h5, ...) not "
      f"found in {folders[0]} or {folders[1]}.\n{instructions}")


def read_h5_datasets(path, names: Sequence[str], dataset: str) -> list[np.ndarray]:
  """The datasets ``names`` of one HDF5 file (local or any ``epath`` path) as numpy
  arrays, in that order. h5py is an optional dependency: a missing one raises an
  ImportError that names ``dataset``."""
  try:
    import h5py  # optional dependency: only the HDF5 builders need it
  except ImportError as err:
    raise ImportError(f"Reading {dataset} HDF5 files needs h5py: pip install h5py"
                      ) from err
  with epath.Path(path).open("rb") as f, h5py.File(f, "r") as h5:
    return [np.asarray(h5[name]) for name in names]


def read_h5(path) -> tuple[np.ndarray, np.ndarray]:
  """(points (n, 2048, 3) float32, labels (n,) int64) from one release file."""
  points, labels = read_h5_datasets(path, ("data", "label"), "ModelNet40")
  points = points.astype(np.float32)
  labels = labels.reshape(-1).astype(np.int64)
  if points.ndim != 3 or points.shape[1:] != (NUM_POINTS, 3):
    raise ValueError(f"{path}: dataset 'data' must have shape (n, {NUM_POINTS}, 3); "
                     f"got {points.shape}.")
  if labels.shape[0] != points.shape[0]:
    raise ValueError(f"{path}: 'label' must have one entry per cloud "
                     f"({points.shape[0]}); got shape {labels.shape}.")
  if labels.size and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
    raise ValueError(f"{path}: labels must lie in [0, {len(CLASS_NAMES)}); got "
                     f"[{labels.min()}, {labels.max()}].")
  return points, labels


class Modelnet40Hdf5(ArrayRecordBuilder):
  """ModelNet40, 2048 points per cloud, from the HDF5 release (manual download).

  Records: ``points`` (2048, 3) float32, ``label`` int64 in [0, 40).
  """
  name = "modelnet40_hdf5"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "ModelNet40 from modelnet40_ply_hdf5_2048."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description="ModelNet40 point clouds (PointNet's HDF5 release).",
        features=tfds.features.FeaturesDict({
            "points": tfds.features.Tensor(shape=(NUM_POINTS, 3), dtype=np.float32),
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
        }),
        supervised_keys=("points", "label"),
        homepage="https://modelnet.cs.princeton.edu/",
    )

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(find_split_files(dl_manager.manual_dir,
                                                            split))
            for split in ("train", "test")}

  def _generate_examples(self, files):
    for path in files:
      points, labels = read_h5(path)
      for i, (p, y) in enumerate(zip(points, labels)):
        yield f"{path.name}_{i}", {"points": p, "label": int(y)}
