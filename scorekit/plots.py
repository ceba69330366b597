"""Figures as PNG with matplotlib (headless), written atomically."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from .images import atomic_write_bytes


@contextlib.contextmanager
def figure(path: str | Path, ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6, 4)):
    """``with figure("out.png", ncols=2) as axes:`` draw on the axes; the PNG is saved on exit."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from .errors import ScorekitError

        raise ScorekitError("figures need matplotlib: pip install matplotlib") from None
    fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False)
    try:
        yield axes.flatten() if nrows * ncols > 1 else axes[0, 0]
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        atomic_write_bytes(path, buf.getvalue())
    finally:
        plt.close(fig)
