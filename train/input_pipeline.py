"""Training and evaluation input: canon_jax.data datasets, per-host batches, global arrays.

Every process reads only its share of each global batch
(:func:`canon_jax.data.make_iterator` with ``process_index=jax.process_index()``):
process p holds rows ``[p L, (p + 1) L)`` of the global batch, ``L = B / P``.
:func:`to_global` assembles the shares into one ``jax.Array`` of the global shape
(B, ...) sharded over the mesh's ``'data'`` axis, with
``jax.make_array_from_process_local_data``. Since the local batches concatenate (in
process order) to the batch a single-process run reads, the training run does not
depend on the number of processes.
"""
from __future__ import annotations

from typing import Any, Iterator

import grain
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from canon_jax import data as canon_data


def get_datasets(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
  """The training and evaluation splits named by ``config.data``: ``ImageDataset``s,
  or ``PointCloudDataset``s when ``config.task == 'points'``, ``PartsDataset``s for
  ``'parts'``, ``NBodyDataset``s for ``'nbody'``."""
  d = config.data
  task = config.get("task", "images")
  if task in ("parts", "nbody"):
    if task == "parts":
      from canon_jax.data.parts import get_parts_dataset as get  # pylint: disable=import-outside-toplevel
    else:
      from canon_jax.data.nbody import get_nbody_dataset as get  # pylint: disable=import-outside-toplevel
    return (get(d.name, d.train_split, data_dir=d.data_dir),
            get(d.name, d.eval_split, data_dir=d.data_dir))
  if task == "points":
    return (canon_data.get_point_cloud_dataset(d.name, d.train_split, data_dir=d.data_dir),
            canon_data.get_point_cloud_dataset(d.name, d.eval_split, data_dir=d.data_dir))
  kwargs = dict(data_dir=d.data_dir, image_size=d.image_size, channels=d.channels,
                rotation_seed=d.rotation_seed)
  train = canon_data.get_image_dataset(d.name, d.train_split, **kwargs)
  evaluation = canon_data.get_image_dataset(d.name, d.eval_split, **kwargs)
  return train, evaluation


def train_iterator(dataset: canon_data.ImageDataset, config: ml_collections.ConfigDict
                   ) -> grain.DatasetIterator:
  """Endless shuffled training batches of this process (local size B / P)."""
  return canon_data.make_iterator(
      dataset, batch_size=config.batch_size, shuffle=True, seed=config.seed,
      num_epochs=None, drop_remainder=True, process_index=jax.process_index(),
      process_count=jax.process_count(), worker_count=config.data.worker_count)


def eval_iterator(dataset: canon_data.ImageDataset, config: ml_collections.ConfigDict
                  ) -> grain.DatasetIterator:
  """One pass over the evaluation split, padded to whole global batches (mask 0)."""
  return canon_data.make_iterator(
      dataset, batch_size=config.eval_batch_size, shuffle=False, num_epochs=1,
      drop_remainder=False, process_index=jax.process_index(),
      process_count=jax.process_count(), worker_count=0)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch) axis split over ``'data'``, other axes whole."""
  return NamedSharding(mesh, P("data", *([None] * (ndim - 1))))


def to_global(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's share ``{k: (L, ...)}`` -> global arrays ``{k: (B, ...)}`` on the mesh."""
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)),
                                                    np.asarray(v))
          for k, v in local.items()}


def global_batches(iterator: Iterator[dict[str, Any]], mesh: Mesh
                   ) -> Iterator[dict[str, jax.Array]]:
  """Global batches (see :func:`to_global`) from this process's local iterator."""
  for local in iterator:
    yield to_global(local, mesh)
