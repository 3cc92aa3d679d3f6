"""``canon_digits``: scikit-learn's 1797 real 8x8 handwritten digits as a TFDS dataset.

The data ship inside scikit-learn (``sklearn.datasets.load_digits``), so the
dataset prepares offline, in about a second, with no TensorFlow: the builder
writes ``array_record`` files that ``tfds.data_source`` and grain read.

Each example (stored as uint8, read back by :func:`canon_jax.data.get_image_dataset`
as float32 in [0, 1]):

* ``image``: ``(S, S, 1)`` uint8, ``S = image_size`` (default 32). The 8x8 digit
  (grey levels 0..16, ink bright on a black background) is scaled to [0, 1],
  upsampled bilinearly to ``inner_size(S)`` (about 65% of ``S``) and placed in the
  centre, so its whole square lies inside the disk of radius ``S/2 - taper``
  about the image centre ``((S-1)/2, (S-1)/2)``; then a soft circular mask
  (:func:`disk_mask`) is applied. Pixels beyond radius ``S/2`` are exactly 0, so
  rotating about the centre loses no ink.
* ``label``: ``ClassLabel`` with 10 classes, names "0".."9".
* ``index``: int64, the example's row in ``load_digits()``.

Splits (fixed, independent of ``S``): a permutation of the 1797 rows drawn with
``np.random.default_rng(0)``; the first 1347 rows are ``train``, the last 450
``test``.

Sizes: builder configs ``"32"`` (default), ``"28"``, ``"64"`` and ``"96"``;
any other size through ``DigitsConfig.for_size(S)`` (see :func:`prepare_digits`).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from canon_jax.data.image_ops import resize_image

NUM_EXAMPLES = 1797
NUM_TRAIN = 1347
SPLIT_SEED = 0
DEFAULT_IMAGE_SIZE = 32
_INNER_FRACTION = 0.65
_TAPER_FRACTION = 0.1

_CITATION = """\
@misc{alpaydin1998optical,
  author = {Alpaydin, E. and Kaynak, C.},
  title = {Optical Recognition of Handwritten Digits},
  year = {1998},
  howpublished = {UCI Machine Learning Repository},
  doi = {10.24432/C50P49}
}"""


def inner_size(image_size: int) -> int:
  """Side of the square that holds the upsampled 8x8 digit in an S x S image.

  ``floor(0.65 * S)``, lowered by one if needed so that ``S - inner`` is even
  (equal margins). For S = 32 it is 20: the digit's corner pixel centres lie
  13.4 px from the image centre, inside the mask's flat part (radius 14.4).
  """
  inner = int(np.floor(_INNER_FRACTION * image_size))
  return inner - ((image_size - inner) % 2)


def disk_mask(image_size: int) -> np.ndarray:
  """Soft circular mask of an S x S image, shape ``(S, S, 1)``, float32 in [0, 1].

  With ``r`` the distance of a pixel centre from ``((S-1)/2, (S-1)/2)`` and
  ``R = S/2``: 1 for ``r <= 0.9 R``, a cosine taper down to 0 at ``r = R``, and 0
  beyond.
  """
  radius = image_size / 2.0
  flat = (1.0 - _TAPER_FRACTION) * radius
  centre = (image_size - 1) / 2.0
  rows, cols = np.mgrid[0:image_size, 0:image_size]
  r = np.hypot(rows - centre, cols - centre)
  t = np.clip((r - flat) / (radius - flat), 0.0, 1.0)
  return (0.5 * (1.0 + np.cos(np.pi * t))).astype(np.float32)[..., None]


def render_digit(digit: np.ndarray, image_size: int) -> np.ndarray:
  """Renders one 8x8 ``load_digits`` image as an S x S uint8 image.

  Args:
    digit: ``(8, 8)`` array of grey levels in [0, 16].
    image_size: output side S; at least 16 so the digit keeps >= 8 px.

  Returns:
    ``(S, S, 1)`` uint8 in [0, 255]: the digit upsampled into the central
    ``inner_size(S)`` square, zero margins, times :func:`disk_mask`.
  """
  if np.shape(digit) != (8, 8):
    raise ValueError(f"digit must have shape (8, 8); got {np.shape(digit)}.")
  inner = inner_size(image_size)
  pad = (image_size - inner) // 2
  scaled = np.asarray(digit, np.float32)[..., None] / 16.0
  canvas = np.zeros((image_size, image_size, 1), np.float32)
  canvas[pad:pad + inner, pad:pad + inner] = resize_image(scaled, inner, inner)
  canvas *= disk_mask(image_size)
  return np.round(np.clip(canvas, 0.0, 1.0) * 255.0).astype(np.uint8)


def split_indices() -> dict[str, np.ndarray]:
  """Rows of ``load_digits()`` in each split: ``{'train': (1347,), 'test': (450,)}``."""
  perm = np.random.default_rng(SPLIT_SEED).permutation(NUM_EXAMPLES)
  return {"train": perm[:NUM_TRAIN], "test": perm[NUM_TRAIN:]}


@dataclasses.dataclass
class DigitsConfig(tfds.core.BuilderConfig):
  """Builder config of ``canon_digits``: the output side ``image_size`` (pixels)."""

  image_size: int = DEFAULT_IMAGE_SIZE

  @classmethod
  def for_size(cls, image_size: int) -> "DigitsConfig":
    """The config for S x S images, named ``str(S)``."""
    if not isinstance(image_size, (int, np.integer)) or image_size < 16:
      raise ValueError(
          f"image_size must be an integer >= 16 (the 8x8 digit is upsampled into "
          f"~65% of it); got {image_size!r}.")
    size = int(image_size)
    return cls(name=str(size), image_size=size,
               description=f"{size}x{size}x1 images, digit in the central "
               f"{inner_size(size)}x{inner_size(size)} square, soft disk mask.")


class CanonDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn digits, upsampled, centred in a soft disk (see module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [DigitsConfig.for_size(s) for s in (32, 28, 64, 96)]
  DEFAULT_BUILDER_CONFIG_NAME = str(DEFAULT_IMAGE_SIZE)

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self,
        description=("scikit-learn's load_digits (UCI optical digits, 1797 8x8 "
                     "images), upsampled and centred inside a disk."),
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        homepage="https://archive.ics.uci.edu/dataset/80",
        citation=_CITATION,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The data ship with scikit-learn.
    try:
      from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError(
          "Preparing canon_digits needs scikit-learn (it ships the digits): "
          "pip install scikit-learn.") from e
    digits = load_digits()
    return {name: self._generate_examples(digits.images, digits.target, rows)
            for name, rows in split_indices().items()}

  def _generate_examples(self, images, targets, rows):
    size = self.builder_config.image_size
    for row in rows:
      yield int(row), {"image": render_digit(images[row], size),
                       "label": int(targets[row]), "index": int(row)}


def digits_builder(image_size: int = DEFAULT_IMAGE_SIZE, *,
                   data_dir: str | None = None) -> CanonDigits:
  """The ``canon_digits`` builder for S x S images (not prepared yet, maybe)."""
  config = DigitsConfig.for_size(image_size)
  # Predefined configs go by name: TFDS refuses any other config object with a
  # predefined name, including the copy a pickled builder (grain workers) makes.
  if config.name in CanonDigits.builder_configs:
    config = config.name
  return CanonDigits(config=config, data_dir=data_dir, file_format="array_record")


def prepare_digits(image_size: int = DEFAULT_IMAGE_SIZE, *,
                   data_dir: str | None = None) -> CanonDigits:
  """Prepares ``canon_digits`` (offline, ~1 s) under ``data_dir`` if not there yet.

  Args:
    image_size: side S of the stored images (>= 16).
    data_dir: TFDS data directory (``None``: TFDS's default,
      ``~/tensorflow_datasets``). Files go to
      ``data_dir/canon_digits/<S>/1.0.0``.

  Returns:
    The prepared builder; ``builder.as_data_source('train')`` reads records.
  """
  builder = digits_builder(image_size, data_dir=data_dir)
  if not builder.is_prepared():
    builder.download_and_prepare(file_format="array_record")
  return builder
