"""Model names: torchvision's and timm's spellings are aliases of the registry's names,
in ``canon_jax.models.get_model`` and in ``python -m canon_jax.convert --arch``."""
import pytest

from canon_jax import convert
from canon_jax.models import ALIASES, MODELS, canonical_name, get_model


@pytest.mark.parametrize("alias,name", [("vit_b_16", "vit_b16"), ("vit_s_16", "vit_s16"),
                                        ("vit_ti_16", "vit_ti16"),
                                        ("vit_base_patch16_224", "vit_b16")])
def test_aliases_build_the_same_model(alias, name):
  assert canonical_name(alias) == name
  assert get_model(alias, num_classes=7) == get_model(name, num_classes=7)


def test_every_alias_names_a_model_and_registry_names_map_to_themselves():
  assert set(ALIASES.values()) <= set(MODELS)
  assert not set(ALIASES) & set(MODELS)
  for name in MODELS:
    assert canonical_name(name) == name


def test_unknown_names_are_rejected_with_the_known_ones():
  with pytest.raises(ValueError, match=r"name must be one of .*vit_b16.*vit_b_16.*'vit_b_32'"):
    get_model("vit_b_32")


class _Downloaded(Exception):
  pass


def test_convert_cli_accepts_torchvisions_spelling(monkeypatch, tmp_path):
  """``--arch vit_b_16`` resolves to vit_b16: the official torchvision weights of
  vit_b16 are the ones fetched (the download is intercepted)."""
  def download(origin, cache_dir):
    raise _Downloaded(origin)

  monkeypatch.setattr(convert, "download_weights", download)
  with pytest.raises(_Downloaded) as fetched:
    convert.main(["--arch", "vit_b_16", "--source", "torchvision",
                  "--out", str(tmp_path / "ckpt")])
  assert fetched.value.args == (convert.OFFICIAL_WEIGHTS[("vit_b16", "torchvision")],)
