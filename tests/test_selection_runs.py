"""`run_claims` (probes/selection.py) on two hand-written RL runs from two mixture models whose verdicts are known:
each run's format table is made by `probe formats` from its completions, then read by the three rules."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rldelta.probes import ProbeError
from rldelta.probes.selection import CLAIMS_FILE, run_claims
from rldelta.train.mixture import MIXTURE_FILE

CODE = "```python\nprint(23 + 45)\n```\n68"
PLAIN = "23 plus 45 equals 68."
SHARES = {"code": 0.5, "plain": 0.3, "boxed": 0.2}


def _base(tmp_path, size, accuracy):
    base = tmp_path / f"base-{size}"
    base.mkdir()
    formats = {f: {"count": 400, "share": 0.3, "accuracy": a} for f, a in accuracy.items()}
    record = {"size": size, "corpus": {"shares": SHARES}, "eval": {"formats": formats}}
    (base / MIXTURE_FILE).write_text(json.dumps(record))
    return base


def _run(tmp_path, name, base, winner, algo="grpo"):
    """10 steps of 20 completions, 4 prompts a step of 40 (an epoch is 10 steps): half code and half plain at step
    1, then `winner` only."""
    run = tmp_path / name
    run.mkdir()
    config = {
        "model": str(base),
        "task": "mixarith",
        "algo": algo,
        "seed": 0,
        "train_size": 40,
        "prompts_per_step": 4,
        "num_generations": 5,
    }
    (run / "run.json").write_text(json.dumps({"config": config}))
    steps, texts = [], []
    for s in range(1, 11):
        batch = [CODE] * 10 + [PLAIN] * 10 if s == 1 else [winner] * 20
        steps += [s] * 20
        texts += batch
    pd.DataFrame({"step": steps, "completion": texts, "correctness": [1.0] * len(steps)}).to_parquet(
        run / "completions.parquet"
    )
    return run


def test_run_claims(tmp_path):
    # 5m: code is the most frequent (0.5) and clearly the most accurate (0.8 against 0.3 on 400 samples each)
    small = _run(tmp_path, "r5", _base(tmp_path, "5m", {"code": 0.8, "plain": 0.3, "boxed": 0.3}), CODE)
    # 30m: plain wins; it is the most accurate but not the most frequent
    big = _run(tmp_path, "r30", _base(tmp_path, "30m", {"code": 0.3, "plain": 0.8, "boxed": 0.3}), PLAIN)
    c = run_claims([small, big], tmp_path / "out")
    a, b = c["runs"]
    # From step 2 on, 180 of 180 completions: a Wilson interval from 0.98, above 0.9; step 1 (10 of 20) is clearly
    # below. So the winner holds from step 2, 20% into the first epoch.
    assert (a["dominance"]["outcome"], a["dominance"]["format"], a["dominance"]["step"]) == ("reproduces", "code", 2)
    assert a["dominance"]["epoch_fraction"] == pytest.approx(0.2) and a["dominance"]["completions"] == 180
    assert a["end_winner"]["format"] == "code" and a["end_winner"]["decided"] is True
    assert a["origin"]["outcome"] == "both" and b["origin"]["outcome"] == "most_accurate"
    assert (b["dominance"]["format"], b["size"]) == ("plain", "30m")
    (size,) = c["sizes"]
    assert size["algo"] == "grpo" and size["outcome"] == "changes" and size["winners"] == {"5m": "code", "30m": "plain"}
    assert json.loads((tmp_path / "out" / CLAIMS_FILE).read_text())["sizes"][0]["outcome"] == "changes"
    assert len(c["verdicts"]) == 3 and c["verdicts"][0].startswith("r5: reproduces: code holds")
    assert (small / "probes" / "formats" / "formats.parquet").is_file()  # probed on the way


def test_sizes_are_compared_within_an_algorithm(tmp_path):
    small, big = _base(tmp_path, "5m", {"code": 0.8}), _base(tmp_path, "30m", {"code": 0.8})
    runs = [_run(tmp_path, "g5", small, CODE), _run(tmp_path, "g30", big, CODE)]
    runs.append(_run(tmp_path, "r5", small, PLAIN, algo="rloo"))  # another algorithm's winner is not a third seed
    c = run_claims(runs, tmp_path / "out")
    by_algo = {s["algo"]: s for s in c["sizes"]}
    assert by_algo["grpo"]["outcome"] == "same" and by_algo["grpo"]["winners"] == {"5m": "code", "30m": "code"}
    assert by_algo["rloo"]["outcome"] == "undecided" and c["verdicts"][-2].startswith("grpo: same")


def test_run_claims_without_a_mixture_record(tmp_path):
    run = _run(tmp_path, "r", tmp_path / "nomodel", CODE)
    c = run_claims([run], tmp_path / "out")
    assert c["runs"][0]["origin"]["outcome"] == "undecided" and c["sizes"][0]["outcome"] == "undecided"
    with pytest.raises(ProbeError, match="threshold"):
        run_claims([run], tmp_path / "out", threshold=2)


def test_formats_preset_validates():
    from rldelta.study import PRESETS_DIR, load_config
    from rldelta.study.formats_config import formats_rl_steps, formats_settings, formats_train_config

    cfg = load_config(PRESETS_DIR / "formats.toml")
    f = formats_settings(cfg)
    tc = formats_train_config(f, model="m", seed=0)
    assert cfg.probes == ["formats"] and f["sizes"] == ["1m", "5m"] and f["algorithms"] == ["grpo", "rloo"]
    assert f["plateau"] and f["steer"] and f["seeds"] == [0, 1]
    assert formats_rl_steps(f) * tc.prompts_per_step == 3 * tc.train_size  # the RL runs cover three epochs
