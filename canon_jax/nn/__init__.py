"""Equivariant layers and canonicalization networks."""
from canon_jax.nn.gconv import (GroupBatchNorm, GroupConv, LiftingConv, group_avg_pool,
                                pool_to_logits, steerable_basis)
from canon_jax.nn.networks import GroupConvNet, GroupWideResNet

__all__ = [
    "GroupBatchNorm", "GroupConv", "GroupConvNet", "GroupWideResNet", "LiftingConv",
    "group_avg_pool", "pool_to_logits", "steerable_basis",
]
