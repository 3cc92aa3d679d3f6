"""Shared test data: smooth, disk-masked images whose rotations lose nothing."""
import jax
import jax.numpy as jnp

from canon_jax import soft_disk_mask, transform_images


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
