"""The canon_jax side of the rows: :class:`canon_jax.CanonicalizedModel` steps, jitted.

Every case builds its model, initialises it and compiles one step
(:func:`benchmarks.measure.jax_case`); the image and point-cloud models are
``CanonicalizedModel(predictor, canonicalizer)`` (``canonicalizer=None`` for the
predictor alone), as ``python -m train`` builds them.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import canon_jax
from benchmarks.measure import Case, jax_case, measure
from benchmarks.workload import (GROUP, LEARNING_RATE, LIFT_PADDING, MOMENTUM,
                                 NUM_CLASSES, NUM_CLOUD_CLASSES, NUM_NEIGHBORS,
                                 PRIOR_WEIGHT, ROTATION_PRIOR_WEIGHT, Sizes, make_clouds,
                                 make_images)
from canon_jax import models as canon_models
from canon_jax.nn import GroupConvNet


def _ce(logits, labels):
  # In float32 whatever the predictor's compute dtype, as on the torch side.
  return optax.softmax_cross_entropy_with_integer_labels(
      logits.astype(jnp.float32), labels).mean()


def canonicalizer_case(sizes: Sizes) -> Case:
  """Row 1: GroupConvNet forward + backward of the identity prior loss."""
  images, _ = make_images(sizes.canon_batch, sizes.canon_size)
  net = GroupConvNet(GROUP, features=32, kernel_size=5, num_layers=3,
                     padding=LIFT_PADDING)
  x = jnp.asarray(images)
  params = net.init(jax.random.key(0), x)["params"]

  def fwd_bwd(params, x):
    return jax.value_and_grad(
        lambda p: canon_jax.prior_loss(net.apply({"params": p}, x)))(params)

  return jax_case("canon_jax", fwd_bwd, (params, x), sizes.canon_batch)


def image_canonicalizer(sizes: Sizes) -> canon_jax.ImageCanonicalizer:
  return canon_jax.ImageCanonicalizer(GROUP, resize=sizes.canon_size,
                                      lift_padding=LIFT_PADDING)


def image_model(sizes: Sizes, canonicalize: bool = True) -> canon_jax.CanonicalizedModel:
  """The C8 canonicalizer (or none) + the image predictor in ``sizes.predictor_dtype``."""
  predictor = canon_models.get_model(sizes.predictor, num_classes=NUM_CLASSES,
                                     dtype=jnp.dtype(sizes.predictor_dtype))
  return canon_jax.CanonicalizedModel(
      predictor=predictor, canonicalizer=image_canonicalizer(sizes) if canonicalize else None)


def init_image_model(sizes: Sizes, x: jax.Array, canonicalize: bool = True
                     ) -> tuple[canon_jax.CanonicalizedModel, dict]:
  """:func:`image_model` and its variables (``params``, ``batch_stats``) on ``x``."""
  model = image_model(sizes, canonicalize)
  return model, model.init(jax.random.key(0), x)


def _sgd_step(model: nn.Module, loss_of: Callable, rngs: dict | None = None):
  """One SGD (momentum) step of ``loss_of(output, y)`` through ``model`` in training
  mode: ``(state, x, y) -> (state, loss)``, ``state = (params, batch_stats, opt)``."""
  tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)

  def step(state, x, y):
    params, stats, opt_state = state

    def loss_fn(params):
      out, updates = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                                 mutable=["batch_stats"], rngs=rngs)
      return loss_of(out, y), updates["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), stats, opt_state), loss

  return step, tx


def train_step_case(sizes: Sizes, canonicalize: bool = True) -> Case:
  """Row 2: one jitted SGD step of canonicalizer + predictor (or the predictor alone)
  on ``CE + PRIOR_WEIGHT * prior``."""
  images, labels = make_images(sizes.train_batch, sizes.image_size)
  x, y = jnp.asarray(images), jnp.asarray(labels)
  model, variables = init_image_model(sizes, x, canonicalize)
  step, tx = _sgd_step(model, lambda out, y: _ce(out.predictions, y) + PRIOR_WEIGHT * out.prior)
  state = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
  label = "canon_jax" if canonicalize else "canon_jax predictor only"
  return jax_case(label, step, (state, x, y), sizes.train_batch, stateful=True)


def pointcloud_model(sizes: Sizes, canonicalize: bool = True) -> canon_jax.CanonicalizedModel:
  """VN canonicalizer (or none) + PointNet. The canonicalizer's edge layer + one VN
  layer + linear readout ~ equiadapt's VNSmall (edge layer, one 21->21 and one 21->4
  VN layer); the edge layer dominates both."""
  features, head = sizes.pointnet
  predictor = canon_models.PointNet(num_classes=NUM_CLOUD_CLASSES, features=features,
                                    head=head)
  canonicalizer = (canon_jax.PointCloudCanonicalizer(network="vn", num_neighbors=NUM_NEIGHBORS,
                                                     num_layers=2)
                   if canonicalize else None)
  return canon_jax.CanonicalizedModel(predictor=predictor, canonicalizer=canonicalizer)


def pointcloud_case(sizes: Sizes, canonicalize: bool = True) -> Case:
  """Row 3: VN canonicalizer + PointNet forward + backward (training mode) of
  ``CE + ROTATION_PRIOR_WEIGHT * rotation prior``."""
  clouds, labels = make_clouds(sizes.cloud_batch, sizes.num_points)
  x, y = jnp.asarray(clouds), jnp.asarray(labels)
  model = pointcloud_model(sizes, canonicalize)
  variables = model.init(jax.random.key(0), x)
  key_d = jax.random.key(1)

  def fwd_bwd(params, stats, x, y):
    def loss_fn(params):
      out, _ = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                           mutable=["batch_stats"], rngs={"dropout": key_d})
      return _ce(out.predictions, y) + ROTATION_PRIOR_WEIGHT * out.prior
    return jax.value_and_grad(loss_fn)(params)

  label = "canon_jax" if canonicalize else "canon_jax predictor only"
  return jax_case(label, fwd_bwd, (variables["params"], variables["batch_stats"], x, y),
                  sizes.cloud_batch)


def inference_case(sizes: Sizes, mode: str) -> Case:
  """Row 4: ``mode`` "canonicalize" (canonicalize, then predict), "average" (mean
  of the softmax over the 8 rotated copies) or "predictor" (the predictor alone)."""
  if mode not in ("canonicalize", "average", "predictor"):
    raise ValueError(f"mode must be 'canonicalize', 'average' or 'predictor'; got {mode!r}.")
  images, _ = make_images(sizes.infer_batch, sizes.image_size)
  x = jnp.asarray(images)
  model, variables = init_image_model(sizes, x, mode == "canonicalize")
  order = canon_jax.from_name(GROUP).order

  def predict(variables, x):
    return model.apply(variables, x).predictions

  def average(variables, x):
    copies = canon_jax.all_transforms(x, GROUP)              # (|G|, B, H, W, C)
    logits = predict(variables, copies.reshape((-1,) + x.shape[1:]))
    probs = jax.nn.softmax(logits.reshape(order, x.shape[0], -1).astype(jnp.float32),
                           axis=-1)
    return probs.mean(axis=0)

  label = {"canonicalize": "canon_jax canonicalize+predict",
           "average": f"canon_jax {order}-way averaging",
           "predictor": "canon_jax predictor only"}[mode]
  return jax_case(label, average if mode == "average" else predict, (variables, x),
                  sizes.infer_batch)


def profile_breakdown(sizes: Sizes, device: str = "cpu") -> dict[str, float]:
  """Median seconds of the parts of the C8 + predictor train step (canon_jax only).

  ``full`` (straight-through, |G| weighted copies of the input), ``predictor_only``,
  and micro-benchmarks at the row-2 batch: the weighted transform's forward +
  gradient w.r.t. the weights, the single per-sample transform, the canonicalizer
  (crop, resize, mask, network) forward + backward, and the preprocessing alone.
  """
  images, _ = make_images(sizes.train_batch, sizes.image_size)
  x = jnp.asarray(images)
  group = canon_jax.from_name(GROUP)
  canon = image_canonicalizer(sizes)
  cparams = canon.init(jax.random.key(0), x)["params"]
  w = jax.nn.one_hot(jnp.arange(sizes.train_batch) % group.order, group.order)
  ct = jnp.asarray(make_images(sizes.train_batch, sizes.image_size, seed=1)[0])
  elements = jnp.arange(sizes.train_batch, dtype=jnp.int32) % group.order

  def weighted(w, x):   # d/dw <ct, sum_g w_g g.x>: what the straight-through costs
    return jax.value_and_grad(lambda w: jnp.sum(
        canon_jax.transform_images_weighted(x, group, w) * ct))(w)

  def canon_fwd_bwd(p, x):
    return jax.value_and_grad(lambda p: canon_jax.prior_loss(
        canon.apply({"params": p}, x, train=True).logits))(p)

  builders = {
      "full": lambda: train_step_case(sizes),
      "predictor_only": lambda: train_step_case(sizes, canonicalize=False),
      "weighted_transform_fwd_bwd": lambda: jax_case("w", weighted, (w, x), 1),
      "single_transform_fwd": lambda: jax_case(
          "s", lambda x, e: canon_jax.transform_images(x, group, e), (x, elements), 1),
      "canonicalizer_net_fwd_bwd": lambda: jax_case("c", canon_fwd_bwd, (cparams, x), 1),
      "preprocess_fwd": lambda: jax_case(
          "p", lambda x: canon.apply({"params": cparams}, x, method="preprocess"),
          (x,), 1),
  }
  stats = measure(builders, sizes, device)
  return {key: s["median_s"] for key, s in stats.items()}
