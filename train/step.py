"""Train state, optimizers and the update step.

``train_step(state, batch, rng) -> (state, metrics)`` is a pure function built by
:func:`make_train_step` for one variant; the trainer jits it once with explicit
shardings and donates ``state``.

Loss (per batch of B images or point clouds; the point-cloud prior is
``canon_jax.rotation_prior_loss``, see :mod:`train.tasks`)::

  task  = mean_b mask_b * CE(predictor(prep(canonical_b)), label_b) / mean_b mask_b
  prior = canon_jax.prior_loss(result.logits)       (canonicalized variant only)
  loss  = task + prior_weight * prior

where ``canonical`` is the canonicalizer's straight-through output (the input itself
for the vanilla variant, and ``g_b . image_b`` with a uniformly random group element
``g_b`` per image for the augmentation variant).
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from train import tasks
from train.models import Pipeline

Batch = dict[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything an update step changes (a pytree; saved whole in checkpoints).

  Attributes:
    step: int32 scalar, number of updates done.
    params: ``{'canonicalizer': {...}, 'predictor': {...}}`` (``{}`` for a missing
      canonicalizer).
    batch_stats: same keys; BatchNorm running statistics (``{}`` where none).
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


def init_state(pipeline: Pipeline, tx: optax.GradientTransformation, rng: jax.Array,
               images: jax.Array) -> TrainState:
  """A fresh :class:`TrainState` (step 0) for ``images`` shaped like a batch."""
  variables = pipeline.init(rng, images)
  return TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                    batch_stats=variables["batch_stats"],
                    opt_state=tx.init(variables["params"]))


def _masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  return jnp.sum(x * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_train_step(pipeline: Pipeline, tx: optax.GradientTransformation,
                    schedules: dict[str, optax.Schedule], variant: str,
                    stage: ml_collections.ConfigDict,
                    task: tasks.Task
                    ) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]:
  """The update step of one variant.

  Args:
    pipeline: the variant's models.
    tx, schedules: from :func:`make_optimizer`.
    variant: "vanilla", "augmentation" or "canonicalized".
    stage: the variant's config (``prior_weight``, ``freeze_predictor``,
      ``augment``).
    task: a :mod:`train.tasks` task (augmentation, prior, input key), e.g.
      ``tasks.ImageTask(group)``.

  Returns:
    ``train_step(state, batch, rng) -> (state, metrics)``: ``batch`` holds the
    task's input (``image`` (B, H, W, C) float32 or ``points`` (B, N, 3) float32),
    ``label`` (B,) int32 and ``mask`` (B,) float32; ``rng`` is the variant's base
    key (the step folds in ``state.step``, so a resumed run draws the same
    numbers). ``metrics`` are float32 scalars: ``loss``, ``task_loss``,
    ``prior_loss``, ``accuracy`` (on the training batch, after
    augmentation/canonicalization), ``identity_rate`` (fraction of the batch the
    canonicalizer maps to its prior's target: images, the element 0 or the applied
    element when ``stage.augment``; point clouds, within 30 degrees of the applied
    rotation; 1 without canonicalizer), ``grad_norm`` and the learning rates of this
    update, ``lr_canonicalizer`` and ``lr_predictor``.

  Images, with ``stage.augment`` (canonicalized variant): each image is first
  transformed by a uniformly random element g_b and the identity prior moves with
  it: the prior of image b is the one-hot of g_b (an equivariant canonicalizer that
  maps x to the identity maps g . x to g). The predictor then also trains on what it
  meets at test time, canonical images of rotated inputs (for C8: twice-interpolated
  ones). Point clouds: every variant's clouds are rotated (see
  :class:`train.tasks.PointCloudTask`) and the prior always moves with the rotation.
  """
  prior_weight = float(stage.prior_weight) if variant == "canonicalized" else 0.0
  train_predictor = not (bool(stage.freeze_predictor) or stage.predictor_lr == 0)
  augment = variant == "augmentation" or bool(stage.augment)

  def train_step(state: TrainState, batch: Batch, rng: jax.Array
                 ) -> tuple[TrainState, Metrics]:
    rng = jax.random.fold_in(rng, state.step)
    aug_rng, dropout_rng = jax.random.split(rng)
    labels, mask = batch["label"], batch["mask"]
    inputs, target = task.train_inputs(aug_rng, batch[task.input_key], variant, augment)

    def loss_fn(params):
      logits, result, new_stats = pipeline.apply(
          params, state.batch_stats, inputs, train=True,
          train_predictor=train_predictor, rng=dropout_rng)
      task_loss = _masked_mean(
          optax.softmax_cross_entropy_with_integer_labels(logits, labels), mask)
      if result is not None:
        prior, hits = task.prior(result, target, augment)
        identity = _masked_mean(hits, mask)
      else:
        prior = jnp.zeros((), jnp.float32)
        identity = jnp.ones((), jnp.float32)
      loss = task_loss + prior_weight * prior
      accuracy = _masked_mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32), mask)
      aux = {"task_loss": task_loss, "prior_loss": prior, "accuracy": accuracy,
             "identity_rate": identity}
      return loss, (new_stats, aux)

    (loss, (new_stats, aux)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=new_stats,
                              opt_state=opt_state)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), **aux,
               **{f"lr_{k}": schedule(state.step) for k, schedule in schedules.items()}}
    return new_state, {k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()}

  return train_step
