"""Pieces every training config shares: a variant's stage, the data block, run settings."""
import ml_collections


def run_config(task: str, batch_size: int, eval_batch_size: int, seed: int = 0
               ) -> ml_collections.ConfigDict:
  """A config's top level: the task ("images", "points", "parts", "nbody"), the global
  batch sizes and the seed."""
  return ml_collections.ConfigDict(dict(task=task, seed=seed, batch_size=batch_size,
                                        eval_batch_size=eval_batch_size))


def stage(**overrides) -> ml_collections.ConfigDict:
  """A variant's training settings (fields listed in train/config_checks.py)."""
  fields = dict(
      init="pretrained",        # "pretrained" or the name of an earlier variant
      num_steps=300,
      optimizer="adam",         # "sgd" | "adam" | "adamw"
      predictor_lr=1e-3,
      canonicalizer_lr=1e-3,
      momentum=0.9,             # sgd only
      weight_decay=0.0,
      schedule="cosine",        # "constant" | "cosine" | "multistep"
      warmup_steps=0,
      prior_weight=0.0,         # canonicalized only: weight of canon_jax.prior_loss
      freeze_predictor=False,   # True: optax.set_to_zero on the predictor
      augment=False,            # canonicalized: random group elements before the
                                # canonicalizer, prior moved along (train/step.py)
  )
  fields.update(overrides)
  return ml_collections.ConfigDict(fields)


def data_config(name: str, **fields) -> ml_collections.ConfigDict:
  """``config.data``: the dataset ``name`` (its train/test splits, TFDS's default
  data_dir, input in this process) and the dataset's own ``fields``."""
  return ml_collections.ConfigDict(dict(
      name=name,
      data_dir=ml_collections.config_dict.placeholder(str),  # None: ~/tensorflow_datasets
      train_split="train",
      eval_split="test",
      worker_count=0,
      **fields))


def set_run_settings(config: ml_collections.ConfigDict, *, num_visualize: int = 6,
                     log_every_steps: int = 10, checkpoint_every_steps: int = 100
                     ) -> ml_collections.ConfigDict:
  """Logging, checkpointing and reporting fields of ``config`` (returned)."""
  config.log_every_steps = log_every_steps
  config.checkpoint_every_steps = checkpoint_every_steps
  config.keep_checkpoints = 2
  config.num_visualize = num_visualize   # images shown in canonicalization.png
  config.progress_bar = True
  return config


def model_config(name: str, **kwargs) -> ml_collections.ConfigDict:
  """``config.model``: the predictor ``name`` built with ``kwargs``, trained from
  scratch (no ``pretrained`` checkpoint), no image resize or normalisation."""
  return ml_collections.ConfigDict(dict(
      name=name,
      kwargs=ml_collections.ConfigDict(kwargs),
      pretrained=ml_collections.config_dict.placeholder(str),
      input_size=ml_collections.config_dict.placeholder(int),
      normalize=ml_collections.config_dict.placeholder(str),
  ))
