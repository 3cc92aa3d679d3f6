"""benchmarks/benchmark.py on its tiny configuration: the JSON schema, no timing assertions."""
import dataclasses
import importlib.util
import json
import math

import jax
import jax.numpy as jnp
import pytest

from benchmarks import benchmark, jax_side, reference

ROW_FIELDS = {"name", "title", "batch", "input_shape", "canon_jax", "baseline",
              "baseline_missing", "speedup", "extra"}
SIDE_FIELDS = {"label", "median_s", "p25_s", "p75_s", "throughput", "examples",
               "compile_s", "peak_memory_mb", "memory_method", "xla_plan_mb", "flops",
               "steps"}
TOP_FIELDS = {"date", "command", "mode", "device", "sizes", "machine",
              "peak_matmul_flops_per_s", "peak_matmul_dtype", "rows"}


def _check_side(side: dict, *, jax_side: bool, flops: bool) -> None:
  assert SIDE_FIELDS <= set(side), sorted(SIDE_FIELDS - set(side))
  assert side["median_s"] > 0 and side["p25_s"] <= side["median_s"] <= side["p75_s"]
  assert math.isclose(side["throughput"], side["examples"] / side["median_s"])
  assert side["steps"] == benchmark.MODES["tiny"].iters
  assert side["peak_memory_mb"] is not None and side["peak_memory_mb"] >= 0
  if jax_side:
    assert side["compile_s"] > 0
    assert side["xla_plan_mb"] > 0
  else:
    assert side["compile_s"] is None
  if flops and jax_side:
    assert side["flops"] > 0
    assert side["mfu"] > 0 and side["achieved_flops_per_s"] > 0


def _load(tmp_path, argv):
  out = tmp_path / "bench.json"
  result = benchmark.main(argv + ["--out", str(out)])
  loaded = json.loads(out.read_text())
  assert loaded == json.loads(json.dumps(result))
  assert TOP_FIELDS <= set(loaded)
  assert loaded["mode"] == "tiny" and loaded["device"] == "cpu"
  assert loaded["machine"]["cores"] >= 1 and loaded["machine"]["versions"]["jax"]
  assert loaded["machine"]["malloc"] == "default"       # --malloc retain is opt-in
  for row in loaded["rows"]:
    assert ROW_FIELDS <= set(row), sorted(ROW_FIELDS - set(row))
  return loaded


def test_tiny_every_row_jax_side_schema(tmp_path):
  """Every row (tiny sizes, canon_jax side only, with FLOPs) in one run."""
  result = _load(tmp_path, ["--tiny", "--no-reference", "--flops"])
  assert result["peak_matmul_flops_per_s"] > 0
  assert result["peak_matmul_dtype"] == "float32"
  assert [r["name"] for r in result["rows"]] == list(benchmark.ROWS)
  for row in result["rows"]:
    _check_side(row["canon_jax"], jax_side=True, flops=True)
  rows = {row["name"]: row for row in result["rows"]}
  assert "canon_jax_canonicalizer_overhead" in rows["train_step"]["extra"]
  canonicalizer, inference = rows["canonicalizer"], rows["inference"]
  assert canonicalizer["baseline"] is None and canonicalizer["speedup"] is None
  assert canonicalizer["baseline_missing"]
  # Inference: the baseline is the 8-way averaging, always run (canon_jax only).
  _check_side(inference["baseline"], jax_side=True, flops=True)
  assert "averaging" in inference["baseline"]["label"]
  assert math.isclose(inference["speedup"], inference["baseline"]["median_s"]
                      / inference["canon_jax"]["median_s"])
  assert inference["extra"]["canon_jax_canonicalizer_overhead"] > -1
  _check_side(inference["extra"]["canon_jax_predictor_only"], jax_side=True, flops=True)


def test_tiny_reference_row_has_speedup(tmp_path):
  result = _load(tmp_path, ["--tiny", "--rows", "canonicalizer"])
  (row,) = result["rows"]
  _check_side(row["canon_jax"], jax_side=True, flops=False)
  _check_side(row["baseline"], jax_side=False, flops=False)
  assert row["baseline"]["label"].startswith("equiadapt")
  assert math.isclose(row["speedup"],
                      row["baseline"]["median_s"] / row["canon_jax"]["median_s"])


def test_without_the_bench_extra_jax_rows_still_run(monkeypatch):
  def missing(threads, device):
    raise ImportError(benchmark.BENCH_EXTRA_HINT)

  monkeypatch.setattr(reference, "import_reference", missing)
  logs = []
  result = benchmark.run("tiny", ("canonicalizer",), log=logs.append)
  assert any("bench" in line and "equiadapt" in line for line in logs), logs
  (row,) = result["rows"]
  _check_side(row["canon_jax"], jax_side=True, flops=False)
  assert row["baseline"] is None and row["speedup"] is None
  assert "equiadapt" in row["baseline_missing"]


def test_batch_overrides_every_row(tmp_path):
  result = _load(tmp_path, ["--tiny", "--no-reference", "--batch", "3",
                            "--rows", "canonicalizer"])
  assert result["sizes"]["canon_batch"] == result["sizes"]["train_batch"] == 3
  (row,) = result["rows"]
  assert row["batch"] == 3 and row["canon_jax"]["examples"] == 3


def test_rejects_unknown_rows_and_devices():
  with pytest.raises(ValueError, match="rows must be among"):
    benchmark.run("tiny", ("nope",))
  with pytest.raises(ValueError, match="device must be"):
    benchmark.run("tiny", ("canonicalizer",), device="tpu")
  with pytest.raises(ValueError, match="batch must be"):
    benchmark.run("tiny", ("canonicalizer",), batch=0)
  with pytest.raises(ValueError, match="malloc must be"):
    benchmark.run("tiny", ("canonicalizer",), malloc="tcmalloc")


@pytest.mark.parametrize("iters", [1, 2, 7])
@pytest.mark.parametrize("frameworks", [
    {"canon_jax": "jax", "baseline": "torch"},
    {"canon_jax": "jax", "canon_jax_predictor": "jax", "baseline": "torch",
     "baseline_predictor": "torch"},
    {"canon_jax": "jax", "baseline": "jax", "canon_jax_predictor": "jax"},
])
def test_schedule_times_every_case_iters_times_never_right_after_a_switch(
    frameworks, iters):
  order = benchmark.schedule(frameworks, iters)
  timed = [key for key, is_timed in order if is_timed]
  assert sorted(timed) == sorted(list(frameworks) * iters)
  for (prev, _), (key, is_timed) in zip(order, order[1:]):
    if frameworks[prev] != frameworks[key]:
      assert not is_timed, (prev, key, order)
  untimed = [key for key, is_timed in order if not is_timed]
  if len(set(frameworks.values())) == 1:
    # One library: plain round-robin, nothing wasted.
    assert not untimed and order[:len(frameworks)] == [(k, True) for k in frameworks]
  else:
    # Library blocks canon_jax, reference, canon_jax: 3 switches at most, each with
    # one untimed step; each block alternates its own cases.
    assert len(untimed) <= 3
    first = [k for k, t in order if t][:2]
    assert frameworks[first[0]] == "jax"
    if iters > 1 and len(first) == 2 and list(frameworks.values()).count("jax") > 1:
      assert first[0] != first[1]


def test_schedule_rejects_bad_iters():
  with pytest.raises(ValueError, match="iters"):
    benchmark.schedule({"a": "jax"}, 0)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_predictor_dtype_sets_the_image_predictors_compute_dtype(dtype):
  """``--dtype`` is the image predictor's compute dtype; parameters, the
  canonicalizer, its outputs and the logits stay float32."""
  sizes = dataclasses.replace(benchmark.MODES["tiny"], predictor_dtype=dtype)
  images, _ = benchmark.make_images(2, sizes.image_size)
  x = jnp.asarray(images)
  model, variables = jax_side.init_image_model(sizes, x)
  assert {p.dtype for p in jax.tree.leaves(variables)} == {jnp.dtype("float32")}
  out = model.apply(variables, x)
  result = out.canonicalization
  assert result.canonical.dtype == result.logits.dtype == jnp.float32
  logits = out.predictions
  # The ResNet returns float32 logits; computed in bfloat16, they are bfloat16
  # numbers (and computed in float32, almost surely not all of them are).
  assert logits.dtype == jnp.float32
  exact = bool(jnp.all(logits.astype(jnp.bfloat16).astype(jnp.float32) == logits))
  assert exact == (dtype == "bfloat16")


def test_bfloat16_train_step_and_inference_rows_say_so(tmp_path):
  result = _load(tmp_path, ["--tiny", "--no-reference", "--dtype", "bfloat16",
                            "--rows", "canonicalizer,train_step"])
  assert result["sizes"]["predictor_dtype"] == "bfloat16"
  canonicalizer, train_step = result["rows"]
  # The canonicalizer row has no predictor: float32, and its title says nothing.
  assert "bfloat16" not in canonicalizer["title"]
  assert train_step["title"].endswith("(bfloat16 predictor)")
  _check_side(train_step["canon_jax"], jax_side=True, flops=False)
  _check_side(train_step["extra"]["canon_jax_predictor_only"], jax_side=True, flops=False)


def test_rejects_unknown_dtypes():
  with pytest.raises(ValueError, match="dtype must be"):
    benchmark.run("tiny", ("train_step",), dtype="float16")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="torch (the bench extra) is not installed")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_loss_autocasts_the_predictor_only(dtype):
  """The reference side of ``--dtype``: torch's autocast around the predictor's
  forward; the canonicalizer's forward, its prior and the loss stay float32."""
  import torch  # pylint: disable=import-outside-toplevel
  seen = {}

  class Recording(torch.nn.Module):
    def __init__(self, name, features):
      super().__init__()
      self.name, self.linear = name, torch.nn.Linear(4, features)

    def forward(self, x):
      out = self.linear(x)
      seen[self.name] = out.dtype
      return out

  class Canon(Recording):
    def get_prior_regularization_loss(self):
      seen["prior"] = self.linear.weight.sum().dtype
      return self.linear.weight.sum()

  predictor, canon = Recording("predictor", 3), Canon("canon", 4)
  x, y = torch.ones(2, 4), torch.tensor([0, 2])
  loss = reference.torch_loss(torch, predictor, canon, x, y, 2.0,
                              reference.torch_autocast(torch, "cpu", dtype))
  assert seen == {"canon": torch.float32, "predictor": getattr(torch, dtype),
                  "prior": torch.float32}
  assert loss.dtype == torch.float32
  with torch.no_grad():
    expected = (torch.nn.functional.cross_entropy(predictor.linear(canon.linear(x)), y)
                + 2.0 * canon.linear.weight.sum())
  tol = 1e-6 if dtype == "float32" else 3e-2
  assert abs(loss.item() - expected.item()) < tol


@pytest.mark.parametrize("form", ["conv", "dot4d", "stem_patches", "bn_affine"])
def test_resnet50_forms_compute_the_shipped_function(form):
  """benchmarks/resnet50_forms.py times the same function in every form: on a small
  ResNet, each form's train-mode logits, batch statistics and parameter gradients
  equal the shipped model's."""
  from benchmarks import resnet50_forms  # pylint: disable=import-outside-toplevel
  from canon_jax.models import resnet  # pylint: disable=import-outside-toplevel
  model = resnet.ResNet(stage_sizes=(1, 1), block="bottleneck", num_classes=3, width=4)
  x = jax.random.normal(jax.random.key(0), (2, 33, 33, 3))

  def traced():
    """Train-mode logits, batch statistics and gradients, traced anew at each call
    (JAX caches a trace per function object)."""
    def run():
      variables = model.init(jax.random.key(1), x)

      def loss(params):
        logits, updates = model.apply({**variables, "params": params}, x, train=True,
                                      mutable=["batch_stats"])
        return jnp.sum(jnp.sin(logits)), (logits, updates["batch_stats"])
      grads, aux = jax.grad(loss, has_aux=True)(variables["params"])
      return variables, grads, aux
    return str(jax.make_jaxpr(run)()), jax.jit(run)()

  shipped_program, expected = traced()
  with resnet50_forms._form(form):  # pylint: disable=protected-access
    program, got = traced()
  assert program != shipped_program  # another program, with the same values:
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expected)
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)):
    assert jnp.allclose(a, b, rtol=2e-4, atol=2e-4), form
