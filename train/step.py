"""Train state, optimizers and the update step.

``train_step(state, batch, rng) -> (state, metrics)`` is a pure function built by
:func:`make_train_step` for one variant; the trainer jits it once with explicit
shardings and donates ``state``.

Loss (per batch of B images or point clouds; :class:`canon_jax.CanonicalizedModel`
computes the prior, :func:`canon_jax.canonicalization_prior`)::

  out   = model.apply(variables, inputs, train=True, prior_target=...)
  task  = mean_b mask_b * L(out.predictions_b, label_b) / mean_b mask_b
  loss  = task + spec.prior_weight * out.prior + out.auxiliary

where the inputs are the batch as it is, or ``g_b . x_b`` with a random element (or
rotation) ``g_b`` per example when ``spec.augment`` (the prior's target then moves
with ``g_b``; so do the labels of an equivariant task, ``task.train_labels``), and
L is the task's per-example loss (``task.per_example_loss``: cross-entropy for the
classification tasks, mean squared error for n-body).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

import canon_jax
from train import tasks
from train.models import VariantSpec

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything an update step changes (a pytree; saved whole in checkpoints).

  Attributes:
    step: int32 scalar, number of updates done.
    params: ``{'canonicalizer': {...}, 'predictor': {...}}`` (no ``'canonicalizer'``
      without one).
    batch_stats: BatchNorm running statistics of the parts that have them (``{}``
      where none).
    opt_state: optax state of :func:`make_optimizer`'s transformation.
  """
  step: jax.Array
  params: dict[str, Any]
  batch_stats: dict[str, Any]
  opt_state: optax.OptState


def make_schedule(stage: ml_collections.ConfigDict, base_lr: float) -> optax.Schedule:
  """Learning rate as a function of the step, for one parameter group.

  ``stage.schedule``: "constant"; "cosine" (to 0 at ``stage.num_steps``); or
  "multistep" (x0.1 at 1/3 and again at 1/2 of ``stage.num_steps``, equiadapt's
  ResNet recipe). A linear warm-up over ``stage.warmup_steps`` precedes each.
  """
  steps = max(int(stage.num_steps), 1)
  warmup = int(stage.warmup_steps)
  if stage.schedule == "constant":
    main = optax.constant_schedule(base_lr)
  elif stage.schedule == "cosine":
    main = optax.cosine_decay_schedule(base_lr, max(steps - warmup, 1))
  elif stage.schedule == "multistep":
    main = optax.piecewise_constant_schedule(
        base_lr, {max(steps // 3 - warmup, 1): 0.1, max(steps // 2 - warmup, 2): 0.1})
  else:
    raise ValueError(f"schedule must be 'constant', 'cosine' or 'multistep'; got "
                     f"{stage.schedule!r}.")
  if warmup <= 0:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, base_lr, warmup), main], [warmup])


def _optimizer(stage: ml_collections.ConfigDict, schedule: optax.Schedule
               ) -> optax.GradientTransformation:
  if stage.optimizer == "sgd":
    tx = optax.sgd(schedule, momentum=stage.momentum or None)
    if stage.weight_decay:  # torch's coupled weight decay: grad + wd * param
      tx = optax.chain(optax.add_decayed_weights(stage.weight_decay), tx)
    return tx
  if stage.optimizer == "adamw":
    return optax.adamw(schedule, weight_decay=stage.weight_decay)
  if stage.optimizer == "adam":
    return optax.adam(schedule)
  raise ValueError(f"optimizer must be 'sgd', 'adam' or 'adamw'; got {stage.optimizer!r}.")


def make_optimizer(stage: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
  """Separate optimizers for the canonicalizer and the predictor.

  ``optax.multi_transform`` over ``params = {'canonicalizer': ..., 'predictor':
  ...}``: each group gets ``stage.optimizer`` with its own learning rate
  (``stage.canonicalizer_lr`` / ``stage.predictor_lr``) and schedule. A frozen
  predictor (``stage.freeze_predictor`` or ``predictor_lr == 0``) gets
  ``optax.set_to_zero()`` (no optimizer state).

  Returns:
    ``(transformation, {'canonicalizer': schedule, 'predictor': schedule})``.
  """
  frozen = bool(stage.freeze_predictor) or stage.predictor_lr == 0
  schedules = {"canonicalizer": make_schedule(stage, stage.canonicalizer_lr),
               "predictor": make_schedule(stage, 0.0 if frozen else stage.predictor_lr)}
  transforms = {"canonicalizer": _optimizer(stage, schedules["canonicalizer"]),
                "predictor": (optax.set_to_zero() if frozen
                              else _optimizer(stage, schedules["predictor"]))}

  def labels(params):
    return {k: jax.tree.map(lambda _, k=k: k, v) for k, v in params.items()}

  return optax.multi_transform(transforms, labels), schedules


def init_state(model: canon_jax.CanonicalizedModel, tx: optax.GradientTransformation,
               rng: jax.Array, inputs: jax.Array) -> TrainState:
  """A fresh :class:`TrainState` (step 0) for ``inputs`` shaped like a batch."""
  variables = model.init(rng, inputs)
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                    batch_stats=variables.get("batch_stats", {}),
                    opt_state=tx.init(variables["params"]))


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def prior_targets(model: canon_jax.CanonicalizedModel, spec: VariantSpec,
                  task: tasks.Task, variables: dict[str, Any], inputs: jax.Array,
                  target: jax.Array, dataset_prior: jax.Array | None = None
                  ) -> jax.Array | None:
  """The target of the canonicalizer's prior for one batch (see :class:`VariantSpec`).

  "identity": ``task.prior_target`` (None, the applied elements or rotations);
  "model_confidence": (B, |G|) softmax over G of the predictor's max probability on
  every candidate canonical input g^-1 . x (predictor in inference mode, no
  gradient); "dataset": ``dataset_prior`` (|G|,).
  """
  if spec.prior == "model_confidence":
    predict = lambda x: model.apply(variables, x, method=model.predict)
    scores = canon_jax.model_confidence_scores(predict, inputs, task.group)
    return canon_jax.model_confidence_prior(scores, spec.prior_temperature)
  if spec.prior == "dataset":
    if dataset_prior is None:
      raise ValueError("spec.prior='dataset' needs the estimated dataset_prior.")
    return dataset_prior
  return task.prior_target(target, spec.augment)


def estimate_dataset_prior(model: canon_jax.CanonicalizedModel, variables: dict[str, Any],
                           batches, group: canon_jax.DiscreteGroup,
                           smoothing: float = 1.0) -> jax.Array:
  """A (|G|,) dataset prior: the histogram of the predictor's most confident pose.

  For every image of ``batches`` (dicts with ``image`` and ``mask``), the element g
  whose candidate canonical input g^-1 . x the predictor is most confident on
  (:func:`canon_jax.model_confidence_scores`), counted with Laplace ``smoothing``
  (:func:`canon_jax.dataset_prior`).
  """
  predict = lambda x: model.apply(variables, x, method=model.predict)
  counts = jnp.zeros((group.order,), jnp.float32)
  for batch in batches:
    best = jnp.argmax(canon_jax.model_confidence_scores(predict, batch["image"], group), -1)
    counts = counts + jnp.zeros_like(counts).at[best].add(batch["mask"])
  return canon_jax.dataset_prior(counts, group.order, smoothing=smoothing)


def make_train_step(model: canon_jax.CanonicalizedModel, tx: optax.GradientTransformation,
                    schedules: dict[str, optax.Schedule], spec: VariantSpec,
                    task: tasks.Task, dataset_prior: jax.Array | None = None
                    ) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
  """The update step of one variant.

  Args:
    model: the variant's model (:func:`train.models.build_model`).
    tx, schedules: from :func:`make_optimizer`.
    spec: the variant (:func:`train.models.variant_spec`).
    task: a :mod:`train.tasks` task (augmentation, prior target, input key), e.g.
      ``tasks.ImageTask(group)``.
    dataset_prior: (|G|,) for ``spec.prior == "dataset"``
      (:func:`estimate_dataset_prior`).

  Returns:
    ``train_step(state, batch, rng) -> (state, metrics)``: ``batch`` holds the
    task's input (``image`` (B, H, W, C) float32 or ``points`` (B, N, 3) float32),
    ``label`` (B,) int32 and ``mask`` (B,) float32; ``rng`` is the variant's base
    key (the step folds in ``state.step``, so a resumed run draws the same
    numbers). ``metrics`` are float32 scalars: ``loss``, ``task_loss``,
    ``prior_loss``, the task's :meth:`batch_metrics` (``accuracy`` on the training
    batch, after augmentation/canonicalization; ``mse`` for n-body), ``identity_rate`` (fraction of the batch the
    canonicalizer maps to its prior's target: images, the element 0 or the applied
    element when ``spec.augment``; point clouds, within 30 degrees of the applied
    rotation; 1 without canonicalizer), ``grad_norm`` and the learning rates of this
    update, ``lr_canonicalizer`` and ``lr_predictor``.
  """

  def train_step(state: TrainState, batch: Batch, rng: jax.Array
                 ) -> tuple[TrainState, Metrics]:
    aug_rng, dropout_rng = jax.random.split(jax.random.fold_in(rng, state.step))
    gumbel_rng = jax.random.fold_in(dropout_rng, 1)
    labels, mask = batch["label"], batch["mask"]
    inputs, target = task.train_inputs(aug_rng, batch[task.input_key], spec.augment)
    labels = task.train_labels(labels, target)
    prior_target = prior_targets(
        model, spec, task, {"params": state.params, "batch_stats": state.batch_stats},
        inputs, target, dataset_prior)

    def loss_fn(params):
      out, updates = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, inputs, train=True,
          prior_target=prior_target, mutable=["batch_stats"],
          rngs={"dropout": dropout_rng, "gumbel": gumbel_rng})
      task_loss = _masked_mean(task.per_example_loss(out.predictions, labels), mask)
      loss = task_loss + spec.prior_weight * out.prior + out.auxiliary
      return loss, (out, updates.get("batch_stats", {}), task_loss)

    (loss, (out, batch_stats, task_loss)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1,
                          params=optax.apply_updates(state.params, updates),
                          batch_stats=batch_stats, opt_state=opt_state)
    identity = (jnp.ones((), jnp.float32) if out.canonicalization is None else
                _masked_mean(task.identity_hits(out.canonicalization, target), mask))
    metrics = {
        "loss": loss, "task_loss": task_loss, "prior_loss": out.prior,
        **{k: _masked_mean(v, mask)
           for k, v in task.batch_metrics(out.predictions, labels).items()},
        "identity_rate": identity, "grad_norm": optax.global_norm(grads),
        **{f"lr_{k}": schedule(state.step - 1) for k, schedule in schedules.items()}}
    return state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

  return train_step
