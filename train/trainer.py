"""Training and evaluation of canonicalized predictors: ``train_and_evaluate(config, workdir)``.

A run trains the config's *variants* in order (``config.variants``, a subset of
"vanilla", "augmentation", "canonicalized"; see :mod:`train.models`), each from the
pretrained checkpoint or from an earlier variant's final weights
(``config.<variant>.init``), evaluates each on every pose of the test set
(:mod:`train.evaluate`), and reports the last variant with the others as baselines
(:mod:`train.report`). Image and point-cloud runs differ only in their task
(:mod:`train.tasks`, ``config.task``).

Data parallel over all devices of all processes: a 1-D mesh ``('data',)``, global
batches split over ``'data'``, parameters and optimizer state replicated, one
``jax.jit`` of the update step per variant with explicit shardings, the state
donated. The host reads the step's metrics after every step: this keeps the logs
exact and avoids the CPU backend's collective rendezvous time-out when many steps
with cross-device collectives are queued without a sync.

Resuming: every ``config.checkpoint_every_steps`` steps, at the end of a variant, and
when SIGTERM/SIGINT arrives, the state and the input position are saved under
``WORKDIR/checkpoints/<variant>``. Running again with the same WORKDIR restores the
finished variants' final states, continues the interrupted one from its last
checkpoint and produces the same parameters and metrics as an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import canon_jax
from canon_jax import checkpoint_io

from train import checkpointing, evaluate, input_pipeline, models, report, tasks
from train import loop as train_loop
from train.config_checks import validate_config
from train.step import (TrainState, estimate_dataset_prior, init_state, make_optimizer,
                        make_train_step)


@dataclasses.dataclass
class _Run:
  """What the variants of one run share."""
  config: ml_collections.ConfigDict
  workdir: str
  mesh: Mesh
  task: tasks.Task
  train_ds: Any
  eval_ds: Any
  mean_std: Any
  writer: report.MetricWriter
  flag: checkpointing.PreemptionFlag
  is_chief: bool


@dataclasses.dataclass
class _VariantOutcome:
  state: TrainState | None
  results: dict[str, Any] | None
  traces: int
  interrupted_at: int | None = None
  visuals: dict[str, np.ndarray] | None = None


def _counted(fn: Callable, counter: list[int]) -> Callable:
  """``fn`` that adds one to ``counter[0]`` whenever JAX traces it."""

  @functools.wraps(fn)
  def wrapper(*args):
    counter[0] += 1
    return fn(*args)

  return wrapper


def _replicate_host_tree(tree: Any, sharding: NamedSharding) -> Any:
  """Numpy leaves (equal on every process) -> replicated global ``jax.Array`` leaves."""
  return jax.tree.map(
      lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx, x=x: x[idx]),
      tree)


def _strict_merge(loaded: dict[str, Any], initial: dict[str, Any], what: str) -> dict[str, Any]:
  """``loaded`` cast to ``initial``'s dtypes if it has exactly ``initial``'s keys and
  shapes, else a ``ValueError`` listing the differences (the conversion's check)."""
  checkpoint_io.check_variables(loaded, initial, what=what)
  return jax.tree.map(lambda v, i: np.asarray(v, dtype=i.dtype), loaded, initial)


def _batch_shardings(run: _Run) -> dict[str, NamedSharding]:
  """Shardings of a global batch: every entry of an example (inputs, labels, ...)
  and the masks split on ``'data'``."""
  example = run.train_ds[0]
  return {**{k: input_pipeline.batch_sharding(run.mesh, 1 + np.ndim(v))
             for k, v in example.items()},
          "mask": input_pipeline.batch_sharding(run.mesh, 1)}


def _with_predictor(state: TrainState, predictor: dict[str, Any]) -> TrainState:
  """``state`` with the predictor's params and batch statistics replaced."""
  stats = {**state.batch_stats, "predictor": predictor["batch_stats"]}
  return state.replace(params={**state.params, "predictor": predictor["params"]},
                       batch_stats={k: v for k, v in stats.items() if v})


def _initial_state(run: _Run, variant: str, model: canon_jax.CanonicalizedModel, tx,
                   rng: jax.Array, state_sharding, finished: dict[str, TrainState]
                   ) -> TrainState:
  """The variant's state at step 0 (fresh, pretrained, or from an earlier variant).

  One jitted function builds it, so that the result owns fresh buffers (it is
  donated to the update step; an earlier variant's state must survive).
  """
  config, stage = run.config, run.config[variant]
  images = jax.ShapeDtypeStruct((config.batch_size, *run.train_ds.input_shape), jnp.float32)

  def build(rng, predictor):
    state = init_state(model, tx, rng, jnp.zeros(images.shape, images.dtype))
    if predictor is None:
      return state
    return _with_predictor(state, jax.tree.map(jnp.copy, predictor))

  predictor = None
  if stage.init != "pretrained":
    source = finished[stage.init]
    predictor = {"params": source.params["predictor"],
                 "batch_stats": source.batch_stats.get("predictor", {})}
  elif config.model.pretrained:
    abstract = jax.eval_shape(functools.partial(init_state, model, tx), rng, images)
    # The new head (when the classes differ) is drawn on every host from the same
    # host-local key.
    host = models.load_pretrained_predictor(config.model, run.train_ds.num_classes,
                                            jax.random.key(config.seed + 1))
    repl = NamedSharding(run.mesh, P())
    predictor = _replicate_host_tree({
        "params": _strict_merge(host["params"], abstract.params["predictor"],
                                f"config.model.pretrained={config.model.pretrained!r} "
                                "params"),
        "batch_stats": _strict_merge(host.get("batch_stats", {}),
                                     abstract.batch_stats.get("predictor", {}),
                                     "its batch_stats"),
    }, repl)
    train_loop.log(f"[{variant}] predictor initialised from {config.model.pretrained}")
  return jax.jit(build, out_shardings=state_sharding)(rng, predictor)


def _evaluate(run: _Run, variant: str, model: canon_jax.CanonicalizedModel,
              state: TrainState
              ) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
  """Scores ``state`` on every pose of the eval split; also the canonicalization grid."""
  mesh = run.mesh
  repl = NamedSharding(mesh, P())
  batch_shardings = _batch_shardings(run)
  params_sharding = jax.tree.map(lambda _: repl, state.params)
  stats_sharding = jax.tree.map(lambda _: repl, state.batch_stats)
  eval_step = jax.jit(run.task.make_eval_step(model),
                      in_shardings=(params_sharding, stats_sharding, batch_shardings),
                      out_shardings=repl)
  batches = input_pipeline.global_batches(
      input_pipeline.eval_iterator(run.eval_ds, run.config), mesh)
  first: dict[str, jax.Array] = {}

  def outputs():
    for batch in batches:
      if not first:
        first.update(batch)
      yield eval_step(state.params, state.batch_stats, batch)

  gathered = evaluate.gather_outputs(outputs())
  results = run.task.score(gathered, model.canonicalizer is not None)
  visuals = None
  n = min(run.config.num_visualize, run.config.eval_batch_size)
  if run.task.kind == "images" and model.canonicalizer is not None and n > 0:
    visualize = jax.jit(evaluate.make_visualize(model, run.task.group, n),
                        in_shardings=(params_sharding, stats_sharding, batch_shardings["image"]),
                        out_shardings=repl)
    visuals = jax.device_get(visualize(state.params, state.batch_stats, first["image"]))
  return results, visuals


def _run_variant(run: _Run, variant: str, finished: dict[str, TrainState]) -> _VariantOutcome:
  """Trains (or resumes, or restores) one variant, then evaluates it."""
  config, mesh = run.config, run.mesh
  stage = config[variant]
  num_steps = int(stage.num_steps)

  # ------------------------------------------------------------------ model
  spec = models.variant_spec(config, variant)
  model = models.build_model(config, spec, run.train_ds.num_classes, run.mean_std)
  tx, schedules = make_optimizer(stage)

  # ------------------------------------------------------------------ shard
  repl = NamedSharding(mesh, P())
  # Keys as replicated global arrays (made by a jitted function: eager ops cannot
  # produce arrays that span other processes' devices).
  init_rng, step_rng = jax.jit(
      lambda: tuple(jax.random.split(jax.random.fold_in(
          jax.random.key(config.seed), models.VARIANTS.index(variant)))),
      out_shardings=(repl, repl))()
  example = jax.ShapeDtypeStruct((config.batch_size, *run.train_ds.input_shape), jnp.float32)
  abstract = jax.eval_shape(functools.partial(init_state, model, tx), init_rng, example)
  state_sharding = jax.tree.map(lambda _: repl, abstract)
  batch_shardings = _batch_shardings(run)
  state = _initial_state(run, variant, model, tx, init_rng, state_sharding, finished)
  dataset_prior = None
  if spec.prior == "dataset":
    # From the initial predictor, so that a resumed run estimates the same prior.
    batches = input_pipeline.train_iterator(run.train_ds, config)
    dataset_prior = estimate_dataset_prior(
        model, {"params": state.params, "batch_stats": state.batch_stats},
        (input_pipeline.to_global(next(batches), mesh)
         for _ in range(int(config.get("dataset_prior_batches", 8)))), run.task.group)
    train_loop.log(f"[{variant}] dataset prior over {run.task.group.name}: "
                   f"{np.round(np.asarray(dataset_prior), 3).tolist()}")

  # ------------------------------------------------------------------ checkpoint
  manager = checkpointing.make_manager(
      os.path.join(run.workdir, "checkpoints", variant), config.keep_checkpoints)
  iterator = input_pipeline.train_iterator(run.train_ds, config)
  start = 0
  latest = manager.latest_step()
  if latest is not None and num_steps > 0:
    state, data_state = checkpointing.restore(manager, latest, state)
    iterator.set_state(data_state)
    start = int(latest)
    train_loop.log(f"[{variant}] resumed from step {start} ({manager.directory})")
  if start < num_steps:  # lines past the checkpoint will be written again
    run.writer.truncate(list(config.variants[:config.variants.index(variant)]), variant,
                        start)

  # ------------------------------------------------------------------ update step
  traces = [0]
  train_step = jax.jit(
      _counted(make_train_step(model, tx, schedules, spec, run.task, dataset_prior),
               traces),
      in_shardings=(state_sharding, batch_shardings, repl),
      out_shardings=(state_sharding, repl), donate_argnums=(0,))

  loop = train_loop.Loop(
      name=variant, num_steps=num_steps, manager=manager, writer=run.writer,
      flag=run.flag, position=lambda step: iterator.get_state(),
      log_every_steps=config.log_every_steps,
      checkpoint_every_steps=config.checkpoint_every_steps,
      progress=("loss", run.task.progress_metric),
      show_progress=config.progress_bar and run.is_chief)
  batches = (input_pipeline.to_global(b, mesh) for b in iterator)
  state, interrupted_at = train_loop.run_steps(
      loop, lambda state, batch: train_step(state, batch, step_rng), state, batches, start)
  if interrupted_at is not None:
    return _VariantOutcome(state, None, traces[0], interrupted_at=interrupted_at)

  # ------------------------------------------------------------------ evals
  t0 = time.time()
  results, visuals = _evaluate(run, variant, model, state)
  results["step"] = num_steps
  run.writer.write_eval(variant, num_steps, results)
  if run.is_chief:
    report.write_json(os.path.join(run.workdir, "results", f"{variant}.json"), results)
  train_loop.log(
      f"[{variant}] {run.task.summary(results)} (eval {time.time() - t0:.1f}s)")
  return _VariantOutcome(state, results, traces[0], visuals=visuals)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains and evaluates the config's variants; writes the reports into ``workdir``.

  Args:
    config: a training config (``train/configs/*.py``); validated before anything
      is read or compiled.
    workdir: output directory (created); reusing it resumes an interrupted run.

  Returns:
    ``{'results': {variant: metrics}, 'states': {variant: final TrainState},
    'train_step_traces': {variant: number of traces of its update step},
    'interrupted': signal number or None, 'eval': the eval.json object (None when
    interrupted)}``.
  """
  # ------------------------------------------------------------------ mesh
  validate_config(config, jax.device_count(), jax.process_count())
  mesh = train_loop.data_mesh()
  workdir = os.path.abspath(workdir)
  is_chief = jax.process_index() == 0
  if is_chief:
    os.makedirs(os.path.join(workdir, "results"), exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  train_loop.log(f"{jax.process_count()} process(es), {jax.device_count()} device(s) "
                 f"({jax.devices()[0].platform}); workdir {workdir}")

  # ------------------------------------------------------------------ input
  train_ds, eval_ds = input_pipeline.get_datasets(config)
  train_loop.log(f"data: {config.data.name} {len(train_ds)} train / {len(eval_ds)} eval "
                 f"examples of {train_ds.input_shape}, {train_ds.num_classes} classes")

  writer = report.MetricWriter(workdir, enabled=is_chief)
  finished: dict[str, TrainState] = {}
  results: dict[str, dict[str, Any]] = {}
  traces: dict[str, int] = {}
  visuals = None
  with checkpointing.PreemptionFlag() as flag:
    run = _Run(config=config, workdir=workdir, mesh=mesh,
               task=tasks.get_task(config, train_ds), train_ds=train_ds, eval_ds=eval_ds,
               mean_std=models.normalization(config.model), writer=writer, flag=flag,
               is_chief=is_chief)
    try:
      for variant in config.variants:
        outcome = _run_variant(run, variant, finished)
        traces[variant] = outcome.traces
        finished[variant] = outcome.state
        if outcome.interrupted_at is not None:
          return {"results": results, "states": finished, "train_step_traces": traces,
                  "interrupted": flag.signum, "eval": None}
        results[variant] = outcome.results
        if outcome.visuals is not None:
          visuals = outcome.visuals
    finally:
      writer.close()

  # ------------------------------------------------------------------ report
  summary = report.eval_summary(results, config.variants[-1])
  if is_chief:
    report.write_json(os.path.join(workdir, "eval.json"), summary)
    if all("per_element_accuracy" in r for r in results.values()):
      report.plot_per_element_accuracy(results, run.task.pose_labels,
                                       run.task.pose_axis_label,
                                       os.path.join(workdir, "per_element_accuracy.png"))
    if visuals is not None:
      report.plot_canonicalization(visuals["inputs"], visuals["canonical"],
                                   visuals["elements"], run.task.group,
                                   os.path.join(workdir, "canonicalization.png"))
    print("\n" + run.task.table(results), flush=True)
    print(f"\nwrote {os.path.join(workdir, 'eval.json')}", flush=True)
  return {"results": results, "states": finished, "train_step_traces": traces,
          "interrupted": None, "eval": summary}
