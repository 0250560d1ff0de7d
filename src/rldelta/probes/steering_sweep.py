"""`steer_sweep`: every steering intervention of probes/steering.py toward one format on one mixture model, on the
same test prompts with the same seed, set against an RL run from the same model when one is given.

The RL run's side: its compute (probes/rl_compute.py), its final checkpoint measured like the interventions, and
its changed set (the bitwise diff of that checkpoint against the base), which each SFT run's changed set is
overlapped with. Writes OUT/steering.json (every result, with its one-line text) and OUT/steering.parquet (one row
per intervention setting, and one for the RL run).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from rldelta.columns import unit_schema
from rldelta.probes.steering import FormatMeasure, PromptSteer, SteeringError, SteeringResult, measure, steer_prompt
from rldelta.probes.steering_sft import steer_sft
from rldelta.probes.steering_vector import estimate_vector, steer_activation
from rldelta.runtime.atomic import atomic_write_json, atomic_write_parquet

SWEEP_JSON = "steering.json"
SWEEP_TABLE = "steering.parquet"
SWEEP_SCHEMA = unit_schema(
    [
        ("method", pa.string()),
        ("setting", pa.string()),
        ("format", pa.string()),
        ("completions", pa.int64()),
        ("share", pa.float64()),
        ("share_low", pa.float64()),
        ("share_high", pa.float64()),
        ("accuracy", pa.float64()),
        ("baseline_share", pa.float64()),
        ("baseline_accuracy", pa.float64()),
        ("forward_tokens", pa.int64()),
        ("backward_tokens", pa.int64()),
        ("flops", pa.float64()),
        ("wall_seconds", pa.float64()),
        ("share_of_rl_flops", pa.float64()),
        ("changed_frac", pa.float64()),
        ("overlap", pa.float64()),
        ("random_overlap", pa.float64()),
    ]
)


@dataclass(frozen=True)
class SweepSettings:
    """What the sweep tries: the measurement (test prompts, samples each, seed), the prompt interventions, the
    activation vector's layer (None: the middle one), scales and corpus documents, SFT's k values and training."""

    prompts: int = 64
    samples: int = 8
    seed: int = 0
    max_new_tokens: int = 40
    prompt_steers: tuple[PromptSteer, ...] = (PromptSteer(lead=True), PromptSteer(demonstrations=2))
    layer: int | None = None
    alphas: tuple[float, ...] = (0.5, 1.0, 2.0)
    documents: int = 512
    ks: tuple[int, ...] = (4, 16, 64)
    sft_steps: int = 20
    sft_batch_size: int = 4
    sft_lr: float = 1e-3
    extra: dict[str, Any] = field(default_factory=dict)  # recorded with the results, not used

    def __post_init__(self):
        for name in ("prompts", "samples", "max_new_tokens", "documents", "sft_steps", "sft_batch_size"):
            if getattr(self, name) < 1:
                raise SteeringError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.ks or min(self.ks) < 1:
            raise SteeringError(f"ks must list values >= 1, got {list(self.ks)}")
        if not self.alphas or min(self.alphas) <= 0 or self.sft_lr <= 0:
            raise SteeringError(f"alphas and sft_lr must be > 0, got {list(self.alphas)}, {self.sft_lr}")


def _setting(r: SteeringResult) -> str:
    s = r.settings
    if r.method == "prompt":
        return s["prompt"]
    if r.method == "activation":
        return f"layer {s['layer']}, alpha {s['alpha']:g}"
    return f"k={s['k']}, {s['steps']} steps, lr {s['lr']:g}"


def _row(method: str, setting: str, m: FormatMeasure, baseline: FormatMeasure, compute, rl_flops, **weights) -> dict:
    return {
        "method": method,
        "setting": setting,
        "format": m.format,
        "completions": m.completions,
        "share": m.share,
        "share_low": m.low,
        "share_high": m.high,
        "accuracy": m.accuracy,
        "baseline_share": baseline.share,
        "baseline_accuracy": baseline.accuracy,
        "forward_tokens": compute.forward_tokens,
        "backward_tokens": compute.backward_tokens,
        "flops": compute.flops,
        "wall_seconds": compute.wall_seconds,
        "share_of_rl_flops": compute.flops / rl_flops if rl_flops else None,
        "changed_frac": weights.get("changed_frac"),
        "overlap": weights.get("overlap"),
        "random_overlap": weights.get("random_overlap"),
    }


def _rl_side(base: Path, rl_run: Path, out: Path, model_measure: Callable[[Path], FormatMeasure]) -> dict[str, Any]:
    from rldelta.diff import run_diff
    from rldelta.probes.rl_compute import run_compute
    from rldelta.train.runfiles import saved_steps, step_dir

    steps = saved_steps(rl_run)
    if not steps:
        raise SteeringError(f"{rl_run}: no saved checkpoint to compare with")
    final = step_dir(rl_run, steps[-1])
    diff = out / "rl" / "diff"
    totals = run_diff(base, final, diff, save_mask=True, rank=False)["totals"]
    return {
        "run": str(rl_run),
        "step": steps[-1],
        "compute": run_compute(rl_run),
        "measure": model_measure(final),
        "changed_frac": totals["changed_frac"],
        "changed": totals["changed"],
        "mask": diff,
    }


def steer_sweep(
    base: str | os.PathLike,
    fmt: str,
    out: str | os.PathLike,
    *,
    settings: SweepSettings | None = None,
    rl_run: str | os.PathLike | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Run every intervention of `settings` toward `fmt` on the mixture model `base`; with `rl_run` (a run folder
    trained from `base`), RL's share, compute and changed set beside them. Writes OUT/steering.json and
    OUT/steering.parquet and returns the JSON's content."""
    from rldelta.train.format_behaviour import test_problems
    from rldelta.train.generation import load_for_eval
    from rldelta.train.mixture import read_mixture

    s = settings or SweepSettings()
    base, out = Path(base), Path(out)
    record = read_mixture(base)
    if record is None:
        raise SteeringError(f"{base}: no mixture record (rldelta-mixture.json); steering needs its corpus")
    model, tok = load_for_eval(base, device="cpu")
    layer = len(model.model.layers) // 2 if s.layer is None else s.layer
    examples = test_problems(s.prompts, record["difficulties"], s.seed)
    kw = {"samples": s.samples, "seed": s.seed, "max_new_tokens": s.max_new_tokens}

    def measured(path: Path) -> FormatMeasure:
        m, t = load_for_eval(path, device="cpu")
        return measure(m, t, examples, fmt, **kw)

    log(f"baseline: {s.prompts} prompts x {s.samples} samples")
    baseline = measure(model, tok, examples, fmt, **kw)
    rl = None
    if rl_run is not None:
        log(f"RL run {rl_run}: compute, final checkpoint, changed set")
        rl = _rl_side(base, Path(rl_run), out, measured)
    sweep = _Sweep(model, tok, base, out, examples, fmt, record, layer, s, baseline, kw, log)
    results = [*sweep.prompts(), *sweep.activations(), *sweep.sfts(rl["mask"] if rl else None)]
    rows = _rows(results, baseline, rl)
    result = {
        "model": str(base),
        "format": fmt,
        "layer": layer,
        "settings": {**asdict(s), "prompt_steers": [asdict(p) for p in s.prompt_steers]},
        "baseline": baseline.as_dict(),
        "results": [r.as_dict() for r in results],
        "rl": None if rl is None else _rl_json(rl),
        "texts": [r.text for r in results],
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(rows, out / SWEEP_TABLE, schema=SWEEP_SCHEMA)
    atomic_write_json(out / SWEEP_JSON, result)
    return result


@dataclass
class _Sweep:
    """The interventions of one sweep, on one model toward one format, measured alike."""

    model: Any
    tok: Any
    base: Path
    out: Path
    examples: list
    fmt: str
    record: dict[str, Any]
    layer: int
    s: SweepSettings
    baseline: FormatMeasure
    kw: dict[str, Any]
    log: Callable[[str], None]

    def prompts(self) -> list[SteeringResult]:
        out = []
        for p in self.s.prompt_steers:
            self.log(f"prompt: {p.label()}")
            out.append(
                steer_prompt(self.model, self.tok, self.examples, self.fmt, p, baseline=self.baseline, **self.kw)
            )
        return out

    def activations(self) -> list[SteeringResult]:
        vector = estimate_vector(
            self.model, self.tok, self.fmt, self.record, layer=self.layer, documents=self.s.documents
        )
        out = []
        for alpha in self.s.alphas:
            self.log(f"activation: layer {self.layer}, alpha {alpha:g}")
            out.append(
                steer_activation(
                    self.model,
                    self.tok,
                    self.examples,
                    self.fmt,
                    self.record,
                    layer=self.layer,
                    alpha=alpha,
                    baseline=self.baseline,
                    vector=vector,
                    **self.kw,
                )
            )
        return out

    def sfts(self, rl_mask: Path | None) -> list[SteeringResult]:
        out = []
        for k in self.s.ks:
            self.log(f"sft: k={k}")
            out.append(
                steer_sft(
                    self.base,
                    self.out / f"sft-k{k}",
                    self.examples,
                    self.fmt,
                    k,
                    rl_mask=rl_mask,
                    baseline=self.baseline,
                    steps=self.s.sft_steps,
                    batch_size=self.s.sft_batch_size,
                    lr=self.s.sft_lr,
                    **self.kw,
                )
            )
        return out


def _rows(results: list[SteeringResult], baseline: FormatMeasure, rl: dict[str, Any] | None) -> list[dict]:
    """steering.parquet's rows: one per intervention setting, then RL's."""
    rl_flops = rl["compute"].flops if rl else None
    rows = [
        _row(
            r.method,
            _setting(r),
            r.steered,
            baseline,
            r.compute,
            rl_flops,
            changed_frac=r.changed_fraction,
            **({k: r.overlap[k] for k in ("overlap", "random_overlap")} if r.overlap else {}),
        )
        for r in results
    ]
    if rl is not None:
        setting = f"{rl['run']} step {rl['step']}"
        rows.append(
            _row("rl", setting, rl["measure"], baseline, rl["compute"], rl_flops, changed_frac=rl["changed_frac"])
        )
    return rows


def _rl_json(rl: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: rl[k] for k in ("run", "step", "changed_frac", "changed")},
        "compute": rl["compute"].as_dict(),
        "measure": rl["measure"].as_dict(),
        "mask": str(rl["mask"]),
    }


def best_interventions(rows: Sequence[dict[str, Any]], threshold: float = 0.5) -> list[dict[str, Any]]:
    """The sweep rows whose chosen-format share's interval lies above `threshold` (the format clearly wins a
    majority), cheapest first: the answer to "which intervention picks the winner at what share of RL's compute"."""
    wins = [r for r in rows if r["method"] != "rl" and r["share_low"] > threshold]
    return sorted(wins, key=lambda r: r["flops"])
