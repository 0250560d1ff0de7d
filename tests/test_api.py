"""The declared surface of `import rldelta`: its names and their signatures are pinned here, so a change to them is
deliberate (edit PINNED with it). Also: the names load lazily, the engines' modules stay modules, and a diff's
typed result reproduces the summary it wrote."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys

import pytest

import rldelta

# name -> str(inspect.signature(...)), or "class" for a class whose constructor is not part of the contract
PINNED = {
    "diff": "(base: 'str | os.PathLike', tuned: 'str | os.PathLike', out: 'str | os.PathLike', *, atol: 'float' = "
    "1e-05, compare_dtype: 'str' = 'narrower', load_dtype: 'str | None' = None, rank: 'bool' = True, save_mask: "
    "'bool' = False, workers: 'int' = 1, backend: 'str' = 'local', ray_address: 'str | None' = None, resume: 'bool' "
    "= False, strict: 'bool' = False, threads: 'int | None' = None, device: 'str' = 'cpu', progress: 'bool | "
    "Callable[[int, int, str], None]' = False) -> 'DiffResult'",
}


def test_all_is_the_declared_surface():
    assert rldelta.__all__ == ["__version__", *rldelta._ENGINES, *rldelta._NAMES]
    assert len(set(rldelta.__all__)) == len(rldelta.__all__)


@pytest.mark.parametrize("name", [n for n in rldelta.__all__ if n != "__version__"])
def test_every_declared_name_resolves(name):
    obj = getattr(rldelta, name)
    assert callable(obj), name


def test_pinned_signatures():
    for name, sig in PINNED.items():
        assert str(inspect.signature(getattr(rldelta, name))) == sig, name


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
