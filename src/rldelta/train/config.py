"""`TrainConfig`: everything one `rldelta train` run depends on, in one dataclass (stored whole in RUN/run.json).

Defaults suit the tiny test model on a CPU; real runs (scripts/smollm2_grpo.py) override lr, sizes and steps.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rldelta.errors import RldeltaError

# The GRPO family: one GRPOTrainer, a different loss (and the settings its paper prescribes), see trainers.py.
GRPO_FAMILY = ("grpo", "dr_grpo", "dapo", "bnpo", "gspo", "cispo", "sapo", "gmpo")
ONLINE = (*GRPO_FAMILY, "rloo", "online_dpo")
OFFLINE = ("dpo", "kto", "orpo", "simpo", "sft")
ALGOS = (*ONLINE, *OFFLINE)
PRECISIONS = ("fp32", "bf16")
ADVANTAGES = ("all", "positive", "negative")
REWARDS = ("correctness", "format")


class ConfigError(RldeltaError):
    """A training setting that cannot work, named in the message."""


@dataclass
class TrainConfig:
    model: str  # model folder (config.json, safetensors, tokenizer with chat template)
    output: str  # RUN directory
    task: str = "arith"
    algo: str = "grpo"
    seed: int = 0  # sampling, data order, dropout: everything random in the run
    data_seed: int = 0  # which problems; kept apart from `seed` so runs with different seeds see the same data
    steps: int = 20
    lr: float = 1e-5
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    prompts_per_step: int = 4  # distinct prompts per optimizer step (offline algos: pairs/examples per step)
    num_generations: int = 4  # completions per prompt (GRPO family, RLOO); online_dpo always uses 2
    max_completion_length: int = 32
    temperature: float = 1.0
    # None below = the algorithm's own default in TRL (or in its paper, see trainers.py).
    beta: float | None = None  # KL coefficient (GRPO family, RLOO); the preference beta for dpo/kto/orpo/simpo
    epsilon: float | None = None  # clip range (GRPO family, RLOO)
    epsilon_high: float | None = None
    precision: str = "fp32"
    save_steps: str = ""  # "10,20,40" or "every:10"; the last step is always saved
    advantages: str = "all"
    # Which task rewards the online algorithms sum. A format reward is easy to earn: with both, GRPO on SmolLM2
    # learned to answer with the prompt's own example (<answer>7</answer>) and accuracy fell 0.64 -> 0.17.
    rewards: str = "correctness,format"
    mask: str | None = None  # mask.safetensors (or a diff dir holding one): train only these entries
    difficulty: int | None = None
    # Problems in the training set. Fixed (not derived from `steps`) so a longer or resumed run sees the same data
    # in the same order; offline algorithms build their data from the first steps * prompts_per_step of them.
    train_size: int = 1024
    # Offline algorithms: completions sampled from the base model per prompt to build pairs / SFT targets.
    offline_samples: int = 4
    offline_gold_fallback: bool = True  # no correct sample for a prompt -> the task's reference completion
    resume: bool = False
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # passed to the TRL config as-is (expert escape hatch)

    def __post_init__(self) -> None:
        self.validate()

    @property
    def reward_list(self) -> list[str]:
        return [r.strip() for r in self.rewards.split(",") if r.strip()]

    def validate(self) -> None:
        if self.algo not in ALGOS:
            raise ConfigError(f"unknown --algo {self.algo!r}; choose from {', '.join(ALGOS)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        chosen = self.reward_list
        if not chosen or any(r not in REWARDS for r in chosen) or len(set(chosen)) != len(chosen):
            raise ConfigError(
                f"--rewards must name some of {', '.join(REWARDS)} (comma-separated), not {self.rewards!r}"
            )
        if self.advantages not in ADVANTAGES:
            raise ConfigError(f"--advantages must be one of {', '.join(ADVANTAGES)}, not {self.advantages!r}")
        if self.advantages != "all" and self.algo not in GRPO_FAMILY:
            raise ConfigError(
                f"--advantages {self.advantages} needs an algorithm of the GRPO family "
                f"({', '.join(GRPO_FAMILY)}), not {self.algo}"
            )
        for name in ("steps", "prompts_per_step", "max_completion_length", "offline_samples", "train_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.algo in GRPO_FAMILY + ("rloo",) and self.num_generations < 2:
            raise ConfigError(f"--num-generations must be >= 2 for {self.algo} (advantages compare completions)")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        parse_save_steps(self.save_steps, self.steps)

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
