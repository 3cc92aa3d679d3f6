"""The PyTorch reference side: equiadapt 0.1.2, torchvision's ResNet50, a torch PointNet.

Imported lazily by :mod:`benchmarks.benchmark` (the ``bench`` extra: equiadapt, e2cnn,
kornia, hydra-core, torch, torchvision); without it only the canon_jax rows run.
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

import canon_jax
from benchmarks.measure import Case, version
from benchmarks.workload import (GROUP, LEARNING_RATE, MOMENTUM, NUM_CLASSES,
                                 NUM_CLOUD_CLASSES, NUM_NEIGHBORS, PRIOR_WEIGHT,
                                 ROTATION_PRIOR_WEIGHT, Sizes, make_clouds, make_images)

BENCH_EXTRA_HINT = (
    "equiadapt (the `bench` extra) is not installed: only the canon_jax rows run. "
    "Install it with `pip install -e .[bench]` (equiadapt==0.1.2, e2cnn, kornia, "
    "hydra-core, torch, torchvision).")


def torch_autocast(torch, device: str, dtype: str) -> Callable[[], Any]:
  """A factory of the context the torch predictor's forward runs in: ``autocast``
  to ``dtype`` on ``device`` ("cpu" or "cuda"), or nothing for float32."""
  if dtype == "float32":
    return contextlib.nullcontext
  return lambda: torch.autocast(device, dtype=getattr(torch, dtype))


def torch_loss(torch, predictor, canon, x, y, prior_weight: float,
                autocast: Callable[[], Any] = contextlib.nullcontext):
  """equiadapt's training loss: CE of ``predictor(canon(x))`` plus ``prior_weight`` x
  the canonicalizer's prior (CE of ``predictor(x)`` alone without ``canon``). Only
  the predictor's forward runs under ``autocast()`` (:func:`torch_autocast`); the
  CE is computed in float32."""
  inputs = x if canon is None else canon(x)
  with autocast():
    logits = predictor(inputs)
  loss = torch.nn.functional.cross_entropy(logits.float(), y)
  if canon is None:
    return loss
  return loss + prior_weight * canon.get_prior_regularization_loss()


def import_reference(threads: int, device: str):
  """Imports torch, torchvision and equiadapt; sets torch's threads.

  torchvision 0.28 from PyPI is a CUDA build that fails to import next to the CPU
  torch wheel; in a source checkout ``tests/torch_shim.py`` works around it (a
  no-op where torchvision imports normally).

  Raises:
    ImportError: with :data:`BENCH_EXTRA_HINT` when something is missing.
  """
  try:
    import torch  # pylint: disable=import-outside-toplevel
    shim = Path(__file__).resolve().parents[1] / "tests" / "torch_shim.py"
    if shim.exists():
      sys.path.insert(0, str(shim.parent))
      try:
        import torch_shim  # pylint: disable=import-outside-toplevel
      finally:
        sys.path.remove(str(shim.parent))
      torchvision = torch_shim.import_torchvision()
    else:
      import torchvision  # pylint: disable=import-outside-toplevel
    import equiadapt  # pylint: disable=import-outside-toplevel
  except (ImportError, RuntimeError) as err:
    raise ImportError(f"{BENCH_EXTRA_HINT} ({type(err).__name__}: {err})") from err
  torch.set_num_threads(threads)
  if device == "gpu" and not torch.cuda.is_available():
    raise ImportError("--device gpu: torch has no CUDA device here; the equiadapt "
                      "rows are skipped (a GPU-vs-CPU comparison means nothing).")
  return torch, torchvision, equiadapt


class Reference:
  """The reference models, built on demand; ``dev`` is "cpu" or "cuda"."""

  def __init__(self, threads: int, device: str):
    self.torch, self.torchvision, self.equiadapt = import_reference(threads, device)
    self.dev = "cuda" if device == "gpu" else "cpu"
    self.label = f"equiadapt {version('equiadapt')}"

  def tensor(self, array: np.ndarray, nchw: bool = False):
    if nchw:
      array = np.ascontiguousarray(array.transpose(0, 3, 1, 2))
    return self.torch.from_numpy(array).to(self.dev)

  def case(self, label: str, step: Callable[[], None], examples: int) -> Case:
    torch = self.torch
    if self.dev == "cpu":
      return Case(label, step, examples, framework="torch")

    def synced():
      step()
      torch.cuda.synchronize()

    return Case(label, synced, examples, framework="torch", device_peak=(
        torch.cuda.reset_peak_memory_stats, torch.cuda.max_memory_allocated))

  def group_conv_net(self, size: int):
    from equiadapt.images.canonicalization_networks import (  # pylint: disable=import-outside-toplevel
        custom_equivariant_networks)
    n = canon_jax.from_name(GROUP).n
    net = custom_equivariant_networks.CustomEquivariantNetwork(
        (3, size, size), 32, 5, group_type="rotation", num_rotations=n, num_layers=3,
        device=self.dev)
    # equiadapt's canonicalizer reads these, its own network does not set them.
    net.group_type, net.num_rotations = "rotation", n
    return net

  def canonicalizer_case(self, sizes: Sizes) -> Case:
    torch = self.torch
    images, _ = make_images(sizes.canon_batch, sizes.canon_size)
    x = self.tensor(images, nchw=True)
    net = self.group_conv_net(sizes.canon_size).to(self.dev)
    identity = torch.zeros(sizes.canon_batch, dtype=torch.long, device=self.dev)

    def step():
      net.zero_grad(set_to_none=True)
      torch.nn.functional.cross_entropy(net(x), identity).backward()

    return self.case(self.label, step, sizes.canon_batch)

  def train_step_case(self, sizes: Sizes, canonicalize: bool = True) -> Case:
    if sizes.predictor != "resnet50":
      raise NotImplementedError(
          f"no torchvision counterpart of canon_jax's {sizes.predictor!r}")
    torch = self.torch
    from equiadapt.images.canonicalization import discrete_group  # pylint: disable=import-outside-toplevel
    from omegaconf import OmegaConf  # pylint: disable=import-outside-toplevel
    images, labels = make_images(sizes.train_batch, sizes.image_size)
    x, y = self.tensor(images, nchw=True), self.tensor(labels).long()
    predictor = self.torchvision.models.resnet50(weights=None, num_classes=NUM_CLASSES)
    modules = [predictor.to(self.dev).train()]
    canon = None
    if canonicalize:
      hyper = OmegaConf.create({"beta": 1.0, "input_crop_ratio": 0.8,
                                "resize_shape": sizes.canon_size})
      canon = discrete_group.GroupEquivariantImageCanonicalization(
          self.group_conv_net(sizes.canon_size), hyper,
          (3, sizes.image_size, sizes.image_size))
      modules.append(canon.to(self.dev).train())
    opt = torch.optim.SGD([p for m in modules for p in m.parameters()],
                          lr=LEARNING_RATE, momentum=MOMENTUM)
    autocast = torch_autocast(torch, self.dev, sizes.predictor_dtype)

    def step():
      opt.zero_grad(set_to_none=True)
      torch_loss(torch, predictor, canon, x, y, PRIOR_WEIGHT, autocast).backward()
      opt.step()

    label = self.label if canonicalize else f"{self.label} predictor only"
    return self.case(label, step, sizes.train_batch)

  def pointnet(self, sizes: Sizes):
    """canon_jax's PointNet layout in torch: per-point MLP with BatchNorm, max pool,
    fully connected head with dropout before the last hidden BatchNorm."""
    nn = self.torch.nn
    features, head = sizes.pointnet

    class PointNet(nn.Module):
      def __init__(self):
        super().__init__()
        layers, width = [], 3
        for i, out in enumerate(features):
          layers += [nn.Conv1d(width, out, 1), nn.BatchNorm1d(out)]
          if i < len(features) - 1:
            layers.append(nn.ReLU())
          width = out
        hidden = []
        for i, out in enumerate(head):
          hidden.append(nn.Linear(width, out))
          if i == len(head) - 1:
            hidden.append(nn.Dropout(0.4))
          hidden += [nn.BatchNorm1d(out), nn.ReLU()]
          width = out
        self.points = nn.Sequential(*layers)
        self.head = nn.Sequential(*hidden, nn.Linear(width, NUM_CLOUD_CLASSES))

      def forward(self, x):  # (B, 3, N)
        return self.head(self.points(x).amax(dim=-1))

    return PointNet()

  def pointcloud_case(self, sizes: Sizes, canonicalize: bool = True) -> Case:
    torch = self.torch
    from equiadapt.pointcloud.canonicalization import continuous_group  # pylint: disable=import-outside-toplevel
    from equiadapt.pointcloud.canonicalization_networks import equivariant_networks  # pylint: disable=import-outside-toplevel
    from omegaconf import OmegaConf  # pylint: disable=import-outside-toplevel
    clouds, labels = make_clouds(sizes.cloud_batch, sizes.num_points)
    x = self.tensor(np.ascontiguousarray(clouds.transpose(0, 2, 1)))   # (B, 3, N)
    y = self.tensor(labels).long()
    predictor = self.pointnet(sizes).to(self.dev).train()
    modules = [predictor]
    canon = None
    if canonicalize:
      net = equivariant_networks.VNSmall(
          OmegaConf.create({"n_knn": NUM_NEIGHBORS, "pooling": "mean"}))
      canon = continuous_group.EquivariantPointcloudCanonicalization(
          net, OmegaConf.create({})).to(self.dev).train()
      modules.append(canon)

    def step():
      for m in modules:
        m.zero_grad(set_to_none=True)
      torch_loss(torch, predictor, canon, x, y, ROTATION_PRIOR_WEIGHT).backward()

    label = self.label if canonicalize else f"{self.label} predictor only"
    return self.case(label, step, sizes.cloud_batch)
