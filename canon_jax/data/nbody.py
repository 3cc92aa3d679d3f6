"""The charged-particle n-body data set (Kipf et al. 2018, NRI; Satorras et al. 2021,
EGNN), generated here, deterministically by seed.

Simulation (one system): ``num_particles`` (5) point particles in 3-D free space (no
box), charges q_i = +1 or -1 with probability 1/2 each, initial positions
x_i ~ N(0, ``loc_std``^2 I), initial velocities Gaussian directions rescaled so that
every particle has speed ``vel_norm`` (0.5). Pairwise Coulomb-like forces, like
charges repelling::

  F_i = strength * sum_{j != i} q_i q_j (x_i - x_j) / |x_i - x_j|^3

with unit masses, integrated by symplectic Euler (v += dt F, then x += dt v; the
first step updates v only, as the NRI simulator) with dt = 0.001. Each force
vector is clipped to norm ``max_force`` (= 0.1 / dt = 100): the NRI simulator clips
each *component* at that value, which ties the dynamics to the coordinate axes;
clipping the norm keeps the simulation exactly E(3)-equivariant (a rotated or
translated initial state gives the rotated or translated trajectory).

Example: the state after ``input_step`` (3000) integration steps (positions
``loc``, velocities ``vel``) and the positions ``target`` after ``input_step +
horizon`` (4000) steps, i.e. the EGNN setup (frames 30 and 40 of a trajectory
sampled every 100 steps). Sample i depends only on (seed, i).

Also here: the TFDS builder ``canon_nbody`` (array_record, no TensorFlow) and
:func:`get_nbody_dataset`, a random-access view for the training system.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from canon_jax.data.sources import _open_records
from canon_jax.data.array_record import SyntheticBuilder

NUM_PARTICLES = 5


def _forces(loc: np.ndarray, charges: np.ndarray, strength: float,
            max_force: float) -> np.ndarray:
  """(M, n, 3) positions, (M, n, 1) charges -> (M, n, 3) clipped Coulomb forces."""
  diff = loc[:, :, None, :] - loc[:, None, :, :]                 # x_i - x_j
  dist2 = np.sum(diff * diff, axis=-1)
  n = loc.shape[1]
  dist2[:, np.arange(n), np.arange(n)] = 1.0                     # no self-force
  size = strength * (charges * np.swapaxes(charges, 1, 2)) / dist2 ** 1.5
  size[:, np.arange(n), np.arange(n)] = 0.0
  force = np.sum(size[..., None] * diff, axis=2)
  norm = np.linalg.norm(force, axis=-1, keepdims=True)
  return force * np.minimum(1.0, max_force / np.maximum(norm, 1e-12))


def simulate(loc: np.ndarray, vel: np.ndarray, charges: np.ndarray, num_steps: int,
             dt: float = 0.001, strength: float = 1.0,
             max_force: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Integrates systems forward by ``num_steps`` symplectic Euler steps.

  Args:
    loc, vel: (M, n, 3) positions and velocities (float64 recommended).
    charges: (M, n, 1) charges.
    num_steps: integration steps (>= 0).
    dt: time step.
    strength: interaction strength.
    max_force: norm clip of each force vector; default ``0.1 / dt``.

  Returns:
    (loc, vel) after ``num_steps`` steps: each step v += dt F(x), then x += dt v.
    E(3)-equivariant: rotating / translating ``loc`` (and rotating ``vel``) rotates /
    translates the result.
  """
  max_force = 0.1 / dt if max_force is None else max_force
  loc, vel = np.array(loc, np.float64), np.array(vel, np.float64)
  charges = np.asarray(charges, np.float64)
  for _ in range(num_steps):
    vel = vel + dt * _forces(loc, charges, strength, max_force)
    loc = loc + dt * vel
  return loc, vel


def initial_state(seed: int, index: int, num_particles: int = NUM_PARTICLES,
                  loc_std: float = 1.0, vel_norm: float = 0.5
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Initial (loc (n, 3), vel (n, 3), charges (n, 1)) of system ``index``."""
  rng = np.random.default_rng([seed, index])
  charges = rng.choice(np.array([1.0, -1.0]), size=(num_particles, 1))
  loc = rng.normal(0.0, loc_std, (num_particles, 3))
  vel = rng.normal(size=(num_particles, 3))
  vel = vel_norm * vel / np.linalg.norm(vel, axis=-1, keepdims=True)
  return loc, vel, charges


def make_nbody(num: int, seed: int, *, num_particles: int = NUM_PARTICLES,
               input_step: int = 3000, horizon: int = 1000, dt: float = 0.001,
               loc_std: float = 1.0, vel_norm: float = 0.5, strength: float = 1.0
               ) -> dict[str, np.ndarray]:
  """Generates ``num`` n-body examples (see the module docstring).

  Args:
    num: number of systems.
    seed: integer seed; system i depends only on (seed, i) and the other arguments.
    num_particles: particles per system.
    input_step: integration steps before the input state.
    horizon: integration steps from the input state to the target positions.
    dt, loc_std, vel_norm, strength: simulation constants.

  Returns:
    ``{'loc': (num, n, 3), 'vel': (num, n, 3), 'charges': (num, n, 1), 'target':
    (num, n, 3)}``, float32.
  """
  if num < 1 or num_particles < 2 or input_step < 0 or horizon < 1:
    raise ValueError(
        "make_nbody needs num >= 1, num_particles >= 2, input_step >= 0, horizon >= 1; "
        f"got num={num}, num_particles={num_particles}, input_step={input_step}, "
        f"horizon={horizon}.")
  states = [initial_state(seed, i, num_particles, loc_std, vel_norm) for i in range(num)]
  loc, vel, charges = (np.stack(s) for s in zip(*states))
  kwargs = dict(dt=dt, strength=strength)
  loc, vel = simulate(loc, vel, charges, input_step, **kwargs)
  target, _ = simulate(loc, vel, charges, horizon, **kwargs)
  return {"loc": loc.astype(np.float32), "vel": vel.astype(np.float32),
          "charges": charges.astype(np.float32), "target": target.astype(np.float32)}


def pack_particles(loc: np.ndarray, vel: np.ndarray, charges: np.ndarray) -> np.ndarray:
  """(..., n, 3), (..., n, 3), (..., n, 1) -> (..., n, 7) rows [x, y, z, vx, vy, vz, q]:
  the input layout of :class:`canon_jax.NBodyModel`."""
  return np.concatenate([loc, vel, charges], axis=-1).astype(np.float32)


@dataclasses.dataclass
class CanonNBodyConfig(tfds.core.BuilderConfig):
  """Train/test systems; seed of the train split (test uses ``seed + 1``)."""
  num_train: int = 3000
  num_test: int = 500
  seed: int = 0


class CanonNBody(SyntheticBuilder):
  """TFDS builder ``canon_nbody``: :func:`make_nbody` as train/test splits.

  Records: ``loc`` (5, 3), ``vel`` (5, 3), ``charges`` (5, 1), ``target`` (5, 3),
  float32. Written as array_record (no TensorFlow needed).
  """
  name = "canon_nbody"
  RELEASE_NOTES = {"1.0.0": "Charged 5-particle systems, steps 3000 -> 4000."}
  DESCRIPTION = "Charged-particle systems (NRI/EGNN n-body) and future positions."
  BUILDER_CONFIGS = [
      CanonNBodyConfig(name="default", description="3000 train / 500 test systems"),
      CanonNBodyConfig(name="tiny", description="32 / 16 systems (tests)",
                       num_train=32, num_test=16),
  ]

  def _features(self) -> tfds.features.FeaturesDict:
    def vec(width):
      return tfds.features.Tensor(shape=(NUM_PARTICLES, width), dtype=np.float32)
    return tfds.features.FeaturesDict(
        {"loc": vec(3), "vel": vec(3), "charges": vec(1), "target": vec(3)})

  def _split_sizes(self) -> dict[str, int]:
    return {"train": self.builder_config.num_train, "test": self.builder_config.num_test}

  def _make(self, size: int, seed: int) -> dict:
    return make_nbody(size, seed)


@dataclasses.dataclass(frozen=True)
class NBodyDataset:
  """One split of ``canon_nbody`` with random access (a grain data source).

  ``dataset[i]`` is ``{'particles': float32 (5, 7) rows [loc, vel, charge],
  'label': float32 (5, 3) target positions}``.

  Attributes:
    name, split: as requested.
    records: the raw TFDS records.
    input_shape: (5, 7); ``label_shape``: (5, 3); ``num_classes``: 3 (outputs per
      particle).
  """
  name: str
  split: str
  records: Sequence[Mapping[str, Any]]
  input_shape = (NUM_PARTICLES, 7)
  label_shape = (NUM_PARTICLES, 3)
  num_classes = 3
  input_key = "particles"

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    r = self.records[index]
    return {"particles": pack_particles(np.asarray(r["loc"]), np.asarray(r["vel"]),
                                        np.asarray(r["charges"])),
            "label": np.asarray(r["target"], np.float32)}


def get_nbody_dataset(name: str, split: str, *, data_dir: str | None = None
                      ) -> NBodyDataset:
  """Opens a split of ``canon_nbody`` (or ``canon_nbody/tiny``), preparing it on
  first use (about 25 s on 2 CPU cores for the default 3500 systems)."""
  base, _, config = name.partition("/")
  if base != "canon_nbody":
    raise ValueError(f"n-body dataset name must be 'canon_nbody[/tiny]'; got {name!r}.")
  builder = CanonNBody(config=config or "default", data_dir=data_dir)
  if not builder.is_prepared():
    builder.download_and_prepare()
  return NBodyDataset(name=name, split=split,
                      records=_open_records(builder, name, split, data_dir))
