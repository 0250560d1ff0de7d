"""A study's configuration: `StudyConfig` (the schema: every key, its type, range and help text) and its loading.

The whole config is checked when it is built, before anything runs: types from the dataclasses' annotations
(schema.py), ranges and choices from their fields' metadata, the [train] table against TrainConfig's fields, the
[formats] table against FormatsConfig's. Every problem is one StudyError naming the file, the key and the value.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import Field, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from rldelta.runtime.errors import RldeltaError
from rldelta.study.schema import type_problem
from rldelta.train.algorithms import ALGOS, GRPO_FAMILY
from rldelta.train.config import PRECISIONS, ConfigError, TrainConfig
from rldelta.train.corpus import MixtureError, parse_noise, parse_proportions
from rldelta.train.models import TINY_BUILDERS
from rldelta.train.sizes import SIZES
from rldelta.train.tasks import get_task

PRESETS_DIR = Path(__file__).parent.parent / "presets"
PRESETS = ("tiny", "demo", "full")
TINY_MODELS = tuple(TINY_BUILDERS)  # built in code from model_seed
BUILTIN_MODELS = (*TINY_MODELS, "smollm2-135m")
PROBES = ("logprobs", "activations", "formats")
PAIRED_SCORES = ("ref_logprob", "pass_rate", "correct")

# TrainConfig fields the study sets itself; the [train] table may set every other one.
STUDY_OWNED = {
    "model",
    "output",
    "task",
    "algo",
    "seed",
    "precision",
    "steps",
    "save_steps",
    "mask",
    "difficulty",
    "advantages",
    "resume",
    "progress",
}
# TrainConfig fields the format-selection probe sets itself for its GRPO runs; [formats.train] may set the others.
FORMATS_OWNED = {"model", "output", "task", "algo", "seed", "steps", "difficulty", "rewards", "progress"}


class StudyError(RldeltaError):
    """A study that cannot run as configured; the message names the file and key."""


def _help(text: str, **checks: Any) -> dict[str, Any]:
    """A field's metadata: its help text, the checks beyond its type (min, choices, distinct), and key=False for a
    field that is not a config key."""
    return {"help": text, **checks}


@dataclass
class FormatsConfig:
    """The [formats] table: the pretrain-mixture models and the RL run from each (issue 7, probe 2)."""

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
    difficulty: int = field(default=2, metadata=_help("arith level of the RL prompts"))
    steps: int = field(default=50, metadata=_help("GRPO steps from each mixture model", min=1))
    train: dict[str, Any] = field(
        default_factory=lambda: {"lr": 1e-4, "prompts_per_step": 4, "num_generations": 8, "max_completion_length": 24},
        metadata=_help("TrainConfig settings of those GRPO runs (each key replaces the default's)"),
    )


@dataclass
class StudyConfig:
    """Everything a study depends on: the grid, the measurements, the probes (a TOML file's top-level keys)."""

    model: str = field(
        default="tiny",
        metadata=_help(
            '"tiny" (a random tiny Llama built in code), "tiny-moe" (a random tiny mixture-of-experts Qwen2-MoE built '
            'in code), "smollm2-135m" (prepared once) or a model folder'
        ),
    )
    model_seed: int = field(default=0, metadata=_help("seed of the tiny model's (and the mixture models') init"))
    task: str = field(default="arith", metadata=_help("the RL task (rldelta.train.tasks): arith, countdown, digits"))
    difficulty: int | None = field(
        default=None, metadata=_help("train and evaluate on this difficulty level only; None: all levels mixed")
    )
    algorithms: list[str] = field(
        default_factory=lambda: ["grpo"],
        metadata=_help(
            "`rldelta train --algo` values of the grid; the first one's first seed is seed 1",
            choices=ALGOS,
            distinct=True,
        ),
    )
    seeds: list[int] = field(
        default_factory=lambda: [0, 1], metadata=_help("one run per seed (seed overlap needs two)", distinct=True)
    )
    precisions: list[str] = field(
        default_factory=lambda: ["fp32"],
        metadata=_help(
            "training precisions of the grid: fp32 (fp32 master, bf16 checkpoints) and/or bf16",
            choices=PRECISIONS,
            distinct=True,
        ),
    )
    steps: int = field(default=20, metadata=_help("optimizer steps per run", min=1))
    save_steps: str = field(
        default="every:10", metadata=_help('checkpoints for the dynamics: "5,10,20" or "every:K" (last always saved)')
    )
    eval_n: int = field(default=100, metadata=_help("test problems per greedy evaluation", min=1))
    eval_max_new_tokens: int = field(default=32, metadata=_help("generation limit in evaluation", min=1))
    eval_batch_size: int = field(default=16, metadata=_help("prompts per generation batch in evaluation", min=1))
    eval_seed: int = field(default=0, metadata=_help("seed of the test problems (the same for every model)"))
    eval_pass_k: int = field(
        default=0,
        metadata=_help("completions sampled at temperature 1 per test problem for its pass rate; 0: none", min=0),
    )
    paired_score: str = field(
        default="ref_logprob",
        metadata=_help(
            "the per-problem score the surgery and retrain verdicts compare models on, paired by problem: "
            "ref_logprob (teacher-forced log p of the reference answer), pass_rate (needs eval_pass_k > 0) or "
            "correct (greedy 0/1)",
            choices=PAIRED_SCORES,
        ),
    )
    atol: float = field(default=1e-5, metadata=_help("|Δ| threshold of the published study's 'changed'", min=0))
    rank_samples: int = field(default=1, metadata=_help("random sparse matrices per tensor in the rank null", min=1))
    controls: int = field(default=1, metadata=_help("random-mask control seeds per surgery", min=0))
    retrain: bool = field(default=True, metadata=_help("subnetwork-only retraining with the first run's mask"))
    cause: bool = field(
        default=False,
        metadata=_help(
            "the cause analysis (arXiv:2505.11711): SFT on the base's own correct samples vs the same answers in a "
            "foreign style, and the first run again with KL (cause_beta); needs a GRPO-family first algorithm"
        ),
    )
    cause_beta: float = field(
        default=0.04, metadata=_help("KL coefficient of the cause analysis's RL run; 0: no KL arm", min=0)
    )
    cause_steps: int | None = field(
        default=None, metadata=_help("optimizer steps of the cause analysis's runs; None: steps", min=1)
    )
    keep_surgery_models: bool = field(
        default=False, metadata=_help("keep the patched/reverted model folders after they were evaluated")
    )
    # Mechanism probes (rldelta probe ...), run on the first run of the grid.
    probes: list[str] = field(
        default_factory=lambda: list(PROBES),
        metadata=_help("mechanism probes run on the first run of the grid", choices=PROBES),
    )
    advantage_runs: bool = field(
        default=True,
        metadata=_help("train the first run again with --advantages positive and negative (logprobs probe)"),
    )
    probe_prompts: int = field(default=16, metadata=_help("held-out prompts of the log-prob probe set", min=1))
    probe_samples: int = field(default=8, metadata=_help("base-model completions sampled per probe prompt", min=1))
    probe_eval_prompts: int = field(
        default=32, metadata=_help("test prompts for accuracy and pass@k of the advantage-split runs", min=1)
    )
    activation_prompts: int = field(
        default=32, metadata=_help("test prompts per difficulty level of the activation probe", min=1)
    )
    formats: dict[str, Any] = field(
        default_factory=dict, metadata=_help("[formats]: the pretrain-mixture models and their RL runs (FormatsConfig)")
    )
    threads: int = field(
        default=0, metadata=_help("torch threads for the work done in this process (0 = torch's default)", min=0)
    )
    train: dict[str, Any] = field(
        default_factory=dict, metadata=_help("[train]: any other TrainConfig setting (lr, prompts_per_step, ...)")
    )
    source: str = field(
        default="<config>", metadata=_help("where the config came from (file or preset), for messages", key=False)
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        src = self.source
        _check_fields(self, StudyConfig, src, "")
        try:  # checked even when the formats probe is off: a table that is there must be right
            formats_train_config(formats_settings(self), model="", seed=self.seeds[0])
        except ConfigError as e:
            raise StudyError(f"{src}: formats: {e}") from None
        if "logprobs" in self.probes and self.advantage_runs and self.algorithms[0] not in GRPO_FAMILY:
            raise StudyError(
                f"{src}: advantage_runs needs a GRPO-family first algorithm ({', '.join(GRPO_FAMILY)}), "
                f"not {self.algorithms[0]}; set advantage_runs = false"
            )
        if self.cause and (self.algorithms[0] not in GRPO_FAMILY or self.train.get("beta")):
            raise StudyError(
                f"{src}: cause needs a GRPO-family first algorithm without KL ({', '.join(GRPO_FAMILY)}, "
                "[train] beta unset or 0): it is the analysis's RL run without KL"
            )
        if self.paired_score == "pass_rate" and not self.eval_pass_k:
            raise StudyError(f"{src}: paired_score = 'pass_rate' needs eval_pass_k > 0 (the samples per problem)")
        _check_train_table(self.train, STUDY_OWNED, StudyConfig, src, "")
        try:
            task = get_task(self.task)
        except RldeltaError as e:
            raise StudyError(f"{src}: task: {e}") from None
        if self.difficulty is not None and self.difficulty not in task.difficulties:
            raise StudyError(
                f"{src}: difficulty must be one of {list(task.difficulties)} for task {self.task}, "
                f"got {self.difficulty!r}"
            )
        # Every run's TrainConfig must be valid before anything trains (a bad lr fails here, not after an hour).
        for algo in self.algorithms:
            for precision in self.precisions:
                try:
                    self.train_config(Path("."), algo, self.seeds[0], precision)
                except ConfigError as e:
                    raise StudyError(f"{src}: {algo}/{precision}: {e}") from None

    def train_config(
        self,
        model: Path,
        algo: str,
        seed: int,
        precision: str,
        *,
        mask: str | None = None,
        output: str = "",
        advantages: str = "all",
        overrides: dict[str, Any] | None = None,
    ) -> TrainConfig:
        settings = {
            "model": str(model),
            "output": output,
            "task": self.task,
            "algo": algo,
            "seed": seed,
            "precision": precision,
            "steps": self.steps,
            "save_steps": self.save_steps,
            "mask": mask,
            "difficulty": self.difficulty,
            "advantages": advantages,
            "progress": False,
            **self.train,
        }
        # overrides: the cause analysis's runs differ from the grid in these settings only (steps, beta, style).
        return TrainConfig(**{**settings, **(overrides or {})})

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        return d


def config_fields(cls: type = StudyConfig) -> list[Field]:
    """The fields of `cls` a config file may set (not `source`, which says where the config came from)."""
    return [f for f in fields(cls) if f.metadata.get("key", True)]


def _check_fields(obj: Any, cls: type, src: str, prefix: str) -> None:
    """Each config field of `obj` against its annotation in `cls`, then its metadata's min, choices, distinct."""
    types = get_type_hints(cls)
    for f in config_fields(cls):
        value, key = getattr(obj, f.name), prefix + f.name
        problem = type_problem(key, value, types[f.name])
        if problem:
            raise StudyError(f"{src}: {problem}")
        lo = f.metadata.get("min")
        if lo is not None and value is not None and value < lo:
            raise StudyError(f"{src}: {key} must be >= {lo}, got {value}")
        choices = f.metadata.get("choices")
        listed = [value] if isinstance(value, str) else value
        bad = [v for v in listed if v not in choices] if choices else []
        if bad:
            noun = f.name.removesuffix("s")
            raise StudyError(f"{src}: {key}: unknown {noun} {bad[0]!r}; choose from {', '.join(choices)}")
        if f.metadata.get("distinct"):
            if not value:
                raise StudyError(f"{src}: {key} must list at least one value")
            if len(set(value)) != len(value):
                raise StudyError(f"{src}: {key} lists a value twice: {value}")


def _check_train_table(table: dict[str, Any], owned: set[str], parent: type, src: str, prefix: str) -> None:
    """The [train] table of `parent` (a config class; its keys are `prefix`...): TrainConfig settings that are not
    `owned` by the study, each of its TrainConfig field's type."""
    types = get_type_hints(TrainConfig)
    known = set(types) - owned
    for key, value in table.items():
        name = f"{prefix}train.{key}"
        if key in owned:
            instead = f"use {prefix}{key}" if key in {f.name for f in config_fields(parent)} else "it cannot be given"
            raise StudyError(f"{src}: {name} is set by the study itself ({instead})")
        if key not in known:
            raise StudyError(f"{src}: unknown key {name}; known: {', '.join(sorted(known))}")
        problem = type_problem(name, value, types[key])
        if problem:
            raise StudyError(f"{src}: {problem}")


def formats_settings(cfg: StudyConfig) -> dict[str, Any]:
    """The [formats] table checked and completed with FormatsConfig's defaults ([formats.train] key by key)."""
    src = cfg.source
    known = [f.name for f in fields(FormatsConfig)]
    unknown = sorted(set(cfg.formats) - set(known))
    if unknown:
        raise StudyError(f"{src}: unknown key formats.{unknown[0]}; known: {', '.join(known)}")
    _check_fields(FormatsConfig(**cfg.formats), FormatsConfig, src, "formats.")
    _check_formats_values(cfg.formats, src)
    defaults = asdict(FormatsConfig())
    merged = {**defaults, **cfg.formats, "train": {**defaults["train"], **cfg.formats.get("train", {})}}
    _check_train_table(merged["train"], FORMATS_OWNED, FormatsConfig, src, "formats.")
    return merged


def _check_formats_values(table: dict[str, Any], src: str) -> None:
    """The [formats] values the field metadata cannot state: levels of the mixarith task, shares of the formats."""
    levels = list(get_task("mixarith").difficulties)
    if "difficulty" in table and table["difficulty"] not in levels:
        raise StudyError(f"{src}: formats.difficulty must be one of {levels}, got {table['difficulty']!r}")
    if "difficulties" in table and (not table["difficulties"] or set(table["difficulties"]) - set(levels)):
        raise StudyError(f"{src}: formats.difficulties must be some of {levels}, got {table['difficulties']!r}")
    if table.get("max_minutes") is not None and not table["max_minutes"] > 0:
        raise StudyError(f"{src}: formats.max_minutes must be > 0 (or left out), got {table['max_minutes']!r}")
    for key, parse in (("proportions", parse_proportions), ("noise", parse_noise)):
        if table.get(key) is not None:
            try:
                parse(table[key])
            except MixtureError as e:
                raise StudyError(f"{src}: formats.{e}") from None


def formats_train_config(f: dict[str, Any], *, model: str, seed: int) -> TrainConfig:
    """The TrainConfig of the format-selection probe's GRPO run from one mixture model (`f`: formats_settings)."""
    return TrainConfig(
        model=model,
        output="",
        task="mixarith",
        algo="grpo",
        seed=seed,
        steps=f["steps"],
        difficulty=f["difficulty"],
        rewards="correctness",
        progress=False,
        **f["train"],
    )


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """A StudyConfig from a TOML file: top-level keys as in StudyConfig, other TrainConfig settings under [train];
    `overrides` replace top-level keys (`rldelta study --model`)."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise StudyError(f"{p}: no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise StudyError(f"{p}: not valid TOML ({e})") from None
    return config_from_dict({**data, **(overrides or {})}, source=str(p))


def config_from_dict(data: dict[str, Any], *, source: str = "<config>") -> StudyConfig:
    """A StudyConfig from a dict of config keys (a parsed TOML file); `source` names it in every message."""
    known = {f.name for f in config_fields()}
    for key in data:
        if key not in known:
            raise StudyError(f"{source}: unknown key {key!r}; known: {', '.join(sorted(known))}")
    return StudyConfig(**data, source=source)


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise StudyError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS_DIR / f"{name}.toml"
