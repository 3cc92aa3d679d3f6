"""grain input pipelines: shuffle, repeat, augment, per-host batches, resumable.

Global order. Conceptually one stream of examples is built for the whole job::

    source -> shuffle(seed), reshuffled each epoch -> repeat(num_epochs)
           -> augment (per example, its RNG seeded by (seed, stream position))
           -> cut into global batches of ``batch_size`` consecutive examples

Per-host sharding (batch-then-slice). The stream is cut into *local* batches of
``batch_size // process_count`` consecutive examples, and process ``p`` takes
local batches ``p, p + P, p + 2P, ...`` (``P = process_count``). So global batch
``b`` = stream positions ``[b * batch_size, (b + 1) * batch_size)``, and process
``p`` holds positions ``[b * batch_size + p * L, b * batch_size + (p + 1) * L)``
with ``L = batch_size // P``. Concatenating the processes' b-th batches in process
order gives exactly the b-th batch of a single-process run with the same
arguments: same examples, same order, same augmentation. Each process reads
(and augments) only its own examples.

Every batch is a dict of NumPy arrays (NHWC images)::

    {'image': float32 (L, H, W, C) in [0, 1] (after augmentation),
     'label': int32 (L,),
     'mask':  float32 (L,)  1 for real examples, 0 for padding}

Ends of the stream. ``drop_remainder=True`` (training): only whole global batches;
the examples past the last one are dropped (with ``num_epochs=None`` the stream
never ends). ``drop_remainder=False`` (evaluation): the stream is padded to a whole
number of global batches with zero images, label 0 and mask 0, so with
``num_epochs=1`` and ``shuffle=False`` every example appears in exactly one
batch slot with mask 1, and every process gets the same number of batches.

Resuming. :func:`make_iterator` returns a grain ``DatasetIterator``;
``it.get_state()`` is a small JSON-serialisable dict (``{'next_index': k}`` with
``worker_count=0``; per-worker positions otherwise) and ``it.set_state(state)`` on
an iterator built with the same arguments continues with exactly the batches the
original would have produced next. ``worker_count`` does not change the batches.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import grain
import numpy as np

Example = dict[str, np.ndarray]
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]

_AUGMENT_SEED_OFFSET = 0x5EED
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)


class _AddMask:
  """Example -> example with ``'mask': float32 1.0`` (a real example)."""

  def __call__(self, example: Mapping[str, Any]) -> Example:
    return {**example, "mask": np.float32(1.0)}


class _Augment:
  """Applies ``fn(image, rng) -> image`` to the example's image (grain random_map)."""

  def __init__(self, fn: Augment):
    self._fn = fn

  def __call__(self, example: Mapping[str, Any], rng: np.random.Generator
               ) -> Example:
    image = example["image"]
    out = np.asarray(self._fn(image, rng), dtype=np.float32)
    if out.shape != image.shape:
      raise ValueError(
          f"augment must return an image of the input's shape {image.shape} "
          f"(H, W, C); got shape {out.shape}.")
    return {**example, "image": out}


class _PadTo:
  """Index -> ``parent[index]`` below ``len(parent)``, else a masked zero example."""

  def __init__(self, parent: grain.MapDataset, template: Mapping[str, Any]):
    self._parent = parent
    self._length = len(parent)
    self._padding = {k: np.zeros_like(v) for k, v in template.items()}
    self._padding["mask"] = np.float32(0.0)

  def __call__(self, index: int) -> Example:
    if index < self._length:
      return self._parent[index]
    return dict(self._padding)


def _check_int(value: Any, name: str, minimum: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
      value < minimum):
    raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")


def make_batch_dataset(
    dataset: Sequence[Mapping[str, Any]],
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_epochs: int | None = 1,
    drop_remainder: bool = True,
    process_index: int = 0,
    process_count: int = 1,
    augment: Augment | None = None,
) -> grain.MapDataset:
  """This process's batches, as a random-access grain ``MapDataset``.

  ``ds[k]`` is this process's share of global batch ``k``; ``len(ds)`` is the
  number of global batches (``sys.maxsize`` when ``num_epochs`` is None). See
  the module docstring for the order and the sharding rule.

  Args:
    dataset: random-access examples ``{'image': float32 (H, W, C) in [0, 1],
      'label': int32, ...}``, e.g. an :class:`ImageDataset`. Extra keys are
      batched too.
    batch_size: global batch size (all processes together); a multiple of
      ``process_count``.
    shuffle: shuffle the examples, with a new order each epoch.
    seed: integer in [0, 2**32) seeding the shuffle and the augmentation RNGs.
    num_epochs: passes over ``dataset`` (>= 1), or None for an endless stream.
    drop_remainder: True (training): only whole global batches. False
      (evaluation): pad the last global batch, ``'mask'`` 0 on padding; needs a
      finite ``num_epochs``.
    process_index: index of this process, in [0, process_count).
    process_count: number of processes sharing each global batch.
    augment: optional ``fn(image, rng) -> image`` applied to every example's
      image, ``(H, W, C)`` float32 in and out (same shape), with a
      ``np.random.Generator`` seeded from ``(seed, stream position)``: the same
      example at the same position gets the same augmentation whatever
      ``process_count``. Must be picklable when ``worker_count > 0``.

  Returns:
    A ``grain.MapDataset`` of dicts ``{'image': float32 (L, H, W, C), 'label':
    int32 (L,), 'mask': float32 (L,)}`` with ``L = batch_size // process_count``.
  """
  _check_int(batch_size, "batch_size", 1)
  _check_int(process_count, "process_count", 1)
  _check_int(seed, "seed", 0)
  if seed >= 2**32:
    raise ValueError(f"seed must be in [0, 2**32); got {seed}.")
  if isinstance(process_index, bool) or not isinstance(
      process_index, (int, np.integer)) or not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index must be an integer in [0, process_count={process_count}); "
        f"got {process_index!r}.")
  if batch_size % process_count:
    raise ValueError(
        f"batch_size must be a multiple of process_count={process_count} (each "
        f"process takes an equal share); got batch_size={batch_size}.")
  if num_epochs is not None:
    _check_int(num_epochs, "num_epochs", 1)
  elif not drop_remainder:
    raise ValueError(
        "drop_remainder=False (padded evaluation) needs a finite num_epochs; got "
        "num_epochs=None.")
  if len(dataset) == 0:
    raise ValueError("dataset must hold at least one example; got 0.")

  ds = grain.MapDataset.source(dataset)
  if shuffle:
    ds = ds.shuffle(seed=seed)
  ds = ds.repeat(num_epochs)
  if augment is not None:
    ds = ds.random_map(_Augment(augment),
                       seed=(seed + _AUGMENT_SEED_OFFSET) % 2**32)
  ds = ds.map(_AddMask())

  if num_epochs is not None:
    total = len(ds)
    if drop_remainder:
      if total < batch_size:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {total} examples of "
            f"{num_epochs} epoch(s) of the dataset, so drop_remainder=True would "
            "leave no batch; lower batch_size or use drop_remainder=False.")
      ds = ds[:total - total % batch_size]
    else:
      padded = -(-total // batch_size) * batch_size
      ds = grain.MapDataset.range(padded).map(_PadTo(ds, ds[0]))

  local = batch_size // process_count
  return ds.batch(local, drop_remainder=True)[process_index::process_count]


def make_iterator(
    dataset: Sequence[Mapping[str, Any]],
    *,
    worker_count: int = 0,
    read_options: grain.ReadOptions = DEFAULT_READ_OPTIONS,
    **batching: Any,
) -> grain.DatasetIterator:
  """Iterator over this process's batches, with exact save and restore.

  Args:
    dataset: the examples, as for :func:`make_batch_dataset`.
    worker_count: 0 (default): batches are made in this process, by
      ``read_options.num_threads`` threads. > 0: in that many worker processes
      (grain ``mp_prefetch``; ``dataset`` and ``augment`` must be picklable; when
      not running under ``absl.app``, call ``absl.flags.FLAGS.mark_as_parsed()``
      first).
    read_options: threads and prefetch buffer (in batches) of the reader;
      default 2 threads, 4 batches.
    **batching: the keyword arguments of :func:`make_batch_dataset`
      (``batch_size``, ``shuffle``, ``seed``, ``num_epochs``, ``drop_remainder``,
      ``process_index``, ``process_count``, ``augment``).

  Returns:
    A ``grain.DatasetIterator``: ``next(it)`` gives ``{'image': float32 (L, H, W,
    C), 'label': int32 (L,), 'mask': float32 (L,)}``; ``it.get_state()`` returns
    the position (a JSON-serialisable dict) and ``it.set_state(state)`` restores
    it on an iterator made with the same arguments.
  """
  _check_int(worker_count, "worker_count", 0)
  batches = make_batch_dataset(dataset, **batching)
  ds = batches.to_iter_dataset(read_options)
  if worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(ds)
