r"""STL-10, ImageNet-pretrained ResNet50, C8: cifar10_resnet50_c8 on STL-10.

STL-10's labelled split: 5,000 train / 8,000 test images of 96 x 96, upsampled to
224. Fewer examples, so 100 epochs are ~3.9k steps of batch 128.

Needs the converted ResNet50 (see cifar10_resnet50_c8) and TFDS ``stl10`` prepared as
array_record in DATA_DIR. Command (an accelerator):

  python -m train --config train/configs/stl10_resnet50_c8.py \
      --workdir runs/stl10_resnet50_c8 --config.data.data_dir=DATA_DIR

Expected result: as in the paper's Table 1 for STL-10 (vanilla collapses under C8,
the prior-regularised canonicalizer keeps its upright accuracy in every pose); not
reproduced here.
"""
from train.configs import cifar10_resnet50_c8 as base

TRAIN_EXAMPLES = 5_000


def get_config():
  config = base.get_config()
  config.data.name = "stl10"
  base.set_stages(config, base.EPOCHS * TRAIN_EXAMPLES // base.BATCH_SIZE)
  config.checkpoint_every_steps = 500
  return config
