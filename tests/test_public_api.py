"""Public API consistency: every module declares ``__all__``, names are unambiguous, no module is shadowed."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import defaultdict

import pytest

import lightning_papers

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(lightning_papers.__path__, "lightning_papers.")
    if not m.name.rsplit(".", 1)[-1].startswith("_")
)


@pytest.mark.parametrize("name", MODULES)
def test_every_public_module_declares_all_and_exports_what_it_names(name):
    module = importlib.import_module(name)
    assert isinstance(getattr(module, "__all__", None), list), f"{name} has no __all__ list"
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names {missing}, which the module does not define"


def test_one_class_per_name_across_packages():
    owners = defaultdict(set)
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if inspect.isclass(obj) and obj.__module__.startswith("lightning_papers"):
                owners[attr].add(f"{obj.__module__}.{obj.__qualname__}")
    clashes = {k: sorted(v) for k, v in owners.items() if len(v) > 1}
    assert not clashes, f"one public name, several classes: {clashes}"


def test_no_submodule_is_shadowed_by_a_package_attribute():
    for name in MODULES:
        module = importlib.import_module(name)
        if not hasattr(module, "__path__"):
            continue
        for sub in pkgutil.iter_modules(module.__path__):
            attr = getattr(module, sub.name, None)
            assert attr is None or inspect.ismodule(attr), (
                f"{name}.{sub.name} is both a submodule and a {type(attr).__name__} exported by the package"
            )
