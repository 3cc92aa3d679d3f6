"""E(3) n-body: simulation equivariance and determinism, canonicalized model
equivariance, a short training run, the TFDS builder."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.spatial.transform import Rotation

from canon_jax.data import nbody as nbody_data
from canon_jax.nbody import (NBodyCanonicalizer, NBodyMLP, NBodyModel,
                             transform_particles)

B, N = 4, 5


def _particles(seed: int, batch: int = B) -> np.ndarray:
  data = nbody_data.make_nbody(batch, seed, input_step=50, horizon=20)
  return nbody_data.pack_particles(data["loc"], data["vel"], data["charges"])


def _rel(a, b) -> float:
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def _motions(seed: int, batch: int = B):
  q = Rotation.random(batch, random_state=seed).as_matrix().astype(np.float32)
  t = np.random.default_rng(seed).normal(0.0, 3.0, (batch, 3)).astype(np.float32)
  return q, t


def test_simulation_is_deterministic_and_e3_equivariant():
  a = nbody_data.make_nbody(3, seed=5, input_step=200, horizon=100)
  b = nbody_data.make_nbody(3, seed=5, input_step=200, horizon=100)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  assert set(np.unique(a["charges"])) <= {-1.0, 1.0}
  # A moved initial state gives the moved trajectory (norm clipping of the forces).
  loc, vel, q = (np.stack(s) for s in zip(*[nbody_data.initial_state(1, i) for i in range(3)]))
  rot, t = _motions(2, 3)
  loc1, _ = nbody_data.simulate(loc, vel, q, 300)
  loc2, _ = nbody_data.simulate(np.einsum("bnj,bij->bni", loc, rot) + t[:, None],
                                np.einsum("bnj,bij->bni", vel, rot), q, 300)
  np.testing.assert_allclose(loc2, np.einsum("bnj,bij->bni", loc1, rot) + t[:, None],
                             atol=1e-8)


def test_forces_hand_computed():
  loc = np.array([[[0.0, 0, 0], [2.0, 0, 0]]])
  charges = np.array([[[1.0], [1.0]]])
  force = nbody_data._forces(loc, charges, 1.0, 100.0)
  np.testing.assert_allclose(force, [[[-0.25, 0, 0], [0.25, 0, 0]]])  # like charges repel
  clipped = nbody_data._forces(loc, -charges * [[[1.0], [-1.0]]], 1.0, 0.1)
  np.testing.assert_allclose(clipped, [[[0.1, 0, 0], [-0.1, 0, 0]]])  # unlike attract


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_canonicalized_model_is_e3_equivariant(seed):
  model = NBodyModel(predictor=NBodyMLP(hidden=(32,)),
                     canonicalizer=NBodyCanonicalizer(channels=8, num_layers=2))
  x = _particles(seed)
  variables = model.init(jax.random.key(seed), x)
  apply = jax.jit(lambda p: model.apply(variables, p))
  out = apply(x)
  rot, t = _motions(seed + 10)
  moved = apply(transform_particles(jnp.asarray(x), jnp.asarray(rot), jnp.asarray(t)))
  expected = np.einsum("bnj,bij->bni", np.asarray(out.predictions), rot) + t[:, None]
  rel = _rel(moved.predictions, expected)
  assert rel <= 1e-4, rel
  # The canonical system is invariant; the frame is a proper rotation and moves with Q
  # (relative errors: a nearly degenerate random-init frame amplifies rounding).
  canon, frame = out.canonicalization.canonical, out.canonicalization.rotation
  assert _rel(moved.canonicalization.canonical, canon) <= 1e-3
  assert _rel(moved.canonicalization.rotation, rot @ np.asarray(frame)) <= 1e-3
  np.testing.assert_allclose(np.linalg.det(frame), 1.0, atol=1e-5)


def test_plain_mlp_is_not_equivariant():
  model = NBodyModel(predictor=NBodyMLP(hidden=(32,)))
  x = _particles(0)
  variables = model.init(jax.random.key(0), x)
  out = model.apply(variables, x).predictions
  rot, t = _motions(3)
  moved = model.apply(variables, transform_particles(jnp.asarray(x), rot, t)).predictions
  expected = np.einsum("bnj,bij->bni", np.asarray(out), rot) + t[:, None]
  assert _rel(moved, expected) > 1e-2


def test_canonicalized_training_decreases_loss():
  data = nbody_data.make_nbody(64, seed=3, input_step=100, horizon=200)
  x = jnp.asarray(nbody_data.pack_particles(data["loc"], data["vel"], data["charges"]))
  y = jnp.asarray(data["target"])
  model = NBodyModel(predictor=NBodyMLP(hidden=(64,)),
                     canonicalizer=NBodyCanonicalizer(channels=8, num_layers=2))
  params = model.init(jax.random.key(0), x)["params"]
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      return jnp.mean((model.apply({"params": p}, x).predictions - y) ** 2)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(50):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_bad_input_names_the_argument():
  model = NBodyModel(predictor=NBodyMLP(hidden=(8,)))
  with pytest.raises(ValueError, match=r"particles must have shape \(B, n, 7\)"):
    model.init(jax.random.key(0), jnp.zeros((2, 5, 6)))
  with pytest.raises(ValueError, match="num >= 1"):
    nbody_data.make_nbody(0, 0)


def test_tfds_builder_and_dataset(tmp_path):
  ds = nbody_data.get_nbody_dataset("canon_nbody/tiny", "test", data_dir=str(tmp_path))
  assert len(ds) == 16
  example = ds[3]
  assert example["particles"].shape == (5, 7) and example["label"].shape == (5, 3)
  # The test split is make_nbody(16, seed + 1), in TFDS's (key-hashed) record order.
  expected = nbody_data.make_nbody(16, seed=1)
  got = np.stack([ds[i]["particles"] for i in range(len(ds))])
  labels = np.stack([ds[i]["label"] for i in range(len(ds))])
  order = np.argsort(got[:, 0, 0])
  ref = np.argsort(expected["loc"][:, 0, 0])
  np.testing.assert_allclose(got[order, :, :3], expected["loc"][ref])
  np.testing.assert_allclose(got[order, :, 6:], expected["charges"][ref])
  np.testing.assert_allclose(labels[order], expected["target"][ref])
  with pytest.raises(ValueError, match="canon_nbody"):
    nbody_data.get_nbody_dataset("nbody", "test", data_dir=str(tmp_path))


def test_nbody_run_through_the_trainer(tmp_path):
  from train import train_and_evaluate, validate_config
  from train.configs import nbody_e3
  config = nbody_e3.get_config()
  validate_config(config, 1)
  config.data.name = "canon_nbody/tiny"
  config.data.data_dir = str(tmp_path / "tfds")
  config.batch_size = config.eval_batch_size = 8
  config.model.kwargs.hidden = (16,)
  config.canonicalizer.channels, config.canonicalizer.num_layers = 4, 2
  config.data.num_test_poses = 3
  config.variants = ("vanilla", "canonicalized")
  for variant in config.variants:
    config[variant].num_steps = 3
  config.progress_bar = False
  outcome = train_and_evaluate(config, str(tmp_path / "run"))
  vanilla, canon = outcome["results"]["vanilla"], outcome["results"]["canonicalized"]
  assert len(canon["per_pose_mse"]) == 3 and canon["num_examples"] == 16
  assert canon["max_equivariance_error"] < 1e-4 < vanilla["max_equivariance_error"]
  np.testing.assert_allclose(canon["per_pose_mse"], canon["mse"], rtol=1e-4)
  assert outcome["train_step_traces"] == {"vanilla": 1, "canonicalized": 1}


def test_nbody_config_errors_name_the_field():
  from train import validate_config
  from train.configs import nbody_e3
  config = nbody_e3.get_config()
  config.data.test_rotation = "z"
  with pytest.raises(ValueError, match="config.data.test_rotation must be 'none' or 'so3'"):
    validate_config(config, 1)
  config = nbody_e3.get_config()
  config.canonicalizer.network = "e3nn"
  with pytest.raises(ValueError, match="fields of canon_jax.NBodyCanonicalizer"):
    validate_config(config, 1)
