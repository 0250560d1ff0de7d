"""The study's stage log: one line per stage on stderr (the heavy stages draw their own rich bars)."""

from __future__ import annotations

import time

from rich.console import Console


class StudyLog:
    """Prints `study <seconds since start> <message>` when enabled."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.console = Console(stderr=True)
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            self.console.print(
                f"[bold cyan]study[/] [dim]{time.perf_counter() - self.t0:5.0f}s[/] {msg}",
                highlight=False,
                soft_wrap=True,
            )
