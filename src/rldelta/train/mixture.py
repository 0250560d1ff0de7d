"""Small Llama models pretrained from scratch on arithmetic solved in three formats, for `rldelta probe formats`.

The question (after "Echo Chamber", Zhao et al. 2025): when RL starts from a model that learned several output
formats in pretraining, which one takes over, and is it the most frequent one or the most accurate one?

Every document of the corpus (corpus.py) is a `mixarith` prompt ("What is 23 + 45?") rendered through the model's
own chat template, then a completion in one of the FORMATS (formats.py), then eos. The tokenizer is a byte-level
BPE (tokenizer.py) trained here on a sample of the corpus, one token per digit; the model shape is one of SIZES
(sizes.py). Pretraining is a transformers `Trainer` run (fp32) with the loss on completion tokens only: the prompts
are given at RL time, so modelling them would spend capacity on nothing the probe measures. The budget is counted
in steps, so the model does not depend on machine load: either a fixed step count (cosine schedule), or, with
`plateau=True`, as many steps as the measured loss curve pays for (plateau_budget.py: constant learning rate until
the curve is flat, then a short decay), `steps` being then only a cap. `max_minutes` is a safety stop that fails the run (nothing written) instead of
leaving a model trained for fewer steps.

The result is an ordinary model folder (config.json, model.safetensors, tokenizer with chat template) that
`rldelta train --task mixarith` accepts, plus MIXTURE_FILE describing corpus, training and the model's per-format
behaviour on the test split right after pretraining (format_behaviour.py).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rldelta.runtime.atomic import atomic_dir_over
from rldelta.train.answer_formats import FORMAT_NAMES
from rldelta.train.callbacks import progress_callback
from rldelta.train.corpus import (
    DEFAULT_NOISE,
    DEFAULT_PROPORTIONS,
    Document,
    MixtureError,
    build_corpus,
    parse_noise,
    parse_proportions,
)
from rldelta.train.format_behaviour import format_behaviour, test_problems
from rldelta.train.plateau_budget import (
    PlateauSchedule,
    loss_curve,
    plateau_callback,
    plateau_record,
    scheduled_trainer_class,
)
from rldelta.train.sizes import SIZES, llama_config
from rldelta.train.tasks import MixArith
from rldelta.train.tokenizer import train_bpe_tokenizer

MIXTURE_FILE = "rldelta-mixture.json"

# ---- tokenizer --------------------------------------------------------------------------------------------------

EOS, PAD = "<|endoftext|>", "<|pad|>"
# Plain, short, and free of the formats' own markers, so the template gives away none of them.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'Question: ' + message['content'] + '\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'Answer: ' + message['content'] + eos_token + '\n' }}"
    "{% else %}{{ message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Answer: ' }}{% endif %}"
)


def build_tokenizer(docs: Sequence[Document], *, vocab_size: int = 512, sample: int = 4000):
    """A byte-level BPE (digits one per token) trained on the first `sample` documents, with CHAT_TEMPLATE."""
    return train_bpe_tokenizer(
        [f"Question: {d.prompt}\nAnswer: {d.completion}\n" for d in docs[:sample]],
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=256,
    )


def encode(tokenizer, doc: Document) -> dict[str, list[int]]:
    """input_ids = template(prompt) + completion + eos; labels = -100 on the prompt (loss on completion tokens).

    Prompt and completion are tokenized apart, as at RL time (the prompt is encoded, the completion generated),
    so no BPE merge spans the boundary in training that cannot span it in sampling.
    """
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": doc.prompt}], add_generation_prompt=True, tokenize=False
    )
    p = tokenizer(prompt, add_special_tokens=False).input_ids
    c = tokenizer(doc.completion, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    return {"input_ids": p + c, "labels": [-100] * len(p) + c}


# ---- pretraining ------------------------------------------------------------------------------------------------


def _callbacks(total: int, max_minutes: float | None, progress: bool):
    from transformers import TrainerCallback  # lazy: transformers loads when pretraining starts

    class TimeLimit(TrainerCallback):
        """The safety stop: ends training after the step that uses up `max_minutes` (the step in flight finishes);
        the caller then fails the run. None: no limit."""

        def __init__(self):
            self.t0 = 0.0
            self.stopped = False

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if max_minutes is None or state.global_step >= state.max_steps:
                return
            if time.perf_counter() - self.t0 >= 60 * max_minutes:
                self.stopped = True
                control.should_training_stop = True

    return TimeLimit(), progress_callback(total, "pretrain", disable=not progress)


def pretrain_mixture(
    out: str | os.PathLike,
    *,
    size: str = "5m",
    proportions: Mapping[str, float] | Sequence[float] = DEFAULT_PROPORTIONS,
    noise: Mapping[str, float] | Sequence[float] = DEFAULT_NOISE,
    steps: int | None = None,
    batch_size: int = 32,
    lr: float | None = None,
    seed: int = 0,
    max_minutes: float | None = None,
    difficulties: Sequence[int] = (1, 2),
    eval_prompts: int = 64,
    eval_samples: int = 8,
    threads: int | None = 1,
    plateau: bool = False,
    progress: bool = True,
) -> Path:
    """Pretrain a SIZES[size] Llama from scratch on one pass over a steps x batch_size document mixture corpus and
    write it to `out` (a model folder with MIXTURE_FILE). `steps`/`lr` default to the size's; `steps` is the only
    budget, or with `plateau` the cap of a run that stops where its loss curve plateaus (module docstring).
    `max_minutes` (None: no limit) is a safety stop on training time: when it is used up before the last
    step, MixtureError names the step reached and nothing is written. Same arguments, same corpus, same weights. `proportions`/`noise`: {format: value} or one value
    per format in FORMAT_NAMES order. `threads`: torch threads while it runs (None: torch's default); on a shared
    2-core machine 1 thread ran 10x faster than 2, whose OpenMP workers wait on each other for a busy core."""
    if size not in SIZES:
        raise MixtureError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
    props, rates = parse_proportions(proportions), parse_noise(noise)
    spec = SIZES[size]
    steps = spec.steps if steps is None else steps
    lr = spec.lr if lr is None else lr
    for name, value in (
        ("steps", steps),
        ("batch_size", batch_size),
        ("eval_prompts", eval_prompts),
        ("eval_samples", eval_samples),
    ):
        if value < 1:
            raise MixtureError(f"{name} must be >= 1, got {value}")
    if threads is not None and threads < 1:
        raise MixtureError(f"threads must be >= 1, got {threads}")
    if not (lr > 0 and (max_minutes is None or max_minutes > 0)):
        raise MixtureError(f"lr and max_minutes must be > 0, got lr={lr}, max_minutes={max_minutes}")
    out = Path(out)
    # Refuses a non-empty folder that holds no model before any work is done.
    building = atomic_dir_over(out, "config.json", MixtureError, "a model folder")

    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _pretrain(
            out,
            building,
            size,
            props,
            rates,
            steps,
            batch_size,
            lr,
            seed,
            max_minutes,
            difficulties,
            eval_prompts,
            eval_samples,
            plateau,
            progress,
        )
    finally:
        torch.set_num_threads(previous_threads)


def _pretrain(
    out: Path,
    building,
    size: str,
    props: dict[str, float],
    rates: dict[str, float],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    max_minutes: float | None,
    difficulties: Sequence[int],
    eval_prompts: int,
    eval_samples: int,
    plateau: bool,
    progress: bool,
) -> Path:
    import torch
    from datasets import Dataset

    t_start = time.perf_counter()
    docs = build_corpus(steps * batch_size, proportions=props, noise=rates, difficulties=difficulties, seed=seed)
    tokenizer = build_tokenizer(docs)
    data = Dataset.from_list([encode(tokenizer, d) for d in docs])
    model = _fresh_model(size, tokenizer, seed)
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    schedule = PlateauSchedule(warmup=max(1, steps // 20), cap=steps) if plateau else None
    time_limit, bar = _callbacks(steps, max_minutes, progress)
    callbacks = [time_limit, bar, *([plateau_callback(schedule)] if schedule else [])]
    trainer, result, train_seconds = _train(model, tokenizer, data, callbacks, steps, batch_size, lr, seed, schedule)
    if time_limit.stopped:  # before anything is written: a model short of its steps is never left behind
        raise MixtureError(
            f"pretraining reached only step {trainer.state.global_step} of {steps} within max_minutes={max_minutes:g} "
            f"({train_seconds / trainer.state.global_step:.2f} s/step); nothing was written: raise max_minutes, or "
            "lower steps"
        )
    curve_steps, losses = loss_curve(trainer.state.log_history)
    model.eval()
    behaviour = format_behaviour(
        model, tokenizer, test_problems(eval_prompts, difficulties, seed), samples=eval_samples, seed=seed
    )
    done = trainer.state.global_step
    record = {
        "size": size,
        "parameters": n_params,
        "architecture": {k: getattr(config, k) for k in ARCHITECTURE_KEYS},
        "task": MixArith.name,
        "proportions": props,
        "noise": rates,
        "difficulties": sorted(set(difficulties)),
        "corpus": _corpus_record(docs, min(done * batch_size, len(docs))),
        "loss": "completion tokens only",
        "steps": steps,
        "steps_done": done,
        "budget": "plateau" if plateau else "steps",  # plateau: `steps` was the cap, `steps_done` the budget
        "schedule": schedule.as_dict() if schedule else {"schedule": "cosine", "warmup": max(1, steps // 20)},
        # The plateau rule on the curve up to the decay (on the whole curve for a fixed budget).
        "plateau": plateau_record(*_upto(curve_steps, losses, schedule.decay_start if schedule else None)),
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "max_minutes": max_minutes,
        "stopped_by_budget": False,  # a run the safety stop ends raises instead; kept so records read alike
        "train_loss": float(result.training_loss),
        "final_loss": losses[-1] if losses else None,
        # Every logged training loss (about 50 points): metrics.plateau reads the step budget off it.
        "loss_curve": {"steps": curve_steps, "loss": losses},
        "seconds_per_step": train_seconds / max(done, 1),
        "train_minutes": train_seconds / 60,
        "minutes": (time.perf_counter() - t_start) / 60,
        "threads": torch.get_num_threads(),
        "eval": behaviour,
    }
    with building as tmp:
        model.save_pretrained(tmp)
        tokenizer.padding_side = "left"
        tokenizer.save_pretrained(tmp)
        (tmp / MIXTURE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return out


def _fresh_model(size: str, tokenizer, seed: int):
    """A randomly initialised Llama of `size` for `tokenizer`, the same for the same seed (torch's global RNG kept)."""
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama_config(size, tokenizer))
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return model


# The model's shape as the record states it.
ARCHITECTURE_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "tie_word_embeddings",
)


def _upto(steps: list[int], losses: list[float], last: int | None) -> tuple[list[int], list[float]]:
    keep = [i for i, st in enumerate(steps) if last is None or st <= last]
    return [steps[i] for i in keep], [losses[i] for i in keep]


def _train(model, tokenizer, data, callbacks: list, steps: int, batch_size: int, lr: float, seed: int, schedule):
    """Pretrain `model` on `data` (completion tokens only); returns the trainer, its result and the seconds it took."""
    from transformers import DataCollatorForSeq2Seq, PrinterCallback

    with tempfile.TemporaryDirectory(prefix="rldelta-pretrain-") as scratch:
        trainer = scheduled_trainer_class(schedule)(
            model=model,
            args=_training_args(scratch, steps, batch_size, lr, seed),
            train_dataset=data,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
            callbacks=callbacks,
        )
        trainer.remove_callback(PrinterCallback)  # the rich bar (or nothing) instead of printed log dicts
        t_train = time.perf_counter()
        result = trainer.train()
        return trainer, result, time.perf_counter() - t_train


def _training_args(scratch: str, steps: int, batch_size: int, lr: float, seed: int):
    """transformers' TrainingArguments of the pretraining: 5% warmup, then cosine to `steps` (a plateau budget's
    trainer replaces the schedule), nothing saved on the way."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=scratch,
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, steps // 20),
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=max(1, steps // 50),
        save_strategy="no",
        report_to=[],
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
    )


def _corpus_record(docs: list, seen: int) -> dict[str, Any]:
    """The record's corpus: documents per format, their shares, the wrong ones, how many training saw, an example."""
    counts = {name: sum(d.format == name for d in docs) for name in FORMAT_NAMES}
    return {
        "documents": len(docs),
        "counts": counts,
        "shares": {k: v / len(docs) for k, v in counts.items()},
        "wrong": {name: sum(d.wrong for d in docs if d.format == name) for name in FORMAT_NAMES},
        "documents_seen": seen,
        "examples": {name: next((d.completion for d in docs if d.format == name), None) for name in FORMAT_NAMES},
    }


def read_mixture(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The MIXTURE_FILE record of a model folder, or None if it holds none."""
    path = Path(model_dir) / MIXTURE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MixtureError(f"{path}: unreadable ({e})") from None
