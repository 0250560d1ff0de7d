"""Progress of a stage that finishes in units (tensors, batches, checkpoints), reported on stderr or to a callable.

On a terminal it is a rich bar. Where stderr is not a terminal (CI, a cluster job's log) a bar would either vanish
or fill the log with redraws, so it becomes plain lines instead, at most one a second (and always the last one).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Least time between two plain lines, so a stage with many quick units does not flood a log.
LINE_INTERVAL_S = 1.0


@contextmanager
def progress_bar(
    label: str, total: int, progress: bool | Callable[[int, int, str], None], done: int = 0
) -> Iterator[Callable[[str], None]]:
    """Yields `advance(name)`, called once per finished item.

    `progress` is False (silent), True (a rich bar on stderr, or plain lines when stderr is not a terminal) or a
    callable receiving (done, total, name), for callers that report progress their own way.
    """
    if callable(progress):
        state = {"done": done}

        def call(name: str) -> None:
            state["done"] += 1
            progress(state["done"], total, name)

        yield call
        return
    if not progress:
        yield lambda name: None
        return
    if not sys.stderr.isatty():
        yield _plain_lines(label, total, done)
        return
    # rich's live display is loaded only when a bar is actually drawn.
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("[dim]{task.description}"),
        console=Console(stderr=True),
    )
    task = bar.add_task("", total=total, completed=done)
    with bar:
        yield lambda name: bar.update(task, advance=1, description=name)


def _plain_lines(label: str, total: int, done: int) -> Callable[[str], None]:
    """`advance(name)` printing `<label>: 12/38 done (<name>), 3.1 s elapsed, ~6.7 s left` on stderr.

    The time left extrapolates from the units finished in this run only: units a resumed run found done took
    no time here.
    """
    start = time.monotonic()
    state = {"done": done, "last": None}

    def advance(name: str) -> None:
        state["done"] += 1
        now = time.monotonic()
        last = state["last"]
        if state["done"] < total and last is not None and now - last < LINE_INTERVAL_S:
            return
        state["last"] = now
        elapsed = now - start
        left = elapsed / (state["done"] - done) * max(total - state["done"], 0)
        print(
            f"{label}: {state['done']}/{total} done ({name}), {elapsed:.1f} s elapsed, ~{left:.1f} s left",
            file=sys.stderr,
            flush=True,
        )

    return advance
