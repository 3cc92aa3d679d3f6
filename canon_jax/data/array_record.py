"""The base of the project's TFDS builders: array_record files, read without TensorFlow."""
from __future__ import annotations

import tensorflow_datasets as tfds


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A ``GeneratorBasedBuilder`` that writes ``array_record`` files by default, so that
  ``download_and_prepare()`` and ``tfds.data_source`` / ``as_data_source`` work with
  no TensorFlow installed (TFDS's default, tfrecord, needs it)."""

  def __init__(self, *, file_format="array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)
