"""canon_jax: learned canonicalization in JAX/Flax.

Make a pretrained model equivariant to rotations and reflections: a small equivariant
network predicts the input's pose, the input is moved to a canonical pose, and the
unchanged pretrained model predicts on it (Mondal et al., NeurIPS 2023).

Conventions: images NHWC float32; angles in radians, counter-clockwise as displayed;
C_n element k = rotation by 2 pi k / n; D_n element n + k = horizontal flip, then
rotation k; element 0 is the identity.

The names below are the API. Submodules stay reachable as attributes
(``canon_jax.models``, ``canon_jax.nn``, ``canon_jax.data``, ``canon_jax.segmentation``,
...); those that need orbax or pycocotools (``convert``, ``checkpoint_io``,
``coco_eval``) and :func:`load_pretrained` load on first use, so ``import canon_jax``
imports neither, nor torch.
"""
from canon_jax import (_lazy, data, frame_averaging, groups, losses, metrics, models, nbody,
                       nn, opt_canonicalize, part_segmentation, pointcloud, segmentation,
                       selection, transforms)
from canon_jax.canonicalize import (CanonicalizationResult, ImageCanonicalizer,
                                    continuous_angle, invert, preprocess_images,
                                    soft_disk_mask, straight_through_weights)
from canon_jax.frame_averaging import frame_average, frame_averaging_curve, top_k_weights
from canon_jax.groups import DiscreteGroup, cyclic, dihedral, from_name
from canon_jax.losses import (dataset_prior, model_confidence_prior, model_confidence_scores,
                              prior_loss, rotation_prior_loss)
from canon_jax.metrics import (evaluate_under_group, group_averaged_accuracy,
                               identity_rate, invariance_rate, orientation_alignment,
                               orientation_histogram, per_element_accuracy)
from canon_jax.model import CanonicalizedModel, CanonicalizedOutput, canonicalization_prior
from canon_jax.nbody import (NBodyCanonicalizer, NBodyMLP, NBodyModel, NBodyVectorNet,
                             transform_particles)
from canon_jax.opt_canonicalize import (OptimizedCanonicalizationResult,
                                        OptimizedGroupCanonicalizer,
                                        OptimizedRotationCanonicalizer, artefact_loss,
                                        optimization_loss, orthogonality_loss,
                                        rotation_regression_loss)
from canon_jax.part_segmentation import mean_part_iou, part_ious, restrict_to_parts
from canon_jax.pointcloud import (PointCloudCanonicalization, PointCloudCanonicalizer,
                                  canonicalize_points, frame_from_vectors, knn_indices,
                                  to_input_frame)
from canon_jax.selection import gumbel_straight_through_weights
from canon_jax.transforms import (all_transforms, rotate_boxes, rotate_images,
                                  transform_boxes, transform_feature_maps,
                                  transform_images, transform_images_weighted,
                                  transform_label_maps)

__version__ = "0.1.0"

__all__ = [
    "CanonicalizationResult",
    "CanonicalizedModel",
    "CanonicalizedOutput",
    "DiscreteGroup",
    "ImageCanonicalizer",
    "NBodyCanonicalizer",
    "NBodyMLP",
    "NBodyModel",
    "NBodyVectorNet",
    "OptimizedCanonicalizationResult",
    "OptimizedGroupCanonicalizer",
    "OptimizedRotationCanonicalizer",
    "PointCloudCanonicalization",
    "PointCloudCanonicalizer",
    "all_transforms",
    "artefact_loss",
    "canonicalization_prior",
    "canonicalize_points",
    "continuous_angle",
    "cyclic",
    "dataset_prior",
    "dihedral",
    "evaluate_under_group",
    "frame_average",
    "frame_averaging_curve",
    "frame_from_vectors",
    "from_name",
    "group_averaged_accuracy",
    "gumbel_straight_through_weights",
    "identity_rate",
    "invariance_rate",
    "invert",
    "knn_indices",
    "load_pretrained",
    "mean_part_iou",
    "model_confidence_prior",
    "model_confidence_scores",
    "optimization_loss",
    "orientation_alignment",
    "orientation_histogram",
    "orthogonality_loss",
    "part_ious",
    "per_element_accuracy",
    "preprocess_images",
    "prior_loss",
    "restrict_to_parts",
    "rotate_boxes",
    "rotate_images",
    "rotation_prior_loss",
    "rotation_regression_loss",
    "soft_disk_mask",
    "straight_through_weights",
    "to_input_frame",
    "top_k_weights",
    "transform_boxes",
    "transform_feature_maps",
    "transform_images",
    "transform_images_weighted",
    "transform_label_maps",
    "transform_particles",
]

__getattr__, __dir__ = _lazy.attach(__name__, {"load_pretrained": ".convert"},
                                    submodules=("checkpoint_io", "coco_eval", "convert"))
