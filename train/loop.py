"""The parts every trainer shares: the data mesh, replicated state, and the step loop.

``python -m train`` (:mod:`train.trainer`) and ``python -m train.segment`` run their
updates through :func:`run_steps`: one jitted step per global batch, a host sync
after every step (exact logs, and no collective rendezvous time-out on CPU meshes),
NaN/Inf loss check, tqdm progress, ``metrics.jsonl``/TensorBoard lines, checkpoints
every ``checkpoint_every_steps`` steps, at the end and when SIGTERM/SIGINT arrives.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import jax
import numpy as np
import tqdm
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from train import checkpointing, report


def log(message: str) -> None:
  """Logs ``message`` and prints it on process 0."""
  logging.info(message)
  if jax.process_index() == 0:
    print(message, flush=True)


def data_mesh() -> Mesh:
  """The 1-D ``('data',)`` mesh over every device of every process."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def init_replicated(init: Callable[..., Any], mesh: Mesh, *args) -> tuple[Any, Any]:
  """``(state, shardings)``: ``init(*args)`` made by one jitted function, every leaf
  replicated on ``mesh`` (shapes known first from ``jax.eval_shape``)."""
  repl = NamedSharding(mesh, P())
  shardings = jax.tree.map(lambda _: repl, jax.eval_shape(init, *args))
  return jax.jit(init, out_shardings=shardings)(*args), shardings


@dataclasses.dataclass
class Loop:
  """What :func:`run_steps` needs besides the step and the state.

  Attributes:
    name: the run's name in logs, progress bar and ``metrics.jsonl`` (a variant).
    num_steps: the last step.
    manager: the orbax checkpoint manager of this run.
    writer: the run's metric writer.
    flag: the preemption flag (SIGTERM/SIGINT).
    position: ``position(step)`` -> the input position saved with the checkpoint of
      ``step``.
    log_every_steps, checkpoint_every_steps: from the config.
    progress: the metrics shown on the progress bar.
    show_progress: whether this process draws a progress bar.
  """
  name: str
  num_steps: int
  manager: Any
  writer: report.MetricWriter
  flag: checkpointing.PreemptionFlag
  position: Callable[[int], dict[str, Any]]
  log_every_steps: int
  checkpoint_every_steps: int
  progress: tuple[str, ...] = ("loss",)
  show_progress: bool = True


def run_steps(loop: Loop, step_fn: Callable[[Any, Any], tuple[Any, dict]], state: Any,
              batches: Iterator[Any], start: int) -> tuple[Any, int | None]:
  """Runs ``state, metrics = step_fn(state, batch)`` from step ``start`` to the end.

  Returns ``(state, None)`` when done, or ``(state, step)`` when a signal stopped
  the run after the checkpoint of ``step``. Raises ``FloatingPointError`` on a
  non-finite loss.
  """
  bar = tqdm.tqdm(total=loop.num_steps, initial=start, desc=loop.name, dynamic_ncols=True,
                  disable=not loop.show_progress or start >= loop.num_steps)
  step = start
  try:
    while step < loop.num_steps:
      state, metrics = step_fn(state, next(batches))
      metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}  # host sync
      step += 1
      if not np.isfinite(metrics["loss"]):
        raise FloatingPointError(f"[{loop.name}] loss is {metrics['loss']} at step "
                                 f"{step}; lower the learning rates.")
      bar.update(1)
      bar.set_postfix({k: f"{metrics[k]:.3f}" for k in loop.progress}, refresh=False)
      if step % loop.log_every_steps == 0 or step == loop.num_steps:
        # This step's values, not a window mean: a resumed run logs the same lines.
        loop.writer.write_step(loop.name, step, metrics)
      preempted = loop.flag.any_set()
      if (step % loop.checkpoint_every_steps == 0 or step == loop.num_steps
          or preempted):
        checkpointing.save(loop.manager, step, state, loop.position(step))
      if preempted and step < loop.num_steps:
        log(f"[{loop.name}] signal {loop.flag.signum}: checkpoint saved at step {step}; "
            "run again with the same workdir to resume.")
        return state, step
  finally:
    bar.close()
    loop.manager.close()
  return state, None
