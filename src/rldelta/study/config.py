"""A study's configuration: `StudyConfig` (the schema: every key, its type, range and help text) and its loading.

The whole config is checked when it is built, before anything runs: types from the dataclasses' annotations
(schema.py), ranges and choices from their fields' metadata, the [train] table against TrainConfig's fields, the
[formats] table against FormatsConfig's. Every problem is one StudyError naming the file, the key and the value.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import Field, asdict, dataclass, field
from pathlib import Path
from typing import Any

from rldelta.runtime.errors import RldeltaError
from rldelta.study.config_checks import StudyError, check_fields, check_train_table
from rldelta.study.config_checks import config_fields as _config_fields
from rldelta.study.config_checks import field_help as _help
from rldelta.study.formats_config import formats_settings, formats_train_config
from rldelta.train.algorithms import ALGOS, GRPO_FAMILY
from rldelta.train.config import PRECISIONS, ConfigError, TrainConfig
from rldelta.train.models import TINY_BUILDERS
from rldelta.train.tasks import get_task

PRESETS_DIR = Path(__file__).parent.parent / "presets"
PRESETS = ("tiny", "demo", "full", "formats")
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
        check_fields(self, StudyConfig, src, "")
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
        check_train_table(self.train, STUDY_OWNED, StudyConfig, src, "")
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


def config_fields(cls: type | None = None) -> list[Field]:
    """The fields of `cls` (default StudyConfig) a config file may set (not `source`)."""
    return _config_fields(cls or StudyConfig)


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
