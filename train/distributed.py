"""Multi-host start-up: ``jax.distributed.initialize`` from flags or the environment.

Call :func:`maybe_initialize` before anything touches a JAX device. It initializes

* from explicit arguments (``--coordinator_address``, ``--num_processes``,
  ``--process_id`` on the command line), else
* from the environment: a coordinator address in ``JAX_COORDINATOR_ADDRESS`` or
  ``COORDINATOR_ADDRESS`` with the process count in ``JAX_NUM_PROCESSES`` /
  ``NUM_PROCESSES`` / ``WORLD_SIZE`` and the index in ``JAX_PROCESS_ID`` /
  ``PROCESS_ID`` / ``RANK``, else
* by JAX's own cluster detection when SLURM (``SLURM_NTASKS`` > 1) or Open MPI
  (``OMPI_COMM_WORLD_SIZE`` > 1) runs several tasks;

and otherwise does nothing (one process). With several processes the CPU backend
needs a collectives implementation: :func:`maybe_initialize` selects gloo, which
does not affect GPU or TPU backends.
"""
from __future__ import annotations

import os
from typing import Mapping

import jax

_ADDRESS_VARS = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS")
_COUNT_VARS = ("JAX_NUM_PROCESSES", "NUM_PROCESSES", "WORLD_SIZE")
_INDEX_VARS = ("JAX_PROCESS_ID", "PROCESS_ID", "RANK")


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
  for name in names:
    if env.get(name):
      return env[name]
  return None


def resolve(coordinator_address: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, env: Mapping[str, str] | None = None
            ) -> dict[str, object] | None:
  """The arguments for ``jax.distributed.initialize``, or ``None`` for one process.

  Returns ``{}`` when a cluster manager (SLURM, Open MPI) should be auto-detected.
  Raises ``ValueError`` when a coordinator address comes without the process count
  and index.
  """
  env = os.environ if env is None else env
  address = coordinator_address or _first(env, _ADDRESS_VARS)
  if address:
    count = num_processes if num_processes is not None else _first(env, _COUNT_VARS)
    index = process_id if process_id is not None else _first(env, _INDEX_VARS)
    if count is None or index is None:
      raise ValueError(
          f"coordinator address {address!r} given, but the number of processes and this "
          f"process's index are missing: pass --num_processes and --process_id or set one "
          f"of {_COUNT_VARS} and one of {_INDEX_VARS}.")
    count, index = int(count), int(index)
    if not 0 <= index < count:
      raise ValueError(f"process_id must be in [0, num_processes={count}); got {index}.")
    return {"coordinator_address": address, "num_processes": count, "process_id": index}
  if num_processes is not None or process_id is not None:
    raise ValueError("--num_processes/--process_id need --coordinator_address "
                     "(or JAX_COORDINATOR_ADDRESS).")
  for name in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
    if int(env.get(name, "1") or 1) > 1:
      return {}
  return None


def maybe_initialize(coordinator_address: str | None = None,
                     num_processes: int | None = None,
                     process_id: int | None = None) -> bool:
  """Initializes multi-process JAX when asked to (see module docstring).

  Returns:
    True if ``jax.distributed.initialize`` was called.
  """
  kwargs = resolve(coordinator_address, num_processes, process_id)
  if kwargs is None:
    return False
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  return True
