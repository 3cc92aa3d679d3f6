"""Checkpoints of the train state and the input position; preemption signals.

Each variant keeps its checkpoints in ``WORKDIR/checkpoints/<variant>/<step>/`` (an
orbax ``CheckpointManager``): item ``state`` is the whole :class:`train.step.TrainState`
(``StandardSave``) and item ``data`` the training iterator's position
(``JsonSave`` of grain's ``get_state()``). Every process computes the same position
(it is a function of the step), and orbax writes the JSON item from process 0.

Saves are synchronous: a checkpoint is on disk (committed by orbax's atomic rename)
when :func:`save` returns, so a run killed at any later moment resumes from it.
"""
from __future__ import annotations

import signal
import threading
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


def make_manager(directory: str, max_to_keep: int) -> ocp.CheckpointManager:
  """A synchronous orbax CheckpointManager keeping the last ``max_to_keep`` steps."""
  return ocp.CheckpointManager(
      directory,
      options=ocp.CheckpointManagerOptions(
          max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False))


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         data_state: dict[str, Any]) -> None:
  """Saves ``state`` and the iterator position ``data_state`` as ``step`` (blocking)."""
  manager.save(int(step), args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)
  manager.wait_until_finished()


def abstract_like(state: Any) -> Any:
  """Shapes, dtypes and shardings of ``state`` (the restore target)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)


def restore(manager: ocp.CheckpointManager, step: int, state_like: Any
            ) -> tuple[Any, dict[str, Any]]:
  """Restores ``(state, data_state)`` of ``step`` with ``state_like``'s shardings."""
  restored = manager.restore(int(step), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_like(state_like)),
      data=ocp.args.JsonRestore()))
  return restored["state"], restored["data"]


class PreemptionFlag:
  """Turns SIGTERM / SIGINT into a flag the training loop polls.

  While installed (``with PreemptionFlag() as flag:``), the first signal sets
  ``flag.signum`` and the loop saves a checkpoint and returns; a second SIGINT
  raises ``KeyboardInterrupt`` as usual. Only the main thread can install handlers;
  elsewhere (e.g. a notebook's worker thread) the flag is inert.

  In a multi-process run a signal may reach only some processes: :meth:`any_set`
  agrees on the flag across processes (a tiny all-gather) so that all of them stop
  at the same step.
  """

  def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)):
    self._signals = signals
    self._previous: dict[int, Any] = {}
    self.signum: int | None = None

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt
    self.signum = signum

  def __enter__(self) -> "PreemptionFlag":
    if threading.current_thread() is threading.main_thread():
      for s in self._signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}

  def any_set(self) -> bool:
    """Whether any process received a signal (collective when process_count > 1)."""
    local = self.signum is not None
    if jax.process_count() == 1:
      return local
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
    return bool(np.any(flags))
