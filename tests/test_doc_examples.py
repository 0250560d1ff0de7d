"""Every code block of the README and the docs that claims an output is run, and its output compared.

A shell or Python block carries a marker on the line before its fence (an HTML comment, invisible on GitHub and
on the site):

    <!-- example: run -->            run it (bash: each line in one `bash -e` shell; python: a script), in order,
                                     in one temporary folder per page, so a later block can read what an earlier
                                     one wrote; the `rldelta` on PATH is this interpreter's
    <!-- example: output -->         the fence that follows is what the last run block printed: each of its lines
                                     must appear in that output, in order (trailing spaces ignored); `...` skips
    <!-- example: skip: REASON -->   not run, and why (it trains a model for minutes, needs the network, ...)

A bash, sh, console or python fence with no marker fails the test, so a new example is either run or says why not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
CODE_LANGS = {"bash", "sh", "console", "python", "shell"}
MARKER = re.compile(r"^<!-- example: (run|output|skip)(?::\s*(.*?))?\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)")
TIMEOUT_S = 300


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None
    reason: str | None


def blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, ticks, lang = m.groups()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            j += 1
        body = "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in lines[i + 1 : j])
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        mark = MARKER.match(lines[k].strip()) if k >= 0 else None
        found.append(Block(page, i + 1, lang, body, mark.group(1) if mark else None, mark.group(2) if mark else None))
        i = j + 1
    return found


def _where(b: Block) -> str:
    return f"{b.page.relative_to(ROOT)}:{b.line}"


def test_every_code_block_is_marked_run_or_skip():
    unmarked = [_where(b) for p in PAGES for b in blocks(p) if b.lang in CODE_LANGS and b.marker is None]
    assert not unmarked, f"code blocks with no <!-- example: run|skip: reason --> marker: {unmarked}"
    no_reason = [_where(b) for p in PAGES for b in blocks(p) if b.marker == "skip" and not b.reason]
    assert not no_reason, f"skipped blocks must say why: {no_reason}"


def _run(b: Block, cwd: Path) -> str:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(COLUMNS="100", NO_COLOR="1", TERM="dumb", PYTHONUNBUFFERED="1")
    if b.lang == "python":
        script = cwd / f"example_{b.line}.py"
        script.write_text(b.code)
        cmd = [sys.executable, str(script)]
    else:
        cmd = ["bash", "-e", "-c", b.code]
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"{_where(b)} exited {p.returncode}:\n{out[-3000:]}"
    return out


def expect_in_order(expected: str, actual: str, where: str) -> None:
    lines = [line.rstrip() for line in actual.splitlines()]
    at = 0
    for want in (w.rstrip() for w in expected.strip("\n").splitlines()):
        if want.strip() == "...":
            continue
        try:
            at = lines.index(want, at) + 1
        except ValueError:
            raise AssertionError(
                f"{where}: the output lacks the line {want!r} (in order); it printed:\n{actual}"
            ) from None


RUN_PAGES = [p for p in PAGES if any(b.marker == "run" for b in blocks(p))]


@pytest.mark.parametrize("page", RUN_PAGES, ids=[str(p.relative_to(ROOT)) for p in RUN_PAGES])
def test_examples_run_as_documented(page: Path, tmp_path: Path):
    last = None
    for b in blocks(page):
        if b.marker == "run":
            last = (b, _run(b, tmp_path))
        elif b.marker == "output":
            assert last is not None, f"{_where(b)}: an output block with no run block before it"
            expect_in_order(b.code, last[1], _where(b))


def test_expect_in_order_fails_on_a_missing_or_reordered_line():
    expect_in_order("a\n...\nc", "a\nb\nc\n", "x")
    with pytest.raises(AssertionError):
        expect_in_order("c\na", "a\nb\nc\n", "x")
    with pytest.raises(AssertionError):
        expect_in_order("a\nd", "a\nb\nc\n", "x")
