"""Verifiable tasks generated locally: prompts, canonical answers, answer extraction and rewards.

Every task asks for the final answer inside `<answer>...</answer>`. The correctness reward checks the answer
(1.0 / 0.0); the format reward checks only that exactly one well-formed answer tag holds something the task can
parse (1.0 / 0.0). Train and test are disjoint by construction: each problem belongs to one split, decided by a
hash of its canonical form, and `generate` draws only problems of the requested split.

Expressions (arith problems, countdown solutions) are evaluated by walking their `ast` with a whitelist of
integer literals and + - *; nothing is ever passed to `eval`.
"""

from __future__ import annotations

import ast
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rldelta.runtime.errors import RldeltaError
from rldelta.train.answer_formats import OTHER, classify_format

TEST_FRACTION = 0.2
_MAX_EXPR_CHARS = 200  # longer "expressions" are not answers; also bounds the work of parsing untrusted text
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_INT_RE = re.compile(r"-?\d+(?:,\d{3})*(?!\d)")


class TaskError(RldeltaError):
    """Bad task input (unknown task, difficulty out of range, malformed answer record)."""


@dataclass(frozen=True)
class Example:
    prompt: list[dict]  # chat messages, e.g. [{"role": "user", "content": "..."}]
    answer: str  # canonical answer (arith: the integer; countdown: JSON with target, numbers and one solution)
    difficulty: int


# ---- safe expression evaluation ---------------------------------------------------------------------------------

_BINOPS: dict[type, Callable[[int, int], int]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
}


def _normalise_expr(text: str) -> str:
    return text.replace("×", "*").replace("·", "*").replace("−", "-").replace("–", "-").strip()


def parse_expression(text: str, *, allow_unary_minus: bool = False) -> tuple[ast.expr, list[int]] | None:
    """Parse `text` as integers combined with + - * and parentheses; None if it is anything else.

    Returns the tree and the integer literals in it (in order), so a caller can check which numbers were used.
    """
    text = _normalise_expr(text)
    if not text or len(text) > _MAX_EXPR_CHARS:
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    literals: list[int] = []

    def ok(node: ast.AST) -> bool:
        if isinstance(node, ast.BinOp):
            return type(node.op) in _BINOPS and ok(node.left) and ok(node.right)
        if isinstance(node, ast.UnaryOp) and allow_unary_minus:
            return isinstance(node.op, ast.USub) and ok(node.operand)
        if isinstance(node, ast.Constant) and type(node.value) is int:  # not bool, not float
            literals.append(node.value)
            return True
        return False

    return (tree.body, literals) if ok(tree.body) else None


def evaluate_expression(node: ast.expr) -> int:
    """The value of a tree accepted by `parse_expression`."""
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](evaluate_expression(node.left), evaluate_expression(node.right))
    if isinstance(node, ast.UnaryOp):
        return -evaluate_expression(node.operand)
    return node.value  # type: ignore[attr-defined]


def safe_eval(text: str, *, allow_unary_minus: bool = False) -> int | None:
    """The integer value of a whitelisted expression, or None if `text` is not one."""
    parsed = parse_expression(text, allow_unary_minus=allow_unary_minus)
    return None if parsed is None else evaluate_expression(parsed[0])


# ---- completions ------------------------------------------------------------------------------------------------


def completion_text(completion: Any) -> str:
    """The text of a completion as TRL passes it: a string, or a list of chat messages (assistant content joined)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)):
        parts = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in parts if m.get("role", "assistant") == "assistant"] or parts
        return "".join(str(m.get("content") or "") for m in assistant)
    return ""


def answer_tags(text: str) -> list[str]:
    """The contents of every `<answer>...</answer>` pair in `text`, in order."""
    return _ANSWER_RE.findall(text)


def _integers(text: str) -> list[str]:
    """The integers written in `text`, in order; thousands separators allowed."""
    out = []
    for m in _INT_RE.finditer(text):
        token = m.group()
        # A minus after a number or ")" ("10 - 3") is subtraction, not the sign of the next number.
        if token.startswith("-") and re.search(r"[\d)]\s*$", text[: m.start()]):
            token = token[1:]
        out.append(token)
    return out


def _parse_int(text: str) -> int | None:
    text = text.strip().replace(",", "").replace(" ", "").replace("−", "-")
    if text.startswith("+"):
        text = text[1:]
    return int(text) if re.fullmatch(r"-?\d{1,60}", text) else None


# ---- tasks ------------------------------------------------------------------------------------------------------


class Task:
    """A family of generated problems with a verifiable answer. Subclasses define the problems and the checker."""

    name: str = ""
    difficulties: tuple[int, ...] = ()

    # Subclasses: one random problem of a difficulty -> (prompt text, canonical answer, split key).
    def _sample(self, rng: random.Random, difficulty: int) -> tuple[str, str, str]:
        raise NotImplementedError

    def extract_answer(self, completion: str) -> str | None:
        raise NotImplementedError

    def correctness_reward(self, completion: str, answer: str) -> float:
        raise NotImplementedError

    def format_reward(self, completion: str) -> float:
        raise NotImplementedError

    def reference_completion(self, answer: str) -> str:
        """A correct, well-formatted completion for a canonical answer (e.g. for SFT targets and tests)."""
        raise NotImplementedError

    def split_of(self, key: str) -> str:
        """'train' or 'test' for a problem's canonical key; fixed for all seeds and sample sizes."""
        h = int.from_bytes(hashlib.sha256(f"{self.name}:{key}".encode()).digest()[:8], "big")
        return "test" if h / 2**64 < TEST_FRACTION else "train"

    def generate(self, n: int, *, seed: int, split: str = "train", difficulty: int | None = None) -> list[Example]:
        """`n` problems of `split`, the same for the same arguments; mixed difficulties unless one is given.

        Problems are distinct while the split has enough of them; small spaces (the easiest levels) repeat.
        """
        if split not in ("train", "test"):
            raise TaskError(f"split must be 'train' or 'test', not {split!r}")
        if difficulty is not None and difficulty not in self.difficulties:
            raise TaskError(f"task {self.name}: difficulty {difficulty} not in {list(self.difficulties)}")
        if n < 0:
            raise TaskError(f"n must be >= 0, got {n}")
        # A string seed goes through sha512 inside `random`, so it is stable across processes and hash seeds.
        rng = random.Random(f"{self.name}|{split}|{seed}|{difficulty}")
        out: list[Example] = []
        seen: set[str] = set()
        for i in range(n):
            level = difficulty if difficulty is not None else self.difficulties[i % len(self.difficulties)]
            for attempt in range(10_000):
                text, answer, key = self._sample(rng, level)
                if self.split_of(key) != split:
                    continue
                if key not in seen or attempt >= 200:
                    break
            else:  # pragma: no cover - only a task whose split is empty gets here
                raise TaskError(f"task {self.name}: no {split} problems of difficulty {level}")
            seen.add(key)
            out.append(Example(prompt=[{"role": "user", "content": text}], answer=answer, difficulty=level))
        if difficulty is None:
            rng.shuffle(out)
        return out


class Arith(Task):
    """Integer arithmetic. Difficulty: 1 = one-digit a±b ... 5 = three three-digit operands with + - *."""

    name = "arith"
    # difficulty -> (number of operands, digits per operand, operators)
    LEVELS: dict[int, tuple[int, int, str]] = {
        1: (2, 1, "+-"),
        2: (2, 2, "+-"),
        3: (2, 2, "+-*"),
        4: (3, 2, "+-*"),
        5: (3, 3, "+-*"),
    }
    difficulties = tuple(LEVELS)

    def _sample(self, rng: random.Random, difficulty: int) -> tuple[str, str, str]:
        n_operands, digits, ops = self.LEVELS[difficulty]
        lo = 0 if digits == 1 else 10 ** (digits - 1)
        numbers = [rng.randint(lo, 10**digits - 1) for _ in range(n_operands)]
        expr = str(numbers[0])
        for x in numbers[1:]:
            expr += f" {rng.choice(ops)} {x}"
        value = safe_eval(expr)
        assert value is not None
        prompt = f"What is {expr}? Give only the final number inside <answer></answer>, like <answer>7</answer>."
        return prompt, str(value), expr

    def extract_answer(self, completion: str) -> str | None:
        """The integer in the last answer tag; without a usable tag, the last integer in the text."""
        for content in reversed(answer_tags(completion)):
            value = _parse_int(content)
            if value is None:
                # "<answer>12 + 3 = 15</answer>": the last number in the tag is the result.
                found = _integers(content)
                value = _parse_int(found[-1]) if found else None
            if value is not None:
                return str(value)
        found = _integers(completion)
        for candidate in reversed(found):
            value = _parse_int(candidate)
            if value is not None:
                return str(value)
        return None

    def correctness_reward(self, completion: str, answer: str) -> float:
        expected = _parse_int(answer)
        if expected is None:
            raise TaskError(f"arith answer must be an integer, got {answer!r}")
        got = self.extract_answer(completion)
        return 1.0 if got is not None and int(got) == expected else 0.0

    def format_reward(self, completion: str) -> float:
        tags = answer_tags(completion)
        return 1.0 if len(tags) == 1 and _parse_int(tags[0]) is not None else 0.0

    def reference_completion(self, answer: str) -> str:
        return f"<answer>{answer}</answer>"


class Countdown(Task):
    """Reach a target with some of the given numbers, each at most once, using + - * and parentheses.

    Difficulty = number of operations in the reference solution (it uses difficulty + 1 numbers); one extra
    number that the reference solution does not need is given from difficulty 2 on. The canonical answer is JSON:
    {"target": 24, "numbers": [3, 5, 3, 7], "solution": "(3 + 5) * 3"}.
    """

    name = "countdown"
    difficulties = (1, 2, 3, 4)
    MAX_TARGET = 999

    def _sample(self, rng: random.Random, difficulty: int) -> tuple[str, str, str]:
        while True:
            used = [rng.randint(1, 12 if difficulty >= 3 else 20) for _ in range(difficulty + 1)]
            items = [(str(x), x) for x in used]
            while len(items) > 1:
                i, j = rng.sample(range(len(items)), 2)
                (ea, va), (eb, vb) = items[i], items[j]
                op = rng.choice("+-*")
                if op == "-" and va < vb:
                    (ea, va), (eb, vb) = (eb, vb), (ea, va)
                value = {"+": va + vb, "-": va - vb, "*": va * vb}[op]
                items = [it for k, it in enumerate(items) if k not in (i, j)] + [(f"({ea} {op} {eb})", value)]
            expr, target = items[0]
            numbers = used + ([rng.randint(1, 12)] if difficulty >= 2 else [])
            # A target among the given numbers would be solved by copying it.
            if 1 <= target <= self.MAX_TARGET and target not in numbers:
                break
        solution = expr[1:-1] if expr.startswith("(") else expr  # drop the outermost parentheses
        rng.shuffle(numbers)
        listed = ", ".join(map(str, numbers))
        prompt = (
            f"Using the numbers {listed}, make {target}. You may use + - * and parentheses, "
            f"each number at most once. Put only the expression inside <answer></answer>."
        )
        answer = json.dumps({"target": target, "numbers": numbers, "solution": solution})
        key = f"{sorted(numbers)}->{target}"
        return prompt, answer, key

    @staticmethod
    def parse_record(answer: str) -> tuple[int, list[int]]:
        """(target, numbers) from a canonical countdown answer."""
        try:
            record = json.loads(answer)
            return int(record["target"]), [int(x) for x in record["numbers"]]
        except (ValueError, TypeError, KeyError):
            raise TaskError(f"countdown answer must be JSON with target and numbers, got {answer!r}") from None

    def extract_answer(self, completion: str) -> str | None:
        """The expression in the last answer tag (a trailing "= 24" dropped); else the last expression-like run."""
        candidates = list(reversed(answer_tags(completion)))
        if not candidates:
            # An expression is digits and parentheses joined by operators, with at least one operator.
            runs = re.findall(r"[\d(][\d \t()+\-*×]*[\d)]", completion)
            candidates = [r for r in reversed(runs) if re.search(r"[+\-*×]", r)]
        for content in candidates:
            expr = content.split("=")[0].strip()
            if parse_expression(expr) is not None:
                return _normalise_expr(expr)
        return None

    def check(self, expression: str, target: int, numbers: list[int]) -> bool:
        """True if `expression` uses only + - *, integer literals from `numbers` (each at most once), and hits `target`."""
        parsed = parse_expression(expression)
        if parsed is None:
            return False
        tree, literals = parsed
        if Counter(literals) - Counter(numbers):  # some literal used more often than it is given
            return False
        return evaluate_expression(tree) == target

    def correctness_reward(self, completion: str, answer: str) -> float:
        target, numbers = self.parse_record(answer)
        expr = self.extract_answer(completion)
        return 1.0 if expr is not None and self.check(expr, target, numbers) else 0.0

    def format_reward(self, completion: str) -> float:
        tags = answer_tags(completion)
        return 1.0 if len(tags) == 1 and parse_expression(tags[0].split("=")[0]) is not None else 0.0

    def reference_completion(self, answer: str) -> str:
        return f"<answer>{json.loads(answer)['solution']}</answer>"


class Digits(Arith):
    """Arith prompts scored by the share of digit characters in the completion (1.0 = nothing but digits).

    For random-initialised models (tests, the tiny study preset): they are never right on arith, so every GRPO
    advantage would be 0 and nothing would train. This dense reward measures no skill; it exercises the machinery.
    """

    name = "digits"

    def correctness_reward(self, completion: str, answer: str) -> float:
        return sum(ch.isdigit() for ch in completion) / max(len(completion), 1)


class MixArith(Arith):
    """Arith problems with a neutral prompt ("What is 23 + 45?") that asks for no format, for models pretrained on
    several answer formats (train/mixture.py). Correct = the last integer of the completion is the result; format
    reward = 1.0 when the completion is written in one of formats.FORMATS.
    """

    name = "mixarith"
    _PROMPT_RE = re.compile(r"What is (.+)\?")

    def _sample(self, rng: random.Random, difficulty: int) -> tuple[str, str, str]:
        _, answer, expr = super()._sample(rng, difficulty)
        return f"What is {expr}?", answer, expr

    @classmethod
    def expression(cls, prompt: str) -> str:
        """The expression a mixarith prompt asks for."""
        m = cls._PROMPT_RE.fullmatch(prompt)
        if m is None:
            raise TaskError(f"not a mixarith prompt: {prompt!r}")
        return m.group(1)

    def format_reward(self, completion: str) -> float:
        return 0.0 if classify_format(completion) == OTHER else 1.0

    def reference_completion(self, answer: str) -> str:
        return f"\\boxed{{{answer}}}"  # the boxed format; its expression part is optional


TASKS: dict[str, type[Task]] = {"arith": Arith, "countdown": Countdown, "digits": Digits, "mixarith": MixArith}


def get_task(name: str) -> Task:
    """The task called `name`."""
    try:
        return TASKS[name]()
    except KeyError:
        raise TaskError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None


def to_dataset(examples: list[Example]):
    """A `datasets.Dataset` with columns prompt (conversational), answer and difficulty, as TRL trainers take it."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "prompt": [ex.prompt for ex in examples],
            "answer": [ex.answer for ex in examples],
            "difficulty": [ex.difficulty for ex in examples],
        }
    )


def trl_reward_funcs(
    task: Task, rewards: Sequence[str] = ("correctness", "format")
) -> list[Callable[..., list[float]]]:
    """The chosen rewards (correctness, format) as functions with TRL's signature f(prompts, completions, answer, **kw)."""

    def correctness(prompts=None, completions=(), answer=(), **kwargs) -> list[float]:
        return [task.correctness_reward(completion_text(c), a) for c, a in zip(completions, answer, strict=True)]

    def format_(prompts=None, completions=(), **kwargs) -> list[float]:
        return [task.format_reward(completion_text(c)) for c in completions]

    # TRL logs each reward under its function's name.
    correctness.__name__ = correctness.__qualname__ = f"{task.name}_correctness"
    format_.__name__ = format_.__qualname__ = f"{task.name}_format"
    funcs = {"correctness": correctness, "format": format_}
    return [funcs[r] for r in rewards]
