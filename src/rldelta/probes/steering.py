"""Making a chosen format win without RL, on a mixture model (train/mixture.py): three interventions and what each
costs, for the question whether routing among pretraining formats can be set directly instead of by RL.

(a) the prompt (`PromptSteer`): a format instruction before the question, solved examples in the format as earlier
    turns, or the answer started with the format's own opening (`format_lead`);
(b) an activation steering vector (steering_vector.py): the difference between the mean residual stream at one
    layer's output over documents of the chosen format and over the other documents of the pretraining mixture
    corpus, added (times α) to that layer's output at every position while generating;
(c) SFT on k examples of the format (steering_sft.py) through the `rldelta train` harness (its sft algorithm), with
    the weights it changed (the bitwise diff engine) and their overlap with a given run's changed set.

Each is measured the same way (`measure`): temperature-1 samples for the same test prompts with the same seed,
steered and not; the chosen format's share with its Wilson interval, task accuracy, and the intervention's own
compute (metrics/compute.py). `SteeringResult` holds one intervention's numbers and a one-line text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rldelta.metrics.compute import Compute, Part, generation
from rldelta.metrics.stats import wilson_interval
from rldelta.runtime.errors import RldeltaError
from rldelta.train.answer_formats import FORMAT_NAMES, FORMATS, OTHER, classify_format
from rldelta.train.tasks import Example, MixArith


class SteeringError(RldeltaError):
    """Bad steering input (unknown format, layer out of range, a model without a mixture record), one line."""


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise SteeringError(f"unknown format {fmt!r}; known: {', '.join(FORMAT_NAMES)}")


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- measuring ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormatMeasure:
    """The chosen format's share of `completions` samples (with its 95% Wilson interval), the task accuracy over
    all of them, every format's share, and the measurement's own generation compute."""

    format: str
    completions: int
    count: int
    share: float
    low: float
    high: float
    accuracy: float
    shares: dict[str, float]
    compute: dict[str, Any] = field(default_factory=dict)
    seconds: float | None = None  # wall time of the measurement (sampling and scoring)

    as_dict = asdict


def format_lead(fmt: str, expr: str) -> str:
    """The opening of `fmt`'s answer to `expr` that no other format's answer starts with: the fewest leading
    words of its rendering that tell it apart ("```python", "23 plus", "23 +")."""
    check_format(fmt)
    mine = FORMATS[fmt].render(expr, 0).split(" ")
    others = [FORMATS[f].render(expr, 0) for f in FORMATS if f != fmt]
    for n in range(1, len(mine) + 1):
        lead = " ".join(mine[:n])
        if not any(o.startswith(lead) for o in others):
            return lead
    return " ".join(mine)


@dataclass(frozen=True)
class PromptSteer:
    """A prompt-side intervention: `instruction` before the question, `demonstrations` solved train problems in
    the chosen format as earlier turns, `lead`: the answer started with the format's opening (format_lead)."""

    instruction: str = ""
    demonstrations: int = 0
    lead: bool = False

    def label(self) -> str:
        parts = [f"instruction {self.instruction!r}"] if self.instruction else []
        parts += [f"{self.demonstrations} demonstrations"] if self.demonstrations else []
        parts += ["answer lead"] if self.lead else []
        return ", ".join(parts) or "bare prompt"


def _demonstrations(fmt: str, n: int, seed: int) -> list[dict]:
    turns: list[dict] = []
    # Train-split problems: the measured prompts are test-split ones, so no demonstration answers one of them.
    for ex in MixArith().generate(n, seed=seed, split="train", difficulty=1):
        text = ex.prompt[-1]["content"]
        render = FORMATS[fmt].render(MixArith.expression(text), int(ex.answer))
        turns += [{"role": "user", "content": text}, {"role": "assistant", "content": render}]
    return turns


def prompt_texts(tokenizer, examples: Sequence[Example], fmt: str, steer: PromptSteer | None) -> list[tuple[str, str]]:
    """(chat prompt, the answer's forced opening) per example; the bare chat prompt and no opening when `steer` is
    None. Generation starts from the two tokenized apart (prompt_ids), as the models saw prompt and answer."""
    out = []
    demos = _demonstrations(fmt, steer.demonstrations, 0) if steer and steer.demonstrations else []
    for ex in examples:
        question = ex.prompt[-1]["content"]
        content = f"{steer.instruction}\n{question}" if steer and steer.instruction else question
        messages = [*demos, {"role": "user", "content": content}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        lead = format_lead(fmt, MixArith.expression(question)) if steer and steer.lead else ""
        out.append((text, lead))
    return out


def prompt_ids(tokenizer, text: str, lead: str) -> list[int]:
    """The token ids generation starts from: the chat prompt and the forced opening tokenized apart. The mixture
    models were pretrained on prompt and completion tokenized apart; one text would merge the prompt's trailing
    space into the code fence (" ```"), a token they never saw there."""
    ids = tokenizer(text, add_special_tokens=False).input_ids
    return ids + (tokenizer(lead, add_special_tokens=False).input_ids if lead else [])


def measure(
    model,
    tokenizer,
    examples: Sequence[Example],
    fmt: str,
    *,
    samples: int = 8,
    seed: int = 0,
    max_new_tokens: int = 40,
    prompt: PromptSteer | None = None,
    batch_size: int = 16,
) -> FormatMeasure:
    """Sample `samples` completions (temperature 1, no top-k/top-p, a private RNG seeded by `seed`) per example
    and read off the chosen format's share and the accuracy. With `prompt`, the steered prompt; a forced answer
    opening counts as part of the completion."""
    import torch

    check_format(fmt)
    t0 = time.perf_counter()
    task = MixArith()
    items = prompt_texts(tokenizer, examples, fmt, prompt)
    tokenizer.padding_side = "left"
    texts: list[str] = []
    prompt_lengths: list[int] = []
    completion_lengths: list[int] = []
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(items), batch_size):
            chunk = items[start : start + batch_size]
            ids = [{"input_ids": prompt_ids(tokenizer, t, lead)} for t, lead in chunk]
            enc = tokenizer.pad(ids, return_tensors="pt", padding=True)
            gen = model.generate(
                **enc,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=samples,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=tokenizer.eos_token_id,
            )
            new = gen[:, enc["input_ids"].shape[1] :]
            for i, seq in enumerate(new.tolist()):
                lead = chunk[i // samples][1]
                stop = next((j + 1 for j, t in enumerate(seq) if t in (tokenizer.eos_token_id, pad)), len(seq))
                texts.append(lead + tokenizer.decode(seq[:stop], skip_special_tokens=True))
                prompt_lengths.append(int(enc["attention_mask"][i // samples].sum()))
                completion_lengths.append(stop)
    answers = [ex.answer for ex in examples for _ in range(samples)]
    names = [classify_format(t) for t in texts]
    k = sum(n == fmt for n in names)
    low, high = wilson_interval(k, len(texts))
    return FormatMeasure(
        format=fmt,
        completions=len(texts),
        count=k,
        share=k / len(texts),
        low=low,
        high=high,
        accuracy=sum(task.correctness_reward(t, a) for t, a in zip(texts, answers)) / len(texts),
        shares={f: sum(n == f for n in names) / len(texts) for f in (*FORMAT_NAMES, OTHER)},
        compute=generation(count_params(model), prompt_lengths, completion_lengths, "measurement").as_dict(),
        seconds=time.perf_counter() - t0,
    )


# ---- the result of one intervention ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SteeringResult:
    """One intervention: its settings, the measurement without and with it (same prompts, same seed), its own
    compute, and for a weight change the changed fraction and its overlap with a given run's changed set."""

    method: str
    format: str
    settings: dict[str, Any]
    baseline: FormatMeasure
    steered: FormatMeasure
    compute: Compute
    changed_fraction: float | None = None
    changed: int | None = None
    overlap: dict[str, Any] | None = None
    run: str | None = None

    @property
    def text(self) -> str:
        b, s = self.baseline, self.steered
        line = (
            f"{self.method} toward {self.format}: share {b.share:.2f} [{b.low:.2f}-{b.high:.2f}] -> {s.share:.2f} "
            f"[{s.low:.2f}-{s.high:.2f}] of {s.completions} completions, accuracy {b.accuracy:.2f} -> "
            f"{s.accuracy:.2f}, {self.compute.flops:.3g} FLOPs"
        )
        if self.changed_fraction is not None:
            line += f", {self.changed_fraction:.2%} of the weights changed"
        if self.overlap is not None:
            line += f", overlap with {self.overlap['b']} {self.overlap['overlap']:.2f} (chance {self.overlap['random_overlap']:.2f})"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "format": self.format,
            "settings": self.settings,
            "baseline": self.baseline.as_dict(),
            "steered": self.steered.as_dict(),
            "compute": self.compute.as_dict(),
            "changed_fraction": self.changed_fraction,
            "changed": self.changed,
            "overlap": self.overlap,
            "run": self.run,
            "text": self.text,
        }


def steer_prompt(
    model, tokenizer, examples: Sequence[Example], fmt: str, prompt: PromptSteer, *, baseline=None, **measure_kw
) -> SteeringResult:
    """(a) The prompt intervention, measured against the bare prompt; its compute is the extra prompt tokens
    prefilled (instruction, demonstrations and the forced opening) for every sampled completion."""
    baseline = baseline or measure(model, tokenizer, examples, fmt, **measure_kw)
    steered = measure(model, tokenizer, examples, fmt, prompt=prompt, **measure_kw)
    bare = prompt_texts(tokenizer, examples, fmt, None)
    steer = prompt_texts(tokenizer, examples, fmt, prompt)

    samples = measure_kw.get("samples", 8)
    extra = sum(len(prompt_ids(tokenizer, *s)) - len(prompt_ids(tokenizer, *b)) for s, b in zip(steer, bare))
    extra *= samples
    # Nothing is built beforehand (no wall time of its own); the cost is per query, in the extra prefill.
    compute = Compute((Part("prompt prefill (extra)", count_params(model), extra),))
    return SteeringResult("prompt", fmt, {"prompt": prompt.label(), **asdict(prompt)}, baseline, steered, compute)
