r"""Equivariant promptable segmentation: train a canonicalizer with the prior, score SAM.

``python -m train.segment --config train/configs/coco_sam_c4.py --workdir DIR``

The paper's COCO protocol (Mondal et al. 2023, Table 3): a C4 group-equivariant wide
ResNet canonicalizer is trained on training images with the identity prior only
(task-loss weight 0, so SAM never runs during training: upright photos should map to
element 0), then SAM, prompted with the ground-truth boxes, is scored by mask AP with
and without the canonicalizer, on the validation images as they are and at every
rotation by 90 degrees (the C4-averaged mAP).

Training (:func:`train_canonicalizer`): data parallel like :mod:`train.trainer` (a 1-D
``('data',)`` mesh, global batches split over it, the state replicated, one jitted
update step with the state donated), SGD with momentum, coupled weight decay and the
learning rate x0.1 after each epoch of ``config.training.milestones``. The order of
the training images is a function of the step (a fresh permutation per epoch from
``(seed, epoch)``), so a checkpoint holds the state and the input position (the step,
with the seed, number of images and batch size that fix the order): every
``config.checkpoint_every_steps``, at the end, and on SIGTERM/SIGINT the state goes
to ``WORKDIR/checkpoints/canonicalizer`` (orbax, written synchronously); running
again resumes, also after a SIGKILL (from the last checkpoint), and ends with the
state of an uninterrupted run, bit for bit.

Evaluation (:func:`evaluate_sam`): ``sam`` (the predictor alone) and
``sam+canonicalizer`` (:func:`canon_jax.segmentation.segment_images`), each through
:func:`canon_jax.coco_eval.group_averaged_map`. Writes ``WORKDIR/eval.json``:
``{"sam": {"mAP", "group_averaged_mAP", "per_element_mAP", "box_mAP",
"prompt_mIoU", "group_averaged_prompt_mIoU", "per_element_prompt_mIoU", ...},
"sam+canonicalizer": {...}, "identity_rate": ...}`` (mAP = COCO mask AP at IoU
0.50:0.95, in [0, 1]; prompt mIoU = mean IoU of each box prompt's mask with its
ground-truth mask on the model input, which stays informative where a random test
model scores no AP). COCO is scored in the original image coordinates, crowd
regions as ignore regions (:meth:`canon_jax.coco_eval.CocoEvaluator.add_original`).

Data (``config.data.name``):

* ``"coco/2017"``: training images from the prepared TFDS files of ``coco/2017``
  (``split=config.data.train_split`` in ``config.data.data_dir``, read as an
  array_record data source without TensorFlow); validation from COCO's
  ``instances_val2017.json`` (``config.data.val_annotations``) and image folder
  (``config.data.val_images``) through :class:`canon_jax.data.CocoInstances`.
* ``"synthetic_instances"``: :func:`canon_jax.data.make_synthetic_instances`
  (coloured shapes, mostly upright; ``config.data.num_train`` / ``num_val`` images,
  seeds ``seed`` and ``seed + 1``), so the whole path runs without downloads.

Every image is resized so its longer side is ``config.data.image_size`` and zero-padded
to a square (SAM's layout), RGB in [0, 1].

Predictor (``config.predictor``): ``checkpoint`` is a directory written by
``python -m canon_jax.convert --arch sam_vit_h``; ``name="sam_tiny_random"`` instead builds a
randomly initialised test-sized SAM (no weights needed; its masks are meaningless,
but every code path runs), and ``name="box_fill"`` a non-learned baseline whose mask is
the prompt box itself (non-zero mAP on the synthetic shapes).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

import canon_jax
from canon_jax import coco_eval, segmentation
from canon_jax.data.image_ops import resize_longest_side_and_pad
from canon_jax.models import sam as sam_lib
from train import checkpointing, input_pipeline, report
from train import loop as train_loop
from train.step import TrainState

SYNTHETIC = "synthetic_instances"
VARIANT = "canonicalizer"
"""The name of the one trained model in checkpoints/ and metrics.jsonl."""


# ------------------------------------------------------------------ config


def validate_config(config: ml_collections.ConfigDict, device_count: int,
                    process_count: int = 1) -> None:
  """Raises ``ValueError`` naming the field for a config :func:`run` cannot run."""
  canon_jax.from_name(config.group)
  t = config.training
  if config.data.name not in ("coco/2017", SYNTHETIC):
    raise ValueError(f"config.data.name must be 'coco/2017' or {SYNTHETIC!r}; got "
                     f"{config.data.name!r}.")
  if t.task_weight != 0:
    raise ValueError(
        f"config.training.task_weight must be 0 (the paper's prior-only protocol; SAM's "
        f"mask loss is not trained through here); got {t.task_weight!r}.")
  for field in ("num_epochs", "batch_size"):
    if not isinstance(t[field], int) or t[field] < 1:
      raise ValueError(f"config.training.{field} must be an integer >= 1; got {t[field]!r}.")
  if t.batch_size % device_count or t.batch_size % process_count:
    raise ValueError(f"config.training.batch_size must be divisible by the number of "
                     f"devices ({device_count}) and processes ({process_count}); got "
                     f"{t.batch_size}.")
  if t.optimizer != "sgd":
    raise ValueError(f"config.training.optimizer must be 'sgd'; got {t.optimizer!r}.")
  if config.predictor.name not in ("sam_tiny_random", "box_fill") and (
      not config.predictor.checkpoint):
    raise ValueError("config.predictor.checkpoint must name a directory written by "
                     "`python -m canon_jax.convert --arch sam_vit_h` (or set "
                     "config.predictor.name='sam_tiny_random' for a random test model).")
  if config.data.name == "coco/2017" and not (config.data.val_annotations
                                              and config.data.val_images):
    raise ValueError("config.data.val_annotations (instances_val2017.json) and "
                     "config.data.val_images (the val2017/ folder) must be set for COCO.")


# ------------------------------------------------------------------ data


def square_image(image: np.ndarray, size: int) -> np.ndarray:
  """(H, W, 3) uint8 or float in [0, 1] -> (size, size, 3) float32: the longer side
  resized to ``size``, zero padding at the bottom and right (SAM's layout)."""
  image = np.asarray(image)
  if image.dtype == np.uint8:
    image = image.astype(np.float32) / 255.0
  if image.ndim == 2:
    image = image[..., None]
  if image.shape[-1] == 1:
    image = np.repeat(image, 3, axis=-1)
  return resize_longest_side_and_pad(image.astype(np.float32), size)


class TrainImages:
  """The training images, ``(S, S, 3)`` float32 each (see :func:`square_image`)."""

  def __init__(self, config: ml_collections.ConfigDict):
    d = config.data
    self.size = int(d.image_size)
    if d.name == SYNTHETIC:
      from canon_jax.data import make_synthetic_instances  # pylint: disable=import-outside-toplevel
      self._images = make_synthetic_instances(int(d.num_train), self.size,
                                              seed=int(config.seed)).images
      self._records = None
    else:
      import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
      try:
        # From the prepared files (dataset_info.json, features.json, array_record
        # shards), not TFDS's builder code: that of coco needs TensorFlow.
        builder = tfds.core.read_only_builder.builder_from_files(d.name, data_dir=d.data_dir)
        self._records = builder.as_data_source(split=d.train_split)
      except Exception as e:  # pylint: disable=broad-except
        raise ValueError(
            f"{d.name!r} split {d.train_split!r} is not prepared in data_dir="
            f"{d.data_dir or '~/tensorflow_datasets'!r}. On a machine with network:\n"
            f"  tfds.builder({d.name!r}, data_dir=DATA_DIR).download_and_prepare("
            f"file_format='array_record')\nthen copy DATA_DIR here. ({e})") from e
      self._images = None

  def __len__(self) -> int:
    return len(self._images) if self._images is not None else len(self._records)

  def __getitem__(self, index: int) -> np.ndarray:
    if self._images is not None:
      return self._images[index]
    return square_image(self._records[int(index)]["image"], self.size)


def batch_indices(step: int, num_examples: int, batch_size: int, seed: int) -> np.ndarray:
  """The example indices of global batch ``step`` (a new permutation every epoch)."""
  per_epoch = num_examples // batch_size
  epoch, position = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return order[position * batch_size:(position + 1) * batch_size]


def val_batches(config: ml_collections.ConfigDict) -> Iterator[tuple[Any, ...]]:
  """The validation set in the batches :func:`canon_jax.coco_eval.group_averaged_map`
  reads: ``(images (B, S, S, 3), ground truth Instances)`` for the generated shapes
  (square already), ``(images, prompts, originals)`` for COCO (scored in the original
  image coordinates)."""
  d, batch = config.data, int(config.eval.batch_size)
  if d.name == SYNTHETIC:
    from canon_jax.data import make_synthetic_instances  # pylint: disable=import-outside-toplevel
    yield from make_synthetic_instances(int(d.num_val), int(d.image_size),
                                        seed=int(config.seed) + 1).batches(batch)
    return
  from canon_jax.data import CocoInstances  # pylint: disable=import-outside-toplevel
  val = CocoInstances(d.val_annotations, d.val_images, image_size=int(d.image_size))
  if d.get("max_val_images"):
    val.image_ids = val.image_ids[:int(d.max_val_images)]
  yield from val.batches(batch)


# ------------------------------------------------------------------ training


def make_optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int
                   ) -> optax.GradientTransformation:
  """SGD, momentum, coupled weight decay, lr x0.1 after each milestone epoch."""
  t = config.training
  schedule = optax.piecewise_constant_schedule(
      t.canonicalizer_lr, {int(e) * steps_per_epoch: 0.1 for e in t.milestones})
  return optax.chain(optax.add_decayed_weights(t.weight_decay),
                     optax.sgd(schedule, momentum=t.momentum or None))


def make_train_step(canonicalizer: canon_jax.ImageCanonicalizer,
                    tx: optax.GradientTransformation, prior_weight: float):
  """``train_step(state, images) -> (state, metrics)``: the prior-only update.

  ``images`` (B, S, S, 3) in [0, 1]; ``metrics``: ``loss`` (prior_weight * prior),
  ``prior_loss``, ``identity_rate`` (fraction mapped to element 0), ``grad_norm``.
  """

  def train_step(state: TrainState, images: jax.Array):
    def loss_fn(params):
      result, updates = canonicalizer.apply(
          {"params": params, "batch_stats": state.batch_stats}, images, train=True,
          mutable=["batch_stats"])
      prior = canon_jax.prior_loss(result.logits)
      identity = jnp.mean((result.element == 0).astype(jnp.float32))
      return prior_weight * prior, (updates["batch_stats"], prior, identity)

    (loss, (stats, prior, identity)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                          batch_stats=stats, opt_state=opt_state)
    return state, {"loss": loss, "prior_loss": prior, "identity_rate": identity,
                   "grad_norm": optax.global_norm(grads)}

  return train_step


def train_canonicalizer(config: ml_collections.ConfigDict, workdir: str
                        ) -> tuple[TrainState, int | None]:
  """Trains (or resumes) the canonicalizer; returns ``(state, signal or None)``."""
  mesh = train_loop.data_mesh()
  repl = NamedSharding(mesh, P())
  canon = segmentation.segmentation_canonicalizer(config.group,
                                                  **config.canonicalizer.to_dict())
  images = TrainImages(config)
  t = config.training
  per_epoch = len(images) // t.batch_size
  if per_epoch < 1:
    raise ValueError(f"config.training.batch_size={t.batch_size} is larger than the "
                     f"{len(images)} training images.")
  num_steps = per_epoch * t.num_epochs
  tx = make_optimizer(config, per_epoch)
  size = images.size
  example = jnp.zeros((t.batch_size, size, size, 3), jnp.float32)

  def init(rng):
    v = canon.init(rng, example)
    return TrainState(step=jnp.zeros((), jnp.int32), params=v["params"],
                      batch_stats=v.get("batch_stats", {}), opt_state=tx.init(v["params"]))

  state, shardings = train_loop.init_replicated(init, mesh, jax.random.key(config.seed))
  step_fn = jax.jit(make_train_step(canon, tx, float(t.prior_weight)),
                    in_shardings=(shardings, input_pipeline.batch_sharding(mesh, 4)),
                    out_shardings=(shardings, repl), donate_argnums=(0,))

  manager = checkpointing.make_manager(os.path.join(workdir, "checkpoints", VARIANT),
                                       config.keep_checkpoints)
  # The input position: the step, and what makes the order of the images a function
  # of it (a checkpoint of another order cannot be resumed exactly).
  order = {"seed": int(config.seed), "num_examples": len(images),
           "batch_size": int(t.batch_size)}
  start = 0
  if manager.latest_step() is not None:
    state, position = checkpointing.restore(manager, manager.latest_step(), state)
    changed = {k: (position[k], v) for k, v in order.items()
               if k in position and position[k] != v}   # older checkpoints: step only
    if changed:
      raise ValueError(
          f"The checkpoint in {manager.directory} was written with another order of the "
          f"training images (field: (saved, now)): {changed}. Use a new workdir, or the "
          "saved config.")
    start = int(position["step"])
    train_loop.log(f"[canonicalizer] resumed from step {start}")
  local = t.batch_size // jax.process_count()
  rows = slice(jax.process_index() * local, (jax.process_index() + 1) * local)

  def batches():
    for step in range(start, num_steps):
      idx = batch_indices(step, len(images), t.batch_size, config.seed)[rows]
      yield input_pipeline.to_global(
          {"image": np.stack([images[int(i)] for i in idx])}, mesh)["image"]

  # metrics.jsonl and TensorBoard as the classification trainer writes them; lines
  # past the restored checkpoint are dropped (the resumed run writes them again).
  writer = report.MetricWriter(workdir, enabled=jax.process_index() == 0)
  writer.truncate([], VARIANT, start)
  try:
    with checkpointing.PreemptionFlag() as flag:
      loop = train_loop.Loop(
          name=VARIANT, num_steps=num_steps, manager=manager, writer=writer, flag=flag,
          position=lambda step: {"step": step, **order},
          log_every_steps=config.log_every_steps,
          checkpoint_every_steps=config.checkpoint_every_steps,
          progress=("prior_loss", "identity_rate"),
          show_progress=config.progress_bar and jax.process_index() == 0)
      state, interrupted_at = train_loop.run_steps(loop, step_fn, state, batches(), start)
      signum = flag.signum if interrupted_at is not None else None
  finally:
    writer.close()
  return state, signum


# ------------------------------------------------------------------ evaluation


def _box_fill(unused_variables, images: jax.Array, boxes: jax.Array):
  """A non-learned baseline predictor: the mask of a box prompt is the box itself
  (pixels whose centres lie inside; logits +1 / -1, score 1). Equivariant to 90-degree
  rotations on its own; used to check the evaluation path with non-zero mAP."""
  del unused_variables
  h, w = images.shape[1:3]
  rows = jnp.arange(h, dtype=jnp.float32)[:, None] + 0.5
  cols = jnp.arange(w, dtype=jnp.float32)[None, :] + 0.5
  x0, y0, x1, y1 = (boxes[..., i, None, None] for i in range(4))
  inside = (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)
  return jnp.where(inside, 1.0, -1.0), jnp.ones(boxes.shape[:2], jnp.float32)


def load_predictor(config: ml_collections.ConfigDict):
  """``(predict(sam_variables, images, boxes) -> (mask_logits, scores), sam_variables)``
  from ``config.predictor`` (the weights are an argument, not jit constants)."""
  p = config.predictor
  if p.name == "box_fill":
    return _box_fill, {}
  if p.name == "sam_tiny_random":
    module = sam_lib.SamTiny()
    x = jnp.zeros((1, module.image_size, module.image_size, 3))
    variables = jax.jit(module.init)(jax.random.key(config.seed), x,
                                     boxes=jnp.zeros((1, 1, 4)))
  else:
    from canon_jax import convert  # pylint: disable=import-outside-toplevel
    module, variables = convert.load_pretrained(p.checkpoint)

  def predict(sam_variables, images, boxes):
    return sam_lib.box_predictor(module, sam_variables,
                                 multimask_output=p.multimask_output)(images, boxes)

  return predict, variables


def evaluate_sam(config: ml_collections.ConfigDict, state: TrainState | None
                 ) -> dict[str, Any]:
  """mAP and C4-averaged mAP of SAM alone and, given ``state``, with the canonicalizer."""
  predict, sam_variables = load_predictor(config)
  threshold = float(config.predictor.mask_threshold)
  iou_types = tuple(config.eval.iou_types)

  @jax.jit
  def plain(sam_vars, images, boxes):
    logits, scores = predict(sam_vars, images, boxes)
    masks = logits > threshold
    return masks, segmentation.masks_to_boxes(masks), scores

  def plain_fn(images, truth):
    masks, boxes, scores = plain(sam_variables, jnp.asarray(images),
                                 jnp.asarray(truth.boxes))
    return segmentation.Instances(masks, boxes, truth.labels, truth.valid, scores)

  runs = {"sam": plain_fn}
  identity = []
  if state is not None:
    canon = segmentation.segmentation_canonicalizer(config.group,
                                                    **config.canonicalizer.to_dict())
    canon_variables = {"params": state.params, "batch_stats": state.batch_stats}

    @jax.jit
    def canonicalized(canon_vars, sam_vars, images, boxes):
      out = segmentation.segment_images(
          canon, canon_vars, functools.partial(predict, sam_vars), images, boxes,
          mask_threshold=threshold)
      return out.masks, out.boxes, out.scores, out.canonicalization.element

    def canon_fn(images, truth):
      masks, boxes, scores, elements = canonicalized(
          canon_variables, sam_variables, jnp.asarray(images), jnp.asarray(truth.boxes))
      identity.append(np.asarray(elements))
      return segmentation.Instances(masks, boxes, truth.labels, truth.valid, scores)

    runs["sam+canonicalizer"] = canon_fn

  out: dict[str, Any] = {}
  for name, fn in runs.items():
    t0 = time.time()
    identity.clear()
    scores = coco_eval.group_averaged_map(fn, val_batches(config), config.group, iou_types,
                                          prompted=True)
    out[name] = {
        "mAP": scores.per_element[0]["segm/AP"] if "segm" in iou_types else None,
        "group_averaged_mAP": scores.mean["segm/AP"] if "segm" in iou_types else None,
        "per_element_mAP": [p.get("segm/AP") for p in scores.per_element],
        "box_mAP": scores.per_element[0].get("bbox/AP"),
        "prompt_mIoU": scores.per_element[0]["segm/prompt_mIoU"],
        "group_averaged_prompt_mIoU": scores.mean["segm/prompt_mIoU"],
        "per_element_prompt_mIoU": [p["segm/prompt_mIoU"] for p in scores.per_element],
        "metrics": scores.per_element[0],
        "group_averaged_metrics": scores.mean,
    }
    if name == "sam+canonicalizer":
      # Elements predicted on the upright images (the first pose of every batch).
      group = canon_jax.from_name(config.group)
      upright = np.concatenate(identity[::group.order])
      out["identity_rate"] = float(np.mean(upright == 0))
    train_loop.log(
        f"[{name}] mAP {100 * (out[name]['mAP'] or 0):.2f}, {config.group}-averaged "
        f"{100 * (out[name]['group_averaged_mAP'] or 0):.2f} (eval {time.time() - t0:.0f}s)")
  return out


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the canonicalizer (or resumes), evaluates, writes ``WORKDIR/eval.json``.

  Returns ``{'state', 'interrupted' (signal or None), 'eval' (None if interrupted)}``.
  """
  validate_config(config, jax.device_count(), jax.process_count())
  workdir = os.path.abspath(workdir)
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  state, signum = train_canonicalizer(config, workdir)
  if signum is not None:
    return {"state": state, "interrupted": signum, "eval": None}
  results = evaluate_sam(config, jax.device_get(state))
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "eval.json"), "w") as f:
      json.dump(results, f, indent=2)
    train_loop.log(f"wrote {os.path.join(workdir, 'eval.json')}")
  return {"state": state, "interrupted": None, "eval": results}


def main(argv):
  from absl import flags, logging  # pylint: disable=import-outside-toplevel
  del argv
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  outcome = run(flags.FLAGS.config, flags.FLAGS.workdir)
  if outcome["interrupted"] is not None:
    sys.exit(128 + int(outcome["interrupted"]))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=ungrouped-imports
  from ml_collections import config_flags
  config_flags.DEFINE_config_file("config", None, "train/configs/coco_sam_c4.py",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints and eval.json.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
