"""The answer formats of the mixture models (code, plain, boxed): how each is written and how a completion is told
apart. Pure text, no model: the corpus renders documents with these, the `mixarith` task and the formats probe
classify completions with them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

OTHER = "other"

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
