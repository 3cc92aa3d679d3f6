"""Command line: ``python -m train --config train/configs/digits_c8.py --workdir DIR``.

Fields of the config can be overridden: ``--config.batch_size=128``,
``--config.canonicalized.num_steps=500``. Multi-host: set ``JAX_COORDINATOR_ADDRESS``
(+ ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``) or pass ``--coordinator_address``,
``--num_processes`` and ``--process_id``; under SLURM / Open MPI the cluster is
detected. Exit status: 0 when done, 128 + signal number when
SIGTERM/SIGINT stopped the run after saving a checkpoint (run the same command again
to resume).
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config file (train/configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and reports.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Index of this process.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from train import distributed  # pylint: disable=import-outside-toplevel
  distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from train.trainer import train_and_evaluate  # pylint: disable=import-outside-toplevel
  outcome = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  if outcome["interrupted"] is not None:
    sys.exit(128 + int(outcome["interrupted"]))


if __name__ == "__main__":
  app.run(main)
