"""Random-access image datasets read from TFDS ``array_record`` files (no TensorFlow).

:func:`get_image_dataset` opens one split of a prepared TFDS dataset through
``builder.as_data_source`` and returns an :class:`ImageDataset`: a sequence of
examples with one uniform layout, whatever the dataset::

    {'image': float32 (H, W, C) in [0, 1], channels last,
     'label': int32 scalar in [0, num_classes)}

Names it knows beyond plain TFDS names (``'cifar10'``, ``'cifar100'``, ``'stl10'``,
``'mnist'``, ...):

* ``'canon_digits'``: scikit-learn's digits (:mod:`canon_jax.data.digits`);
  prepared offline on first use, at the requested ``image_size``. When several
  processes share one ``data_dir``, prepare it once beforehand
  (:func:`canon_jax.data.prepare_digits`) rather than racing.
* ``'rotmnist'``: MNIST in which example ``i`` of a split is rotated
  counter-clockwise about the image centre by a fixed angle drawn uniformly in
  [0, 2*pi) from ``(rotation_seed, split, i)`` (the RotMNIST protocol: every
  digit has its own, permanent, random orientation). Rotation is bilinear with a
  black (0) background, applied when the example is read. Reads TFDS ``mnist``.
"""
from __future__ import annotations

import dataclasses
import zlib
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from canon_jax.data import digits
from canon_jax.data.image_ops import resize_image, rotate_image

Example = dict[str, np.ndarray]

ROTMNIST = "rotmnist"


@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """One split of an image classification dataset with random access.

  ``dataset[i]`` returns ``{'image': float32 (H, W, C) in [0, 1], 'label': int32
  scalar}`` with ``(H, W, C) == image_shape``; ``len(dataset)`` is the number of
  examples. It is a grain ``RandomAccessDataSource``: pass it to
  :func:`canon_jax.data.make_iterator` or ``grain.MapDataset.source``.

  Attributes:
    name: dataset name as requested (e.g. ``'cifar10'``, ``'rotmnist'``).
    split: TFDS split string (e.g. ``'train'``, ``'test'``, ``'train[:90%]'``).
    num_classes: number of label values.
    image_shape: ``(H, W, C)`` of every image this dataset returns.
    records: the raw TFDS records (``image`` uint8 HWC or HW, ``label`` int).
    image_key: record key of the image.
    label_key: record key of the label.
    rotation_seed: if not None, example ``i`` is rotated by its fixed angle
      :meth:`angle` (used by ``'rotmnist'``).
  """

  name: str
  split: str
  num_classes: int
  image_shape: tuple[int, int, int]
  records: Sequence[Mapping[str, Any]]
  image_key: str = "image"
  label_key: str = "label"
  rotation_seed: int | None = None
  input_key = "image"

  @property
  def input_shape(self) -> tuple[int, int, int]:
    """``image_shape`` (the trainer's name for an example's input shape)."""
    return self.image_shape

  def __len__(self) -> int:
    return len(self.records)

  def angle(self, index: int) -> float:
    """Fixed rotation angle (radians, counter-clockwise) of example ``index``.

    Uniform in [0, 2*pi), a function of ``(rotation_seed, split, index)`` only.
    Raises ValueError when this dataset has no rotation (``rotation_seed`` None).
    """
    if self.rotation_seed is None:
      raise ValueError(
          f"dataset {self.name!r} has no per-example rotation (rotation_seed is "
          "None); use name='rotmnist' for rotated MNIST.")
    rng = np.random.default_rng(
        [self.rotation_seed, zlib.crc32(self.split.encode()), int(index)])
    return float(rng.uniform(0.0, 2.0 * np.pi))

  def __getitem__(self, index: int) -> Example:
    record = self.records[index]
    image = np.asarray(record[self.image_key])
    if image.ndim == 2:
      image = image[..., None]
    image = image.astype(np.float32) / 255.0
    height, width, channels = self.image_shape
    if image.shape[:2] != (height, width):
      image = resize_image(image, height, width)
    if image.shape[2] != channels:
      image = np.repeat(image, channels, axis=2)
    if self.rotation_seed is not None:
      image = np.clip(rotate_image(image, self.angle(index)), 0.0, 1.0)
    return {"image": image, "label": np.int32(record[self.label_key])}


def _not_prepared_error(name: str, tfds_name: str, split: str,
                        data_dir: str | None) -> ValueError:
  where = data_dir if data_dir is not None else "~/tensorflow_datasets"
  reads = "" if name == tfds_name else f" (it reads TFDS {tfds_name!r})"
  return ValueError(
      f"name={name!r}, split={split!r}: the dataset{reads} is not prepared in "
      f"data_dir={where!r} (expected array_record files under "
      f"{where}/{tfds_name}/). This machine may have no network: prepare it on one "
      "that has, then copy that directory here:\n"
      "  import tensorflow_datasets as tfds\n"
      f"  tfds.builder({tfds_name!r}, data_dir=DATA_DIR).download_and_prepare("
      "file_format='array_record')")


def _open_records(builder: tfds.core.DatasetBuilder, name: str, split: str,
                  data_dir: str | None) -> Sequence[Mapping[str, Any]]:
  """``builder.as_data_source(split)``, with errors that say what to do."""
  try:
    return builder.as_data_source(split=split)
  except (NotImplementedError, ValueError, KeyError, FileNotFoundError) as e:
    if not builder.is_prepared():
      raise _not_prepared_error(name, builder.name, split, data_dir) from e
    raise ValueError(
        f"name={name!r}, split={split!r}: could not open the prepared dataset at "
        f"{builder.data_dir} for random access (available splits: "
        f"{sorted(builder.info.splits)}; it must be prepared with "
        f"file_format='array_record'). TFDS said: {type(e).__name__}: {e}") from e


def _feature_shape(builder: tfds.core.DatasetBuilder, key: str,
                   name: str) -> tuple[int, ...]:
  features = builder.info.features
  if key not in features:
    raise ValueError(
        f"image_key={key!r} is not a feature of {name!r}; its features are "
        f"{sorted(features.keys())}.")
  return tuple(features[key].shape)


def _num_classes(builder: tfds.core.DatasetBuilder, key: str, name: str) -> int:
  features = builder.info.features
  if key not in features or not hasattr(features[key], "num_classes"):
    raise ValueError(
        f"label_key={key!r} must name a ClassLabel feature of {name!r}; its "
        f"features are {dict(features)}.")
  return int(features[key].num_classes)


def get_image_dataset(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    image_key: str = "image",
    label_key: str = "label",
    rotation_seed: int = 0,
) -> ImageDataset:
  """Opens one split of an image classification dataset (TFDS, array_record).

  Args:
    name: a TFDS dataset name, optionally with config (``'cifar10'``,
      ``'cifar100'``, ``'stl10'``, ``'mnist'``, ...), ``'canon_digits'`` or
      ``'rotmnist'`` (see the module docstring).
    split: TFDS split string, e.g. ``'train'``, ``'test'``, ``'train[:80%]'``.
    data_dir: TFDS data directory holding the prepared dataset (``None``: TFDS's
      default, ``~/tensorflow_datasets``).
    image_size: if given, images are S x S: ``canon_digits`` is prepared at that
      size; other datasets are resized bilinearly (antialiased when shrinking)
      when they are stored at another size. ``None``: the stored size
      (``canon_digits``: 32).
    channels: 1 or 3, or ``None`` for the stored number. Grey images become 3
      channels by repetition; other conversions raise ValueError.
    image_key: record key of the image (default ``'image'``).
    label_key: record key of the label, a ClassLabel (default ``'label'``; e.g.
      ``'coarse_label'`` for CIFAR-100's 20 superclasses).
    rotation_seed: seed of the per-example angles of ``'rotmnist'``; ignored for
      other names.

  Returns:
    An :class:`ImageDataset` whose examples are ``{'image': float32 (H, W, C) in
    [0, 1], 'label': int32}``.

  Raises:
    ValueError: unknown name, dataset not prepared in ``data_dir`` (the message
      says how to prepare it on a machine with network), missing split or
      feature, or invalid ``image_size`` / ``channels``.
  """
  if image_size is not None and (not isinstance(image_size, (int, np.integer))
                                 or image_size < 1):
    raise ValueError(f"image_size must be a positive integer or None; got "
                     f"{image_size!r}.")
  if channels not in (None, 1, 3):
    raise ValueError(f"channels must be 1, 3 or None; got {channels!r}.")

  if name == "canon_digits":
    builder = digits.prepare_digits(
        digits.DEFAULT_IMAGE_SIZE if image_size is None else int(image_size),
        data_dir=data_dir)
  else:
    tfds_name = "mnist" if name == ROTMNIST else name
    try:
      builder = tfds.builder(tfds_name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as e:
      raise ValueError(
          f"name={name!r} is not a TFDS dataset nor one of 'canon_digits', "
          f"'{ROTMNIST}'. (TFDS said: {str(e).splitlines()[0]})") from e
  records = _open_records(builder, name, split, data_dir)

  stored = _feature_shape(builder, image_key, name)
  if len(stored) == 2:
    stored = (*stored, 1)
  if len(stored) != 3 or None in stored:
    raise ValueError(
        f"image_key={image_key!r} of {name!r} must be a fixed-size (H, W) or "
        f"(H, W, C) image; its shape is {stored}.")
  out_channels = stored[2] if channels is None else channels
  if out_channels != stored[2] and stored[2] != 1:
    raise ValueError(
        f"channels={channels} but {name!r} stores {stored[2]} channels; only grey "
        "(1 channel) images can be converted (to 3, by repetition).")
  height, width = stored[:2] if image_size is None else (image_size, image_size)
  return ImageDataset(
      name=name, split=split,
      num_classes=_num_classes(builder, label_key, name),
      image_shape=(int(height), int(width), int(out_channels)),
      records=records, image_key=image_key, label_key=label_key,
      rotation_seed=int(rotation_seed) if name == ROTMNIST else None)
