"""canon_jax: learned canonicalization in JAX/Flax.

Make a pretrained model equivariant to rotations and reflections: a small equivariant
network predicts the input's pose, the input is moved to a canonical pose, and the
unchanged pretrained model predicts on it (Mondal et al., NeurIPS 2023).

Conventions: images NHWC float32; angles in radians, counter-clockwise as displayed;
C_n element k = rotation by 2 pi k / n; D_n element n + k = horizontal flip, then
rotation k; element 0 is the identity.
"""
from canon_jax import (coco_eval, convert, data, groups, losses, metrics, models, nn,
                       pointcloud, segmentation, transforms)
from canon_jax.canonicalize import (CanonicalizationResult, ImageCanonicalizer,
                                    continuous_angle, invert, preprocess_images,
                                    soft_disk_mask, straight_through_weights)
from canon_jax.convert import load_pretrained
from canon_jax.groups import DiscreteGroup, cyclic, dihedral, from_name
from canon_jax.losses import prior_loss, rotation_prior_loss
from canon_jax.model import CanonicalizedModel, CanonicalizedOutput, canonicalization_prior
from canon_jax.pointcloud import (PointCloudCanonicalization, PointCloudCanonicalizer,
                                  canonicalize_points, frame_from_vectors, knn_indices,
                                  to_input_frame)
from canon_jax.metrics import (evaluate_under_group, group_averaged_accuracy,
                               identity_rate, invariance_rate, orientation_alignment,
                               orientation_histogram, per_element_accuracy)
from canon_jax.transforms import (all_transforms, rotate_boxes, rotate_images,
                                  transform_boxes, transform_feature_maps,
                                  transform_images, transform_images_weighted,
                                  transform_label_maps)

# Method family: optimization-based canonicalizers, Gumbel selection, data-driven
# priors, frame averaging.
from canon_jax import frame_averaging, opt_canonicalize, selection
from canon_jax.frame_averaging import (frame_average, frame_averaging_curve,
                                       top_k_weights)
from canon_jax.losses import dataset_prior, model_confidence_prior, model_confidence_scores
from canon_jax.opt_canonicalize import (OptimizedCanonicalizationResult,
                                        OptimizedGroupCanonicalizer,
                                        OptimizedRotationCanonicalizer, artefact_loss,
                                        optimization_loss, orthogonality_loss,
                                        rotation_regression_loss)
from canon_jax.selection import gumbel_straight_through_weights

__version__ = "0.1.0"

__all__ = [
    "CanonicalizationResult", "CanonicalizedModel", "CanonicalizedOutput",
    "canonicalization_prior", "DiscreteGroup", "ImageCanonicalizer", "all_transforms",
    "convert", "load_pretrained", "models", "data", "pointcloud", "segmentation",
    "coco_eval",
    "PointCloudCanonicalization", "PointCloudCanonicalizer", "canonicalize_points",
    "frame_from_vectors", "knn_indices", "to_input_frame",
    "continuous_angle", "cyclic", "dihedral", "evaluate_under_group", "from_name",
    "group_averaged_accuracy", "groups", "identity_rate", "invariance_rate", "invert",
    "losses", "metrics", "nn", "orientation_alignment", "orientation_histogram",
    "per_element_accuracy", "preprocess_images", "prior_loss", "rotate_boxes", "rotate_images",
    "rotation_prior_loss", "soft_disk_mask", "straight_through_weights",
    "transform_boxes", "transform_feature_maps", "transform_images",
    "transform_images_weighted", "transform_label_maps", "transforms",
]

# E(3) n-body and part segmentation.
from canon_jax import nbody, part_segmentation  # noqa: E402
from canon_jax.nbody import (NBodyCanonicalizer, NBodyMLP, NBodyModel,  # noqa: E402
                             NBodyVectorNet, transform_particles)
from canon_jax.part_segmentation import (mean_part_iou, part_ious,  # noqa: E402
                                         restrict_to_parts)

__all__ += ["nbody", "part_segmentation", "NBodyCanonicalizer", "NBodyMLP", "NBodyModel",
            "NBodyVectorNet", "transform_particles", "mean_part_iou", "part_ious",
            "restrict_to_parts"]
