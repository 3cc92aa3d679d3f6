r"""CIFAR-10, ImageNet-pretrained ViT-B/16, C8: cifar10_resnet50_c8 with a ViT predictor.

The predictor is torchvision's ViT-B/16 (224 x 224 inputs, 16 x 16 patches),
converted with ``canon_jax.convert``. Optimiser as equiadapt for non-ResNet
predictors: AdamW (lr 1e-4 for the ViT, 1e-3 for the canonicalizer), constant
rate, batch 128, 100 epochs.

Needs (on a machine with network):

  python -m canon_jax.convert --arch vit_b16 --source torchvision \
      --out pretrained/vit_b16_torchvision

and TFDS ``cifar10`` in DATA_DIR. Command (an accelerator):

  python -m train --config train/configs/cifar10_vit_c8.py \
      --workdir runs/cifar10_vit_c8 --config.data.data_dir=DATA_DIR

Expected result: the paper's Table 1 (ViT rows): vanilla accuracy collapses under C8
while the prior-regularised canonicalizer stays within about a point of upright
accuracy in every pose; not reproduced here.
"""
from train.configs import cifar10_resnet50_c8 as base


def get_config():
  config = base.get_config()
  config.model.name = "vit_b16"
  config.model.pretrained = "pretrained/vit_b16_torchvision"
  base.set_stages(config, base.EPOCHS * base.TRAIN_EXAMPLES // base.BATCH_SIZE,
                  optimizer="adamw", predictor_lr=1e-4, canonicalizer_lr=1e-3,
                  weight_decay=0.05, schedule="constant")
  return config
