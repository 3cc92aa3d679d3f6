"""benchmarks.gpu_kit: wheel tags, slimming a wheel, unpacking a kit (offline: made-up
wheels; `fetch` needs PyPI and is exercised by hand, see benchmarks/BENCHMARKS.md)."""
import json
import os
import subprocess
import sys
import zipfile

import pytest

from benchmarks import gpu_kit

HERE = f"cp{sys.version_info[0]}{sys.version_info[1]}"


def _wheel(folder, name, version, tag, files):
  """A wheel named from its tags holding ``files`` (path -> text) and a RECORD."""
  path = folder / f"{name}-{version}-{tag}.whl"
  dist_info = f"{name}-{version}.dist-info"
  files = {**files, f"{dist_info}/METADATA": f"Name: {name}\nVersion: {version}\n"}
  record = "".join(f"{p},," + "\n" for p in [*files, f"{dist_info}/RECORD"])
  with zipfile.ZipFile(path, "w") as z:
    for p, text in files.items():
      z.writestr(p, text)
    z.writestr(f"{dist_info}/RECORD", record)
  return path


def test_wheel_tags_and_which_python_they_run_on():
  tags = gpu_kit.wheel_tags(
      "kornia_rs-0.2.0-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
  assert (tags["name"], tags["version"], tags["python"], tags["abi"]) == (
      "kornia_rs", "0.2.0", "cp312", "cp312")
  assert gpu_kit.runs_on("x-1.0-py3-none-any.whl", (3, 11))
  assert gpu_kit.runs_on("x-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", (3, 12))
  assert not gpu_kit.runs_on("x-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", (3, 11))
  assert gpu_kit.runs_on("x-1.0-cp39-abi3-manylinux_2_17_x86_64.whl", (3, 12))
  assert not gpu_kit.runs_on("x-1.0-cp313-abi3-manylinux_2_17_x86_64.whl", (3, 12))
  assert gpu_kit.runs_on("x-1.0-1-py2.py3-none-any.whl", (3, 12))   # build tag
  with pytest.raises(ValueError, match="not a wheel"):
    gpu_kit.wheel_tags("x-1.0.tar.gz")


def test_slim_wheel_keeps_the_package_and_a_matching_record(tmp_path):
  path = _wheel(tmp_path, "ref", "0.1", "py3-none-any", {
      "ref/__init__.py": "X = 1\n", "ref/sub/m.py": "", "tutorials/big.bin": "0" * 1000,
      "utils/u.py": ""})
  gpu_kit.slim_wheel(path, ("ref",))
  with zipfile.ZipFile(path) as z:
    names = set(z.namelist())
    record = z.read("ref-0.1.dist-info/RECORD").decode().split()
  assert names == {"ref/__init__.py", "ref/sub/m.py", "ref-0.1.dist-info/METADATA",
                   "ref-0.1.dist-info/RECORD"}
  assert {line.split(",")[0] for line in record} == names
  with pytest.raises(ValueError, match="none of"):
    gpu_kit.slim_wheel(path, ("missing",))


def test_install_unpacks_importable_packages_and_refuses_other_pythons(tmp_path):
  kit, site = tmp_path / "kit", tmp_path / "site"
  kit.mkdir()
  with pytest.raises(FileNotFoundError, match="no wheels"):
    gpu_kit.install(kit, site, log=lambda _: None)
  _wheel(kit, "kitpkg_a", "1.0", "py3-none-any", {"kitpkg_a/__init__.py": "A = 3\n"})
  _wheel(kit, "kitpkg_b", "2.0", f"{HERE}-{HERE}-manylinux_2_17_x86_64",
         {"kitpkg_b/__init__.py": "from kitpkg_a import A\nB = A + 1\n"})
  other = _wheel(kit, "kitpkg_c", "1.0", "cp27-cp27m-manylinux1_x86_64", {})
  with pytest.raises(RuntimeError, match="kitpkg_c-1.0-cp27"):
    gpu_kit.install(kit, site, log=lambda _: None)
  assert not site.exists()                               # nothing unpacked
  other.unlink()
  names = gpu_kit.install(kit, site, log=lambda _: None)
  assert names == ["kitpkg_a 1.0", "kitpkg_b 2.0"]
  out = subprocess.run(
      [sys.executable, "-c", "import importlib.metadata as m, kitpkg_b; "
       "print(kitpkg_b.B, m.version('kitpkg_b'))"],
      env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True,
      check=True)
  assert out.stdout.split() == ["4", "2.0"]


@pytest.mark.slow
def test_gpu_run_script_dry_run_on_cpu(tmp_path):
  """benchmarks/gpu_run.sh end to end on CPU (``--tiny``, no reference, one row in
  float32 and one in bfloat16; every row's code is tested in test_benchmark.py):
  it unpacks the kit, records the environment and leaves one JSON per row in $OUT."""
  repo = gpu_kit.Path(gpu_kit.__file__).resolve().parents[1]
  kit, out = tmp_path / ".gpu_kit", tmp_path / "out"
  kit.mkdir()
  _wheel(kit, "kitpkg_d", "1.0", "py3-none-any", {"kitpkg_d/__init__.py": ""})
  # The script reads the kit from the working directory: run it from a copy-free
  # folder that links the repository's packages and holds the kit.
  for name in ("benchmarks", "canon_jax", "train", "tests"):
    (tmp_path / name).symlink_to(repo / name)
  env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
         "BUDGET": str(3600), "ROWS": "canonicalizer:600",
         "BF16_ROWS": "inference",
         "BENCH_ARGS": "--device cpu --tiny --no-reference --iters 1 --warmup 0",
         "JAX_PLATFORMS": "cpu"}
  done = subprocess.run(["bash", str(repo / "benchmarks" / "gpu_run.sh")], cwd=tmp_path,
                        env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert "kitpkg_d 1.0" in done.stdout and "jax" in (out / "env.txt").read_text()
  for row in ("canonicalizer",):
    result = json.loads((out / f"gpu_{row}.json").read_text())
    (record,) = result["rows"]
    assert record["name"] == row and record["canon_jax"]["median_s"] > 0
  # The bfloat16 pass starts when 120 s of the BUDGET are left (here: an hour).
  bf16 = json.loads((out / "gpu_bf16.json").read_text())
  assert bf16["sizes"]["predictor_dtype"] == "bfloat16"
  assert [r["name"] for r in bf16["rows"]] == ["inference"]
