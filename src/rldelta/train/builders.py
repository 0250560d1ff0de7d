"""The builders of the registry's algorithms (train/algorithms.py names each by its key in BUILDERS): each makes
the algorithm's TRL config from the run's TrainConfig and its own defaults, and its trainer."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rldelta.train.algorithms import Algorithm
from rldelta.train.config import TrainConfig
from rldelta.train.sft_tokens import tokenize_apart

# Longest sequence (prompt + completion, tokens) of the offline algorithms' batches.
_OFFLINE_MAX_LENGTH = 1024


@dataclass(frozen=True)
class TrainerInputs:
    """What a builder turns into a TRL trainer: the run's config, policy, data and the callbacks train() made."""

    config: TrainConfig
    model: Any
    tokenizer: Any
    train_dataset: Any
    common: dict[str, Any]  # TrainingArguments shared by every algorithm (trainers._common_args)
    callbacks: list
    reward_funcs: list[Callable] = field(
        default_factory=list
    )  # online algorithms: the task's rewards, as TRL calls them
    # Wraps the trainer class of the algorithms that score groups (--advantages positive|negative), else None.
    trainer_wrapper: Callable[[type], type] | None = None


def _trl_class(spec: str) -> type:
    # Lazy: trl (and torch under it) load when a trainer is built, not when the registry is read.
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _pick(value, default):
    return default if value is None else value


def _args(algo: Algorithm, inputs: TrainerInputs, common: dict[str, Any], **specific: Any):
    """A TRL config: shared settings, then the algorithm's, then `config.extra` (the user's word is last)."""
    return _trl_class(algo.trl_config)(**{**common, **specific, **inputs.config.extra})


def _beta(algo: Algorithm, config: TrainConfig) -> dict[str, float]:
    """The beta setting, or nothing for an algorithm without one (sft ignores --beta)."""
    return {} if algo.beta is None else {"beta": _pick(config.beta, algo.beta)}


def _reward_trainer(trainer_cls: type, inputs: TrainerInputs, args, **extra: Any):
    return trainer_cls(
        model=inputs.model,
        reward_funcs=inputs.reward_funcs,
        args=args,
        train_dataset=inputs.train_dataset,
        processing_class=inputs.tokenizer,
        callbacks=inputs.callbacks,
        **extra,
    )


def _group_args(algo: Algorithm, inputs: TrainerInputs, **specific: Any):
    config = inputs.config
    clip = (
        ("epsilon", _pick(config.epsilon, algo.epsilon)),
        ("epsilon_high", _pick(config.epsilon_high, algo.epsilon_high)),
    )
    fixed = {**algo.trl_args, **specific}
    return _args(
        algo,
        inputs,
        inputs.common,
        **_beta(algo, config),
        per_device_train_batch_size=config.prompts_per_step * config.num_generations,
        num_generations=config.num_generations,
        max_completion_length=config.max_completion_length,
        temperature=config.temperature,
        log_completions=False,
        **{k: v for k, v in clip if v is not None},
        **fixed,
    )


def build_group(algo: Algorithm, inputs: TrainerInputs):
    """GRPO family and RLOO: one optimizer step per prompts_per_step x num_generations fresh completions (exactly
    on-policy)."""
    args = _group_args(algo, inputs)
    trainer_cls = _trl_class(algo.trainer)
    if inputs.trainer_wrapper is not None:
        trainer_cls = inputs.trainer_wrapper(trainer_cls)
    return _reward_trainer(trainer_cls, inputs, args)


def build_actor_critic(algo: Algorithm, inputs: TrainerInputs):
    """PPO and PRIME (train/actor_critic.py): GRPOTrainer subclasses with a second model; each rollout batch serves
    `ppo_epochs` optimizer steps (TRL's num_iterations)."""
    epochs = inputs.config.ppo_epochs
    args = _group_args(algo, inputs, **({} if epochs is None else {"num_iterations": epochs}))
    return _reward_trainer(_trl_class(algo.trainer), inputs, args, rl=inputs.config)


def build_online_dpo(algo: Algorithm, inputs: TrainerInputs):
    """Pairs of fresh completions per prompt, judged by the task reward on the fly."""
    config = inputs.config
    args = _args(
        algo,
        inputs,
        inputs.common,
        per_device_train_batch_size=config.prompts_per_step,
        max_new_tokens=config.max_completion_length,
        temperature=config.temperature,
        **_beta(algo, config),
    )
    return _reward_trainer(_trl_class(algo.trainer), inputs, args)


def build_offline(algo: Algorithm, inputs: TrainerInputs):
    """The offline data (trainers.build_offline_data), prompts_per_step rows per optimizer step."""
    config = inputs.config
    common = {**inputs.common, "per_device_train_batch_size": config.prompts_per_step}
    capped = {"max_completion_length": config.max_completion_length} if algo.caps_completion else {}
    dataset, sft = inputs.train_dataset, {}
    if algo.family == "sft":  # tokenized here, prompt apart from completion, as inference sees them
        dataset, sft = tokenize_apart(dataset, inputs.tokenizer), {"completion_only_loss": True}
    args = _args(
        algo, inputs, common, **algo.trl_args, **_beta(algo, config), max_length=_OFFLINE_MAX_LENGTH, **capped, **sft
    )
    return _trl_class(algo.trainer)(
        model=inputs.model,
        args=args,
        train_dataset=dataset,
        processing_class=inputs.tokenizer,
        callbacks=inputs.callbacks,
    )


BUILDERS: dict[str, Callable[[Algorithm, TrainerInputs], Any]] = {
    "group": build_group,
    "actor_critic": build_actor_critic,
    "online_dpo": build_online_dpo,
    "offline": build_offline,
}


def make_trainer(algo: Algorithm, inputs: TrainerInputs):
    """The TRL trainer of `algo` for this run."""
    return BUILDERS[algo.build](algo, inputs)
