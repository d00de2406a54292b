"""Every public function and class of the package says what it does (one line of what, units where there are
numbers). Public: no leading underscore, defined in the module it is found in (private modules included: their
public names are re-exported)."""
import importlib
import inspect
import pkgutil

import frontier_jax


def _public_objects():
    for info in pkgutil.walk_packages(frontier_jax.__path__, "frontier_jax."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        yield info.name, None, module
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield info.name, name, obj
                if inspect.isclass(obj):
                    for mname, m in vars(obj).items():
                        if not mname.startswith("_") and inspect.isfunction(m):
                            yield info.name, f"{name}.{mname}", m


def _documented(obj) -> bool:
    if inspect.isclass(obj):  # its own docstring, not an inherited or generated one ("Name(field, ...)")
        doc = vars(obj).get("__doc__") or ""
        return bool(doc.strip()) and not doc.startswith(f"{obj.__name__}(")
    return bool((obj.__doc__ or "").strip())


def test_every_public_function_and_class_has_a_docstring():
    missing = [f"{mod}.{name}" if name else mod for mod, name, obj in _public_objects() if not _documented(obj)]
    assert not missing, f"{len(missing)} without a docstring: " + ", ".join(missing)
