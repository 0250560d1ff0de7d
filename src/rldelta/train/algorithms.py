"""ALGORITHMS: every `--algo`, by name, as one frozen record (family, online or offline, its defaults, a one-line
doc, the builder that makes its TRL trainer). After mergekit's merge_methods/registry.py: the registry is the only
list of algorithms; config validation, the CLI's choices and the trainers docstring are read off it.

Nothing is re-implemented: each builder (train/builders.py, named in the record) makes a TRL config and trainer
class, loaded by name when a trainer is built (trl is heavy; the CLI reads this table for its help without loading
it). PPO and PRIME, which TRL lacks, are GRPOTrainer subclasses in actor_critic.py. The registry reads no run
config: TrainConfig validates against it, and the builders read both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Algorithm:
    name: str
    family: str  # grpo, rloo, ppo, prime, online_dpo, offline (preference pairs or labels), sft
    online: bool  # samples from the policy while it trains; else trains on data built once from the base model
    doc: str  # one line: the TRL class and what sets this algorithm apart
    trainer: str  # "module:Class" of the TRL trainer
    trl_config: str  # "module:Class" of its TRL config
    build: str  # the builder that makes its trainer: a key of train/builders.py's BUILDERS
    # KL coefficient (online) or preference beta (offline) when the config leaves it None; None: no beta at all.
    beta: float | None = None
    epsilon: float | None = None  # clip range (algorithms that score groups) when the config leaves it None

    epsilon_high: float | None = None
    trl_args: Mapping[str, Any] = field(default_factory=dict)  # fixed settings of the TRL config (loss_type, ...)
    # The TRL config also takes max_completion_length (offline algorithms that cap the completion apart).
    caps_completion: bool = False
    # Offline only: the rows built from base-model samples: "pairs" (chosen, rejected), "labels" (unpaired,
    # desirable or not), "completions" (one correct completion per prompt).
    rows: str | None = None

    @property
    def groups(self) -> bool:
        """Scores num_generations completions per prompt against each other (advantages compare completions)."""
        return self.family in ("grpo", "rloo", "ppo", "prime")


def _grpo(name: str, doc: str, *, trainer: str = "trl:GRPOTrainer", trl_config: str = "trl:GRPOConfig", **kw):
    return Algorithm(name, "grpo", True, doc, trainer, trl_config, "group", beta=0.0, **kw)


def _offline(name: str, family: str, doc: str, trainer: str, trl_config: str, **kw):
    return Algorithm(name, family, False, doc, trainer, trl_config, "offline", **kw)


_ALL = (
    # The GRPO family: one GRPOTrainer, a different loss (and the settings its paper prescribes).
    _grpo(
        "grpo",
        'GRPOTrainer, loss_type="grpo" (per-sequence mean), rewards scaled by group std',
        trl_args={"loss_type": "grpo", "scale_rewards": "group"},
    ),
    _grpo(
        "dr_grpo",
        'GRPOTrainer, loss_type="dr_grpo", scale_rewards="none" (Dr. GRPO: no length/std bias)',
        trl_args={"loss_type": "dr_grpo", "scale_rewards": "none"},
    ),
    _grpo(
        "dapo",
        'GRPOTrainer, loss_type="dapo", epsilon_high=0.28 (DAPO: token-level loss, clip-higher)',
        epsilon_high=0.28,
        trl_args={"loss_type": "dapo"},
    ),
    _grpo("bnpo", 'GRPOTrainer, loss_type="bnpo" (local-batch token normalisation)', trl_args={"loss_type": "bnpo"}),
    _grpo(
        "gspo",
        'GRPOTrainer, importance_sampling_level="sequence", eps 3e-4/4e-4 (GSPO: sequence-level ratio)',
        epsilon=3e-4,
        epsilon_high=4e-4,
        trl_args={"loss_type": "grpo", "importance_sampling_level": "sequence"},
    ),
    _grpo(
        "cispo",
        'GRPOTrainer, loss_type="cispo" (clipped IS-weight REINFORCE)',
        epsilon_high=5.0,  # CISPO's epsilon_high is the cap on the IS weight itself
        trl_args={"loss_type": "cispo"},
    ),
    _grpo("sapo", 'GRPOTrainer, loss_type="sapo" (soft gate instead of clipping)', trl_args={"loss_type": "sapo"}),
    _grpo(
        "gmpo",
        "trl.experimental.gmpo.GMPOTrainer (geometric-mean policy optimisation)",
        trainer="trl.experimental.gmpo:GMPOTrainer",
        trl_config="trl.experimental.gmpo:GMPOConfig",
    ),
    Algorithm(
        "rloo",
        "rloo",
        True,
        "RLOOTrainer (leave-one-out baseline)",
        "trl:RLOOTrainer",
        "trl:RLOOConfig",
        "group",
        beta=0.05,  # TRL's RLOO default
    ),
    Algorithm(
        "ppo",
        "ppo",
        True,
        "actor_critic.PPOTrainer on GRPOTrainer: value model, KL-shaped rewards, GAE, clipped policy and value losses",
        "rldelta.train.actor_critic:PPOTrainer",
        "trl:GRPOConfig",
        "actor_critic",
        beta=0.05,  # the per-token KL coefficient folded into the reward
        trl_args={"num_iterations": 2},  # PPO epochs per rollout batch
    ),
    Algorithm(
        "prime",
        "prime",
        True,
        "actor_critic.PRIMETrainer on GRPOTrainer: online implicit PRM, beta*log(pi_phi/pi_ref) rewards, RLOO",
        "rldelta.train.actor_critic:PRIMETrainer",
        "trl:GRPOConfig",
        "actor_critic",
        beta=0.05,  # the implicit reward's beta (the paper's value); PRIME has no KL penalty
    ),
    Algorithm(
        "online_dpo",
        "online_dpo",
        True,
        "trl.experimental.online_dpo.OnlineDPOTrainer, pairs judged by the task reward on the fly",
        "trl.experimental.online_dpo:OnlineDPOTrainer",
        "trl.experimental.online_dpo:OnlineDPOConfig",
        "online_dpo",
        beta=0.1,
    ),
    _offline(
        "dpo",
        "offline",
        "DPOTrainer on pairs (correct, wrong) sampled from the base model and scored by the task reward",
        "trl:DPOTrainer",
        "trl:DPOConfig",
        beta=0.1,
        rows="pairs",
    ),
    _offline(
        "kto",
        "offline",
        "KTOTrainer on the same samples, unpaired (desirable = correct)",
        "trl:KTOTrainer",
        "trl:KTOConfig",
        beta=0.1,
        rows="labels",
    ),
    _offline(
        "orpo",
        "offline",
        "trl.experimental.orpo.ORPOTrainer on the DPO pairs (no reference model)",
        "trl.experimental.orpo:ORPOTrainer",
        "trl.experimental.orpo:ORPOConfig",
        beta=0.1,
        caps_completion=True,
        rows="pairs",
    ),
    _offline(
        "simpo",
        "offline",
        'trl.experimental.cpo.CPOTrainer, loss_type="simpo", cpo_alpha=0 on the DPO pairs',
        "trl.experimental.cpo:CPOTrainer",
        "trl.experimental.cpo:CPOConfig",
        beta=2.0,
        # SimPO is CPO's loss_type="simpo" with the behaviour-cloning term switched off (cpo_alpha=0).
        trl_args={"loss_type": "simpo", "cpo_alpha": 0.0},
        caps_completion=True,
        rows="pairs",
    ),
    _offline(
        "sft",
        "sft",
        "SFTTrainer on correct solutions (the base model's own, else the task's reference): the non-RL contrast",
        "trl:SFTTrainer",
        "trl:SFTConfig",
        rows="completions",
    ),
)

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in _ALL}

# Views of the registry, in its order.
ALGOS = tuple(ALGORITHMS)
GRPO_FAMILY = tuple(a.name for a in _ALL if a.family == "grpo")
ONLINE = tuple(a.name for a in _ALL if a.online)
OFFLINE = tuple(a.name for a in _ALL if not a.online)


def algorithm_table(indent: str = "    ") -> str:
    """One line per algorithm, `name  doc`, for docstrings and help."""
    width = max(map(len, ALGORITHMS))
    return "\n".join(f"{indent}{a.name:<{width}}  {a.doc}" for a in _ALL)
