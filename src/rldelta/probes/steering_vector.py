"""(b) of probes/steering.py: an activation steering vector toward one format, estimated from the pretraining
mixture corpus (the difference of mean residuals at one layer's output between the format's documents and the
others'), added times α at that layer's output by a forward hook while generating."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

from rldelta.metrics.compute import vector_compute
from rldelta.probes.steering import (
    SteeringError,
    SteeringResult,
    check_format,
    count_params,
    measure,
)
from rldelta.train.corpus import Document, build_corpus
from rldelta.train.tasks import Example

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

    check_format(fmt)
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
    return vector, vector_compute(count_params(model), lengths)


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
