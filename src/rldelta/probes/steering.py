"""Making a chosen format win without RL, on a mixture model (train/mixture.py): three interventions and what each
costs, for the question whether routing among pretraining formats can be set directly instead of by RL.

(a) the prompt (`PromptSteer`): a format instruction before the question, solved examples in the format as earlier
    turns, or the answer started with the format's own opening (`format_lead`);
(b) an activation steering vector (`steering_vector`, `steered`): the difference between the mean residual stream
    at one layer's output over documents of the chosen format and over the other documents of the pretraining
    mixture corpus, added (times α) to that layer's output at every position while generating;
(c) SFT on k examples of the format (`sft_on_format`) through the `rldelta train` harness (its sft algorithm), with
    the weights it changed (the bitwise diff engine) and their overlap with a given run's changed set.

Each is measured the same way (`measure`): temperature-1 samples for the same test prompts with the same seed,
steered and not; the chosen format's share with its Wilson interval, task accuracy, and the intervention's own
compute (metrics/compute.py). `SteeringResult` holds one intervention's numbers and a one-line text.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rldelta.errors import RldeltaError
from rldelta.metrics.compute import Compute, Part, generation, sft_compute, vector_compute
from rldelta.metrics.stats import wilson_interval
from rldelta.train.corpus import Document, build_corpus
from rldelta.train.formats import FORMAT_NAMES, FORMATS, OTHER, classify_format
from rldelta.train.tasks import Example, MixArith


class SteeringError(RldeltaError):
    """Bad steering input (unknown format, layer out of range, a model without a mixture record), one line."""


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise SteeringError(f"unknown format {fmt!r}; known: {', '.join(FORMAT_NAMES)}")


def _params(model) -> int:
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
    _check_format(fmt)
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
    """(text to generate from, the answer's forced opening) per example; the bare chat prompt when `steer` is
    None."""
    out = []
    demos = _demonstrations(fmt, steer.demonstrations, 0) if steer and steer.demonstrations else []
    for ex in examples:
        question = ex.prompt[-1]["content"]
        content = f"{steer.instruction}\n{question}" if steer and steer.instruction else question
        messages = [*demos, {"role": "user", "content": content}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        lead = format_lead(fmt, MixArith.expression(question)) if steer and steer.lead else ""
        out.append((text + lead, lead))
    return out


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

    _check_format(fmt)
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
            enc = tokenizer([t for t, _ in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
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
        compute=generation(_params(model), prompt_lengths, completion_lengths, "measurement").as_dict(),
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

    def n_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False).input_ids)

    samples = measure_kw.get("samples", 8)
    extra = sum(n_tokens(s) - n_tokens(b) for (s, _), (b, _) in zip(steer, bare)) * samples
    # Nothing is built beforehand (no wall time of its own); the cost is per query, in the extra prefill.
    compute = Compute((Part("prompt prefill (extra)", _params(model), extra),))
    return SteeringResult("prompt", fmt, {"prompt": prompt.label(), **asdict(prompt)}, baseline, steered, compute)


# ---- (b) activation steering -------------------------------------------------------------------------------------


def _layers(model):
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise SteeringError(f"{type(model).__name__}: no model.layers to steer (a Llama-style decoder is needed)")
    return layers


def _check_layer(model, layer: int) -> None:
    n = len(_layers(model))
    if not 0 <= layer < n:
        raise SteeringError(f"layer {layer} is out of range: the model has layers 0..{n - 1}")


def corpus_documents(record: dict[str, Any], n: int) -> list[Document]:
    """The first `n` documents of the pretraining corpus a mixture record describes (rebuilt: the corpus is a
    function of its settings)."""
    try:
        return build_corpus(
            n,
            proportions=record["proportions"],
            noise=record["noise"],
            difficulties=record["difficulties"],
            seed=record["seed"],
        )
    except KeyError as e:
        raise SteeringError(f"mixture record lacks {e.args[0]!r}: cannot rebuild its corpus") from None


def steering_vector(model, tokenizer, docs: Sequence[Document], fmt: str, layer: int, *, batch_size: int = 16):
    """(vector, Compute): mean residual at `layer`'s output over the chosen format's documents minus that over
    the other documents, each document first averaged over the positions that predict its completion tokens
    (the last prompt position through the token before eos)."""
    import torch

    from rldelta.train.mixture import encode

    _check_format(fmt)
    _check_layer(model, layer)
    mine = [d for d in docs if d.format == fmt]
    rest = [d for d in docs if d.format != fmt]
    if not mine or not rest:
        raise SteeringError(f"need documents in {fmt} and in other formats, got {len(mine)} and {len(rest)}")
    captured: list = []
    hook = _layers(model)[layer].register_forward_hook(
        lambda mod, args, out: captured.append(out[0] if isinstance(out, tuple) else out)
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    lengths: list[int] = []
    means: dict[bool, list] = {True: [], False: []}
    try:
        with torch.no_grad():
            ordered = mine + rest
            for start in range(0, len(ordered), batch_size):
                chunk = ordered[start : start + batch_size]
                encs = [encode(tokenizer, d) for d in chunk]
                width = max(len(e["input_ids"]) for e in encs)
                ids = torch.full((len(encs), width), pad, dtype=torch.long)
                att = torch.zeros((len(encs), width), dtype=torch.long)
                for i, e in enumerate(encs):  # right padding: a causal model's real positions do not see it
                    ids[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
                    att[i, : len(e["input_ids"])] = 1
                captured.clear()
                model(input_ids=ids, attention_mask=att)
                hidden = captured[0]
                for i, (d, e) in enumerate(zip(chunk, encs)):
                    first = next(j for j, t in enumerate(e["labels"]) if t != -100)  # the first completion token
                    end = len(e["input_ids"]) - 1  # the eos is predicted at the position before it
                    means[d.format == fmt].append(hidden[i, first - 1 : end].mean(0))
                    lengths.append(len(e["input_ids"]))
    finally:
        hook.remove()
    vector = torch.stack(means[True]).mean(0) - torch.stack(means[False]).mean(0)
    return vector, vector_compute(_params(model), lengths)


@contextlib.contextmanager
def steered(model, layer: int, vector, alpha: float) -> Iterator[None]:
    """Add alpha·vector to `layer`'s output at every position while the block runs (prompt and generated tokens)."""
    _check_layer(model, layer)
    add = alpha * vector

    def hook(mod, args, out):
        if isinstance(out, tuple):
            return (out[0] + add.to(out[0].dtype), *out[1:])
        return out + add.to(out.dtype)

    handle = _layers(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def steer_activation(
    model,
    tokenizer,
    examples: Sequence[Example],
    fmt: str,
    record: dict[str, Any],
    *,
    layer: int,
    alpha: float,
    documents: int = 512,
    baseline=None,
    vector=None,
    **measure_kw,
) -> SteeringResult:
    """(b) The activation steering vector from the first `documents` corpus documents, applied at `layer` with
    scale `alpha`; its compute is the estimate's forwards, its wall time the estimate's. `vector`: one estimated
    before, as (docs, vector, compute) from `estimate_vector`, for a sweep over alpha."""
    baseline = baseline or measure(model, tokenizer, examples, fmt, **measure_kw)
    docs, vector, compute = vector or estimate_vector(model, tokenizer, fmt, record, layer=layer, documents=documents)
    with steered(model, layer, vector, alpha):
        result = measure(model, tokenizer, examples, fmt, **measure_kw)
    settings = {
        "layer": layer,
        "alpha": alpha,
        "documents": len(docs),
        "documents_in_format": sum(d.format == fmt for d in docs),
        "vector_norm": float(vector.norm()),
    }
    return SteeringResult("activation", fmt, settings, baseline, result, compute)


def estimate_vector(model, tokenizer, fmt: str, record: dict[str, Any], *, layer: int, documents: int = 512):
    """(documents, vector, compute timed) of `steering_vector` on the first `documents` corpus documents."""
    t0 = time.perf_counter()
    docs = corpus_documents(record, documents)
    vector, compute = steering_vector(model, tokenizer, docs, fmt, layer)
    return docs, vector, compute.timed(time.perf_counter() - t0)


# ---- (c) SFT on k examples ---------------------------------------------------------------------------------------


def sft_examples(fmt: str, k: int, *, seed: int = 0, difficulties: Sequence[int] = (1, 2)) -> list[Example]:
    """`k` train-split mixarith problems with pairwise different answers (an answer names its example, so the
    rendered completion can be looked up from the answer alone), difficulties in turn."""
    _check_format(fmt)
    if k < 1:
        raise SteeringError(f"k must be >= 1, got {k}")
    task, out, seen = MixArith(), [], set()
    pools = [task.generate(max(4 * k, 64), seed=seed, split="train", difficulty=d) for d in difficulties]
    for group in zip(*pools):
        for ex in group:
            if ex.answer not in seen and len(out) < k:
                seen.add(ex.answer)
                out.append(ex)
    if len(out) < k:
        raise SteeringError(f"only {len(out)} train problems with distinct answers at difficulties {difficulties}")
    return out


class FormatSFTTask(MixArith):
    """The mixarith task as the SFT harness sees it for one format: its examples are the k given problems, a
    completion counts as correct only when it is the exact rendering of the answer in the format, and the
    reference completion is that rendering. So every training row is the rendered example, whatever the base
    model samples when the harness builds its data."""

    def __init__(self, fmt: str, examples: Sequence[Example]):
        _check_format(fmt)
        self.format = fmt
        self.examples = list(examples)
        self.rendering = {
            ex.answer: FORMATS[fmt].render(MixArith.expression(ex.prompt[-1]["content"]), int(ex.answer))
            for ex in self.examples
        }

    def generate(self, n, *, seed, split="train", difficulty=None):
        return self.examples[:n]

    def correctness_reward(self, completion: str, answer: str) -> float:
        return 1.0 if completion.strip() == self.rendering.get(answer) else 0.0

    def reference_completion(self, answer: str) -> str:
        return self.rendering[answer]


def sft_on_format(
    base: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str,
    k: int,
    *,
    steps: int = 20,
    batch_size: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    max_completion_length: int = 40,
    progress: bool = False,
) -> Path:
    """Train `base` with the harness's sft algorithm on k examples of `fmt` (sft_examples), `steps` optimizer
    steps of `batch_size` rows (the examples cycled), into the run folder `out`."""
    from rldelta.train.config import TrainConfig
    from rldelta.train.trainers import train

    examples = sft_examples(fmt, k, seed=seed)
    config = TrainConfig(
        model=str(base),
        output=str(out),
        task=MixArith.name,
        algo="sft",
        seed=seed,
        steps=steps,
        lr=lr,
        prompts_per_step=batch_size,
        train_size=k,
        max_completion_length=max_completion_length,
        offline_samples=1,
        offline_gold_fallback=True,
        record_steps=False,
        progress=progress,
    )
    return train(config, task=FormatSFTTask(fmt, examples))


def changed_and_overlap(
    base: str | os.PathLike, tuned: str | os.PathLike, out: str | os.PathLike, rl_mask: str | os.PathLike | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The bitwise diff of `tuned` against `base` into OUT/diff (with its mask), and the overlap of that changed
    set with `rl_mask` (a mask file or diff folder) into OUT/overlap; (diff totals, the pair row tuned->rl or
    None)."""
    from rldelta.diff import run_diff
    from rldelta.overlap import run_overlap

    out = Path(out)
    summary = run_diff(base, tuned, out / "diff", save_mask=True, rank=False)
    if rl_mask is None:
        return summary["totals"], None
    result = run_overlap([out / "diff", rl_mask], out / "overlap", plot=False)
    a = result["inputs"][0]
    row = next(r for r in result["pairs"] if r["a"] == a)
    return summary["totals"], row


def steer_sft(
    base: str | os.PathLike,
    out: str | os.PathLike,
    examples: Sequence[Example],
    fmt: str,
    k: int,
    *,
    rl_mask: str | os.PathLike | None = None,
    baseline=None,
    steps: int = 20,
    batch_size: int = 4,
    lr: float = 1e-3,
    seed: int = 0,
    **measure_kw,
) -> SteeringResult:
    """(c) SFT on k examples of `fmt` into OUT/run, measured on `examples`; its compute is the training forwards
    and backwards (the harness's one base-model sample per example, which the rendered rows do not need, is not
    counted); the changed fraction is the bitwise diff of the last step (bf16) against the base, and the overlap
    is with `rl_mask`'s changed set."""
    from rldelta.train.generation import load_for_eval
    from rldelta.train.runfiles import step_dir

    out = Path(out)
    t0 = time.perf_counter()
    run = sft_on_format(base, out / "run", fmt, k, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
    seconds = time.perf_counter() - t0
    model, tokenizer = load_for_eval(base, device="cpu")
    baseline = baseline or measure(model, tokenizer, examples, fmt, **measure_kw)
    rows = [json.loads(line) for line in (run / "offline_data.jsonl").read_text().splitlines() if line.strip()]
    # Tokenized from the text: apply_chat_template(tokenize=True) returns an encoding dict in recent transformers.
    prompts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    p_len = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in prompts]
    c_len = [len(tokenizer(r["completion"][0]["content"], add_special_tokens=False).input_ids) + 1 for r in rows]
    compute = sft_compute(_params(model), p_len, c_len, rows_seen=steps * batch_size).timed(seconds)
    tuned = step_dir(run, steps)
    t_model, t_tok = load_for_eval(tuned, device="cpu")
    result = measure(t_model, t_tok, examples, fmt, **measure_kw)
    totals, overlap = changed_and_overlap(base, tuned, out, rl_mask)
    settings = {"k": k, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "rows": len(rows)}
    return SteeringResult(
        "sft",
        fmt,
        settings,
        baseline,
        result,
        compute,
        changed_fraction=totals["changed_frac"],
        changed=totals["changed"],
        overlap=overlap,
        run=str(run),
    )
