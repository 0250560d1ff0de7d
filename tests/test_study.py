"""`rldelta study` end to end on the tiny model: every stage runs, the report shows exactly the exported numbers,
a study killed midway finishes without retraining, and bad configs fail with a message naming file and key."""

from __future__ import annotations

import html
import math
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rldelta.checkpoint import open_checkpoint
from rldelta.masks import load_mask
from rldelta.report.html import fmt
from rldelta.study import (
    PRESETS_DIR,
    StudyConfig,
    StudyError,
    config_from_dict,
    folders,
    load_config,
    preset_path,
    run_study,
    stages,
)
from rldelta.study import run as study_run
from rldelta.study import runs as study_runs
from rldelta.study.formats_config import formats_settings
from rldelta.study.log import StudyLog

SECTIONS = [
    "question",
    "why",
    "setup",
    "headline",
    "verdicts",
    "plots",
    "plot-layers",
    "plot-rank",
    "plot-overlap",
    "plot-deciles",
    "plot-dynamics",
    "plot-accuracy",
    "surgery",
    "retrain",
    "cause",
    "tables",
    "probe-logprobs",
    "plot-logprobs",
    "plot-passk",
    "probe-activations",
    "plot-activations",
    "probe-formats",
    "subnetwork-fixed",
    "steps",
    "plot-steps",
    "law",
    "plot-law",
]
CLAIMS = [
    "sparsity",
    "full rank",
    "seed consistency",
    "subnetwork sufficiency",
    "subnetwork necessity",
    "subnetwork-only training",
    "in-distribution data",
]


def tiny_config(**over) -> StudyConfig:
    data = load_config(preset_path("tiny")).to_dict()
    data.update(steps=4, save_steps="every:2", eval_n=8)  # smaller still than the preset: this is a test
    data.update(over)
    return config_from_dict(data, source="test")


class _Spy:
    """Counts train() calls of the study (workers=1 trains in this process) and can fail a chosen stage."""

    def __init__(self, monkeypatch):
        self.calls: list[str] = []
        real = study_runs.train_job

        def job(config, threads=None):
            self.calls.append(config["output"])
            return real(config, threads)

        monkeypatch.setattr(study_runs, "train_job", job)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    """A study killed in the surgery stage, then started again: (study dir, result, trainings per attempt)."""
    out = tmp_path_factory.mktemp("study") / "s"
    mp = pytest.MonkeyPatch()
    spy = _Spy(mp)
    real_surgery = study_run.surgery_evals

    def boom(*a, **k):
        raise KeyboardInterrupt("killed")

    mp.setattr(study_run, "surgery_evals", boom)
    with pytest.raises(KeyboardInterrupt):
        run_study(tiny_config(), out, workers=1, progress=False)
    first = list(spy.calls)
    mp.setattr(study_run, "surgery_evals", real_surgery)
    spy.calls.clear()
    res = run_study(tiny_config(), out, workers=1, progress=False)
    second = list(spy.calls)
    spy.calls.clear()
    res2 = run_study(tiny_config(), out, workers=1, progress=False)
    third = list(spy.calls)
    mp.undo()
    return out, res, (first, second, third), res2


def test_killed_study_resumes_without_retraining(done):
    out, res, (first, second, third), res2 = done
    # the two grid runs, the first run's positive/negative-advantage twins and the cause analysis's three runs
    # (its RL run without KL is the first grid run at the same step), then killed
    assert len(first) == 7 and sum("/grpo-s" in c for c in first) == 4
    assert sum("-positive-" in c for c in first) == 1 and sum("-negative-" in c for c in first) == 1
    assert sorted(Path(c).name.rsplit("-", 1)[0] for c in first if "/cause-" in c) == [
        "cause-rl-kl-s0-fp32",
        "cause-sft-foreign-s0-fp32",
        "cause-sft-own-s0-fp32",
    ]
    # only the retrain and the formats probe's run, which come after surgery
    assert len(second) == 2 and "retrain-" in second[0] and "formats-test-" in second[1]
    assert third == []  # a complete study redoes no training
    assert res2["headline"] == pytest.approx(res["headline"], nan_ok=True)
    assert not list(out.rglob(".*.tmp-*"))  # nothing half-written left behind


class _Nums(HTMLParser):
    def __init__(self):
        super().__init__()
        self.nums: list[dict] = []
        self.imgs: list[str] = []
        self.ids: set[str] = set()
        self._cur: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag == "span" and a.get("class") == "num":
            self._cur = {**a, "text": ""}

    def handle_data(self, data):
        if self._cur is not None:
            self._cur["text"] += data

    def handle_endtag(self, tag):
        if tag == "span" and self._cur is not None:
            self.nums.append(self._cur)
            self._cur = None


def test_report_has_every_section_and_only_table_numbers(done):
    out, res, _, _ = done
    page = (out / "report.html").read_text()
    p = _Nums()
    p.feed(page)
    assert set(SECTIONS) <= p.ids
    assert "experts" not in p.ids  # a dense model: no experts section (test_moe_study.py has one)
    assert len(p.imgs) == 12 and all(s.startswith("data:image/png;base64,") for s in p.imgs)  # 10 + steps + law
    assert "http://" not in page and "https://" not in page  # opens offline
    assert ">nan<" not in page  # a headline row without an interval (the probes' numbers) showed "nan" for its source
    tables = {}
    assert len(p.nums) > 100
    for n in p.nums:
        t = tables.setdefault(n["data-table"], pd.read_parquet(out / "tables" / f"{n['data-table']}.parquet"))
        want = t.iloc[int(n["data-row"])][n["data-col"]]
        got = eval(html.unescape(n["data-value"]), {"nan": math.nan})  # repr of a float, int or None
        if want is None or (isinstance(want, float) and math.isnan(want)):
            assert got is None
        else:
            assert got == want, n  # exact: the page carries the table's value
        assert n["text"] == fmt(got, n["data-fmt"])
    # every headline number and every claim appears, and the CSV export agrees with the Parquet one
    shown = {(n["data-table"], n["data-row"]) for n in p.nums}
    head = pd.read_parquet(out / "tables" / "headline.parquet")
    assert all(("headline", str(i)) in shown for i in range(len(head)))
    claims = pd.read_parquet(out / "tables" / "claims.parquet")
    assert list(claims["claim"]) == CLAIMS
    for c in claims.itertuples():
        assert html.escape(c.verdict) in page
    csv = pd.read_csv(out / "tables" / "headline.csv")
    assert csv["value"].tolist() == pytest.approx(head["value"].tolist(), nan_ok=True, rel=1e-15)


def test_study_numbers_against_independent_computation(done):
    """Headline numbers recomputed from the raw checkpoints and masks with plain torch."""
    out, res, _, _ = done
    runs = pd.read_parquet(out / "tables" / "runs.parquet").set_index("run")
    base = open_checkpoint(next(p for p in (out / "models").iterdir() if p.name.startswith("tiny")))
    finals = {}
    for label in ("grpo-s0-fp32", "grpo-s1-fp32", "retrain-grpo-s0-fp32"):
        run_dir = Path(runs.loc[label, "run_dir"])
        ck = open_checkpoint(run_dir / "checkpoints" / "step-4")
        finals[label] = {n: ck.get(n) for n in base.names() if n not in base.aliases}
    changed = {
        k: {n: (t.view(torch.int16) != base.get(n).view(torch.int16)) for n, t in v.items()} for k, v in finals.items()
    }
    numel = sum(m.numel() for m in changed["grpo-s0-fp32"].values())
    for label in ("grpo-s0-fp32", "grpo-s1-fp32"):
        frac = sum(int(m.sum()) for m in changed[label].values()) / numel
        assert runs.loc[label, "changed_frac"] == pytest.approx(frac, rel=1e-12)
    a, b = changed["grpo-s0-fp32"], changed["grpo-s1-fp32"]
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    ov = pd.read_parquet(out / "tables" / "overlap.parquet")
    row = ov[(ov["a"] == "grpo-s0-fp32") & (ov["b"] == "grpo-s1-fp32")].iloc[0]
    assert row["overlap"] == pytest.approx(inter / sum(int(m.sum()) for m in a.values()), rel=1e-12)
    # retrain: confined to the seed-1 mask, and the cosine of the two Δs
    r = changed["retrain-grpo-s0-fp32"]
    assert all(not bool((r[n] & ~a[n]).any()) for n in a)
    da = torch.cat([(finals["grpo-s0-fp32"][n].double() - base.get(n).double()).reshape(-1) for n in a])
    dr = torch.cat([(finals["retrain-grpo-s0-fp32"][n].double() - base.get(n).double()).reshape(-1) for n in a])
    ret = pd.read_parquet(out / "tables" / "retrain.parquet").iloc[0]
    assert ret["delta_cosine"] == pytest.approx(float(da @ dr / (da.norm() * dr.norm())), rel=1e-9)
    assert ret["retrain_inside_full"] == 1.0
    # θ_sub vs θ_full, entry by entry (the paper's parameter-level test)
    fa, fr = finals["grpo-s0-fp32"], finals["retrain-grpo-s0-fp32"]
    equal = sum(int((fa[n] == fr[n]).sum()) for n in a) / numel
    close = sum(int(((fa[n].double() - fr[n].double()).abs() <= 1e-5).sum()) for n in a) / numel
    assert (ret["equal_bitwise"], ret["equal_1e-5"]) == pytest.approx((equal, close), rel=1e-12)
    # the paired comparison of the sufficiency verdict, from the per-problem table with plain pandas
    prob = pd.read_parquet(out / "tables" / "problems.parquet")
    w = prob.pivot(index="problem", columns="model", values="ref_logprob")
    sign = 1.0 if (w["grpo-s1-fp32"] - w["base"]).mean() >= 0 else -1.0  # oriented by RL's change
    diff = sign * (w["patch:grpo-s1-fp32:none"] - w["patch:grpo-s1-fp32:random:0"]).mean()
    claims = pd.read_parquet(out / "tables" / "claims.parquet").set_index("claim")
    assert claims.loc["subnetwork sufficiency", "difference"] == pytest.approx(diff, rel=1e-9)
    assert claims.loc["subnetwork sufficiency", "n"] == len(w)
    # dynamics: the last saved step's changed set is the final one
    dyn = pd.read_parquet(out / "tables" / "dynamics.parquet")
    last = dyn[(dyn["run"] == "grpo-s0-fp32") & (dyn["step"] == 4)].iloc[0]
    assert last["still_changed_at_end"] == 1.0 and last["share_of_final_set"] == 1.0
    assert load_mask(out / "diffs" / Path(runs.loc["grpo-s0-fp32", "run_dir"]).name / "step-2").numel == numel


def test_the_scratch_of_a_study_killed_while_building_its_base_is_removed(tmp_path):
    """A kill -9 while the tiny base was built left `models/.tiny-fp32-*` (and the bf16 copy's scratch), which every
    later run, even a successful one, kept."""
    from rldelta.study.stages import prepare_base

    cfg = config_from_dict({"model": "tiny"}, source="test")
    models = tmp_path / "study" / "models"
    for stale in (".tiny-fp32-killed", ".tiny-seed0-bf16.tmp-killed"):
        (models / stale).mkdir(parents=True)
        (models / stale / "model.safetensors").write_bytes(b"x")
    out = prepare_base(cfg, tmp_path / "study")
    assert sorted(p.name for p in models.iterdir()) == [out.name]
    (models / ".tiny-fp32-killed").mkdir()  # a later run finds its base built: it cleans up all the same
    assert prepare_base(cfg, tmp_path / "study") == out
    assert sorted(p.name for p in models.iterdir()) == [out.name]


def test_bad_configs_name_file_and_key(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text('model = "tiny"\nsteppps = 3\n')
    with pytest.raises(StudyError, match=r"s\.toml: unknown key 'steppps'"):
        load_config(f)
    f.write_text('algorithms = ["grpo", "a2c"]\n')
    with pytest.raises(StudyError, match=r"s\.toml: algorithms: unknown algorithm 'a2c'"):
        load_config(f)
    f.write_text("[train]\nlrr = 1e-5\n")
    with pytest.raises(StudyError, match=r"unknown key train\.lrr"):
        load_config(f)
    f.write_text("[train]\nseed = 3\n")
    with pytest.raises(StudyError, match=r"train\.seed is set by the study"):
        load_config(f)
    f.write_text('task = "chess"\n')
    with pytest.raises(StudyError, match="task: unknown task 'chess'"):
        load_config(f)
    f.write_text("steps = [\n")
    with pytest.raises(StudyError, match="not valid TOML"):
        load_config(f)
    with pytest.raises(StudyError, match="unknown preset"):
        preset_path("huge")
    with pytest.raises(StudyError, match="neither a built-in"):
        run_study(config_from_dict({"model": str(tmp_path / "nope")}, source="x"), tmp_path / "o", progress=False)


@pytest.mark.parametrize("name", ["tiny", "demo", "full", "formats", "example"])
def test_presets_load(name):
    cfg = load_config(Path(PRESETS_DIR) / f"{name}.toml")
    assert cfg.algorithms and cfg.seeds


def test_cli_study_bad_config_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from rldelta.cli import app

    f = tmp_path / "bad.toml"
    f.write_text("colour = 1\n")
    r = CliRunner().invoke(app, ["study", str(f), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unknown key 'colour'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["study", "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "CONFIG.toml or --preset" in r.output


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_pool_trains_the_same_weights_as_in_process(done, tmp_path, backend):
    """workers=2 (a spawned local pool, or a local Ray cluster): the same runs, bit for bit, as the study trained in
    this process."""
    if backend == "ray":
        pytest.importorskip("ray")
    out, _, _, _ = done
    cfg = tiny_config()
    base = stages.prepare_base(cfg, out)  # reused: already built
    runs = [folders.make_run(tmp_path, cfg, base, "grpo", s, "fp32") for s in cfg.seeds]
    study_runs.train_all(
        runs, backend=backend, workers=2, ray_address=None, log=StudyLog(False), progress=False, threads=1
    )
    for r in runs:
        assert folders.run_complete(r)
        ref = out / "runs" / r.dir.name  # same config, same hash, same folder name
        for step in ("step-4", "step-4-fp32"):
            assert (r.dir / "checkpoints" / step / "model.safetensors").read_bytes() == (
                ref / "checkpoints" / step / "model.safetensors"
            ).read_bytes()


def test_probe_tables_against_independent_computation(done):
    """The probes' numbers in the study: split runs' changed sets, format counts, dynamics, the fixed step."""
    from rldelta.train.answer_formats import classify_format

    out, _, _, _ = done
    base = open_checkpoint(next(p for p in (out / "models").iterdir() if p.name.startswith("tiny")))
    runs = {p.name.rsplit("-", 1)[0]: p for p in (out / "runs").iterdir()}
    names = [n for n in base.names() if n not in base.aliases]

    def changed(run: str, step: int = 4) -> dict[str, torch.Tensor]:
        ck = open_checkpoint(runs[run] / "checkpoints" / f"step-{step}")
        return {n: ck.get(n).view(torch.int16) != base.get(n).view(torch.int16) for n in names}

    numel = sum(base.get(n).numel() for n in names)
    adv = pd.read_parquet(out / "tables" / "probe_advantages.parquet").set_index("run")
    full = changed("grpo-s0-fp32")
    for kind in ("positive", "negative"):
        m = changed(f"grpo-s0-fp32-{kind}")
        assert adv.loc[kind, "changed_frac"] == pytest.approx(sum(int(x.sum()) for x in m.values()) / numel)
        inter = sum(int((m[n] & full[n]).sum()) for n in names)
        assert adv.loc[kind, "overlap_with_all"] == pytest.approx(inter / sum(int(x.sum()) for x in full.values()))
    lp = pd.read_parquet(out / "tables" / "probe_logprobs.parquet")
    assert sorted(lp[lp["run"] == "all"]["step"]) == [0, 2, 4]
    # dynamics: overlap with the other seed at the same step, from the two runs' checkpoints
    dyn = pd.read_parquet(out / "tables" / "dynamics.parquet")
    a2, b2 = changed("grpo-s0-fp32", 2), changed("grpo-s1-fp32", 2)
    row = dyn[(dyn["run"] == "grpo-s0-fp32") & (dyn["step"] == 2)].iloc[0]
    size = sum(int(x.sum()) for x in a2.values())
    assert row["overlap_with_other_seed"] == pytest.approx(sum(int((a2[n] & b2[n]).sum()) for n in names) / size)
    fixed = pd.read_parquet(out / "tables" / "subnetwork_fixed.parquet").set_index("run")
    sub = dyn[dyn["run"] == "grpo-s0-fp32"].sort_values("step")
    want = next(r.step for r in sub.itertuples() if r.share_of_final_set >= 0.9)
    assert fixed.loc["grpo-s0-fp32", "fixed_step"] == want
    # formats: the counts per step are the classifier's counts over the run's completion log
    fmt_table = pd.read_parquet(out / "tables" / "probe_formats.parquet")
    comp = pd.read_parquet(runs["formats-test"] / "completions.parquet")
    for step, rows in comp.groupby("step"):
        counts = rows["completion"].map(classify_format).value_counts()
        got = fmt_table[fmt_table["step"] == step].set_index("format")["count"]
        assert all(got.get(f, 0) == counts.get(f, 0) for f in set(got.index) | set(counts.index))
        assert fmt_table[fmt_table["step"] == step]["share"].sum() == pytest.approx(1.0)
    verdicts = pd.read_parquet(out / "tables" / "probe_verdicts.parquet")
    assert {
        "suppression vs amplification",
        "two phases",
        "positive vs negative advantages",
        "activation sparsity vs difficulty",
        "format selection (test)",
    } <= set(verdicts["probe"])


def test_same_study_again_with_two_workers_exports_identical_tables(done, tmp_path):
    """A study's numbers depend on its config, not on the machine or the schedule: the tiny study run again from
    nothing, now with two workers (the grid on a process pool, the retrain in a worker beside the evaluation,
    surgery and probe stages), exports the same tables, byte for byte apart from the study's own path."""
    out, _, _, _ = done
    again = tmp_path / "again"
    run_study(tiny_config(), again, workers=2, progress=False)
    names = sorted(p.name for p in (out / "tables").iterdir())
    assert names == sorted(p.name for p in (again / "tables").iterdir()) and names
    for name in (n for n in names if n.endswith(".csv")):
        first = (out / "tables" / name).read_text().replace(str(out), "STUDY")
        second = (again / "tables" / name).read_text().replace(str(again), "STUDY")
        assert first == second, name


def test_a_moved_study_reads_its_own_results(done, tmp_path):
    """overlap.json names the diffs by the paths they had: a study folder moved elsewhere must still build its
    tables from what it holds, with the same numbers, and without training again."""
    out, _, _, _ = done
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    mp = pytest.MonkeyPatch()
    spy = _Spy(mp)
    try:
        run_study(tiny_config(), moved, workers=1, progress=False)
    finally:
        mp.undo()
    assert not spy.calls
    for name in (p.name for p in (out / "tables").iterdir() if p.suffix == ".csv"):
        first = (out / "tables" / name).read_text().replace(str(out), "STUDY")
        second = (moved / "tables" / name).read_text().replace(str(moved), "STUDY").replace(str(out), "STUDY")
        assert first == second, name


def _wall_clock_keys(table: dict, prefix: str = "") -> list[str]:
    """Keys of a config table (nested tables too) that set a time budget: a value there would let the machine's
    speed decide how much work, and so which numbers, a study produces."""
    found = []
    for key, value in table.items():
        if isinstance(value, dict):
            found += _wall_clock_keys(value, f"{prefix}{key}.")
        elif any(w in key for w in ("minute", "second", "time", "hour")) and value is not None:
            found.append(prefix + key)
    return found


@pytest.mark.parametrize("name", ["tiny", "demo", "full", "formats", "example"])
def test_presets_carry_no_wall_clock_budget(name):
    cfg = load_config(PRESETS_DIR / f"{name}.toml")
    assert _wall_clock_keys({**cfg.to_dict(), "formats": formats_settings(cfg)}) == []
    # the check itself can fail: a time budget planted in the [formats] table is found
    assert _wall_clock_keys({"formats": {"max_minutes": 1.0, "steps": 4}}) == ["formats.max_minutes"]


def test_intervals_cause_analysis_and_why_section(done):
    """The new tables against independent computations: Wilson intervals (scipy), the cause analysis's changed
    fractions (from its runs' checkpoints), and the why section at the top of the page, one row per explanation."""
    from scipy.stats import binomtest

    from rldelta.study.claims import VERDICTS
    from rldelta.study.why import NOT_MEASURED, NOT_SUPPORTED, PARTLY, SUPPORTED

    out, _, _, _ = done
    for name in ("accuracy", "surgery"):
        t = pd.read_parquet(out / "tables" / f"{name}.parquet")
        for r in t.itertuples():
            ci = binomtest(round(r.accuracy * r.n), int(r.n)).proportion_ci(method="wilson")
            assert (r.accuracy_lo, r.accuracy_hi) == pytest.approx((ci.low, ci.high), abs=1e-9)
    ov = pd.read_parquet(out / "tables" / "overlap.parquet")
    seed = ov[(ov["kind"] == "seed") & ov["matched_hi"].notna()]
    assert len(seed) and (seed["random_lo"] <= seed["random_overlap"]).all()
    assert (seed["random_overlap"] <= seed["random_hi"]).all()
    assert (seed["matched_lo"] <= seed["magnitude_matched_overlap"]).all()

    # cause analysis: every arm's bitwise changed fraction from its checkpoint; no-KL is the first grid run
    cause = pd.read_parquet(out / "tables" / "cause.parquet").set_index("arm")
    assert set(cause.index) == {"sft_own", "sft_foreign", "rl_kl", "rl_no_kl"}
    assert cause.loc["rl_no_kl", "run"] == "grpo-s0-fp32" and cause.loc["rl_kl", "beta"] == pytest.approx(0.04)
    assert list(cause.loc[["sft_own", "sft_foreign"], "sft_style"]) == ["own", "foreign"]
    base = open_checkpoint(next(p for p in (out / "models").iterdir() if p.name.startswith("tiny")))
    names = [n for n in base.names() if n not in base.aliases]
    total = sum(base.get(n).numel() for n in names)
    for arm, r in cause.iterrows():
        # <label>-<10 hex digits of the config hash>; the advantage twins share the first run's label as a prefix
        run_dir = next(p for p in (out / "runs").iterdir() if re.fullmatch(rf"{r['run']}-[0-9a-f]{{10}}", p.name))
        ck = open_checkpoint(run_dir / "checkpoints" / f"step-{r['step']}")
        changed = sum(int((ck.get(n).view(torch.int16) != base.get(n).view(torch.int16)).sum()) for n in names)
        assert r["changed_frac"] == pytest.approx(changed / total, rel=1e-12), arm

    claims = pd.read_parquet(out / "tables" / "claims.parquet")
    assert set(claims["verdict"]) <= set(VERDICTS)
    assert claims["comparison"].str.len().min() > 0 and claims["null"].str.len().min() > 0
    inconclusive = claims[claims["verdict"] == "inconclusive"]
    assert (inconclusive["more_data"].str.len() > 0).all()

    why = pd.read_parquet(out / "tables" / "why.parquet")
    assert len(why) == 8 and set(why["verdict"]) <= {SUPPORTED, PARTLY, NOT_SUPPORTED, "inconclusive", NOT_MEASURED}
    r = why.set_index("explanation").loc["storage precision (bf16 rounding)"]
    head = pd.read_parquet(out / "tables" / "headline.parquet").set_index("key")["value"]
    bf16, fp32 = head["changed_frac"], head["fp32_changed_frac"]
    assert r["share"] == pytest.approx((fp32 - bf16) / (1 - bf16))
    page = (out / "report.html").read_text()
    assert "Why sparse, yet full-rank?" in page
    assert page.index("id='why'") < page.index("id='setup'") < page.index("id='verdicts'")
    assert "seed-1" not in page and "the grpo-s0-fp32 mask" in page


def test_step_tables_come_from_each_runs_recorder(done):
    """The study's per-step dynamics: every recorded step of every run, recomputed from the run's steps.parquet."""
    import re

    out, _, _, _ = done
    steps = pd.read_csv(out / "tables" / "steps.csv")
    summary = pd.read_csv(out / "tables" / "steps_summary.csv").set_index("run")
    assert {"grpo-s0-fp32", "grpo-s1-fp32", "retrain-grpo-s0-fp32"} <= set(steps["run"])
    for run, got in steps.groupby("run"):
        run_dir = next(p for p in (out / "runs").iterdir() if re.fullmatch(re.escape(run) + r"-[0-9a-f]{10}", p.name))
        rec = pd.read_parquet(run_dir / "steps.parquet")
        total = rec[rec["module"] == "total"].sort_values("step")
        assert got["step"].tolist() == total["step"].tolist() == list(range(1, len(total) + 1))
        np.testing.assert_allclose(got["changed_step_frac"], total["changed_step"] / total["numel"])
        np.testing.assert_allclose(got["changed_base_frac"], total["changed_base"] / total["numel"])
        # saturation: the first step whose share of the final set reaches 90%
        reached = got.set_index("step")["share_of_final_set"]
        assert summary.loc[run, "saturation_step"] == reached[reached >= 0.9].index.min()
        assert reached.iloc[-1] == 1.0


def test_every_claim_reads_headline_numbers(done):
    from rldelta.study.claims import CLAIMS

    out = done[0]
    keys = set(pd.read_parquet(out / "tables" / "headline.parquet")["key"])
    for claim in CLAIMS:
        assert {claim.key, *claim.reads} <= keys, claim.name
    assert list(pd.read_parquet(out / "tables" / "claims.parquet")["claim"]) == [c.name for c in CLAIMS]


def test_law_section_predicts_the_grid_from_one_runs_first_steps(done):
    """'Does the law predict the sparsity?': the law calibrated on the first grid run's first steps predicts every
    run; its measured column is the final checkpoint's bitwise changed fraction (recomputed from the weights), its
    errors and verdicts follow from its own columns, and the why row's share is 1 - mean error / mean measured."""
    from rldelta.study.law import within_target

    out, _, _, _ = done
    law = pd.read_parquet(out / "tables" / "law.parquet").set_index("run")
    assert list(law.index) == ["grpo-s0-fp32", "grpo-s1-fp32"]
    assert law.loc["grpo-s0-fp32", "role"].startswith("calibration (steps 1-3;")  # 4 steps: calibrated on 3
    assert law.loc["grpo-s1-fp32", "role"] == "held out"
    base = open_checkpoint(next(p for p in (out / "models").iterdir() if p.name.startswith("tiny")))
    names = [n for n in base.names() if n not in base.aliases]
    total = sum(base.get(n).numel() for n in names)
    for run, r in law.iterrows():
        run_dir = next(p for p in (out / "runs").iterdir() if re.fullmatch(rf"{run}-[0-9a-f]{{10}}", p.name))
        ck = open_checkpoint(run_dir / "checkpoints" / f"step-{r['steps']}")
        changed = sum(int((ck.get(n).view(torch.int16) != base.get(n).view(torch.int16)).sum()) for n in names)
        assert r["changed_frac"] == pytest.approx(changed / total, rel=1e-12), run
        assert 0 <= r["law_lo"] <= r["law_frac"] <= r["law_hi"] <= 1
        assert r["law_abs_err"] == pytest.approx(abs(r["law_frac"] - r["changed_frac"]))
        assert r["law_within_target"] == (abs(r["law_frac"] - r["changed_frac"]) <= max(0.02, 0.15 * r["changed_frac"]))
        assert within_target(r["law_frac"], r["changed_frac"]) == r["law_within_target"]
    steps = pd.read_parquet(out / "tables" / "law_steps.parquet")
    for run, df in steps.groupby("run"):
        assert df["step"].tolist() == list(range(1, law.loc[run, "steps"] + 1))
        assert df["law_base_frac"].iloc[-1] == law.loc[run, "law_frac"]
        assert df["held_out"].tolist() == ([False] * 3 + [True] if run == "grpo-s0-fp32" else [True] * 4)
    why = pd.read_parquet(out / "tables" / "why.parquet").set_index("explanation")
    row = why.loc["the update-sparsity law (bf16 rounding of a calibrated Adam drift)"]
    held = law[law["role"] == "held out"]
    assert row["share"] == pytest.approx(max(0.0, 1 - held["law_abs_err"].mean() / held["changed_frac"].mean()))
    page = (out / "report.html").read_text()
    assert "Does the law predict the sparsity?" in page and page.index("id='law'") > page.index("id='steps'")
