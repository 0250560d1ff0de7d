"""The [formats] table of a study (FormatsConfig): the format-selection stage's mixture models, RL runs and
steering sweeps (study/selection.py), and the settings each of them is built from."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rldelta.study.config_checks import StudyError, check_fields, check_train_table
from rldelta.study.config_checks import field_help as _help
from rldelta.train.algorithms import ALGORITHMS, ALGOS
from rldelta.train.config import TrainConfig
from rldelta.train.corpus import MixtureError, parse_noise, parse_proportions
from rldelta.train.sizes import SIZES
from rldelta.train.tasks import get_task

# The format-selection runs' algorithms: online ones whose sampled completions are classified and counted.
SELECTION_ALGOS = tuple(a for a in ALGOS if ALGORITHMS[a].family in ("grpo", "rloo", "ppo", "prime"))
# TrainConfig fields the format-selection probe sets itself for its GRPO runs; [formats.train] may set the others.
FORMATS_OWNED = {"model", "output", "task", "algo", "seed", "steps", "difficulty", "rewards", "progress"}


@dataclass
class FormatsConfig:
    """The [formats] table: the pretrain-mixture models, the RL runs from each, and the steering sweeps."""

    sizes: list[str] = field(
        default_factory=lambda: ["5m", "30m"],
        metadata=_help("train.mixture.SIZES to pretrain", choices=tuple(SIZES), distinct=True),
    )
    pretrain_steps: int | None = field(
        default=None,
        metadata=_help("pretraining steps, the budget; None: the size's default (about 15 minutes on 2 cores)", min=1),
    )
    max_minutes: float | None = field(
        default=None,
        metadata=_help(
            "a safety stop, never a budget: pretraining that runs longer fails, naming the step it reached; None: no limit"
        ),
    )  # > 0: checked in _check_formats_values
    proportions: dict[str, float] | None = field(
        default=None, metadata=_help("format -> share of the corpus; None: train.mixture.DEFAULT_PROPORTIONS")
    )
    noise: dict[str, float] | None = field(
        default=None, metadata=_help("format -> share of wrong answers; None: train.mixture.DEFAULT_NOISE")
    )
    difficulties: list[int] = field(default_factory=lambda: [1, 2], metadata=_help("arith levels of the corpus"))
    batch_size: int = field(default=32, metadata=_help("pretraining batch size", min=1))
    eval_prompts: int = field(
        default=64, metadata=_help("test prompts for each format's share after pretraining", min=1)
    )
    plateau: bool = field(
        default=False,
        metadata=_help(
            "pretrain until the loss curve plateaus (train/plateau_budget.py: constant rate, then a short decay); "
            "pretrain_steps is then the cap"
        ),
    )
    difficulty: int = field(default=2, metadata=_help("arith level of the RL prompts"))
    algorithms: list[str] = field(
        default_factory=lambda: ["grpo"],
        metadata=_help(
            "RL algorithms run from each mixture model (online ones that sample)",
            choices=SELECTION_ALGOS,
            distinct=True,
        ),
    )
    seeds: list[int] | None = field(
        default=None,
        metadata=_help(
            "RL seeds from each mixture model; None: the study's first seed; steering is set against the first"
        ),
    )
    steps: int = field(default=50, metadata=_help("RL steps from each mixture model", min=1))
    epochs: float | None = field(
        default=None,
        metadata=_help("RL length in passes over the train_size prompts (replaces steps); None: steps", min=0.01),
    )
    train: dict[str, Any] = field(
        default_factory=lambda: {"lr": 1e-4, "prompts_per_step": 4, "num_generations": 8, "max_completion_length": 24},
        metadata=_help("TrainConfig settings of those RL runs (each key replaces the default's)"),
    )
    steer: bool = field(
        default=False,
        metadata=_help(
            "steer each mixture model without RL (prompt, activation vector, SFT on k examples) toward the GRPO run's "
            "winner and toward the most frequent pretraining format it did not pick, set against that run"
        ),
    )
    steering: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help(
            "probes.steering_sweep.SweepSettings values of those sweeps (prompts, samples, ks, alphas, ...)"
        ),
    )


def formats_settings(cfg) -> dict[str, Any]:
    """The [formats] table checked and completed with FormatsConfig's defaults ([formats.train] key by key)."""
    src = cfg.source
    known = [f.name for f in fields(FormatsConfig)]
    unknown = sorted(set(cfg.formats) - set(known))
    if unknown:
        raise StudyError(f"{src}: unknown key formats.{unknown[0]}; known: {', '.join(known)}")
    check_fields(FormatsConfig(**cfg.formats), FormatsConfig, src, "formats.")
    _check_formats_values(cfg.formats, src)
    defaults = asdict(FormatsConfig())
    merged = {**defaults, **cfg.formats, "train": {**defaults["train"], **cfg.formats.get("train", {})}}
    check_train_table(merged["train"], FORMATS_OWNED, FormatsConfig, src, "formats.")
    _check_steering(merged["steering"], src)
    if merged["steer"] and "grpo" not in merged["algorithms"]:
        raise StudyError(f"{src}: formats.steer compares steering with a GRPO run: add grpo to formats.algorithms")
    return merged


def _check_steering(table: dict[str, Any], src: str) -> None:
    """[formats.steering]: SweepSettings' fields (its prompt interventions stay its own)."""
    from rldelta.probes.steering import SteeringError
    from rldelta.probes.steering_sweep import SweepSettings

    known = sorted({f.name for f in fields(SweepSettings)} - {"prompt_steers", "extra"})
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise StudyError(f"{src}: unknown key formats.steering.{unknown[0]}; known: {', '.join(known)}")
    try:
        sweep_settings(table)
    except SteeringError as e:
        raise StudyError(f"{src}: formats.steering: {e}") from None


def _check_formats_values(table: dict[str, Any], src: str) -> None:
    """The [formats] values the field metadata cannot state: levels of the mixarith task, shares of the formats."""
    levels = list(get_task("mixarith").difficulties)
    if "difficulty" in table and table["difficulty"] not in levels:
        raise StudyError(f"{src}: formats.difficulty must be one of {levels}, got {table['difficulty']!r}")
    if "difficulties" in table and (not table["difficulties"] or set(table["difficulties"]) - set(levels)):
        raise StudyError(f"{src}: formats.difficulties must be some of {levels}, got {table['difficulties']!r}")
    seeds = table.get("seeds")
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise StudyError(f"{src}: formats.seeds must list distinct seeds (or be left out), got {seeds!r}")
    if table.get("max_minutes") is not None and not table["max_minutes"] > 0:
        raise StudyError(f"{src}: formats.max_minutes must be > 0 (or left out), got {table['max_minutes']!r}")
    for key, parse in (("proportions", parse_proportions), ("noise", parse_noise)):
        if table.get(key) is not None:
            try:
                parse(table[key])
            except MixtureError as e:
                raise StudyError(f"{src}: formats.{e}") from None


def formats_train_config(f: dict[str, Any], *, model: str, seed: int, algo: str = "grpo") -> TrainConfig:
    """The TrainConfig of a format-selection RL run from one mixture model (`f`: formats_settings): `steps`, or
    `epochs` passes over the train_size prompts."""
    return TrainConfig(
        model=model,
        output="",
        task="mixarith",
        algo=algo,
        seed=seed,
        steps=formats_rl_steps(f),
        difficulty=f["difficulty"],
        rewards="correctness",
        progress=False,
        **f["train"],
    )


def sweep_settings(table: dict[str, Any], **extra: Any):
    """The SweepSettings of a [formats.steering] table (TOML lists as tuples)."""
    from rldelta.probes.steering_sweep import SweepSettings

    return SweepSettings(**{**{k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}, **extra})


def formats_rl_steps(f: dict[str, Any]) -> int:
    """The RL steps of the format-selection runs: `steps`, or `epochs` x train_size / prompts_per_step rounded up."""
    if f["epochs"] is None:
        return f["steps"]
    t = TrainConfig(
        model="", output="", **{k: v for k, v in f["train"].items() if k in ("train_size", "prompts_per_step")}
    )
    return max(1, math.ceil(f["epochs"] * t.train_size / t.prompts_per_step))
