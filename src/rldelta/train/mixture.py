"""Small Llama models pretrained from scratch on arithmetic solved in three formats, for `rldelta probe formats`.

The question (after "Echo Chamber", Zhao et al. 2025): when RL starts from a model that learned several output
formats in pretraining, which one takes over, and is it the most frequent one or the most accurate one?

Every document is a `mixarith` prompt ("What is 23 + 45?") rendered through the model's own chat template, then a
completion in one of FORMATS, then eos. Format counts are exact (largest-remainder allocation of the proportions),
and a per-format `noise` rate replaces that share of the format's answers by a near miss, so the most frequent
format need not be the most accurate. Problems come only from the task's train split. The tokenizer is a byte-level
BPE trained here on a sample of the corpus, one token per digit. Pretraining is a transformers `Trainer` run (fp32)
with the loss on completion tokens only: the prompts are given at RL time, so modelling them would spend capacity on
nothing the probe measures. A wall-clock budget stops training cleanly; the model folder records that it did.

The result is an ordinary model folder (config.json, model.safetensors, tokenizer with chat template) that
`rldelta train --task mixarith` accepts, plus MIXTURE_FILE describing corpus, training and the model's per-format
behaviour on the test split right after pretraining.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rldelta.atomic import atomic_dir_over
from rldelta.train.models import ModelError
from rldelta.train.tasks import Example, MixArith

MIXTURE_FILE = "rldelta-mixture.json"
OTHER = "other"

# ---- formats ----------------------------------------------------------------------------------------------------

_EXPR = r"\d+(?: [-+*] \d+)+"  # Arith's expressions: non-negative literals joined by " + ", " - ", " * "
_RESULT = r"-?\d+"
_WORDS = {"+": "plus", "-": "minus", "*": "times"}
_WORD_EXPR = r"\d+(?: (?:plus|minus|times) \d+)+"


def _render_code(expr: str, result: int) -> str:
    # The closing fence before the result keeps a negative result a signed number for Arith.extract_answer
    # (after "print(3 - 7)\n" a "-4" would read as the subtraction "... 7 - 4").
    return f"```python\nprint({expr})\n```\n{result}"


def _render_plain(expr: str, result: int) -> str:
    return " ".join(_WORDS.get(t, t) for t in expr.split()) + f" equals {result}."


def _render_boxed(expr: str, result: int) -> str:
    return f"{expr} = \\boxed{{{result}}}"


@dataclass(frozen=True)
class Format:
    name: str
    render: Callable[[str, int], str]  # (expression as in the prompt, result) -> completion
    pattern: re.Pattern  # fullmatch on the stripped completion; group "result" is the answer


FORMATS: dict[str, Format] = {
    "code": Format("code", _render_code, re.compile(rf"```python\nprint\({_EXPR}\)\n```\n(?P<result>{_RESULT})")),
    "plain": Format("plain", _render_plain, re.compile(rf"{_WORD_EXPR} equals (?P<result>{_RESULT})\.")),
    # The expression is optional so that MixArith.reference_completion (which knows only the answer) is boxed too.
    "boxed": Format("boxed", _render_boxed, re.compile(rf"(?:{_EXPR} = )?\\boxed\{{(?P<result>{_RESULT})\}}")),
}
FORMAT_NAMES = tuple(FORMATS)

DEFAULT_PROPORTIONS = {"code": 0.5, "plain": 0.3, "boxed": 0.2}
# The most frequent format is the noisiest: then "RL amplifies the most frequent" and "RL amplifies the most
# accurate" predict different winners, and the probe can tell them apart.
DEFAULT_NOISE = {"code": 0.2, "plain": 0.0, "boxed": 0.0}
# Near misses a learner makes (off by one or two, a dropped carry): a wrong answer that still looks plausible.
_NOISE_OFFSETS = (-10, -2, -1, 1, 2, 10)


class MixtureError(ModelError):
    """Bad mixture pretraining input (proportions, noise, size, formats), with a one-line reason."""


def classify_format(text: str) -> str:
    """The name of the format `text` is written in (surrounding whitespace ignored), or "other".

    The patterns are anchored and start differently (a code fence, words, a number or \\boxed), so at most one
    matches.
    """
    t = text.strip()
    for fmt in FORMATS.values():
        if fmt.pattern.fullmatch(t):
            return fmt.name
    return OTHER


# ---- corpus -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Document:
    prompt: str  # the user message
    answer: str  # the true result
    expr: str
    difficulty: int
    format: str
    completion: str
    wrong: bool  # the completion states a noised (wrong) result


def allocate(shares: Mapping[str, float], n: int) -> dict[str, int]:
    """Exact counts summing to `n`: round(p * n) per key, with the largest remainders breaking rounding ties
    (Hamilton's method), so 1/3 each of 10 gives 4, 3, 3 rather than 3, 3, 3."""
    floors = {k: math.floor(p * n) for k, p in shares.items()}
    left = n - sum(floors.values())
    by_rest = sorted(shares, key=lambda k: (-(shares[k] * n - floors[k]), list(shares).index(k)))
    for k in by_rest[:left]:
        floors[k] += 1
    return floors


def _per_format(values: Mapping[str, float] | Sequence[float], what: str) -> dict[str, float]:
    """Proportions or noise rates as {format: float} in FORMAT_NAMES order, from a mapping or a 3-sequence."""
    if isinstance(values, Mapping):
        unknown = sorted(set(values) - set(FORMAT_NAMES))
        if unknown:
            raise MixtureError(f"{what}: unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMAT_NAMES)}")
        out = {k: float(values.get(k, 0.0)) for k in FORMAT_NAMES}
    else:
        values = list(values)
        if len(values) != len(FORMAT_NAMES):
            names = ", ".join(FORMAT_NAMES)
            raise MixtureError(f"{what}: need {len(FORMAT_NAMES)} values ({names}), got {len(values)}")
        out = dict(zip(FORMAT_NAMES, map(float, values)))
    bad = [k for k, v in out.items() if not (math.isfinite(v) and 0.0 <= v <= 1.0)]
    if bad:
        raise MixtureError(f"{what}: values must lie in [0, 1], got {', '.join(f'{k}={out[k]}' for k in bad)}")
    return out


def parse_proportions(values: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    """Validated format proportions (each in [0, 1], summing to 1)."""
    out = _per_format(values, "proportions")
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise MixtureError(f"proportions must sum to 1, got {sum(out.values()):.6g} ({out})")
    return out


def parse_noise(values: Mapping[str, float] | Sequence[float]) -> dict[str, float]:
    """Validated per-format wrong-answer rates (each in [0, 1])."""
    return _per_format(values, "noise")


def parse_spec(text: str) -> dict[str, float]:
    """ "code=0.5,plain=0.3,boxed=0.2" -> {"code": 0.5, ...} (for a command line); values unchecked."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise MixtureError(f"expected FORMAT=VALUE pairs like 'code=0.5,plain=0.3,boxed=0.2', got {part!r}")
    return out


def _train_problems(task: MixArith, n: int, difficulties: Sequence[int], seed: int) -> list[Example]:
    """`n` train-split problems, difficulties in equal shares; distinct while a level has enough of them, else
    drawn with replacement from that level's train problems (Task.generate finds repeats slowly: it retries 200
    times before accepting one)."""
    rng = random.Random(f"mixture-problems|{seed}")
    out: list[Example] = []
    for level, count in allocate({d: 1 / len(difficulties) for d in difficulties}, n).items():
        k = 64
        while True:  # grow the draw until it covers `count` or the level's train split is used up
            pool = task.generate(min(k, count), seed=seed, split="train", difficulty=level)
            distinct = list({ex.prompt[-1]["content"]: ex for ex in pool}.values())
            if len(distinct) < 0.9 * len(pool):  # Task.generate repeats problems: the split is nearly exhausted
                out.extend(rng.choices(distinct, k=count))
                break
            if len(pool) == count:
                out.extend(pool)
                break
            k *= 4
    rng.shuffle(out)
    return out


def build_corpus(
    n: int,
    *,
    proportions: Mapping[str, float] | Sequence[float] = DEFAULT_PROPORTIONS,
    noise: Mapping[str, float] | Sequence[float] = DEFAULT_NOISE,
    difficulties: Sequence[int] = (1, 2),
    seed: int = 0,
) -> list[Document]:
    """`n` documents with exactly allocate(proportions, n) per format and allocate-rounded wrong answers per format."""
    props, rates = parse_proportions(proportions), parse_noise(noise)
    task = MixArith()
    bad = [d for d in difficulties if d not in task.difficulties]
    if not difficulties or bad:
        raise MixtureError(f"difficulties must be some of {list(task.difficulties)}, got {list(difficulties)}")
    if n < 1:
        raise MixtureError(f"corpus size must be >= 1, got {n}")
    rng = random.Random(f"mixture-formats|{seed}")
    counts = allocate(props, n)
    labels: list[tuple[str, bool]] = []
    for name, count in counts.items():
        n_wrong = round(rates[name] * count)
        labels += [(name, True)] * n_wrong + [(name, False)] * (count - n_wrong)
    rng.shuffle(labels)
    docs = []
    for ex, (name, wrong) in zip(_train_problems(task, n, sorted(set(difficulties)), seed), labels, strict=True):
        expr = MixArith.expression(ex.prompt[-1]["content"])
        result = int(ex.answer) + (rng.choice(_NOISE_OFFSETS) if wrong else 0)
        docs.append(
            Document(
                ex.prompt[-1]["content"],
                ex.answer,
                expr,
                ex.difficulty,
                name,
                FORMATS[name].render(expr, result),
                wrong,
            )
        )
    return docs


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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = [f"Question: {d.prompt}\nAnswer: {d.completion}\n" for d in docs[:sample]]
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        model_max_length=256,
        clean_up_tokenization_spaces=False,
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


# ---- sizes ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    # Default steps at batch 32 fit ~15 minutes on a shared 2-core machine with 1 torch thread (measured: 5m 0.5 s,
    # 30m 2.8 s a step); the max_minutes budget covers slower machines.
    steps: int
    lr: float


SIZES: dict[str, Size] = {
    "test": Size(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, steps=20, lr=3e-3),
    "5m": Size(hidden=256, layers=6, heads=8, kv_heads=4, intermediate=768, steps=1500, lr=2e-3),  # 4,801,024 params
    "30m": Size(hidden=512, layers=9, heads=8, kv_heads=4, intermediate=1536, steps=300, lr=1e-3),  # 28,479,488 params
}


def llama_config(size: str, tokenizer):
    """The LlamaConfig of a size preset (tied embeddings, grouped-query attention, fp32)."""
    from transformers import LlamaConfig

    if size not in SIZES:
        raise MixtureError(f"unknown size {size!r}; known: {', '.join(SIZES)}")
    s = SIZES[size]
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


# ---- evaluation after pretraining -------------------------------------------------------------------------------


def format_behaviour(
    model, tokenizer, examples: Sequence[Example], *, samples: int = 8, max_new_tokens: int = 40, seed: int = 0
) -> dict[str, Any]:
    """Share of each format and accuracy within it over `samples` temperature-1 completions per prompt, and
    greedy accuracy with greedy format shares."""
    import torch

    from rldelta.metrics.formats import format_table
    from rldelta.train.evaluate import generate_greedy

    task = MixArith()
    names = (*FORMAT_NAMES, OTHER)
    prompts = [ex.prompt for ex in examples]
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    tokenizer.padding_side = "left"
    sampled: list[str] = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(texts), 16):
            enc = tokenizer(texts[start : start + 16], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            gen = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=samples,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            sampled += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    answers = [ex.answer for ex in examples for _ in range(samples)]
    rows = format_table(
        [0] * len(sampled),
        [classify_format(c) for c in sampled],
        [task.correctness_reward(c, a) for c, a in zip(sampled, answers)],
        names=names,
    )
    greedy = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
    g_correct = [task.correctness_reward(c, ex.answer) for c, ex in zip(greedy, examples)]
    g_rows = format_table([0] * len(greedy), [classify_format(c) for c in greedy], g_correct, names=names)
    return {
        "split": "test",
        "prompts": len(examples),
        "samples_per_prompt": samples,
        "temperature": 1.0,
        "formats": {r["format"]: {"count": r["count"], "share": r["share"], "accuracy": r["accuracy"]} for r in rows},
        "accuracy": sum(r["count"] * (r["accuracy"] or 0.0) for r in rows) / max(len(sampled), 1),
        "greedy_accuracy": sum(g_correct) / max(len(g_correct), 1),
        "greedy_formats": {r["format"]: r["share"] for r in g_rows},
        "examples": [
            {
                "prompt": ex.prompt[-1]["content"],
                "answer": ex.answer,
                "greedy": g,
                "sampled": sampled[i * samples : (i + 1) * samples][:3],
            }
            for i, (ex, g) in enumerate(zip(examples[:4], greedy[:4]))
        ],
    }


def test_problems(n: int, difficulties: Sequence[int], seed: int = 0) -> list[Example]:
    """`n` test-split mixarith problems, difficulties in equal shares."""
    task = MixArith()
    out: list[Example] = []
    for level, count in allocate({d: 1 / len(difficulties) for d in sorted(set(difficulties))}, n).items():
        out += task.generate(count, seed=seed, split="test", difficulty=level)
    return out


test_problems.__test__ = False  # not a pytest test despite the name


# ---- pretraining ------------------------------------------------------------------------------------------------


def _callbacks(total: int, max_minutes: float, progress: bool):
    from transformers import TrainerCallback

    from rldelta.train.trainers import progress_callback

    class Budget(TrainerCallback):
        """Stops training after the step that uses up the wall-clock budget (the step in flight finishes)."""

        def __init__(self):
            self.t0 = 0.0
            self.stopped = False

        def on_train_begin(self, args, state, control, **kwargs):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step < state.max_steps and time.perf_counter() - self.t0 >= 60 * max_minutes:
                self.stopped = True
                control.should_training_stop = True

    return Budget(), progress_callback(total, "pretrain", disable=not progress)


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
    max_minutes: float = 15.0,
    difficulties: Sequence[int] = (1, 2),
    eval_prompts: int = 64,
    eval_samples: int = 8,
    threads: int | None = 1,
    progress: bool = True,
) -> Path:
    """Pretrain a SIZES[size] Llama from scratch on one pass over a steps x batch_size document mixture corpus and
    write it to `out` (a model folder with MIXTURE_FILE). `steps`/`lr` default to the size's; training stops early
    when `max_minutes` of training time are used up (corpus, tokenizer and the evaluation after it add about half a
    minute). Same arguments, same corpus and initial weights. `proportions`/`noise`: {format: value} or one value
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
    if not (lr > 0 and max_minutes > 0):
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
    max_minutes: float,
    difficulties: Sequence[int],
    eval_prompts: int,
    eval_samples: int,
    progress: bool,
) -> Path:
    import torch
    from datasets import Dataset
    from transformers import (
        DataCollatorForSeq2Seq,
        GenerationConfig,
        LlamaForCausalLM,
        PrinterCallback,
        Trainer,
        TrainingArguments,
    )

    t_start = time.perf_counter()
    docs = build_corpus(steps * batch_size, proportions=props, noise=rates, difficulties=difficulties, seed=seed)
    tokenizer = build_tokenizer(docs)
    data = Dataset.from_list([encode(tokenizer, d) for d in docs])
    config = llama_config(size, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    n_params = sum(p.numel() for p in model.parameters())
    budget, bar = _callbacks(steps, max_minutes, progress)
    with tempfile.TemporaryDirectory(prefix="rldelta-pretrain-") as scratch:
        args = TrainingArguments(
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
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=data,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
            callbacks=[budget, bar],
        )
        trainer.remove_callback(PrinterCallback)  # the rich bar (or nothing) instead of printed log dicts
        t_train = time.perf_counter()
        result = trainer.train()
        train_seconds = time.perf_counter() - t_train
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model.eval()
    behaviour = format_behaviour(
        model, tokenizer, test_problems(eval_prompts, difficulties, seed), samples=eval_samples, seed=seed
    )
    done = trainer.state.global_step
    corpus_counts = {name: sum(d.format == name for d in docs) for name in FORMAT_NAMES}
    record = {
        "size": size,
        "parameters": n_params,
        "architecture": {
            k: getattr(config, k)
            for k in (
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "tie_word_embeddings",
            )
        },
        "task": MixArith.name,
        "proportions": props,
        "noise": rates,
        "difficulties": sorted(set(difficulties)),
        "corpus": {
            "documents": len(docs),
            "counts": corpus_counts,
            "shares": {k: v / len(docs) for k, v in corpus_counts.items()},
            "wrong": {name: sum(d.wrong for d in docs if d.format == name) for name in FORMAT_NAMES},
            "documents_seen": min(done * batch_size, len(docs)),
            "examples": {name: next((d.completion for d in docs if d.format == name), None) for name in FORMAT_NAMES},
        },
        "loss": "completion tokens only",
        "steps": steps,
        "steps_done": done,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "max_minutes": max_minutes,
        "stopped_by_budget": budget.stopped,
        "train_loss": float(result.training_loss),
        "final_loss": losses[-1] if losses else None,
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


def read_mixture(model_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The MIXTURE_FILE record of a model folder, or None if it holds none."""
    path = Path(model_dir) / MIXTURE_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise MixtureError(f"{path}: unreadable ({e})") from None
