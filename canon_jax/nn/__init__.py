"""Equivariant layers and canonicalization networks."""
from canon_jax.nn.gconv import (GroupBatchNorm, GroupConv, LiftingConv, group_avg_pool,
                                pool_to_logits, steerable_basis)
from canon_jax.nn.networks import GroupConvNet, GroupWideResNet
from canon_jax.nn.vector_neurons import (VNBatchNorm, VNLeakyReLU, VNLinear,
                                         VNLinearBNLeakyReLU, VNMaxPool, VNVectorNet,
                                         vn_mean_pool, vn_norm)

__all__ = [
    "E3nnVectorNet", "VNBatchNorm", "VNLeakyReLU", "VNLinear", "VNLinearBNLeakyReLU",
    "VNMaxPool", "VNVectorNet", "vn_mean_pool", "vn_norm",
    "GroupBatchNorm", "GroupConv", "GroupConvNet", "GroupWideResNet", "LiftingConv",
    "group_avg_pool", "pool_to_logits", "steerable_basis",
]


def __getattr__(name):
  # e3nn-jax (and the scipy.signal it imports) take ~2 s to import: only on use.
  if name == "E3nnVectorNet":
    from canon_jax.nn.e3nn_net import E3nnVectorNet  # pylint: disable=import-outside-toplevel
    return E3nnVectorNet
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
