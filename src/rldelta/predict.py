"""`rldelta predict`: the bf16 changed fraction a run will leave, forecast from the base's weights and the optimizer
settings before it trains (the law: rldelta.metrics.law), per module kind, per layer, in total and per step.

Every entry's distances to its rounding edges are computed exactly from BASE. The drift's calibrated quantities
(μ, σ, β, μ_step and the active share q per module kind) come from the first K recorded steps of a run
(`calibrate(RUN, K)`: its steps.parquet) or, without one, from SWEEP_LAW: the values fitted on the validation sweep's
calibration run (benchmarks/law_sweep.py), which the output says. The interval is the spread of the predictions
under the leave-one-step-out refits of the calibration.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.optimize import least_squares

from rldelta.checkpoint import open_checkpoint
from rldelta.metrics.law import STORED, Cells, Law, active_share, changed_frac, step_frac
from rldelta.metrics.steps import patch_bytes
from rldelta.naming import parse_name
from rldelta.runtime.errors import RldeltaError
from rldelta.runtime.files import RUN_JSON, STEPS_FILE

SCHEDULES = ("constant", "linear", "cosine")
TOTAL = "total"

# Fitted by benchmarks/law_sweep.py on the first 5 steps of its calibration run (5m mixture model, GRPO, lr 1e-5),
# with the leave-one-step-out refits that give the interval; q is per module kind there, its median here.
SWEEP_LAW = {
    "source": "not calibrated on a run of this model: the values fitted on the validation sweep's calibration run "
    "(benchmarks/law_sweep.py: 5m mixture model, GRPO, lr 1e-5, first 5 steps)",
    "laws": [
        {"mu": mu, "sigma": sigma, "beta": beta, "mu_step": mu_step, "q": {"embed_tokens": 0.9427}, "default_q": 1.0}
        for mu, sigma, beta, mu_step in (
            (-0.2687, 1.0067, 0.5336, -0.5069),  # the fit on steps 1-5; then the leave-one-step-out refits
            (-0.3660, 1.1022, 0.5792, -0.5880),
            (-0.2917, 1.0682, 0.5378, -0.5531),
            (-0.2454, 0.9642, 0.5259, -0.4835),
            (-0.2047, 0.8922, 0.5126, -0.4144),
        )
    ],
}


class PredictError(RldeltaError):
    """Options or a run that the law cannot use; the message names the option, file or column."""


@dataclass
class Settings:
    lr: float
    steps: int
    schedule: str = "constant"
    warmup: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    stored: str = "bf16"

    def check(self) -> None:
        if not self.lr > 0:
            raise PredictError(f"--lr must be > 0, not {self.lr}")
        if self.steps < 1:
            raise PredictError(f"--steps must be >= 1, not {self.steps}")
        if self.schedule not in SCHEDULES:
            raise PredictError(f"--schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        if self.stored not in STORED:
            raise PredictError(f"--dtype must be one of {', '.join(STORED)}, not {self.stored!r}")
        if not 0 <= self.warmup < self.steps:
            raise PredictError(f"--warmup must be in [0, steps), not {self.warmup}")


def learning_rates(s: Settings) -> np.ndarray:
    """The lr of optimizer steps 1..T under transformers' schedules (warmup linear from 0, then the schedule)."""
    t = np.arange(s.steps, dtype=np.float64)  # the scheduler's step index when optimizer step t+1 runs
    warm = np.where(t < s.warmup, t / max(1, s.warmup), 1.0)
    progress = np.clip((t - s.warmup) / max(1, s.steps - s.warmup), 0, 1)
    decay = {"constant": np.ones_like(t), "linear": 1 - progress, "cosine": 0.5 * (1 + np.cos(math.pi * progress))}
    return s.lr * np.where(t < s.warmup, warm, decay[s.schedule])


@dataclass
class BaseCells:
    """The base's entries as exact rounding-cell histograms, per (layer, module kind)."""

    path: str
    stored: str
    groups: dict[tuple[int | None, str], Cells] = field(default_factory=dict)

    def by(self, key: str) -> dict[str, tuple[tuple[np.ndarray, ...], int]]:
        merged: dict[str, Cells] = {}
        for (layer, module), c in self.groups.items():
            name = module if key == "module" else ("none" if layer is None else str(layer))
            merged.setdefault(name, Cells()).merge(c)
        return {k: (c.arrays(), c.numel) for k, c in sorted(merged.items())}


def read_base(path: str | os.PathLike, stored: str = "bf16") -> BaseCells:
    """Every floating tensor of BASE reduced to its cells (one tensor in memory at a time)."""
    ck = open_checkpoint(path)
    out = BaseCells(str(path), stored)
    for name in ck.names():
        t = ck.get(name)
        if not t.is_floating_point() or t.element_size() < 2:
            continue
        out.groups.setdefault(parse_name(name), Cells()).add(t.to(torch.float32).numpy(), stored)
    if not out.groups:
        raise PredictError(f"{path}: no floating-point tensors to predict")
    return out


def _law(d: dict) -> Law:
    return Law(d["mu"], d["sigma"], d["beta"], d["mu_step"], dict(d.get("q", {})), d.get("default_q", 1.0))


def _curves(base: BaseCells, law: Law, s: Settings, lrs: np.ndarray, key: str) -> dict[str, dict]:
    out = {}
    for name, (arr, n) in base.by(key).items():
        q = law.q.get(name, law.default_q) if key == "module" else law.default_q
        out[name] = {
            "numel": n,
            "changed_frac": changed_frac(arr, n, law, q, lrs, s.steps, s.weight_decay),
            "per_step": [step_frac(arr, n, law, q, lrs, t, s.weight_decay, s.beta1) for t in range(1, s.steps + 1)],
            "curve": [changed_frac(arr, n, law, q, lrs, t, s.weight_decay) for t in range(1, s.steps + 1)],
        }
    return out


def _total(mods: dict[str, dict], s: Settings, key: str = "per_step") -> tuple[float, list[float]]:
    n = sum(m["numel"] for m in mods.values())
    f = sum(m["changed_frac"] * m["numel"] for m in mods.values()) / n
    per = [sum(m[key][t] * m["numel"] for m in mods.values()) / n for t in range(s.steps)]
    return f, per


def predict(base: BaseCells, s: Settings, calibration: dict | None = None) -> dict:
    """The prediction as one JSON-ready dict; `calibration` from `calibrate`, else SWEEP_LAW (and it says so)."""
    s.check()
    cal = calibration or SWEEP_LAW
    lrs = learning_rates(s)
    laws = [_law(d) for d in cal["laws"]]
    mods = _curves(base, laws[0], s, lrs, "module")
    layers = _curves(base, laws[0], s, lrs, "layer")
    f, per = _total(mods, s)
    curve = _total(mods, s, "curve")[1]
    spread = [_total(_curves(base, law, s, lrs, "module"), s)[0] for law in laws[1:]] or [f]
    n = sum(m["numel"] for m in mods.values())
    steps = [
        {
            "step": t + 1,
            "lr": float(lrs[t]),
            "changed_step_frac": p,
            "changed_base_frac": curve[t],
            **patch_bytes(round(p * n), n),
        }
        for t, p in enumerate(per)
    ]
    return {
        "base": base.path,
        "settings": asdict(s),
        "calibration": cal["source"],
        "law": asdict(laws[0]),
        "numel": n,
        "changed_frac": f,
        "interval": [min(spread + [f]), max(spread + [f])],
        "by_module": {k: {"numel": v["numel"], "changed_frac": v["changed_frac"]} for k, v in mods.items()},
        "by_layer": {k: {"numel": v["numel"], "changed_frac": v["changed_frac"]} for k, v in layers.items()},
        "per_step": steps,
    }


def _read_steps(run: Path, k: int) -> pd.DataFrame:
    path = run / STEPS_FILE
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise PredictError(f"{path}: cannot read the recorded steps ({e})") from None
    need = {"step", "module", "numel", "changed_base_frac", "changed_step_frac", "learning_rate"}
    if need - set(df.columns):
        raise PredictError(f"{path}: no column {sorted(need - set(df.columns))[0]!r}")
    df = df[df["step"] <= k]
    if df["step"].nunique() < min(k, 3):
        raise PredictError(f"{path}: {df['step'].nunique()} recorded steps, the calibration needs {min(k, 3)}")
    return df


def _fit(base: BaseCells, obs: pd.DataFrame, q: dict[str, float], lrs: np.ndarray) -> dict:
    """μ, σ, β from the changed-vs-base fractions of steps 2..K, then μ_step from the per-step fractions."""
    groups = base.by("module")
    rows = [r for r in obs.itertuples() if r.module in groups and r.step >= 2]
    if not rows:
        raise PredictError("the calibration needs steps 2 and later for the model's module kinds")

    def law(x) -> Law:
        return Law(x[0], math.exp(x[1]), x[2], x[3], q)

    def res(x, col: str, fn) -> np.ndarray:
        lw = law(x)
        out = []
        for r in rows:
            arr, n = groups[r.module]
            pred = fn(arr, n, lw, q[r.module], lrs, int(r.step))
            obs_v = getattr(r, col)
            out.append((pred - obs_v) / math.sqrt(obs_v * (1 - obs_v) + 1e-4) * math.sqrt(n / 1e4))
        return np.array(out)

    x0 = np.array([0.0, 0.0, 0.75, 0.0])
    fit = least_squares(
        lambda x: res(x, "changed_base_frac", changed_frac), x0, bounds=([-8, -3, 0.3, -8], [3, 2, 1.2, 3])
    )
    x = fit.x.copy()
    step = least_squares(lambda m: res(np.r_[x[:3], m], "changed_step_frac", step_frac), x[3:], bounds=([-12], [3]))
    x[3] = step.x[0]
    lw = law(x)
    return {
        "mu": lw.mu,
        "sigma": lw.sigma,
        "beta": lw.beta,
        "mu_step": lw.mu_step,
        "q": q,
        "default_q": float(np.median(list(q.values()))),
    }


def calibrate(run: str | os.PathLike, k: int, base: BaseCells | None = None) -> tuple[dict, BaseCells]:
    """The law fitted on the first K recorded steps of RUN (its steps.parquet and run.json's base and lr),
    with the leave-one-step-out refits; returns (calibration, the base's cells)."""
    import json

    run = Path(run)
    try:
        cfg = json.loads((run / RUN_JSON).read_text())["config"]
    except (OSError, ValueError, KeyError) as e:
        raise PredictError(f"{run / 'run.json'}: cannot read the run's config ({e})") from None
    if k < 3:
        raise PredictError(f"--calibrate-steps must be >= 3 (step 1 gives q, the later ones the drift), not {k}")
    obs = _read_steps(run, k)
    obs = obs[obs["module"] != TOTAL]
    if (
        base is None
    ):  # the run's model as it was given to `rldelta train` (relative to where it ran, or to RUN's folder)
        model = Path(cfg["model"])
        base = read_base(model if model.exists() or model.is_absolute() else run.parent / model)
    lrs = np.array(sorted(obs.groupby("step")["learning_rate"].first().to_dict().items()))[:, 1]
    groups = base.by("module")
    first = obs[obs["step"] == 1].set_index("module")["changed_base_frac"]
    q = {m: active_share(arr, n, float(lrs[0]), float(first.get(m, 0.0))) for m, (arr, n) in groups.items()}
    laws = [_fit(base, obs, q, lrs)]
    for drop in sorted(obs["step"].unique()):
        if drop >= 2 and obs["step"].nunique() > 3:
            laws.append(_fit(base, obs[obs["step"] != drop], q, lrs))
    source = f"calibrated on the first {k} recorded steps of {run}"
    return {"source": source, "laws": laws, "run": str(run), "k": k, "lr": float(lrs[0])}, base


__all__ = [
    "SCHEDULES",
    "SWEEP_LAW",
    "BaseCells",
    "PredictError",
    "Settings",
    "calibrate",
    "learning_rates",
    "predict",
    "read_base",
]
