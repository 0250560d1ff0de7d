"""The mixture pretraining corpus: `mixarith` train problems, each solved in one of the FORMATS, in exact shares
and with an exact per-format share of wrong answers.

Format counts are exact (largest-remainder allocation of the proportions), and a per-format `noise` rate replaces
that share of the format's answers by a near miss, so the most frequent format need not be the most accurate.
Problems come only from the task's train split.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rldelta.train.answer_formats import FORMAT_NAMES, FORMATS
from rldelta.train.models import ModelError
from rldelta.train.tasks import Example, MixArith

DEFAULT_PROPORTIONS = {"code": 0.5, "plain": 0.3, "boxed": 0.2}
# The most frequent format is the noisiest: then "RL amplifies the most frequent" and "RL amplifies the most
# accurate" predict different winners, and the probe can tell them apart.
DEFAULT_NOISE = {"code": 0.2, "plain": 0.0, "boxed": 0.0}
# Near misses a learner makes (off by one or two, a dropped carry): a wrong answer that still looks plausible.
_NOISE_OFFSETS = (-10, -2, -1, 1, 2, 10)


class MixtureError(ModelError):
    """Bad mixture pretraining input (proportions, noise, size, formats), with a one-line reason."""


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
