"""`rldelta study` on the tiny mixture-of-experts model: the study runs end to end, its per-(layer, expert) table
is the direct sum of each run's tensors.parquet, and the report gets an experts section (a dense study's has none:
test_study.py)."""

from __future__ import annotations

import html
import math
import re

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from rldelta.cli.app import app
from rldelta.report.html import render
from rldelta.study import config_from_dict, load_config, preset_path, run_study
from rldelta.study.folders import diff_dir, make_run

_EXPERT = re.compile(r"\.layers\.(\d+)\.mlp\.experts\.(\d+)\.")


def moe_config(**over):
    data = load_config(preset_path("tiny"), {"model": "tiny-moe"}).to_dict()
    # smaller than the preset: a test. The activation probe is asked for, to see it skipped with its reason.
    data.update(steps=2, save_steps="every:1", eval_n=8, cause=False, probes=["logprobs", "activations"])
    data.update(advantage_runs=False)
    data.update(over)
    return config_from_dict(data, source="test-moe")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("moe") / "s"
    res = run_study(moe_config(), out, workers=1, progress=False)
    return out, res


def test_the_moe_study_runs_every_stage(study):
    out, res = study
    runs = pd.read_parquet(out / "tables" / "runs.parquet")
    assert {"grpo-s0-fp32", "grpo-s1-fp32"} <= set(runs["run"]) and (runs["kind"] == "retrain").any()
    assert (out / "models" / "tiny-moe-seed0-bf16" / "config.json").is_file()
    for name in ("surgery", "retrain", "overlap", "probe_logprobs", "experts", "routers"):
        assert len(pd.read_parquet(out / "tables" / f"{name}.parquet")), name
    verdicts = pd.read_parquet(out / "tables" / "probe_verdicts.parquet")
    skipped = verdicts[verdicts["probe"] == "activation sparsity vs difficulty"]["verdict"].iloc[0]
    assert skipped.startswith("not run: ") and "mixture-of-experts" in skipped


def test_expert_table_is_the_direct_sum_of_each_experts_tensors(study):
    out, _ = study
    experts = pd.read_parquet(out / "tables" / "experts.parquet")
    cfg = moe_config()
    for seed in cfg.seeds:
        run = make_run(out, cfg, out / "models" / "tiny-moe-seed0-bf16", "grpo", seed, "fp32")
        # independent of the naming module: the expert index read off the stored names with a regex
        t = pq.read_table(diff_dir(out, run) / "tensors.parquet", columns=["name", "numel", "changed"]).to_pylist()
        want: dict[tuple[int, int], list[int]] = {}
        for row in t:
            m = _EXPERT.search(row["name"])
            if m:
                acc = want.setdefault((int(m.group(1)), int(m.group(2))), [0, 0])
                acc[0] += row["changed"]
                acc[1] += row["numel"]
        got = experts[experts["run"] == run.label]
        assert len(want) == len(got) == 2 * 8  # layers x experts
        for rec in got.itertuples():
            changed, numel = want[(rec.layer, rec.expert)]
            assert (rec.changed, rec.numel) == (changed, numel)
            assert rec.changed_frac == changed / numel
        assert 0 < np.mean([c / n for c, n in want.values()]) < 1
    # the summary block and the seed overlap of the touched experts, recomputed from the per-expert table
    summary = pd.read_parquet(out / "tables" / "experts_summary.parquet").set_index("run")
    touched = {
        r: {(e.layer, e.expert) for e in experts[(experts.run == r) & (experts.changed > 0)].itertuples()}
        for r in summary.index
    }
    for r, s in summary.iterrows():
        assert s["changed_experts"] == len(touched[r]) and s["experts"] == 16
        fr = experts[experts.run == r]["changed_frac"]
        assert (s["expert_changed_frac_min"], s["expert_changed_frac_max"]) == (fr.min(), fr.max())
    ov = pd.read_parquet(out / "tables" / "experts_overlap.parquet")
    row = ov[(ov.a == "grpo-s0-fp32") & (ov.b == "grpo-s1-fp32") & (ov.expert_set == "touched")].iloc[0]
    a, b = touched["grpo-s0-fp32"], touched["grpo-s1-fp32"]
    assert row["overlap"] == pytest.approx(len(a & b) / len(a))
    per_layer = [(sum(x[0] == la for x in a), sum(x[0] == la for x in b)) for la in (0, 1)]
    assert row["random_overlap"] == pytest.approx(sum(na * nb / 8 for na, nb in per_layer) / len(a))


def test_report_has_the_experts_section_with_the_table_numbers(study):
    out, _ = study
    page = (out / "report.html").read_text()
    section = page[page.index("<section id='experts'>") :]
    section = section[: section.index("</section>")]
    assert "id='plot-experts'" in section and "data:image/png;base64," in section
    routers = pd.read_parquet(out / "tables" / "routers.parquet")
    tags = re.findall(r'data-table="routers" data-row="(\d+)" data-col="([^"]+)" [^>]*data-value="([^"]*)"', section)
    numeric = [c for c in routers.columns if c not in ("run", "module")]
    assert len(tags) == len(routers) * len(numeric)  # every router number, each carrying the table's value
    for row, col, value in tags:
        want = routers.iloc[int(row)][col]
        got = eval(html.unescape(value), {"nan": math.nan})
        assert got == (want.item() if hasattr(want, "item") else want)
    assert "not run: the activation probe" in section
    # the same tables without the MoE ones: no experts section (the dense report is unchanged)
    tables = {p.stem: pd.read_parquet(p) for p in (out / "tables").glob("*.parquet")}
    dense = {k: v for k, v in tables.items() if k not in ("experts", "routers", "experts_summary", "experts_overlap")}
    assert "<section id='experts'>" not in render(dense)


def test_cli_study_model_option_and_models_tiny_moe(tmp_path):
    r = CliRunner().invoke(app, ["models", "tiny-moe", "-o", str(tmp_path / "m")])
    assert r.exit_code == 0 and (tmp_path / "m" / "model.safetensors").is_file()
    r = CliRunner().invoke(app, ["study", "--preset", "tiny", "--model", "nope", "-o", str(tmp_path / "s")])
    assert r.exit_code != 0 and "nope" in r.output and "tiny-moe" in r.output and "Traceback" not in r.output
