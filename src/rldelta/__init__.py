"""rldelta: measure how RL fine-tuning changes a language model's weights.

The declared surface is `__all__`. Every name is imported on first use (PEP 562), so `import rldelta` costs no
more than the package itself, and a call costs what its engine needs (torch for a diff, transformers for a study).

The engines share their names with the modules that hold them: `rldelta.diff` is the module `rldelta/diff.py`,
and calling it runs the diff (`rldelta.diff(base, tuned, out)`). A plain function of that name could not stay on the
package: importing the submodule rebinds the package attribute to the module, whoever imports it first. So the
package makes those modules callable instead; `import rldelta.diff as m` keeps giving the module.
"""

from __future__ import annotations

import importlib
import sys
import types

# typing's own TYPE_CHECKING, without importing typing (a third of what `import rldelta` would cost); type checkers
# read a module-level TYPE_CHECKING = False the same way
TYPE_CHECKING = False

__version__ = "0.1.0"

# An engine's module -> the entry point `rldelta.<name>(...)` calls: (module, attribute).
_ENGINES: dict[str, tuple[str, str]] = {
    "diff": ("rldelta.api", "diff"),
    "overlap": ("rldelta.api", "overlap"),
    "explain": ("rldelta.api", "explain"),
    "surgery": ("rldelta.api", "surgery"),
    "study": ("rldelta.api", "study"),
    "reproduce": ("rldelta.reproduce", "run_reproduce"),
    "predict": ("rldelta.predict", "predict"),
}
# Everything else: name -> (module, attribute).
_NAMES: dict[str, tuple[str, str]] = {
    "DiffResult": ("rldelta.results", "DiffResult"),
    "OverlapResult": ("rldelta.results", "OverlapResult"),
    "ExplainResult": ("rldelta.results", "ExplainResult"),
    "SurgeryResult": ("rldelta.results", "SurgeryResult"),
    "StudyResult": ("rldelta.results", "StudyResult"),
    "planted_pair": ("rldelta.api", "planted_pair"),
    "PlantedPair": ("rldelta.api", "PlantedPair"),
    "probe_logprobs": ("rldelta.probes.logprobs", "run_logprobs"),
    "probe_formats": ("rldelta.probes.formats", "run_formats"),
    "probe_activations": ("rldelta.probes.activations", "run_activations"),
    "open_checkpoint": ("rldelta.checkpoint", "open_checkpoint"),
    "Checkpoint": ("rldelta.checkpoint", "Checkpoint"),
    "Mask": ("rldelta.masks", "Mask"),
    "load_mask": ("rldelta.masks", "load_mask"),
    "save_mask": ("rldelta.masks", "save_mask"),
    "mask_from_diff": ("rldelta.masks", "mask_from_diff"),
    "mask_counts": ("rldelta.masks", "mask_counts"),
    "intersection": ("rldelta.masks", "intersection"),
    "union": ("rldelta.masks", "union"),
    "difference": ("rldelta.masks", "difference"),
    "random_mask": ("rldelta.masks", "random_mask"),
    "threshold_delta_mask": ("rldelta.masks", "threshold_delta_mask"),
    "topk_delta_mask": ("rldelta.masks", "topk_delta_mask"),
    "StepRecorder": ("rldelta.train.step_recorder", "StepRecorder"),
    "RldeltaError": ("rldelta.runtime.errors", "RldeltaError"),
}

__all__ = [  # the declared surface: the engines, then the rest (tests/test_api.py pins it)
    "__version__",
    "diff",
    "overlap",
    "explain",
    "surgery",
    "study",
    "reproduce",
    "predict",
    "DiffResult",
    "OverlapResult",
    "ExplainResult",
    "SurgeryResult",
    "StudyResult",
    "planted_pair",
    "PlantedPair",
    "probe_logprobs",
    "probe_formats",
    "probe_activations",
    "open_checkpoint",
    "Checkpoint",
    "Mask",
    "load_mask",
    "save_mask",
    "mask_from_diff",
    "mask_counts",
    "intersection",
    "union",
    "difference",
    "random_mask",
    "threshold_delta_mask",
    "topk_delta_mask",
    "StepRecorder",
    "RldeltaError",
]

if TYPE_CHECKING:  # what a type checker sees; at run time these come from __getattr__
    from typing import Any

    from rldelta.api import PlantedPair, diff, explain, overlap, planted_pair, study, surgery
    from rldelta.checkpoint import Checkpoint, open_checkpoint
    from rldelta.masks import (
        Mask,
        difference,
        intersection,
        load_mask,
        mask_counts,
        mask_from_diff,
        random_mask,
        save_mask,
        threshold_delta_mask,
        topk_delta_mask,
        union,
    )
    from rldelta.predict import predict
    from rldelta.probes.activations import run_activations as probe_activations
    from rldelta.probes.formats import run_formats as probe_formats
    from rldelta.probes.logprobs import run_logprobs as probe_logprobs
    from rldelta.reproduce import run_reproduce as reproduce
    from rldelta.results import DiffResult, ExplainResult, OverlapResult, StudyResult, SurgeryResult
    from rldelta.runtime.errors import RldeltaError
    from rldelta.train.step_recorder import StepRecorder


def _entry(module: types.ModuleType) -> Any:
    where, attr = _ENGINES[module.__name__.rpartition(".")[2]]
    return getattr(importlib.import_module(where), attr)


class _Engine(types.ModuleType):
    """An engine's module that is also its entry point: calling it calls `_ENGINES[name]`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _entry(self)(*args, **kwargs)

    @property
    def __signature__(self) -> Any:  # inspect.signature(rldelta.diff) is the entry point's
        import inspect  # not at the top: it costs more than the rest of `import rldelta` together

        return inspect.signature(_entry(self))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # the import system binds each imported submodule here; an engine's module becomes callable on the way
        if name in _ENGINES and type(value) is types.ModuleType:
            value.__class__ = _Engine
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _ENGINES:
        return importlib.import_module(f"{__name__}.{name}")  # bound (and made callable) by the import itself
    if name in _NAMES:
        where, attr = _NAMES[name]
        value = getattr(importlib.import_module(where), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
