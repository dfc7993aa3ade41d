"""nst_utils: neural style transfer (Gatys, Ecker & Bethge 2015) with TensorFlow/Keras and VGG19.

The public names below load on first use (PEP 562), so `import nst_utils.cli` and `nst --help` do not import
TensorFlow; `from nst_utils import stylize` imports it then, with its C++ start-up lines hidden (host.py).
"""

from __future__ import annotations

import importlib
import os

from .host import import_tensorflow

if not os.environ.get("NST_DEBUG"):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's informational C++ lines, whoever imports it first
# TensorFlow's pooling (BFC) allocator on the CPU: without it, where oneDNN's allocator is off, every large activation
# buffer goes back to the OS after each step and is page-faulted in again on the next. TensorFlow reads this when it
# makes its CPU allocator, at the first operation, so it also holds if TensorFlow was imported before this package.
# A value the user set wins (`nst info` says which allocator is in use: cli.cpu_allocator).
ALLOCATOR_ENV = "TF_CPU_ALLOCATOR_USE_BFC"
ALLOCATOR_SET_BY_US = ALLOCATOR_ENV not in os.environ
os.environ.setdefault(ALLOCATOR_ENV, "true")

_HOME = {  # public name -> the module it lives in
    "CONTENT_LAYERS": "config",
    "SEED_STYLE_LAYERS": "config",
    "STYLE_LAYERS": "config",
    "StyleConfig": "config",
    "NSTError": "config",
    "LAYERS": "config",
    "STYLE_STATISTICS": "config",
    "deprocess": "images",
    "load_image": "images",
    "preprocess": "images",
    "save_image": "outputs",
    "Objective": "objective",
    "GuidedObjective": "objective",
    "build_objective": "objective",
    "content_loss": "objective",
    "gram_matrix": "objective",
    "style_loss": "objective",
    "total_variation": "objective",
    "FeatureExtractor": "model",
    "build_vgg19": "model",
    "Result": "run",
    "stylize": "run",
    "stylize_video": "video",
    "VideoResult": "video",
}
_TENSORFLOW = {  # modules that import TensorFlow: quietly imported first (the others stay light)
    "model",
    "objective",
    "lbfgs",
    "optimizers",
    "run",
    "sweep",
    "explore",
    "figures",
    "widgets",
    "bench",
    "video",
}

__all__ = sorted(_HOME)


def __getattr__(name: str):
    """Return a public name (importing its module on first use) or a submodule, as `nst_utils.<name>`."""
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _HOME.get(name, name)
    if module in _TENSORFLOW:
        import_tensorflow()
    try:
        mod = importlib.import_module(f".{module}", __name__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{module}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(mod, name) if name in _HOME else mod
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
