"""Input pipelines: TFDS image datasets (no TensorFlow) and grain batches.

Typical training input (see :mod:`canon_jax.data.pipeline` for the sharding rule)::

    from canon_jax import data
    ds = data.get_image_dataset("cifar10", "train", data_dir=DATA_DIR)
    it = data.make_iterator(ds, batch_size=256, shuffle=True, seed=0,
                            num_epochs=None, process_index=jax.process_index(),
                            process_count=jax.process_count())
    batch = next(it)  # {'image': f32 (L, H, W, C), 'label': i32 (L,), 'mask': f32 (L,)}

The names below load their module on first use (``data.make_shapes``, ``from
canon_jax.data import make_shapes``), so ``import canon_jax`` imports neither TFDS
nor grain. A TFDS builder (``canon_digits``, ``canon_shapes``, ``modelnet40_hdf5``) is
registered with TFDS when its module is imported: use its class or a function of
this package first, or import the module (``import canon_jax.data.shapes``), before
``tfds.builder(name)`` / ``tfds.data_source(name)``.
"""
from typing import TYPE_CHECKING

from canon_jax import _lazy

if TYPE_CHECKING:   # static analysers and IDEs see the names; nothing runs here
  from canon_jax.data.coco import CocoInstances
  from canon_jax.data.digits import CanonDigits, DigitsConfig, prepare_digits
  from canon_jax.data.image_ops import resize_image, rotate_image
  from canon_jax.data.modelnet40 import Modelnet40Hdf5
  from canon_jax.data.pipeline import make_batch_dataset, make_iterator
  from canon_jax.data.point_sources import PointCloudDataset, get_point_cloud_dataset
  from canon_jax.data.shapes import (CanonShapes, CanonShapesConfig, make_shapes,
                                     random_rotations, rotate_point_clouds)
  from canon_jax.data.sources import ImageDataset, get_image_dataset
  from canon_jax.data.synthetic_instances import (SyntheticInstances,
                                                  make_synthetic_instances)

_EXPORTS = {
    "coco": ("CocoInstances",),
    "digits": ("CanonDigits", "DigitsConfig", "prepare_digits"),
    "image_ops": ("resize_image", "rotate_image"),
    "modelnet40": ("Modelnet40Hdf5",),
    "pipeline": ("make_batch_dataset", "make_iterator"),
    "point_sources": ("PointCloudDataset", "get_point_cloud_dataset"),
    "shapes": ("CanonShapes", "CanonShapesConfig", "make_shapes", "random_rotations",
               "rotate_point_clouds"),
    "sources": ("ImageDataset", "get_image_dataset"),
    "synthetic_instances": ("SyntheticInstances", "make_synthetic_instances"),
    "nbody": ("CanonNBody", "NBodyDataset", "get_nbody_dataset", "make_nbody",
              "pack_particles"),
    "parts": ("CanonParts", "PartsDataset", "ShapenetPartHdf5", "get_parts_dataset",
              "make_parts"),
}
__all__ = sorted(name for names in _EXPORTS.values() for name in names)
__getattr__, __dir__ = _lazy.attach(
    __name__, {name: f".{module}" for module, names in _EXPORTS.items() for name in names})
