"""Input pipelines: TFDS image datasets (no TensorFlow) and grain batches.

Typical training input (see :mod:`canon_jax.data.pipeline` for the sharding rule)::

    from canon_jax import data
    ds = data.get_image_dataset("cifar10", "train", data_dir=DATA_DIR)
    it = data.make_iterator(ds, batch_size=256, shuffle=True, seed=0,
                            num_epochs=None, process_index=jax.process_index(),
                            process_count=jax.process_count())
    batch = next(it)  # {'image': f32 (L, H, W, C), 'label': i32 (L,), 'mask': f32 (L,)}
"""
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

__all__ = [
    "CanonDigits",
    "CocoInstances",
    "CanonShapes",
    "CanonShapesConfig",
    "Modelnet40Hdf5",
    "SyntheticInstances",
    "make_synthetic_instances",
    "make_shapes",
    "random_rotations",
    "rotate_point_clouds",
    "DigitsConfig",
    "ImageDataset",
    "PointCloudDataset",
    "get_point_cloud_dataset",
    "get_image_dataset",
    "make_batch_dataset",
    "make_iterator",
    "prepare_digits",
    "resize_image",
    "rotate_image",
]
