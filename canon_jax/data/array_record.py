"""The base of the project's TFDS builders: array_record files, read without TensorFlow."""
from __future__ import annotations

import tensorflow_datasets as tfds


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A ``GeneratorBasedBuilder`` that writes ``array_record`` files by default, so that
  ``download_and_prepare()`` and ``tfds.data_source`` / ``as_data_source`` work with
  no TensorFlow installed (TFDS's default, tfrecord, needs it)."""

  def __init__(self, *, file_format="array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)


class SyntheticBuilder(ArrayRecordBuilder, skip_registration=True):
  """An :class:`ArrayRecordBuilder` whose train/test splits a seeded function makes
  (nothing is downloaded).

  A subclass sets ``DESCRIPTION`` (and ``SUPERVISED_KEYS`` where the records have an
  input/target pair) and defines

  * ``_features()``: the ``tfds.features.FeaturesDict`` of one record;
  * ``_split_sizes()``: ``{"train": n_train, "test": n_test}``, the size argument
    of ``_make`` for each split (a count of records, or of records per class);
  * ``_make(size, seed)``: a dict of arrays with the same number of rows, one row a
    record.

  Its builder configs carry a ``seed``: the train split is made with ``seed``, the
  test split with ``seed + 1``. ``VERSION`` is 1.0.0 unless a subclass says otherwise.
  """
  VERSION = tfds.core.Version("1.0.0")
  DESCRIPTION = ""
  SUPERVISED_KEYS = None

  def _features(self) -> tfds.features.FeaturesDict:
    raise NotImplementedError

  def _split_sizes(self) -> dict[str, int]:
    raise NotImplementedError

  def _make(self, size: int, seed: int) -> dict:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION,
                                 features=self._features(),
                                 supervised_keys=self.SUPERVISED_KEYS)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    sizes, seed = self._split_sizes(), self.builder_config.seed
    return {"train": self._generate_examples(sizes["train"], seed),
            "test": self._generate_examples(sizes["test"], seed + 1)}

  def _generate_examples(self, size: int, seed: int):
    data = self._make(size, seed)
    for i in range(len(next(iter(data.values())))):
      yield i, {key: values[i] for key, values in data.items()}
