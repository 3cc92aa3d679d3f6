"""Equivariant layers and canonicalization networks."""
from canon_jax import _lazy
from canon_jax.nn.gconv import (FilterBasis, GroupBatchNorm, GroupConv, LiftingConv,
                                gaussian_blur, group_avg_pool, group_blur_pool,
                                pool_to_logits, steerable_basis)
from canon_jax.nn.networks import (GroupConvNet, GroupWideResNet, coset_averaged_logits,
                                   grid_coset_size)
from canon_jax.nn.vector_neurons import (VNBatchNorm, VNLeakyReLU, VNLinear,
                                         VNLinearBNLeakyReLU, VNMaxPool, VNVectorNet,
                                         vn_mean_pool, vn_norm)

__all__ = [
    'coset_averaged_logits', 'E3nnVectorNet', 'FilterBasis', 'gaussian_blur',
    'grid_coset_size', 'group_avg_pool', 'group_blur_pool', 'GroupBatchNorm',
    'GroupConv', 'GroupConvNet', 'GroupWideResNet', 'LiftingConv', 'pool_to_logits',
    'steerable_basis', 'vn_mean_pool', 'vn_norm', 'VNBatchNorm', 'VNLeakyReLU',
    'VNLinear', 'VNLinearBNLeakyReLU', 'VNMaxPool', 'VNVectorNet',
]

# e3nn-jax (and the scipy.signal it imports) take ~2 s to import: only on use.
__getattr__, __dir__ = _lazy.attach(__name__, {"E3nnVectorNet": ".e3nn_net"})
