"""Names of a package that load their module on first use (PEP 562).

A package lists what it exports lazily and installs the returned functions::

    __getattr__, __dir__ = _lazy.attach(__name__, {"make_shapes": ".shapes"},
                                        submodules=("shapes",))

``package.make_shapes`` (or ``from package import make_shapes``) then imports
``package.shapes`` the first time and caches the value in the package's namespace,
so later lookups cost nothing. ``import package`` imports none of those modules.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Iterable, Mapping


def attach(package: str, attributes: Mapping[str, str], submodules: Iterable[str] = ()
           ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
  """Module-level ``__getattr__`` and ``__dir__`` for the lazy names of ``package``.

  Args:
    package: the package's ``__name__``.
    attributes: exported name -> module defining it, relative to ``package``
      (``".shapes"``) or absolute (``"canon_jax.convert"``).
    submodules: submodule names (``"convert"``) available as attributes without
      an explicit ``import package.convert``.

  Returns:
    ``(__getattr__, __dir__)`` to assign at module level in the package.
  """
  attributes, submodules = dict(attributes), frozenset(submodules)

  def __getattr__(name: str) -> Any:  # pylint: disable=invalid-name
    if name in submodules:
      value = importlib.import_module(f"{package}.{name}")
    elif name in attributes:
      value = getattr(importlib.import_module(attributes[name], package), name)
    else:
      raise AttributeError(f"module {package!r} has no attribute {name!r}")
    setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
    return value

  def __dir__() -> list[str]:  # pylint: disable=invalid-name
    return sorted(set(vars(sys.modules[package])) | set(attributes) | submodules)

  return __getattr__, __dir__
