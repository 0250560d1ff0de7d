"""`TrainConfig`: everything one `rldelta train` run depends on, in one dataclass (stored whole in RUN/run.json).

Defaults suit the tiny test model on a CPU; real runs (scripts/smollm2_grpo.py) override lr, sizes and steps.
"""

from __future__ import annotations

import math
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from rldelta.runtime.errors import RldeltaError
from rldelta.train.algorithms import ALGORITHMS, ALGOS, GRPO_FAMILY
from rldelta.train.tasks import TASKS

__all__ = [
    "ADVANTAGES",
    "PRECISIONS",
    "REWARDS",
    "ConfigError",
    "TrainConfig",
    "help_of",
    "make_config",
    "parse_save_steps",
]

PRECISIONS = ("fp32", "bf16")
ADVANTAGES = ("all", "positive", "negative")
SFT_STYLES = ("own", "foreign")
REWARDS = ("correctness", "format")


class ConfigError(RldeltaError):
    """A training setting that cannot work, named in the message."""


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class TrainConfig:
    model: str = field(metadata=_help("Base model folder (config.json, safetensors, tokenizer with chat template)."))
    output: str = field(metadata=_help("Run directory (checkpoints, metrics.parquet, run.json)."))
    task: str = field(default="arith", metadata=_help(f"Task: {', '.join(sorted(TASKS))}."))
    algo: str = field(default="grpo", metadata=_help(f"Training algorithm: {', '.join(ALGOS)}."))
    seed: int = field(default=0, metadata=_help("Seed of sampling, data order, dropout: everything random in the run."))
    # Kept apart from `seed` so runs with different seeds see the same data.
    data_seed: int = field(default=0, metadata=_help("Seed of the training problems."))
    steps: int = field(default=20, metadata=_help("Optimizer steps."))
    lr: float = field(default=1e-5, metadata=_help("Learning rate."))
    lr_scheduler: str = field(default="constant", metadata=_help("Learning-rate schedule (a transformers name)."))
    warmup_steps: int = field(default=0, metadata=_help("Learning-rate warmup steps."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm."))
    adam_beta1: float = field(default=0.9, metadata=_help("AdamW beta1."))
    adam_beta2: float = field(default=0.999, metadata=_help("AdamW beta2."))
    prompts_per_step: int = field(
        default=4, metadata=_help("Distinct prompts per optimizer step (offline algorithms: pairs or examples).")
    )
    num_generations: int = field(
        default=4, metadata=_help("Completions per prompt (GRPO family, RLOO); online_dpo always uses 2.")
    )
    max_completion_length: int = field(default=32, metadata=_help("Tokens per completion."))
    temperature: float = field(default=1.0, metadata=_help("Sampling temperature."))
    # None below = the algorithm's own default (algorithms.ALGORITHMS, else TRL's).
    beta: float | None = field(
        default=None,
        metadata=_help("KL coefficient (GRPO family, RLOO) or preference beta (DPO-like); default the algorithm's."),
    )
    epsilon: float | None = field(
        default=None, metadata=_help("Clip range (GRPO family, RLOO); default the algorithm's.")
    )
    epsilon_high: float | None = field(
        default=None, metadata=_help("Upper clip range (GRPO family, RLOO); default the algorithm's.")
    )
    ppo_epochs: int | None = field(
        default=None,
        metadata=_help("ppo, prime: optimizer steps per rollout batch (PPO epochs); default the algorithm's (2, 1)."),
    )
    value_lr: float | None = field(default=None, metadata=_help("ppo: the value model's learning rate; default --lr."))
    reward_model_lr: float | None = field(
        default=None, metadata=_help("prime: the implicit reward model's learning rate; default --lr.")
    )
    gae_gamma: float = field(default=1.0, metadata=_help("ppo: GAE discount gamma."))
    gae_lambda: float = field(default=0.95, metadata=_help("ppo: GAE lambda."))
    precision: str = field(default="fp32", metadata=_help("fp32 (fp32 master + bf16 copies) or bf16."))
    save_steps: str = field(default="", metadata=_help("Steps saved: '10,20,40' or 'every:10'; the last step always."))
    advantages: str = field(
        default="all", metadata=_help("Samples learned from: all, positive or negative advantage (GRPO family).")
    )
    # A format reward is easy to earn: with both, GRPO on SmolLM2 learned to answer with the prompt's own example
    # (<answer>7</answer>) and accuracy fell 0.64 -> 0.17.
    rewards: str = field(
        default="correctness,format",
        metadata=_help("Task rewards the online algorithms sum: correctness,format or one of them."),
    )
    mask: str | None = field(
        default=None,
        metadata=_help("mask.safetensors (or a diff dir holding one): train only these entries, exactly."),
    )
    difficulty: int | None = field(default=None, metadata=_help("Only this difficulty level (default: all, mixed)."))
    # Fixed (not derived from `steps`) so a longer or resumed run sees the same data in the same order.
    train_size: int = field(
        default=1024,
        metadata=_help(
            "Problems in the training set; offline algorithms build their data from the first "
            "steps x prompts_per_step of them."
        ),
    )
    offline_samples: int = field(
        default=4,
        metadata=_help("Offline algorithms: completions sampled from the base model per prompt (pairs, SFT targets)."),
    )
    offline_gold_fallback: bool = field(
        default=True,
        metadata=_help("Offline algorithms: a prompt without a correct sample uses the task's reference completion."),
    )
    sft_style: str = field(
        default="own",
        metadata=_help(
            "sft: 'own' trains on the correct completions as sampled (in-distribution); 'foreign' on the same "
            "completions framed in a style the base model does not produce (out-of-distribution)."
        ),
    )
    resume: bool = field(
        default=False, metadata=_help("Continue the run in the output folder from its last saved step.")
    )
    progress: bool = field(default=True, metadata=_help("Show a progress display while training."))
    record_steps: bool = field(
        default=True,
        metadata=_help(
            "Record every optimizer step's change set of the bf16 weights (RUN/steps.parquet, train.step_recorder)."
        ),
    )
    record_patches: bool = field(
        default=False,
        metadata=_help(
            "With the step recorder: also write each step's change as a sparse patch (RUN/steps/patches/step-N."
            "safetensors; `rldelta steps apply` rebuilds any step's bf16 weights from them)."
        ),
    )
    extra: dict[str, Any] = field(
        default_factory=dict, metadata=_help("Passed to the TRL config as-is (expert escape hatch).")
    )

    def __post_init__(self) -> None:
        self.validate()

    @property
    def reward_list(self) -> list[str]:
        return [r.strip() for r in self.rewards.split(",") if r.strip()]

    def validate(self) -> None:  # noqa: C901
        if self.algo not in ALGORITHMS:
            raise ConfigError(f"unknown --algo {self.algo!r}; choose from {', '.join(ALGOS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        chosen = self.reward_list
        if not chosen or any(r not in REWARDS for r in chosen) or len(set(chosen)) != len(chosen):
            raise ConfigError(
                f"--rewards must name some of {', '.join(REWARDS)} (comma-separated), not {self.rewards!r}"
            )
        if self.sft_style not in SFT_STYLES:
            raise ConfigError(f"--sft-style must be one of {', '.join(SFT_STYLES)}, not {self.sft_style!r}")
        if self.advantages not in ADVANTAGES:
            raise ConfigError(f"--advantages must be one of {', '.join(ADVANTAGES)}, not {self.advantages!r}")
        if self.advantages != "all" and ALGORITHMS[self.algo].family != "grpo":
            raise ConfigError(
                f"--advantages {self.advantages} needs an algorithm of the GRPO family "
                f"({', '.join(GRPO_FAMILY)}), not {self.algo}"
            )
        for name in ("steps", "prompts_per_step", "max_completion_length", "offline_samples", "train_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if ALGORITHMS[self.algo].groups and self.num_generations < 2:
            raise ConfigError(f"--num-generations must be >= 2 for {self.algo} (advantages compare completions)")
        for f in fields(self):  # NaN passes every comparison below, and an infinite setting trains to NaN
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        self._validate_actor_critic()
        parse_save_steps(self.save_steps, self.steps)

    def _validate_actor_critic(self) -> None:
        if self.ppo_epochs is not None and self.ppo_epochs < 1:
            raise ConfigError(f"--ppo-epochs must be >= 1, got {self.ppo_epochs}")
        for name in ("value_lr", "reward_model_lr"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}")
        if not (0 <= self.gae_gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ConfigError(
                f"--gae-gamma and --gae-lambda must lie in [0, 1], got {self.gae_gamma}, {self.gae_lambda}"
            )
        if self.algo == "prime" and self.beta is not None and self.beta <= 0:
            raise ConfigError(f"--beta must be > 0 for prime (the implicit reward's scale), got {self.beta}")

    @property
    def save_step_list(self) -> list[int]:
        return parse_save_steps(self.save_steps, self.steps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**data)


def parse_save_steps(spec: str | None, steps: int) -> list[int]:
    """'10,20,40' or 'every:10' (or '' for only the last) -> sorted steps within 1..steps, always ending at `steps`."""
    spec = (spec or "").strip()
    out: set[int] = {steps}
    if spec:
        m = re.fullmatch(r"every:(\d+)", spec)
        if m:
            k = int(m.group(1))
            if k < 1:
                raise ConfigError(f"--save-steps every:K needs K >= 1, got {spec!r}")
            out.update(range(k, steps + 1, k))
        else:
            for part in spec.split(","):
                part = part.strip()
                if not part.isdigit() or int(part) < 1:
                    raise ConfigError(
                        f"--save-steps: {part!r} is not a positive step number (use '10,20' or 'every:10')"
                    )
                if int(part) > steps:
                    raise ConfigError(f"--save-steps: step {part} is beyond --steps {steps}")
                out.add(int(part))
    return sorted(out)


def make_config(output: str, *, resume: bool = False, **given: Any) -> TrainConfig:
    """The config of a run from the settings given (None = not given): new, or continued from RUN/run.json.

    On resume every setting not given is taken from the run being continued; given ones must agree with it
    except `steps` and `save_steps` (train() checks that).
    """
    # Lazy: runfiles loads pyarrow (through rldelta.runtime.atomic), and the CLI imports this module at start-up for its help.
    from rldelta.train.runfiles import read_run_json

    given = {k: v for k, v in given.items() if v is not None}
    if resume:
        record = read_run_json(output)
        if record is None:
            raise ConfigError(f"{output}: nothing to resume (no run.json)")
        base = record.get("config", {})
        return TrainConfig.from_dict({**base, **given, "output": str(output), "resume": True})
    if "model" not in given:
        raise ConfigError("--model is required for a new run")
    return TrainConfig.from_dict({**given, "output": str(output)})


def help_of(cls: type, name: str) -> str:
    """The help of dataclass field `name` (its metadata), with its default when it has a plain one: the text the
    command line shows, written once, on the field."""
    f = next((f for f in fields(cls) if f.name == name), None)
    if f is None or "help" not in f.metadata:
        raise KeyError(f"{cls.__name__}.{name} has no help")
    text = f.metadata["help"]
    if f.default is not MISSING and f.default not in (None, "") and not isinstance(f.default, bool):
        text = f"{text.rstrip('.')} (default {f.default})."
    return text
