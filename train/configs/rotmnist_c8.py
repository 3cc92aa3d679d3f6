r"""Rotated MNIST, ImageNet-pretrained ResNet50, C8.

``rotmnist`` (canon_jax.data): MNIST with every digit rotated by its own fixed random
angle, in both splits (60,000 / 10,000), grey levels repeated to 3 channels and
upsampled to 224. Same three variants and canonicalizer as ``cifar10_resnet50_c8``
but, as in equiadapt's RotMNIST config, AdamW with lr 1e-3, batch 256, and no prior
(``prior_weight = 0``): the digits have no canonical orientation for the identity
prior to pull towards, so the canonicalizer is learned from the task loss alone.

Needs the converted ResNet50 (see cifar10_resnet50_c8) and TFDS ``mnist`` prepared as
array_record in DATA_DIR. Command (an accelerator):

  python -m train --config train/configs/rotmnist_c8.py \
      --workdir runs/rotmnist_c8 --config.data.data_dir=DATA_DIR

Expected result: the vanilla and canonicalized models reach similar upright
accuracies (the training digits are already rotated), and the canonicalized model is
invariant in every pose (C8-averaged = upright accuracy up to interpolation); not
reproduced here.
"""
from train.configs import cifar10_resnet50_c8 as base

BATCH_SIZE = 256
TRAIN_EXAMPLES = 60_000


def get_config():
  config = base.get_config()
  config.data.name = "rotmnist"
  config.data.channels = 3
  config.batch_size = BATCH_SIZE
  base.set_stages(config, base.EPOCHS * TRAIN_EXAMPLES // BATCH_SIZE, optimizer="adamw",
                  predictor_lr=1e-3, canonicalizer_lr=1e-3, weight_decay=1e-2,
                  schedule="constant")
  config.canonicalized.prior_weight = 0.0
  return config
