"""The benchmark's missing packages, carried to a GPU machine that has no network.

A GPU machine without network access may have JAX + CUDA, Flax, Optax, Orbax,
torch and torchvision installed, but not the reference's packages (equiadapt 0.1.2,
e2cnn, kornia, hydra-core and theirs). This module builds a small folder of wheels
where PyPI is reachable and unpacks it on the GPU machine, so that
``python -m benchmarks.benchmark --device gpu`` runs there::

  # with PyPI reachable (about 8 MB; equiadapt's 77 MB wheel is cut down to its
  # package, without the tutorials it ships):
  python -m benchmarks.gpu_kit fetch                 # -> .gpu_kit/*.whl

  # on the GPU machine, in the repository's root with .gpu_kit copied along:
  python3 -m benchmarks.gpu_kit install --target /tmp/gpu_site &&
    export PYTHONPATH=/tmp/gpu_site:$PWD &&
    python3 -m benchmarks.benchmark --device gpu --out gpu.json

``install`` only unzips (stdlib, no pip, no network) and refuses a wheel built for
another Python than the one running it. Wheels are fetched for the GPU machine's Python
(``--python-version``, default 3.12) and manylinux x86-64. This file imports nothing
outside the standard library, so that it runs before anything is installed.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

KIT_DIR = ".gpu_kit"
SITE_DIR = "/tmp/gpu_site"
"""Where ``install`` unpacks the kit by default (``benchmarks/gpu_run.sh`` puts it on
``PYTHONPATH``)."""
PYTHON_VERSION = "3.12"
"""The GPU machine's Python (by default 3.12; ``--python-version`` to change)."""

PACKAGES: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    # (requirement, top-level entries to keep; None keeps the whole wheel)
    ("equiadapt==0.1.2", ("equiadapt",)),
    ("e2cnn==0.2.3", None),
    ("kornia==0.9.0", None),
    ("kornia-rs==0.2.0", None),
    ("hydra-core==1.3.8", None),
    ("omegaconf==2.3.0", None),
    ("antlr4-python3-runtime==4.9.3", None),   # sdist only on PyPI: built here
)
"""What ``benchmarks.reference`` imports that a GPU image with JAX, torch and
torchvision lacks (its package list against ``importlib.metadata.packages_distributions``
of a benchmark process, 2026-11-29)."""

MANYLINUX = ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_24_x86_64",
             "manylinux_2_27_x86_64", "manylinux_2_28_x86_64", "manylinux_2_31_x86_64",
             "manylinux_2_34_x86_64", "manylinux_2_35_x86_64")

_WHEEL_NAME = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<python>[^-]+)-(?P<abi>[^-]+)"
    r"-(?P<platform>[^-]+)\.whl$")


def wheel_tags(filename: str) -> dict[str, str]:
  """``name``, ``version``, ``python``, ``abi`` and ``platform`` of a wheel's file name.

  Raises:
    ValueError: if ``filename`` is not a wheel's name.
  """
  match = _WHEEL_NAME.match(Path(filename).name)
  if not match:
    raise ValueError(f"not a wheel file name: {filename!r}")
  return match.groupdict()


def runs_on(filename: str, version: tuple[int, int] = sys.version_info[:2]) -> bool:
  """Whether the wheel suits CPython ``version`` (pure ``py3``, ``abi3`` from its
  version on, or exactly ``cpXY``)."""
  tags = wheel_tags(filename)
  here = f"cp{version[0]}{version[1]}"
  for tag in tags["python"].split("."):
    if tag in ("py3", f"py{version[0]}{version[1]}", here):
      return True
    if tags["abi"] == "abi3" and tag.startswith("cp3") and int(tag[3:]) <= version[1]:
      return True
  return False


def slim_wheel(path: Path, keep: tuple[str, ...]) -> Path:
  """Rewrites the wheel at ``path`` with only the top-level entries ``keep`` and its
  ``.dist-info`` (whose RECORD then lists only what is left). Returns ``path``."""
  tags = wheel_tags(path.name)
  dist_info = f"{tags['name']}-{tags['version']}.dist-info"
  wanted = set(keep) | {dist_info}
  tmp = path.with_suffix(".tmp")
  with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
    names = [n for n in src.namelist() if n.split("/")[0] in wanted]
    if not any(n.split("/")[0] in keep for n in names):
      raise ValueError(f"{path.name} has none of {list(keep)}")
    for name in names:
      data = src.read(name)
      if name == f"{dist_info}/RECORD":
        lines = data.decode().splitlines()
        data = "\n".join(line for line in lines
                         if line.split(",")[0].split("/")[0] in wanted).encode() + b"\n"
      dst.writestr(src.getinfo(name), data)
  tmp.replace(path)
  return path


def _pip(*args: str) -> None:
  subprocess.run([sys.executable, "-m", "pip", *args, "--quiet", "--no-deps"], check=True)


def fetch(out: Path = Path(KIT_DIR), python_version: str = PYTHON_VERSION,
          packages=PACKAGES, log=print) -> list[Path]:
  """Downloads (or builds, for source-only packages) one wheel per entry of
  ``packages`` for CPython ``python_version`` on manylinux x86-64 into ``out``
  (emptied of wheels first) and slims those with a ``keep`` list."""
  out.mkdir(parents=True, exist_ok=True)
  for old in out.glob("*.whl"):
    old.unlink()
  platform_args = [a for p in MANYLINUX for a in ("--platform", p)]
  version = tuple(int(v) for v in python_version.split("."))
  for requirement, keep in packages:
    with tempfile.TemporaryDirectory() as tmp:
      try:
        _pip("download", "--only-binary=:all:", "--python-version", python_version,
             "--implementation", "cp", *platform_args, "--dest", tmp, requirement)
      except subprocess.CalledProcessError:
        # No wheel on the index: build one (pure-Python packages only, checked below).
        log(f"{requirement}: no wheel for CPython {python_version} on the index "
            "(pip's error above); building one from its source")
        _pip("wheel", "--no-binary=:all:", "--wheel-dir", tmp, requirement)
      (wheel,) = Path(tmp).glob("*.whl")
      if not runs_on(wheel.name, version):
        raise RuntimeError(f"{wheel.name} does not run on CPython {python_version}")
      target = out / wheel.name
      wheel.replace(target)
    if keep:
      slim_wheel(target, keep)
    log(f"{target.name}: {target.stat().st_size / 1e6:.2f} MB")
  wheels = sorted(out.glob("*.whl"))
  log(f"{len(wheels)} wheels, {sum(w.stat().st_size for w in wheels) / 1e6:.1f} MB "
      f"in {out}")
  return wheels


def install(kit: Path = Path(KIT_DIR), target: Path = Path(SITE_DIR),
            log=print) -> list[str]:
  """Unzips every wheel in ``kit`` into ``target`` (put it on ``PYTHONPATH``).

  Raises:
    FileNotFoundError: if ``kit`` holds no wheel.
    RuntimeError: if a wheel does not suit this interpreter (nothing is unpacked).
  """
  wheels = sorted(Path(kit).glob("*.whl"))
  if not wheels:
    raise FileNotFoundError(f"no wheels in {kit}: run `python -m benchmarks.gpu_kit fetch` "
                            "where PyPI is reachable, and carry the folder")
  wrong = [w.name for w in wheels if not runs_on(w.name)]
  if wrong:
    raise RuntimeError(f"wheels for another Python than {sys.version.split()[0]}: "
                       f"{wrong}; fetch with --python-version "
                       f"{sys.version_info[0]}.{sys.version_info[1]}")
  target.mkdir(parents=True, exist_ok=True)
  for wheel in wheels:
    with zipfile.ZipFile(wheel) as archive:
      archive.extractall(target)
  names = ["{name} {version}".format(**wheel_tags(w.name)) for w in wheels]
  log(f"unpacked into {target}: {', '.join(names)}")
  return names


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_kit",
                                   description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  f = sub.add_parser("fetch", help="download the wheels here (needs PyPI)")
  f.add_argument("--out", type=Path, default=Path(KIT_DIR))
  f.add_argument("--python-version", default=PYTHON_VERSION,
                 help="the target machine's Python, e.g. 3.12")
  i = sub.add_parser("install", help="unpack the wheels there (stdlib only)")
  i.add_argument("--kit", type=Path, default=Path(KIT_DIR))
  i.add_argument("--target", type=Path, default=Path(SITE_DIR))
  args = parser.parse_args(argv)
  if args.command == "fetch":
    fetch(args.out, args.python_version)
  else:
    install(args.kit, args.target)


if __name__ == "__main__":
  main()
