"""`rldelta probe logprobs RUN`: does RL work by amplifying correct completions or by suppressing wrong ones?

    RUN/probe_set.jsonl                   the fixed probe set (built once from the base model, then reused)
    OUT/logprobs.parquet                  per run and saved step: log p(correct), log p(wrong), masses, entropy
    OUT/phases.parquet                    per interval between saved steps: which component moves faster
    OUT/advantages.parquet                (with --positive/--negative) accuracy, pass@k, changed fraction, overlap
    OUT/logprobs.json                     the summary and the verdict lines
    OUT/logprobs.png, OUT/passk.png       plots

OUT defaults to RUN/probes/logprobs. Every checkpoint of every run is scored on the same token ids, so what moves is
the policy and nothing else. The fp32 master of a step is scored when the run kept one (it is the policy that
trained); otherwise the published bf16 checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pandas as pd

from rldelta.metrics.logprobs import pass_at_k, phases, probe_stats
from rldelta.probes import ProbeError, read_run
from rldelta.probes.logprob_verdicts import mass_text, verdict_advantages, verdict_logprobs, verdict_phases
from rldelta.runtime.atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet
from rldelta.runtime.files import ADVANTAGES_TABLE, LOGPROBS_JSON, LOGPROBS_TABLE, METRICS_FILE, PHASES_TABLE
from rldelta.runtime.progress import progress_bar
from rldelta.train.runfiles import saved_steps, step_dir

PROBE_SET = "probe_set.jsonl"
OUT_DIR = Path("probes") / "logprobs"  # under RUN, unless the caller names another folder


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every saved step, preferring the fp32 master."""
    out = []
    for step in saved_steps(run_dir):
        fp32 = step_dir(run_dir, step, fp32=True)
        out.append((step, fp32 if (fp32 / "config.json").is_file() else step_dir(run_dir, step)))
    if not out:
        raise ProbeError(f"{run_dir}: no saved checkpoints")
    return out


# ---- the probe set --------------------------------------------------------------------------------------------


def build_probe_set(
    model_dir: str | os.PathLike,
    task: str,
    *,
    n_prompts: int,
    k: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    seed: int = 0,
    difficulty: int | None = None,
) -> list[dict]:
    """`k` completions sampled from the base model for each of `n_prompts` test-split prompts, labelled by the task."""
    from rldelta.train.generation import load_for_eval, sample
    from rldelta.train.tasks import get_task

    t = get_task(task)
    examples = t.generate(n_prompts, seed=seed, split="test", difficulty=difficulty)
    model, tokenizer = load_for_eval(model_dir)
    groups = sample(
        model,
        tokenizer,
        [ex.prompt for ex in examples],
        k=k,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
    )
    rows = []
    for i, (ex, group) in enumerate(zip(examples, groups)):
        for s in group:
            rows.append(
                {
                    "prompt_index": i,
                    "prompt": ex.prompt[-1]["content"],
                    "answer": ex.answer,
                    "difficulty": ex.difficulty,
                    "completion": s.text,
                    "correct": bool(t.correctness_reward(s.text, ex.answer) > 0),
                    "prompt_ids": s.prompt_ids,
                    "completion_ids": s.completion_ids,
                }
            )
    return rows


def load_or_build_probe_set(run_dir: Path, record: dict, *, n_prompts: int, k: int, seed: int) -> list[dict]:
    path = run_dir / PROBE_SET
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    cfg = record["config"]
    rows = build_probe_set(
        cfg["model"],
        cfg["task"],
        n_prompts=n_prompts,
        k=k,
        max_new_tokens=cfg["max_completion_length"],
        temperature=cfg.get("temperature", 1.0),
        seed=seed,
        difficulty=cfg.get("difficulty"),
    )
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode())
    return rows


# ---- scoring --------------------------------------------------------------------------------------------------


def score(model, rows: list[dict], *, batch_size: int = 16) -> tuple[list[float], list[int], list[float]]:
    """Per completion: the sum of its tokens' log-probs given its prompt, its length, and the policy's mean entropy
    over its positions (nats)."""
    import torch

    device = next(model.parameters()).device
    seq_lp, lengths, entropy = [], [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        ids = [r["prompt_ids"] + r["completion_ids"] for r in chunk]
        width = max(len(x) for x in ids)
        inp = torch.zeros(len(ids), width, dtype=torch.long)
        att = torch.zeros(len(ids), width, dtype=torch.long)
        for i, x in enumerate(ids):  # right padding: positions of the real tokens are 0..len-1 as when sampled
            inp[i, : len(x)] = torch.tensor(x)
            att[i, : len(x)] = 1
        with torch.no_grad():
            logits = model(input_ids=inp.to(device), attention_mask=att.to(device)).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for i, r in enumerate(chunk):
            p, c = len(r["prompt_ids"]), len(r["completion_ids"])
            if c == 0:
                seq_lp.append(0.0), lengths.append(0), entropy.append(float("nan"))
                continue
            pos = torch.arange(p - 1, p + c - 1)  # the logits at position t predict token t + 1
            target = inp[i, p : p + c].to(device)
            lp_tok = logp[i, pos, target]
            ent = -(logp[i, pos].exp() * logp[i, pos]).sum(-1)
            seq_lp.append(float(lp_tok.double().sum()))
            lengths.append(c)
            entropy.append(float(ent.mean()))
    return seq_lp, lengths, entropy


def _score_checkpoint(model_dir: Path, rows: list[dict]) -> dict[str, Any]:
    from rldelta.train.generation import load_for_eval

    model, _ = load_for_eval(model_dir)
    lp, n, ent = score(model, rows)
    stats = probe_stats(lp, n, [r["correct"] for r in rows], [r["prompt_index"] for r in rows])
    valid = [e for e in ent if not math.isnan(e)]
    stats["probe_entropy"] = sum(valid) / len(valid) if valid else None
    return stats


# ---- accuracy, pass@k and weight change of the advantage-split runs ---------------------------------------------


def sampled_pass_at_k(
    model_dir: Path,
    task: str,
    *,
    n_prompts: int,
    n: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    difficulty: int | None,
) -> dict[str, Any]:
    """pass@k for k = 1..n from n samples per test prompt, and the mean sampled accuracy."""
    from rldelta.train.generation import load_for_eval, sample
    from rldelta.train.tasks import get_task

    t = get_task(task)
    examples = t.generate(n_prompts, seed=seed, split="test", difficulty=difficulty)
    model, tokenizer = load_for_eval(model_dir)
    groups = sample(
        model,
        tokenizer,
        [ex.prompt for ex in examples],
        k=n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
    )
    correct = [sum(t.correctness_reward(s.text, ex.answer) > 0 for s in g) for ex, g in zip(examples, groups)]
    return {
        "pass_at_k": {k: sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in range(1, n + 1)},
        "sampled_accuracy": sum(correct) / (n * len(correct)),
    }


def changed_sets(base: Path, tuned: dict[str, Path]) -> dict[str, Any]:
    """Bitwise changed counts of each tuned checkpoint against the base, compared in the tuned checkpoint's stored
    dtype (the published bf16: an fp32 base is rounded first, so rounding alone is no change), and the size of each
    one's intersection with the one named "all". Tensors are paired as `rldelta diff` pairs them (tied aliases
    once)."""
    import torch

    from rldelta.checkpoint import open_checkpoint, pair_tensors
    from rldelta.metrics.sparsity import changed_bitwise

    b = open_checkpoint(base)
    cks = {k: open_checkpoint(p) for k, p in tuned.items()}
    names: list[str] = []
    for ck in cks.values():
        pairing = pair_tensors(b, ck)
        if problem := pairing.mismatch(b, ck):
            raise ProbeError(problem)
        names = pairing.names
    numel = 0
    changed = dict.fromkeys(tuned, 0)
    with_all = dict.fromkeys(tuned, 0)
    for name in names:
        w = b.get(name)
        numel += w.numel()
        masks = {}
        for k, ck in cks.items():
            t = ck.get(name)
            masks[k] = changed_bitwise(w, t, t.dtype)
            changed[k] += int(torch.count_nonzero(masks[k]))  # ~25x faster than bool.sum() (README, diff)
        if "all" in masks:
            for k, m in masks.items():
                with_all[k] += int(torch.count_nonzero(m & masks["all"]))
    return {"numel": numel, "changed": changed, "intersection_with_all": with_all}


# ---- the probe ------------------------------------------------------------------------------------------------


def run_logprobs(
    run: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    positive: str | os.PathLike | None = None,
    negative: str | os.PathLike | None = None,
    n_prompts: int = 16,
    k: int = 8,
    eval_prompts: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score base and every saved checkpoint of RUN (and of the --positive/--negative runs) on RUN's probe set.

    With `positive` and `negative` (runs trained with --advantages positive / negative, same seed and data), also
    compare the three final checkpoints: greedy and sampled accuracy, pass@k for k up to the number of generations,
    changed fraction, and the overlap of each changed set with the full run's.
    """
    import transformers

    transformers.utils.logging.disable_progress_bar()  # one bar for the probe, not one per checkpoint load
    run_dir = Path(run)
    record = read_run(run_dir)
    cfg = record["config"]
    base = Path(cfg["model"])
    if not (base / "config.json").is_file():
        raise ProbeError(f"{run_dir}/run.json: its base model {base} is not a model folder (moved?)")
    out_dir = Path(out) if out is not None else run_dir / OUT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)

    runs = _runs(run_dir, cfg, positive, negative)
    ckpts = {label: _checkpoints(d) for label, d in runs.items()}

    rows = load_or_build_probe_set(run_dir, record, n_prompts=n_prompts, k=k, seed=seed)
    n_correct = sum(r["correct"] for r in rows)
    if not rows:
        raise ProbeError(f"{run_dir}/{PROBE_SET}: empty probe set")

    df, base_stats = _score(runs, ckpts, base, rows, progress)
    has_both = base_stats["logp_correct"] is not None and base_stats["logp_wrong"] is not None
    phase_rows, phase_summary = _phases(df, runs, has_both)

    summary: dict[str, Any] = {
        "run": str(run_dir),
        "base": str(base),
        "task": cfg["task"],
        "probe_set": str(run_dir / PROBE_SET),
        "prompts": len({r["prompt_index"] for r in rows}),
        "completions": len(rows),
        "correct": n_correct,
        "wrong": len(rows) - n_correct,
        "runs": {k: str(v) for k, v in runs.items()},
        "base_stats": base_stats,
        "phases": phase_summary,
    }
    final = df[(df["run"] == "all")].iloc[-1].to_dict()
    summary["final"] = {
        k: final[k]
        for k in (
            "step",
            "amplification",
            "suppression",
            "logp_correct",
            "logp_wrong",
            "correct_share",
            "probe_entropy",
            "train_entropy",
        )
    }
    summary["verdict_logprobs"] = verdict_logprobs(summary, has_both) + (mass_text(summary) if has_both else "")
    summary["verdict_phases"] = verdict_phases(phase_summary.get("all"), df[df["run"] == "all"])

    adv = None
    if len(runs) > 1:
        adv = _advantage_comparison(runs, ckpts, base, cfg, eval_prompts, seed, progress)
        summary["advantages"] = adv.to_dict("records")
        summary["verdict_advantages"] = verdict_advantages(adv)

    _write(out_dir, df, pd.DataFrame(phase_rows), adv, summary)
    return summary


def _runs(run_dir: Path, cfg: dict, positive, negative) -> dict[str, Path]:
    """The full run and the --positive/--negative runs given, which must differ from it only in --advantages."""
    runs: dict[str, Path] = {"all": run_dir}
    for label, other in (("positive", positive), ("negative", negative)):
        if other is None:
            continue
        other = Path(other)
        oc = read_run(other)["config"]
        for key in ("model", "task", "seed", "data_seed", "algo", "difficulty"):
            if oc.get(key) != cfg.get(key):
                raise ProbeError(
                    f"{other}: {key} is {oc.get(key)!r}, but {cfg.get(key)!r} in {run_dir}; "
                    "the runs must differ only in --advantages"
                )
        if oc.get("advantages") != label:
            raise ProbeError(f"{other}: trained with --advantages {oc.get('advantages')}, expected {label}")
        runs[label] = other
    return runs


def _score(runs: dict[str, Path], ckpts: dict, base: Path, rows: list[dict], progress) -> tuple[pd.DataFrame, dict]:
    """The base and every checkpoint scored on the probe set: one row per (run, step), with the changes against the
    base and the training entropy where the run logged one; and the base's own scores."""
    jobs = [("base", 0, base)] + [(label, s, p) for label, lst in ckpts.items() for s, p in lst]
    table = []
    with progress_bar("probe logprobs", len(jobs), progress) as advance:
        base_stats = None
        for label, step, path in jobs:
            stats = _score_checkpoint(path, rows)
            if label == "base":
                base_stats = stats
                advance("base")
                continue
            table.append({"run": label, "step": step, "checkpoint": str(path), **stats})
            advance(f"{label} step {step}")
    assert base_stats is not None
    for label in runs:  # every run starts from the same base: step 0
        table.append({"run": label, "step": 0, "checkpoint": str(base), **base_stats})
    df = pd.DataFrame(table).sort_values(["run", "step"], kind="stable").reset_index(drop=True)

    def delta(col: str, sign: float) -> pd.Series:
        return sign * (df[col] - base_stats[col]) if base_stats[col] is not None else pd.Series([None] * len(df))

    df["amplification"] = delta("logp_correct", 1.0)
    df["suppression"] = delta("logp_wrong", -1.0)
    df["token_amplification"] = delta("token_logp_correct", 1.0)
    df["token_suppression"] = delta("token_logp_wrong", -1.0)
    train_entropy = {}
    for label, d in runs.items():
        mp = d / METRICS_FILE
        if mp.is_file():
            m = pd.read_parquet(mp)
            if "entropy" in m:
                train_entropy.update({(label, int(s)): float(e) for s, e in zip(m["step"], m["entropy"])})
    df["train_entropy"] = [train_entropy.get((r, int(s))) for r, s in zip(df["run"], df["step"])]
    return df, base_stats


def _phases(df: pd.DataFrame, runs: dict[str, Path], has_both: bool) -> tuple[list[dict], dict]:
    """Per run, which of amplification and suppression moves faster, interval by interval."""
    phase_rows, phase_summary = [], {}
    for label in runs:
        sub = df[df["run"] == label]
        if not has_both or len(sub) < 2:
            continue
        ph = phases(sub["step"].tolist(), sub["amplification"].tolist(), sub["suppression"].tolist())
        phase_summary[label] = {k: v for k, v in ph.items() if k != "intervals"}
        phase_rows += [{"run": label, **iv} for iv in ph["intervals"]]
    return phase_rows, phase_summary


def _advantage_comparison(
    runs: dict[str, Path], ckpts: dict[str, list], base: Path, cfg: dict, eval_prompts: int, seed: int, progress: bool
) -> pd.DataFrame:
    from rldelta.train.evaluate import evaluate

    # Accuracy and the changed set are those of the published (bf16) checkpoint, as a user would download it.
    published = {label: step_dir(runs[label], max(s for s, _ in ckpts[label])) for label in runs}
    sets = changed_sets(base, published)
    rows = []
    n = max(2, int(cfg.get("num_generations") or 2))
    for label in ["base", *runs]:
        path = base if label == "base" else published[label]
        greedy = evaluate(
            path,
            cfg["task"],
            eval_prompts,
            seed=seed,
            difficulty=cfg.get("difficulty"),
            max_new_tokens=cfg["max_completion_length"],
            show_progress=progress,
        )
        sampled = sampled_pass_at_k(
            path,
            cfg["task"],
            n_prompts=eval_prompts,
            n=n,
            max_new_tokens=cfg["max_completion_length"],
            temperature=cfg.get("temperature", 1.0),
            seed=seed,
            difficulty=cfg.get("difficulty"),
        )
        row = {
            "run": label,
            "checkpoint": str(path),
            "accuracy": greedy["accuracy"],
            "sampled_accuracy": sampled["sampled_accuracy"],
        }
        row.update({f"pass@{k}": v for k, v in sampled["pass_at_k"].items()})
        if label == "base":
            row.update(changed_frac=0.0, overlap_with_all=None, inside_all=None)
        else:
            c, inter = sets["changed"][label], sets["intersection_with_all"][label]
            size_all = sets["changed"]["all"]
            row.update(
                changed_frac=c / sets["numel"],
                overlap_with_all=inter / size_all if size_all else None,  # share of the full run's set it covers
                inside_all=inter / c if c else None,
            )  # share of its own set inside the full run's
        rows.append(row)
    return pd.DataFrame(rows)


def _write(out_dir: Path, df: pd.DataFrame, ph: pd.DataFrame, adv: pd.DataFrame | None, summary: dict) -> None:
    from rldelta.plots.logprobs import logprob_curves, pass_at_k_curves  # matplotlib: only when plotting

    atomic_write_parquet(df, out_dir / LOGPROBS_TABLE)
    atomic_write_parquet(ph, out_dir / PHASES_TABLE)
    atomic_write_bytes(out_dir / "logprobs.png", logprob_curves(df))
    if adv is not None:
        atomic_write_parquet(adv, out_dir / ADVANTAGES_TABLE)
        atomic_write_bytes(out_dir / "passk.png", pass_at_k_curves(adv))
    atomic_write_json(out_dir / LOGPROBS_JSON, summary)
