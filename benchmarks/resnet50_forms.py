"""ResNet50's SGD train step in several plain-JAX forms of the same function, and torch's.

  python -m benchmarks.resnet50_forms                 # every form, B=2, 224 x 224
  python -m benchmarks.resnet50_forms --forms conv,current --rounds 5

Forms (each changes one part of ``canon_jax.models.ResNet50``, all else as shipped):

* ``conv``: every convolution ``nn.Conv`` (1 x 1 ones included);
* ``dot4d``: 1 x 1 convolutions as ``jnp.dot`` of the 4-D map;
* ``current``: the model as shipped (1 x 1 convolutions as ``PointwiseConv``, one 2-D
  matmul);
* ``stem_patches``: current, with the 7 x 7 stem as ``conv_general_dilated_patches``
  times a matrix;
* ``bn_affine``: current, with BatchNorm written as ``x * a + b`` (plain jnp, the same
  batch statistics and running averages);
* ``torch``: torchvision's ``resnet50`` (needs the ``bench`` extra).

Every step: cross-entropy on 10 classes, SGD momentum 0.9, jitted with the state
donated. The forms run in ``--rounds`` interleaved rounds of ``--steps`` timed steps
each (after one untimed step); the median over all timed steps is printed in ms.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import time
from typing import Any, Callable, Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import measure, reference
from canon_jax.models import resnet
from canon_jax.nn.conv import pointwise

NUM_CLASSES = 10
_CONV_INIT = resnet._CONV_INIT  # pylint: disable=protected-access  # torchvision's init
FORMS = ("conv", "dot4d", "current", "stem_patches", "bn_affine", "torch")


class _Dot4d(nn.Module):
  """1 x 1 convolution as ``jnp.dot`` of the strided (B, H, W, C) map."""
  features: int
  strides: int

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", _CONV_INIT, (1, 1, x.shape[-1], self.features))
    return jnp.dot(x[:, ::self.strides, ::self.strides], kernel[0, 0])


class _PatchConv(nn.Module):
  """k x k convolution, padding k // 2, as image patches times the (k k C, F) matrix."""
  features: int
  kernel: int
  strides: int

  @nn.compact
  def __call__(self, x):
    k, s, p = self.kernel, self.strides, self.kernel // 2
    w = self.param("kernel", _CONV_INIT, (k, k, x.shape[-1], self.features))
    patches = jax.lax.conv_general_dilated_patches(
        x, (k, k), (s, s), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # The patches' channels are ordered (C, kh, kw).
    return pointwise(patches, jnp.transpose(w, (2, 0, 1, 3)).reshape(-1, self.features))


class _AffineBatchNorm(nn.Module):
  """BatchNorm as ``x * a + b``: training statistics of the batch, running averages
  with Flax's momentum 0.9, the same variable names as ``nn.BatchNorm``."""
  use_running_average: bool
  momentum: float = 0.9
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,))
    ra_var = self.variable("batch_stats", "var", jnp.ones, (c,))
    scale = self.param("scale", nn.initializers.ones, (c,))
    bias = self.param("bias", nn.initializers.zeros, (c,))
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean = jnp.mean(x, axes)
      var = jnp.maximum(jnp.mean(jnp.square(x), axes) - jnp.square(mean), 0.0)
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    a = scale * jax.lax.rsqrt(var + self.epsilon)
    return x * a + (bias - mean * a)


@contextlib.contextmanager
def _form(name: str) -> Iterator[None]:
  """Swaps ResNet's layer factories for the form's while the model is traced."""
  conv, batch_norm = resnet._conv, resnet._batch_norm  # pylint: disable=protected-access

  def new_conv(features, kernel, strides, name_, dtype):
    if name == "conv" and kernel == 1:
      return nn.Conv(features, (1, 1), strides=(strides, strides), padding=0,
                     use_bias=False, kernel_init=_CONV_INIT, dtype=dtype, name=name_)
    if name == "dot4d" and kernel == 1:
      return _Dot4d(features, strides, name=name_)
    if name == "stem_patches" and kernel == 7:
      return _PatchConv(features, kernel, strides, name=name_)
    return conv(features, kernel, strides, name_, dtype)

  def new_batch_norm(train, name_, dtype):
    if name == "bn_affine":
      return _AffineBatchNorm(use_running_average=not train, name=name_)
    return batch_norm(train, name_, dtype)

  # pylint: disable-next=protected-access
  resnet._conv, resnet._batch_norm = new_conv, new_batch_norm
  try:
    yield
  finally:
    resnet._conv, resnet._batch_norm = conv, batch_norm  # pylint: disable=protected-access


def jax_step(form: str, x: np.ndarray, y: np.ndarray) -> Callable[[], Any]:
  """A compiled train step of the form, closed over its state: each call runs one step."""
  model = resnet.ResNet50(num_classes=NUM_CLASSES)
  tx = optax.sgd(0.01, momentum=0.9)

  @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
  def step(params, batch_stats, opt_state, x, y):
    def loss(p):
      logits, updates = model.apply({"params": p, "batch_stats": batch_stats}, x,
                                    train=True, mutable=["batch_stats"])
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return ce, updates["batch_stats"]
    (value, batch_stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), batch_stats, opt_state, value

  x, y = jnp.asarray(x), jnp.asarray(y)
  with _form(form):
    variables = jax.jit(model.init)(jax.random.key(0), x)
    state = [variables["params"], variables["batch_stats"], None]
    state[2] = tx.init(state[0])
    compiled = step.lower(*state, x, y).compile()

  def run():
    *new_state, value = compiled(*state, x, y)
    state[:] = new_state
    return value.block_until_ready()
  return run


def torch_step(x: np.ndarray, y: np.ndarray, threads: int) -> Callable[[], Any]:
  """torchvision's ResNet50 SGD step (NCHW input), momentum 0.9."""
  torch, torchvision, _ = reference.import_reference(threads, "cpu")
  model = torchvision.models.resnet50(weights=None, num_classes=NUM_CLASSES)
  opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  yt = torch.from_numpy(y.astype(np.int64))

  def run():
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(xt), yt)
    loss.backward()
    opt.step()
    return loss.item()
  return run


def main(argv: list[str] | None = None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--forms", default=",".join(FORMS))
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--threads", type=int, default=None)
  args = parser.parse_args(argv)
  forms = args.forms.split(",")
  unknown = sorted(set(forms) - set(FORMS))
  if unknown:
    parser.error(f"unknown forms {unknown}; choose from {list(FORMS)}")
  threads = measure.configure_threads(args.threads)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(args.batch, args.size, args.size, 3)).astype(np.float32)
  y = np.arange(args.batch) % NUM_CLASSES
  steps = {f: torch_step(x, y, threads) if f == "torch" else jax_step(f, x, y)
           for f in forms}
  times: dict[str, list[float]] = {f: [] for f in forms}
  for _ in range(args.rounds):
    for form, run in steps.items():
      run()  # untimed: the first step after another form's
      for _ in range(args.steps):
        start = time.perf_counter()
        run()
        times[form].append(time.perf_counter() - start)
  medians = {f: 1000 * float(np.median(t)) for f, t in times.items()}
  print(f"ResNet50 SGD train step, B={args.batch}, {args.size}x{args.size}, "
        f"{threads} threads, median of {args.rounds} x {args.steps} steps")
  print("| form | median ms |\n|---|---|")
  for form, ms in medians.items():
    print(f"| {form} | {ms:.1f} |")
  return medians


if __name__ == "__main__":
  main()
