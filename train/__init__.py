"""Training and evaluation of canonicalized predictors (``python -m train``).

``train_and_evaluate(config, workdir)`` trains the config's variants (vanilla,
C8-augmentation and canonicalized predictors), evaluates them on every pose of the
test set and writes ``WORKDIR/eval.json``, ``metrics.jsonl``, TensorBoard events and
plots. Configs live in ``train/configs/``.
"""
from train.config_checks import validate_config
from train.trainer import train_and_evaluate

__all__ = ["train_and_evaluate", "validate_config"]
