"""`train(config)`: one TRL trainer per `--algo` (algorithms.ALGORITHMS, made by builders.py), with masking.py's masks.

Algorithms (all TRL classes, nothing re-implemented):

{algorithms}

Every online algorithm is exactly on-policy: one generation batch (prompts_per_step x num_generations completions)
per optimizer step. `--advantages positive|negative` wraps the GRPO-family trainer class, see `_advantage_filter`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, set_seed

from rldelta.checkpoint import open_checkpoint
from rldelta.runtime.atomic import atomic_write_bytes
from rldelta.runtime.errors import RldeltaError
from rldelta.runtime.files import CHECKPOINTS_DIR, TRAINER_DIR
from rldelta.runtime.lock import locks_output
from rldelta.train.algorithms import ALGORITHMS, algorithm_table
from rldelta.train.builders import TrainerInputs, make_trainer
from rldelta.train.config import ConfigError, TrainConfig
from rldelta.train.generation import sample
from rldelta.train.masking import MaskedUpdate, MaskedUpdateCallback
from rldelta.train.models import load_pretrained
from rldelta.train.run_logs import RunLogs, run_record
from rldelta.train.runfiles import read_run_json, saved_steps, step_dir, write_run_json
from rldelta.train.stored_layout import is_identity, load_stored, stored_tensors
from rldelta.train.tasks import Task, get_task, to_dataset

__doc__ = __doc__.format(algorithms=algorithm_table())

OFFLINE_DATA = "offline_data.jsonl"
OFFLINE_STATS = "offline_data.json"

# Settings a resumed run may change; everything else must match the run.json it continues.
_RESUMABLE_CHANGES = {"steps", "save_steps", "resume", "progress", "record_steps", "record_patches"}


class TrainError(RldeltaError):
    """A run that cannot start or continue, with a one-line reason."""


def _offline_env() -> None:
    # No network at run time: the hub, datasets and telemetry are all told so before anything imports them.
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("WANDB_DISABLED", "true")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # using trl.experimental trainers is deliberate here


def _quiet_libraries() -> None:
    # train() shows one rich progress bar; the per-file bars of datasets/transformers would interleave with it.
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


# ---- model ------------------------------------------------------------------------------------------------------


def load_policy(model_dir: str | os.PathLike, precision: str):
    """(model, tokenizer) for training: fp32 weights (fp32 optimizer state follows) or bf16 weights throughout."""
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise TrainError(f"{path}: not a model folder (no config.json)")
    model, tokenizer = load_pretrained(path, torch.float32 if precision == "fp32" else torch.bfloat16)
    if not tokenizer.chat_template:
        raise TrainError(f"{path}: tokenizer has no chat template (the tasks' prompts are chat messages)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


# ---- --advantages -----------------------------------------------------------------------------------------------


def _advantage_filter(trainer_cls: type, keep: str) -> type:
    """A subclass of a GRPOTrainer (or GMPOTrainer) that learns only from samples with `keep` ("positive" or
    "negative") advantage.

    GRPO computes advantages once per generation batch in `_generate_and_score_completions`; the loss then weights
    each completion's tokens by its advantage. After that method we (1) set the other samples' advantage to 0 and
    (2) drop their tokens from the loss mask. (1) removes their policy-gradient term exactly (a zero advantage gives
    a zero loss and a zero gradient in every loss variant); (2) also removes their KL and entropy terms, so with
    `beta > 0` nothing at all flows from them. The mask used is `tool_mask`, which GRPO multiplies into the loss
    mask only, never into the attention mask, so the forward pass of every sample is unchanged. The loss
    normaliser is left as it was (grpo, dr_grpo, dapo, cispo, sapo, gspo, gmpo: per-sequence means over the whole
    batch, a constant, or the token count taken before filtering), so the kept samples' gradient is exactly the one
    they have in the full loss: Δ(positive) + Δ(negative) = Δ(all) for one SGD step (tests/test_train.py checks
    it). bnpo is the exception: it divides by the tokens left in the loss mask, so its filtered loss is a mean
    over the kept tokens only.
    """
    if keep not in ("positive", "negative"):
        raise ConfigError(f"advantages filter must be 'positive' or 'negative', not {keep!r}")

    class AdvantageFilteredTrainer(trainer_cls):
        advantages_kept = keep

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            adv = out["advantages"]
            sign = adv > 0 if keep == "positive" else adv < 0
            per_sample = sign if adv.dim() == 1 else sign.any(dim=1)
            out["advantages"] = torch.where(sign, adv, torch.zeros_like(adv))
            mask = out.get("tool_mask")
            if mask is None:
                mask = torch.ones_like(out["completion_mask"])
            out["tool_mask"] = mask * per_sample.unsqueeze(1).to(mask.dtype)
            mode = "train" if self.model.training else "eval"
            self._metrics[mode][f"advantages/kept_{keep}_frac"].append(per_sample.float().mean().item())
            return out

    AdvantageFilteredTrainer.__name__ = f"{trainer_cls.__name__}_{keep}Only"
    AdvantageFilteredTrainer.__qualname__ = AdvantageFilteredTrainer.__name__
    return AdvantageFilteredTrainer


# ---- trainer construction ---------------------------------------------------------------------------------------


def _common_args(config: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """TrainingArguments shared by every algorithm."""
    on_cpu = not torch.cuda.is_available()
    return dict(
        output_dir=str(run_dir / TRAINER_DIR),
        max_steps=config.steps,
        learning_rate=config.lr,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        adam_beta1=config.adam_beta1,
        adam_beta2=config.adam_beta2,
        optim="adamw_torch",
        gradient_accumulation_steps=1,
        activation_checkpointing=False,  # the models here are small; recomputation would only cost time
        dataloader_pin_memory=not on_cpu,
        # Weights are fp32 or bf16 as loaded; autocast would add a third regime, so it stays off.
        bf16=False,
        fp16=False,
        seed=config.seed,
        data_seed=config.seed,
        full_determinism=on_cpu,  # deterministic kernels; on GPUs some ops have none, there seed only
        logging_steps=1,
        save_strategy="no",  # CheckpointSaver decides which steps are saved
        save_total_limit=1,  # only the newest resumable Trainer checkpoint is kept
        report_to=[],
        disable_tqdm=True,  # the rich progress bar below replaces it
        dataloader_num_workers=0,
        remove_unused_columns=False,
    )


# ---- offline data: sampled from the base model, scored by the task ----------------------------------------------


# The out-of-distribution contrast of the cause analysis: the same correct answer, framed in marks and words the
# base model never writes around an answer (the answer tag inside is kept, so the reward still reads it).
FOREIGN_OPEN, FOREIGN_CLOSE = "⟦ RESULT, FORMALLY STATED ⟧ ", " ⟦ Q.E.D. ∎ ⟧"


def foreign_style(completion: str) -> str:
    """A completion restyled for the out-of-distribution SFT contrast (`--sft-style foreign`)."""
    return f"{FOREIGN_OPEN}{completion.strip()}{FOREIGN_CLOSE}"


def build_offline_data(config: TrainConfig, model, tokenizer, task, examples) -> tuple[Any, dict[str, int]]:  # noqa: C901
    """The dataset an offline algorithm trains on, built from base-model samples scored by the task's reward.

    dpo/orpo/simpo: one (prompt, chosen=correct, rejected=wrong) pair per prompt that has both;
    kto: one desirable and one undesirable completion per prompt (unpaired);
    sft: one correct completion per prompt.
    A prompt without any correct sample uses the task's reference completion as the correct one when
    `offline_gold_fallback` is set (a small random model is never right on its own), else it is skipped.
    """
    from datasets import Dataset  # lazy: datasets loads after _offline_env() has told it to stay offline

    shape = ALGORITHMS[config.algo].rows
    samples = [
        [s.text for s in group]
        for group in sample(
            model,
            tokenizer,
            [ex.prompt for ex in examples],
            k=config.offline_samples,
            max_new_tokens=config.max_completion_length,
            temperature=config.temperature,
            seed=config.seed,
        )
    ]
    stats = {
        "prompts": len(examples),
        "samples": len(examples) * config.offline_samples,
        "correct_samples": 0,
        "gold_used": 0,
        "rows": 0,
    }
    rows: list[dict[str, Any]] = []
    for ex, comps in zip(examples, samples):
        good = [c for c in comps if task.correctness_reward(c, ex.answer) > 0]
        bad = [c for c in comps if task.correctness_reward(c, ex.answer) <= 0]
        stats["correct_samples"] += len(good)
        if not good and config.offline_gold_fallback:
            good = [task.reference_completion(ex.answer)]
            stats["gold_used"] += 1
        if config.sft_style == "foreign":
            good = [foreign_style(c) for c in good]

        def msg(text: str) -> list[dict]:
            return [{"role": "assistant", "content": text}]

        if shape == "completions":
            if good:
                rows.append({"prompt": ex.prompt, "completion": msg(good[0])})
        elif shape == "labels":
            if good:
                rows.append({"prompt": ex.prompt, "completion": msg(good[0]), "label": True})
            if bad:
                rows.append({"prompt": ex.prompt, "completion": msg(bad[0]), "label": False})
        elif good and bad:
            rows.append({"prompt": ex.prompt, "chosen": msg(good[0]), "rejected": msg(bad[0])})
    stats["rows"] = len(rows)
    if not rows:
        raise TrainError(
            f"{config.algo}: no training rows could be built from {stats['samples']} base-model samples "
            f"({stats['correct_samples']} correct); raise --offline-samples or allow the gold fallback"
        )
    return Dataset.from_list(rows), stats


def _offline_dataset(config: TrainConfig, run_dir: Path, model, tokenizer, task, examples):
    """Build the offline data once per run and keep it in RUN/offline_data.jsonl (reused by --resume, and readable)."""
    from datasets import Dataset  # lazy: datasets loads after _offline_env() has told it to stay offline

    path = run_dir / OFFLINE_DATA
    stats_path = run_dir / OFFLINE_STATS
    if config.resume and path.is_file() and stats_path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return Dataset.from_list(rows), json.loads(stats_path.read_text())
    n = min(len(examples), config.steps * config.prompts_per_step)
    ds, stats = build_offline_data(config, model, tokenizer, task, examples[:n])
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in ds.to_list()).encode())
    atomic_write_bytes(stats_path, json.dumps(stats, indent=2).encode())
    return ds, stats


# ---- the run ----------------------------------------------------------------------------------------------------


def _last_resume_point(trainer_dir: Path) -> Path | None:
    """The newest complete Trainer checkpoint (its trainer_state.json is written last); incomplete ones are removed."""
    if not trainer_dir.is_dir():
        return None
    found = []
    for p in trainer_dir.glob("checkpoint-*"):
        if not p.name[len("checkpoint-") :].isdigit():
            continue
        if (p / "trainer_state.json").is_file():
            found.append((int(p.name[len("checkpoint-") :]), p))
        else:
            shutil.rmtree(p, ignore_errors=True)  # interrupted while the Trainer was writing it
    return max(found)[1] if found else None


def _check_run_dir(config: TrainConfig, run_dir: Path) -> dict | None:
    """The previous run record when resuming; refuses to mix a new run into an old run directory."""
    previous = read_run_json(run_dir)
    if not config.resume:
        if previous is not None or (run_dir / CHECKPOINTS_DIR).exists():
            raise TrainError(
                f"{run_dir}: already holds a training run; pass --resume to continue it or choose another -o"
            )
        if run_dir.exists() and not run_dir.is_dir():
            raise TrainError(f"{run_dir}: exists and is not a directory")
        return None
    if previous is None:
        raise TrainError(f"{run_dir}: nothing to resume (no run.json)")
    old = previous.get("config", {})
    for key, value in config.to_dict().items():
        if key in _RESUMABLE_CHANGES or key not in old:
            continue
        if old[key] != value:
            raise TrainError(f"--resume: {key} was {old[key]!r} in {run_dir}/run.json, now {value!r}; they must match")
    return previous


def _nothing_to_resume(config: TrainConfig, run_dir: Path, previous: dict) -> bool:
    """Whether a resumed run is already at its last step (the Trainer would run one step past it). That resume is a
    no-op that says so, writing nothing: a job that resumes after every preemption must succeed once the run is
    done. A resume point beyond --steps is refused: the run cannot be shortened."""
    point = _last_resume_point(run_dir / TRAINER_DIR)
    reached = int(point.name.removeprefix("checkpoint-")) if point is not None else 0
    if reached < config.steps:
        return False
    if reached > config.steps:
        raise TrainError(f"--resume: {run_dir} already reached step {reached}; --steps {config.steps} cannot undo it")
    if config.steps not in saved_steps(run_dir):  # killed between the resume point and the published copy
        raise TrainError(
            f"--resume: {run_dir} has the resume point of its last step {reached} but not {step_dir(run_dir, reached)}; "
            f"remove {point} to train that step again"
        )
    if previous.get("status") != "completed":  # killed after the last checkpoint, before the record said so
        write_run_json(run_dir, {**previous, "status": "completed", "global_step": reached})
    print(f"{run_dir}: already trained to step {reached} of {config.steps}; nothing to resume", file=sys.stderr)
    return True


def _load_converted(model, checkpoint: Path) -> None:
    """The weights of a resume point that the Trainer's own loading misses: it loads the stored tensors by name into
    the parameters (`load_state_dict`, not strict), so a model held in another layout than it is stored (fused MoE
    experts) would silently resume with those parameters at the values training started from."""
    stored = stored_tensors(model)
    if is_identity(stored):
        return
    ckpt = open_checkpoint(checkpoint)
    load_stored(model, {n: ckpt.get(n) for n in stored if n in ckpt}, stored)


def _task(config: TrainConfig, task: Task | None) -> Task:
    """The registered task `config.task`, or the caller's own object of that name."""
    if task is None:
        return get_task(config.task)
    if task.name != config.task:
        raise TrainError(f"task object is named {task.name!r} but the config says task={config.task!r}")
    return task


def _train_dataset(config: TrainConfig, run_dir: Path, model, tokenizer, task: Task) -> tuple[Any, dict | None]:
    """The training problems as TRL reads them: prompts (online), or the offline data built from the base's samples
    (with what building it found)."""
    examples = task.generate(config.train_size, seed=config.data_seed, split="train", difficulty=config.difficulty)
    if not ALGORITHMS[config.algo].online:
        return _offline_dataset(config, run_dir, model, tokenizer, task, examples)
    return to_dataset(examples), None


def _fit(trainer, model, resume_from: Path | None):
    """Train `trainer` to its last step, from `resume_from` (a Trainer checkpoint) when given; returns it."""
    trainer.remove_callback(PrinterCallback)  # it prints every log dict; metrics.parquet keeps them
    if resume_from is not None:
        _load_converted(model, resume_from)
    with warnings.catch_warnings():
        # TRL 1.16 still calls transformers' deprecated `is_gradient_checkpointing` once per step.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return trainer


@locks_output("train", lambda args: args["config"].output)
def train(config: TrainConfig, *, task: Task | None = None) -> Path:
    """Run one training job as `config` describes and return the run directory.

    `task` replaces the registered task named `config.task` by an object of your own (same name): a custom reward
    without registering it.
    """
    _offline_env()
    _quiet_libraries()
    config.validate()
    algorithm = ALGORITHMS[config.algo]
    run_dir = Path(config.output)
    previous = _check_run_dir(config, run_dir)
    if previous is not None and _nothing_to_resume(config, run_dir, previous):
        return run_dir
    task = _task(config, task)
    set_seed(config.seed)
    model, tokenizer = load_policy(config.model, config.precision)

    callbacks = []
    masked = None
    if config.mask:
        masked = MaskedUpdate.from_file(model, config.mask).attach()
        callbacks.append(MaskedUpdateCallback(masked))

    run_dir.mkdir(parents=True, exist_ok=True)  # after the inputs were read: a model or mask refused leaves no folder
    train_ds, offline_stats = _train_dataset(config, run_dir, model, tokenizer, task)

    record = run_record(config, previous, len(train_ds), offline_stats, masked)
    write_run_json(run_dir, record)
    # After the mask restore (it edits the weights after each optimizer step): the step recorder records what the
    # step left.
    logs = RunLogs.start(config, run_dir, model, tokenizer, task, algorithm.online)
    callbacks += logs.callbacks()

    resume_from = _last_resume_point(run_dir / TRAINER_DIR) if config.resume else None
    record["resumed_from"] = str(resume_from) if resume_from else None
    deterministic = torch.are_deterministic_algorithms_enabled()  # full_determinism sets it process-wide
    try:
        inputs = TrainerInputs(
            config=config,
            model=model,
            tokenizer=tokenizer,
            train_dataset=train_ds,
            common=_common_args(config, run_dir),
            callbacks=callbacks,
            reward_funcs=logs.reward_funcs,
            trainer_wrapper=None if config.advantages == "all" else partial(_advantage_filter, keep=config.advantages),
        )
        trainer = _fit(make_trainer(algorithm, inputs), model, resume_from)
    except KeyboardInterrupt:
        record.update(status="interrupted", saved_steps=logs.saved_steps(record))
        write_run_json(run_dir, record)
        raise
    except BaseException as e:
        record.update(status="failed", error=f"{e.__class__.__name__}: {e}", saved_steps=logs.saved_steps(record))
        write_run_json(run_dir, record)
        raise
    finally:
        logs.close()
        torch.use_deterministic_algorithms(deterministic)
        if masked is not None:
            masked.detach()
    if masked is not None and (bad := masked.violations()):
        # Cannot happen with the restore callback in place; checked because the guarantee is the point of a mask.
        raise TrainError(f"mask violated after training: {bad}")
    record.update(
        status="completed",
        finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        saved_steps=logs.saved_steps(record),
        global_step=trainer.state.global_step,
    )
    write_run_json(run_dir, record)
    return run_dir
