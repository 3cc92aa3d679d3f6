r"""Point-cloud part segmentation under SO(3): mIoU of a PointNet segmentation network.

The paper's ShapeNet-part protocol on the generated parts dataset
(``canon_parts/small``: five categories, twelve part labels, 256 points per cloud,
500 train / 200 test clouds; see :mod:`canon_jax.data.parts`). Training clouds are
rotated about the vertical axis only (z); test clouds are evaluated upright and in
7 random SO(3) rotations. Per-point cross-entropy; per-point labels are the argmax
over the parts of the shape's category; mIoU is the per-shape mean IoU averaged over
shapes (:mod:`canon_jax.part_segmentation`). Three variants, trained in order:

1. ``vanilla``: a PointNet segmentation network
   (:class:`canon_jax.models.PointNetSegmentation`, narrow) trained from scratch on
   z-rotated clouds;
2. ``augmentation``: that network fine-tuned on SO(3)-rotated clouds;
3. ``canonicalized``: a Vector Neuron canonicalizer learned in front of that network
   on z-rotated clouds with the rotation prior (weight 1, moved with each cloud's
   rotation), the network fine-tuned too. Its per-point labels are invariant to
   every rotation by construction.

Command (3.4 minutes on 2 shared CPU cores, data generation included)::

  python -m train --config train/configs/parts_pointnet_so3.py --workdir runs/parts

Expected result (eval.json; instance mIoU and per-point accuracy on the 200 upright
test clouds / mean over 7 random SO(3) poses of them; measured here, 2026-12-05):

  ==============  ===============  ===============  ====================
  variant         mIoU (%)         accuracy (%)     same labels, all poses
  ==============  ===============  ===============  ====================
  vanilla         86.07 / 33.45    94.89 / 53.22    0 %
  augmentation    63.75 / 51.57    85.91 / 76.30    7 %
  canonicalized   69.07 / 69.07    86.86 / 86.86    100 %
  ==============  ===============  ===============  ====================

The canonicalized network labels every point of every test cloud the same in all 8
poses (largest angle between R(x Q^T) and Q R(x): 0.06 degrees). As on
``canon_shapes`` (``shapes_pointnet_so3.py``), the frames do not approach the
identity (0.5% of the upright clouds within 30 degrees, mean angle 112 degrees): the
network adapts to the canonicalizer's poses, and the upright mIoU pays for it.

For ShapeNet-part (prepared once from the manual download, see
:class:`canon_jax.data.ShapenetPartHdf5`; upright along y)::

  python -m train --config train/configs/parts_pointnet_so3.py --workdir runs/shapenet \
    --config.data.name=shapenet_part_hdf5 --config.data.data_dir=$DATA

"""
import ml_collections

from train.configs import shapes_pointnet_so3
from train.configs.common import model_config, stage


def get_config() -> ml_collections.ConfigDict:
  # The shapes classification run's data protocol (z-rotations in training, SO(3)
  # test poses) and its Vector Neuron canonicalizer, with per-point labels.
  config = shapes_pointnet_so3.get_config()
  config.task = "parts"
  config.eval_batch_size = 40
  config.data.name = "canon_parts/small"
  config.model = model_config("pointnet_seg", features=(64, 128, 256), head=(128, 64),
                              dropout_rate=0.2)
  config.vanilla = stage(num_steps=300, predictor_lr=2e-3)
  config.augmentation = stage(init="vanilla", num_steps=150)
  config.canonicalized = stage(init="vanilla", num_steps=300, prior_weight=1.0,
                               canonicalizer_lr=2e-3)
  return config
