"""The update step: traced once, loss composition, separate and frozen optimizers,
batch statistics, schedules."""
import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import canon_jax
from multidevice import tiny_digits
from train import models, step, tasks

GROUP = canon_jax.from_name("C8")
B = 8


def _setup(variant="canonicalized", **stage_overrides):
  config = tiny_digits.get_config()
  stage = config[variant]
  stage.update(init="pretrained", **stage_overrides)
  spec = models.variant_spec(config, variant)
  model = models.build_model(config, spec, 10, None)
  tx, schedules = step.make_optimizer(stage)
  images = jnp.zeros((B, 32, 32, 1), jnp.float32)
  state = jax.jit(functools.partial(step.init_state, model, tx))(jax.random.key(0), images)
  fn = step.make_train_step(model, tx, schedules, spec, tasks.ImageTask(GROUP))
  return state, fn


def _batch(seed):
  rng = np.random.default_rng(seed)
  return {"image": jnp.asarray(rng.random((B, 32, 32, 1), np.float32)),
          "label": jnp.asarray(rng.integers(0, 10, B), jnp.int32),
          "mask": jnp.ones((B,), jnp.float32)}


def _changed(a, b):
  return any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_train_step_traces_once_and_adds_the_weighted_prior():
  state, fn = _setup(prior_weight=7.0)
  train_step = jax.jit(chex.assert_max_traces(fn, n=1), donate_argnums=(0,))
  rng = jax.random.key(1)
  for i in range(4):
    state, m = train_step(state, _batch(i), rng)
    assert float(m["loss"]) == pytest.approx(
        float(m["task_loss"]) + 7.0 * float(m["prior_loss"]), rel=1e-6)
    assert float(m["prior_loss"]) > 0
  assert int(state.step) == 4
  assert float(m["lr_canonicalizer"]) == pytest.approx(3e-3 * (1 + np.cos(np.pi * 3 / 12)) / 2)


def test_task_loss_reaches_canonicalizer_of_frozen_predictor():
  """Straight-through weights: without prior, the task loss alone trains the
  canonicalizer; a frozen predictor keeps its parameters and batch statistics."""
  state, fn = _setup(prior_weight=0.0, freeze_predictor=True)
  new, _ = jax.jit(fn)(state, _batch(0), jax.random.key(1))
  assert _changed(new.params["canonicalizer"], state.params["canonicalizer"])
  chex.assert_trees_all_equal(new.params["predictor"], state.params["predictor"])
  chex.assert_trees_all_equal(new.batch_stats["predictor"], state.batch_stats["predictor"])


def test_learning_rates_are_separate():
  state, fn = _setup(canonicalizer_lr=0.0, predictor_lr=1e-2)
  new, m = jax.jit(fn)(state, _batch(0), jax.random.key(1))
  chex.assert_trees_all_equal(new.params["canonicalizer"], state.params["canonicalizer"])
  assert _changed(new.params["predictor"], state.params["predictor"])
  assert _changed(new.batch_stats["predictor"], state.batch_stats["predictor"])
  assert float(m["lr_canonicalizer"]) == 0.0 and float(m["lr_predictor"]) > 0


def test_vanilla_and_augmentation_differ_only_by_the_rotation():
  state, vanilla = _setup("vanilla")
  _, augmentation = _setup("augmentation")
  batch = _batch(0)
  _, m_v = jax.jit(vanilla)(state, batch, jax.random.key(1))
  _, m_a = jax.jit(augmentation)(state, batch, jax.random.key(1))
  assert float(m_v["identity_rate"]) == float(m_a["identity_rate"]) == 1.0
  assert float(m_v["prior_loss"]) == float(m_a["prior_loss"]) == 0.0
  assert float(m_v["task_loss"]) != pytest.approx(float(m_a["task_loss"]), rel=1e-6)
  # With the identity as the only element drawn, augmentation is vanilla.
  config = tiny_digits.get_config()
  spec = models.variant_spec(config, "augmentation")
  _, m_id = jax.jit(step.make_train_step(
      models.build_model(config, spec, 10, None),
      *step.make_optimizer(config.augmentation), spec,
      tasks.ImageTask(canon_jax.from_name("C1"))))(state, batch, jax.random.key(1))
  assert float(m_id["task_loss"]) == pytest.approx(float(m_v["task_loss"]), rel=1e-6)


@pytest.mark.parametrize("schedule, expected", [
    ("constant", [1.0, 1.0, 1.0, 1.0]),
    ("multistep", [1.0, 0.1, 0.01, 0.01]),
    ("cosine", [1.0, 0.75, 0.25, 0.0]),
])
def test_schedules(schedule, expected):
  stage = ml_collections.ConfigDict(dict(num_steps=12, warmup_steps=0, schedule=schedule))
  fn = step.make_schedule(stage, 1.0)
  assert [float(fn(s)) for s in (0, 4, 8, 12)] == pytest.approx(expected, abs=1e-6)
  warm = step.make_schedule(ml_collections.ConfigDict(
      dict(num_steps=12, warmup_steps=4, schedule=schedule)), 1.0)
  assert float(warm(0)) == 0.0 and float(warm(2)) == pytest.approx(0.5)


def test_frozen_predictor_has_no_optimizer_state():
  stage = tiny_digits.get_config().canonicalized
  stage.freeze_predictor = True
  tx, _ = step.make_optimizer(stage)
  params = {"canonicalizer": {"w": jnp.ones(3)}, "predictor": {"w": jnp.ones(5)}}
  state = tx.init(params)
  sizes = [x.size for x in jax.tree.leaves(state.inner_states["predictor"])]
  assert sizes == []
  updates, _ = tx.update(params, state, params)
  np.testing.assert_array_equal(updates["predictor"]["w"], np.zeros(5))
  assert np.all(np.asarray(updates["canonicalizer"]["w"]) != 0)


def test_variant_specs_are_explicit_fields():
  config = tiny_digits.get_config()
  config.canonicalized.update(prior_weight=3.0, augment=True, freeze_predictor=True)
  assert models.variant_spec(config, "vanilla") == models.VariantSpec(
      canonicalize=False, augment=False, prior_weight=0.0, freeze_predictor=False)
  assert models.variant_spec(config, "augmentation").augment
  assert models.variant_spec(config, "canonicalized") == models.VariantSpec(
      canonicalize=True, augment=True, prior_weight=3.0, freeze_predictor=True)


@pytest.mark.parametrize("prior", ["model_confidence", "dataset"])
def test_data_driven_priors_in_the_train_step(prior):
  config = tiny_digits.get_config()
  config.canonicalized.update(init="pretrained", prior=prior, prior_temperature=0.5,
                              prior_weight=2.0)
  spec = models.variant_spec(config, "canonicalized")
  assert spec.prior == prior
  model = models.build_model(config, spec, 10, None)
  tx, schedules = step.make_optimizer(config.canonicalized)
  task = tasks.ImageTask(GROUP)
  batch = _batch(0)
  state = step.init_state(model, tx, jax.random.key(0), batch["image"])
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  estimate = step.estimate_dataset_prior(model, variables, [batch, _batch(1)], GROUP)
  assert estimate.shape == (GROUP.order,)
  np.testing.assert_allclose(float(jnp.sum(estimate)), 1.0, rtol=1e-6)
  target = step.prior_targets(model, spec, task, variables, batch["image"],
                              jnp.zeros((B,), jnp.int32), estimate)
  if prior == "model_confidence":
    assert target.shape == (B, GROUP.order)
    np.testing.assert_allclose(jnp.sum(target, -1), 1.0, rtol=1e-5)
    # The predictor's own confidence: the target peaks where it is most confident.
    predict = lambda x: model.apply(variables, x, method=model.predict)
    scores = canon_jax.model_confidence_scores(predict, batch["image"], GROUP)
    np.testing.assert_array_equal(jnp.argmax(target, -1), jnp.argmax(scores, -1))
  else:
    np.testing.assert_array_equal(target, estimate)
  chex.clear_trace_counter()
  fn = jax.jit(chex.assert_max_traces(
      step.make_train_step(model, tx, schedules, spec, task, estimate), n=1))
  for i in range(2):
    state, m = fn(state, _batch(i), jax.random.key(1))
    assert float(m["loss"]) == pytest.approx(
        float(m["task_loss"]) + 2.0 * float(m["prior_loss"]), rel=1e-6)
    assert float(m["prior_loss"]) > 0
