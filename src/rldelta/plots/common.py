"""What every plot module shares: matplotlib's Agg backend (no display), the PNG encoding and label shortening."""

from __future__ import annotations

import io

import matplotlib

# Agg before pyplot is first imported: plots are drawn to bytes, also on a machine without a display.
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def png(fig) -> bytes:
    """FIG as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def short(label: str, width: int = 28) -> str:
    """LABEL cut to WIDTH characters from the left (a run's or tensor's name differs at its end)."""
    return label if len(label) <= width else "…" + label[-(width - 1) :]


def num(x) -> float:
    """A table cell as a float for plotting: None (a missing value) becomes NaN."""
    return float("nan") if x is None else float(x)


__all__ = ["num", "plt", "png", "short"]
