"""Compute accounting: the forward and backward token counts of an RL run, of SFT on k examples and of steering at
inference, and their FLOPs by the usual dense-transformer estimate.

A forward pass costs 2·N FLOPs per token for N parameters, a backward pass 4·N (Kaplan et al. 2020); attention's
own cost (quadratic in length) and the embeddings' are left out, which at the few dozen tokens of these tasks is
a small part. Tokens are the useful ones: padding a batch adds none here, although the hardware computes it.

Generation with a key-value cache: the prompt's p tokens in one prefill pass (it yields the first completion
token), then one forward per further token, so c completion tokens cost p + c − 1 token forwards.

Pure arithmetic over token lengths; no model, no I/O. Wall time, where measured, travels with the counts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

FORWARD_FLOPS_PER_PARAM = 2
BACKWARD_FLOPS_PER_PARAM = 4


@dataclass(frozen=True)
class Part:
    """One kind of work: `forward_tokens` and `backward_tokens` through a model of `params` parameters."""

    name: str
    params: int
    forward_tokens: int
    backward_tokens: int = 0

    @property
    def flops(self) -> float:
        return float(
            self.params
            * (FORWARD_FLOPS_PER_PARAM * self.forward_tokens + BACKWARD_FLOPS_PER_PARAM * self.backward_tokens)
        )


@dataclass(frozen=True)
class Compute:
    """The work of one intervention, part by part; `wall_seconds` where it was timed (None: not measured)."""

    parts: tuple[Part, ...] = ()
    wall_seconds: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def forward_tokens(self) -> int:
        return sum(p.forward_tokens for p in self.parts)

    @property
    def backward_tokens(self) -> int:
        return sum(p.backward_tokens for p in self.parts)

    @property
    def flops(self) -> float:
        return sum(p.flops for p in self.parts)

    def __add__(self, other: Compute) -> Compute:
        wall = (
            None
            if self.wall_seconds is None and other.wall_seconds is None
            else (self.wall_seconds or 0.0) + (other.wall_seconds or 0.0)
        )
        return Compute(self.parts + other.parts, wall, self.notes + other.notes)

    def timed(self, seconds: float) -> Compute:
        return replace(self, wall_seconds=seconds)

    def share_of(self, other: Compute) -> float | None:
        """This compute's FLOPs as a fraction of `other`'s (None when `other` spent none)."""
        return self.flops / other.flops if other.flops else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "forward_tokens": self.forward_tokens,
            "backward_tokens": self.backward_tokens,
            "flops": self.flops,
            "wall_seconds": self.wall_seconds,
            "parts": [
                {
                    "name": p.name,
                    "params": p.params,
                    "forward_tokens": p.forward_tokens,
                    "backward_tokens": p.backward_tokens,
                    "flops": p.flops,
                }
                for p in self.parts
            ],
            "notes": list(self.notes),
        }


def _check(params: int, prompt_lengths: Sequence[int], completion_lengths: Sequence[int]) -> None:
    if params < 1:
        raise ValueError(f"params must be >= 1, got {params}")
    if len(prompt_lengths) != len(completion_lengths):
        raise ValueError(
            f"prompt_lengths and completion_lengths differ in length: {len(prompt_lengths)}, {len(completion_lengths)}"
        )
    if any(n < 0 for n in (*prompt_lengths, *completion_lengths)):
        raise ValueError("token lengths must be >= 0")


def generation_tokens(prompt_lengths: Sequence[int], completion_lengths: Sequence[int]) -> int:
    """Token forwards of generating each completion after its prompt with a key-value cache: p + c − 1 each (the
    prefill yields the first token; a completion of 0 tokens still costs the prefill)."""
    return sum(p + max(c - 1, 0) for p, c in zip(prompt_lengths, completion_lengths, strict=True))


def generation(
    params: int, prompt_lengths: Sequence[int], completion_lengths: Sequence[int], name: str = "generation"
) -> Compute:
    """Sampling the completions (one entry per sampled sequence)."""
    _check(params, prompt_lengths, completion_lengths)
    return Compute((Part(name, params, generation_tokens(prompt_lengths, completion_lengths)),))


def rl_compute(
    params: int,
    prompt_lengths: Sequence[int],
    completion_lengths: Sequence[int],
    *,
    beta: float = 0.0,
    iterations: int = 1,
    critic_params: int = 0,
) -> Compute:
    """An online RL run from its sampled sequences (one (prompt, completion) length pair per completion sampled,
    over all steps): their generation; the policy's forward and backward over each whole sequence (the loss is on
    the completion, the gradient flows through the prompt's positions too) once per iteration; with
    `iterations` > 1 (PPO epochs) one more forward for the old log-probabilities; the reference model's forward
    when `beta` > 0; and a second trained model of `critic_params` (PPO's value model, PRIME's reward model): one
    scoring forward, then a forward and a backward per iteration."""
    _check(params, prompt_lengths, completion_lengths)
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    seq = sum(prompt_lengths) + sum(completion_lengths)
    parts = [
        Part("generation", params, generation_tokens(prompt_lengths, completion_lengths)),
        Part("policy update", params, seq * iterations, seq * iterations),
    ]
    if iterations > 1:
        parts.append(Part("old log-probabilities", params, seq))
    if beta > 0:
        parts.append(Part("reference forward", params, seq))
    if critic_params:
        # The side model scores each batch once without gradient, then trains with it every iteration.
        parts.append(Part("critic", critic_params, seq * (iterations + 1), seq * iterations))
    return Compute(tuple(parts))


def sft_compute(
    params: int,
    prompt_lengths: Sequence[int],
    completion_lengths: Sequence[int],
    *,
    rows_seen: int,
    data: Compute | None = None,
) -> Compute:
    """SFT on k examples (their token lengths), `rows_seen` rows trained on in all (steps × batch; the examples
    are cycled): a forward and a backward over each row's whole sequence. `data`: the work of building the
    examples (sampling the base model), added. Rows of a partial pass are counted at the examples' mean length (rounded half up)."""
    _check(params, prompt_lengths, completion_lengths)
    k = len(prompt_lengths)
    if k < 1 or rows_seen < 0:
        raise ValueError(f"need k >= 1 examples and rows_seen >= 0, got k={k}, rows_seen={rows_seen}")
    per_pass = sum(prompt_lengths) + sum(completion_lengths)
    passes, rest = divmod(rows_seen, k)
    tokens = passes * per_pass + math.floor(rest * per_pass / k + 0.5)  # half up, not to even
    train = Compute((Part("sft update", params, tokens, tokens),))
    return train if data is None else data + train


def prefix_compute(params: int, prefix_tokens: int, queries: int) -> Compute:
    """A prompt prefix at inference: its tokens prefilled once more for every query (beyond what the bare prompt
    costs)."""
    if params < 1 or prefix_tokens < 0 or queries < 0:
        raise ValueError(f"need params >= 1 and counts >= 0, got {params}, {prefix_tokens}, {queries}")
    return Compute((Part("prefix prefill", params, prefix_tokens * queries),))


def vector_compute(params: int, document_lengths: Sequence[int]) -> Compute:
    """An activation steering vector: one forward over each document it is estimated from. Adding it during
    generation costs one vector addition per token at one layer, which the 2·N estimate does not count."""
    if params < 1 or any(n < 0 for n in document_lengths):
        raise ValueError("need params >= 1 and document lengths >= 0")
    return Compute(
        (Part("vector estimate", params, sum(document_lengths)),),
        notes=("the steering addition during generation (hidden-size FLOPs per token) is not counted",),
    )
