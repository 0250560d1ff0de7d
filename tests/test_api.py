"""The declared surface of `import rldelta`: its names and their signatures are pinned here, so a change to them is
deliberate (edit PINNED with it). Also: the names load lazily, the engines' modules stay modules, and a diff's
typed result reproduces the summary it wrote."""

from __future__ import annotations

import inspect
import json
import math
import subprocess
import sys

import pytest

import rldelta

# name -> str(inspect.signature(...)), or "class" for a class whose instances the library makes (its constructor is
# not part of the contract)
PINNED = {
    "diff": (
        "(base: 'str | os.PathLike', tuned: 'str | os.PathLike', out: 'str | os.PathLike', *, "
        "atol: 'float' = 1e-05, compare_dtype: 'str' = 'narrower', load_dtype: 'str | None' = None, "
        "rank: 'bool' = True, save_mask: 'bool' = False, workers: 'int' = 1, backend: 'str' = 'local', "
        "ray_address: 'str | None' = None, resume: 'bool' = False, strict: 'bool' = False, "
        "threads: 'int | None' = None, device: 'str' = 'cpu', progress: 'bool | Callable[[int, int, str], "
        "None]' = False) -> 'DiffResult'"
    ),
    "overlap": (
        "(inputs: 'Sequence[str | os.PathLike]', out: 'str | os.PathLike', *, progress: 'bool' = False, "
        "plot: 'bool' = True) -> 'OverlapResult'"
    ),
    "explain": (
        "(diff_dir: 'str | os.PathLike', base: 'str | os.PathLike', out: 'str | os.PathLike', *, "
        "tuned_master: 'str | os.PathLike | None' = None, other: 'str | os.PathLike | None' = None, "
        "rank_null: 'bool' = True, rank_samples: 'int' = 3, seed: 'int' = 0, "
        "bins_per_octave_bits: 'int' = 2, atol: 'float | None' = None, progress: 'bool' = False, "
        "plot: 'bool' = True) -> 'ExplainResult'"
    ),
    "surgery": (
        "(kind: 'str', base: 'str | os.PathLike', tuned: 'str | os.PathLike', "
        "mask: 'str | os.PathLike | Mask', out: 'str | os.PathLike', *, control: 'str | None' = None, "
        "seed: 'int' = 0, progress: 'bool' = False) -> 'SurgeryResult'"
    ),
    "study": (
        "(config: 'StudyConfig | str | os.PathLike', out: 'str | os.PathLike', *, "
        "backend: 'str' = 'local', workers: 'int | None' = None, ray_address: 'str | None' = None, "
        "progress: 'bool' = True) -> 'StudyResult'"
    ),
    "reproduce": (
        "(out: 'str | os.PathLike', *, catalog: 'str | os.PathLike | None' = None, "
        "only: 'list[str] | None' = None, rank: 'bool' = True, workers: 'int' = 1, "
        "progress: 'bool | Callable[[int, int, str], None]' = False) -> 'dict'"
    ),
    "predict": "(base: 'BaseCells', s: 'Settings', calibration: 'dict | None' = None) -> 'dict'",
    "DiffResult": (
        "(out: 'Path', totals: 'Mapping[str, Any]', by_module: 'Mapping[str, Mapping[str, Any]]', "
        "experts: 'Mapping[str, Any] | None', tensors_path: 'Path', summary_path: 'Path', "
        "mask_path: 'Path | None', options: 'Mapping[str, Any]', skipped: 'Mapping[str, list]', "
        "dtype_note: 'str | None', _record: 'Mapping[str, Any]') -> None"
    ),
    "OverlapResult": (
        "(out: 'Path', inputs: 'list[str]', pairs: 'list[Mapping[str, Any]]', matrix: 'Mapping[str, "
        "list[list[float]]]', experts: 'Mapping[str, Any] | None', table_path: 'Path', json_path: 'Path', "
        "_record: 'Mapping[str, Any]') -> None"
    ),
    "ExplainResult": (
        "(out: 'Path', rounding: 'Mapping[str, Any]', master: 'Mapping[str, Any] | None', "
        "magnitude_matched_overlap: 'Mapping[str, Any] | None', rank_null: 'Mapping[str, Any] | None', "
        "table_path: 'Path', json_path: 'Path', _record: 'Mapping[str, Any]') -> None"
    ),
    "SurgeryResult": (
        "(kind: 'str', out: 'Path', totals: 'Mapping[str, Any]', absent_from_mask: 'list[str]', "
        "json_path: 'Path', _record: 'Mapping[str, Any]') -> None"
    ),
    "StudyResult": (
        "(out: 'Path', report_path: 'Path', tables_path: 'Path', headline: 'Mapping[str, Any]', "
        "claims: 'list[Mapping[str, Any]]', _record: 'Mapping[str, Any]') -> None"
    ),
    "planted_pair": "(root: 'str | os.PathLike', seed: 'int' = 0) -> 'PlantedPair'",
    "PlantedPair": "(base: 'Path', tuned: 'Path', planted: 'dict[str, int]') -> None",
    "probe_logprobs": (
        "(run: 'str | os.PathLike', out: 'str | os.PathLike | None' = None, *, "
        "positive: 'str | os.PathLike | None' = None, negative: 'str | os.PathLike | None' = None, "
        "n_prompts: 'int' = 16, k: 'int' = 8, eval_prompts: 'int' = 32, seed: 'int' = 0, "
        "progress: 'bool' = True) -> 'dict[str, Any]'"
    ),
    "probe_formats": (
        "(run_dir: 'str | os.PathLike', out: 'str | os.PathLike | None' = None, *, "
        "threshold: 'float' = 0.9) -> 'dict[str, Any]'"
    ),
    "probe_activations": (
        "(model: 'str | os.PathLike', out: 'str | os.PathLike', *, "
        "compare: 'str | os.PathLike | None' = None, task: 'str' = 'arith', n_per_level: 'int' = 32, "
        "rel: 'float' = 0.01, freq_rel: 'float' = 0.1, batch_size: 'int' = 16, seed: 'int' = 0, "
        "device: 'str | None' = 'cpu', progress: 'bool | Callable[[int, int, str], None]' = True, "
        "plot: 'bool' = True, trained_levels: 'Sequence[int] | None' = None) -> 'dict'"
    ),
    "open_checkpoint": "(path: 'str | os.PathLike') -> 'Checkpoint'",
    "Checkpoint": "class",
    "Mask": "class",
    "load_mask": "(path: 'str | os.PathLike') -> 'Mask'",
    "save_mask": (
        "(mask: 'Mask', path: 'str | os.PathLike', *, metadata: 'dict[str, str] | None' = None, "
        "progress: 'Callable[[str], None] | None' = None) -> 'MaskCounts'"
    ),
    "mask_from_diff": "(diff_dir: 'str | os.PathLike') -> 'Mask'",
    "mask_counts": "(mask: 'Mask', progress: 'Callable[[str], None] | None' = None) -> 'MaskCounts'",
    "intersection": "(a: 'Mask', b: 'Mask') -> 'Mask'",
    "union": "(a: 'Mask', b: 'Mask') -> 'Mask'",
    "difference": "(a: 'Mask', b: 'Mask') -> 'Mask'",
    "random_mask": "(like: 'Mask', seed: 'int' = 0, *, density: 'float | None' = None) -> 'Mask'",
    "threshold_delta_mask": "(base: 'Checkpoint', tuned: 'Checkpoint', threshold: 'float') -> 'Mask'",
    "topk_delta_mask": "(base: 'Checkpoint', tuned: 'Checkpoint', frac: 'float') -> 'Mask'",
    "StepRecorder": (
        "(run_dir: 'str | os.PathLike', model: 'torch.nn.Module | None' = None, *, save_every: 'int' = 0, "
        "patches: 'bool' = False, base: 'str' = 'file')"
    ),
    "RldeltaError": "class",
}


def test_all_is_the_declared_surface():
    assert rldelta.__all__ == ["__version__", *rldelta._ENGINES, *rldelta._NAMES]
    assert len(set(rldelta.__all__)) == len(rldelta.__all__)


@pytest.mark.parametrize("name", [n for n in rldelta.__all__ if n != "__version__"])
def test_every_declared_name_resolves(name):
    obj = getattr(rldelta, name)
    assert callable(obj), name


def test_pinned_signatures():
    assert set(PINNED) == set(rldelta.__all__) - {"__version__"}
    for name, sig in PINNED.items():
        obj = getattr(rldelta, name)
        if sig == "class":
            assert inspect.isclass(obj), name
        else:
            assert str(inspect.signature(obj)) == sig, name


def test_import_rldelta_loads_nothing_heavy():
    code = "import sys, rldelta; print(sorted(m for m in sys.modules if m.startswith(('torch', 'rldelta.'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_engine_module_stays_a_module_and_is_callable():
    import rldelta.diff as module

    assert rldelta.diff is module and hasattr(module, "run_diff") and callable(module)


def test_diff_result_reproduces_the_summary(tmp_path):
    pair = rldelta.planted_pair(tmp_path / "pair")
    result = rldelta.diff(pair.base, pair.tuned, tmp_path / "out", save_mask=True, rank=False)
    assert isinstance(result, rldelta.DiffResult)
    on_disk = json.loads(result.summary_path.read_text())
    assert result.to_dict() == on_disk
    assert result.totals == on_disk["totals"] and result.by_module == on_disk["by_module"]
    assert result.totals["changed"] == sum(pair.planted.values())
    assert result.mask_path is not None and result.mask_path.exists()
    assert int(result.tensors()["changed"].sum()) == result.totals["changed"]
    with pytest.raises(AttributeError):
        result.totals = {}  # frozen


def _as_written(x):
    """A record as the atomic JSON writer stores it: tuples as lists, NaN as null."""
    if isinstance(x, dict):
        return {k: _as_written(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_as_written(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def _same_json(record: dict, path) -> bool:
    return _as_written(record) == json.loads(path.read_text())


def test_overlap_explain_surgery_results_reproduce_their_records(tmp_path):
    pair = rldelta.planted_pair(tmp_path / "pair")
    diff = rldelta.diff(pair.base, pair.tuned, tmp_path / "diff", save_mask=True, rank=False)
    other = rldelta.random_mask(rldelta.load_mask(diff.out), seed=1)
    rldelta.save_mask(other, tmp_path / "other.safetensors")

    ov = rldelta.overlap([diff.out, tmp_path / "other.safetensors"], tmp_path / "ov", plot=False)
    assert isinstance(ov, rldelta.OverlapResult) and _same_json(ov.to_dict(), ov.json_path)
    a, b = ov.inputs
    assert 0 < ov.overlap(a, b) < 1 and ov.overlap(a, a) == 1.0
    assert ov.overlap(a, b) == next(r["overlap"] for r in ov.pairs if (r["a"], r["b"]) == (a, b))

    ex = rldelta.explain(diff.out, pair.base, tmp_path / "ex", rank_null=False, plot=False)
    assert isinstance(ex, rldelta.ExplainResult) and _same_json(ex.to_dict(), ex.json_path)
    assert ex.rounding["observed_changed_frac"] == diff.totals["changed_frac"]

    sg = rldelta.surgery("patch", pair.base, pair.tuned, diff.out, tmp_path / "sg")
    assert isinstance(sg, rldelta.SurgeryResult) and sg.to_dict()["out"] == str(sg.out)
    # the engine returns surgery.json's record plus where it wrote the model
    assert _same_json({k: v for k, v in sg.to_dict().items() if k != "out"}, sg.json_path)
    assert sg.totals["masked"] == diff.totals["changed"] and sg.kind == "patch"
