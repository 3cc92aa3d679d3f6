"""Shared test data: smooth, disk-masked images whose rotations lose nothing."""
import jax
import jax.numpy as jnp
import numpy as np

from canon_jax import soft_disk_mask, transform_feature_maps, transform_images


def smooth_disk_images(key, batch: int, size: int, channels: int = 3,
                       cutoff: float = 0.12) -> jax.Array:
  """(B, size, size, C) random low-pass images in [0, 1]-ish, faded out on a disk."""
  noise = jax.random.normal(key, (batch, size, size, channels))
  f = jnp.fft.fftfreq(size)
  radius = jnp.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
  lowpass = jnp.exp(-(radius / cutoff) ** 2)[None, :, :, None]
  smooth = jnp.fft.ifft2(jnp.fft.fft2(noise, axes=(1, 2)) * lowpass, axes=(1, 2)).real
  smooth = smooth / smooth.std(axis=(1, 2, 3), keepdims=True)
  mask = jnp.asarray(soft_disk_mask(size, inner=0.7, outer=0.95))
  return (smooth * mask[None, :, :, None]).astype(jnp.float32)


def elements(k, batch):
  return jnp.full((batch,), k, jnp.int32)


def set_field(config, field: str, value) -> None:
  """``config.<field> = value`` for a dotted ``field``, whatever the value's type (to
  feed validators bad values)."""
  *parents, leaf = field.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  with node.ignore_type():
    node[leaf] = value


def shift_rate(apply_fn, x, group, element: int = 1) -> float:
  """Fraction of inputs whose argmax element moves from g* to ``element o g*`` when
  the input is transformed by ``element`` (bilinearly for non-90-degree rotations).

  ``apply_fn``: (B, H, W, C) -> (B, |G|) logits (pass a jitted function).
  """
  base = jnp.argmax(apply_fn(x), axis=-1)
  moved = jnp.argmax(apply_fn(transform_images(x, group, elements(element, x.shape[0]))),
                     axis=-1)
  return float(jnp.mean(moved == group.compose(elements(element, x.shape[0]), base)))


# Group actions for assert_equivariant: (value, group, k) -> k . value, batch-wide.
def on_images(x, group, k):
  """k . x for (B, H, W, C) images (exact for 90-degree multiples)."""
  return transform_images(x, group, elements(k, x.shape[0]))


def on_regular(f, group, k):
  """k . f for (B, H, W, C, |G|) regular feature maps (space and group axis move)."""
  return transform_feature_maps(f, group, elements(k, f.shape[0]))


def on_logits(logits, group, k):
  """k . logits for (B, |G|): ``(k . l)[h] = l[k^-1 h]``."""
  return logits[:, group.regular_permutation(k)]


def invariant(y, group, k):
  """The trivial action (invariance)."""
  del group, k
  return y


def assert_equivariant(fn, x, group, act_in, act_out, *, atol=1e-5, rtol=1e-5,
                       ks=None):
  """``fn(k . x) == k . fn(x)`` for every element k of ``group`` (or of ``ks``).

  ``act_in`` / ``act_out`` are actions ``(value, group, k) -> k . value`` such as
  :func:`on_images`, :func:`on_regular`, :func:`on_logits`, :func:`invariant`;
  ``fn`` maps x to a pytree-free array. Fails naming the element.
  """
  base = fn(x)
  for k in (range(group.order) if ks is None else ks):
    np.testing.assert_allclose(fn(act_in(x, group, k)), act_out(base, group, k),
                               atol=atol, rtol=rtol,
                               err_msg=f"not equivariant at element {k} of {group.name}")


def assert_bfloat16_close_to_float32(module, variables, images, apply) -> None:
  """``module`` computing in bfloat16 (``module.clone(dtype=jnp.bfloat16)``) returns
  float32 outputs within 10% of the largest float32 output (``apply``) on ``images``."""
  full = apply(variables, images)
  half = jax.jit(module.clone(dtype=jnp.bfloat16).apply)(variables, images)
  assert half.dtype == jnp.float32
  assert np.abs(half - full).max() <= 0.1 * np.abs(full).max()
