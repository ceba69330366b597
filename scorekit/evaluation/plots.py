"""Figures as PNG with matplotlib (headless), written atomically."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from ..images import atomic_write_bytes


@contextlib.contextmanager
def figure(path: str | Path, ncols: int = 1, nrows: int = 1, size: tuple[float, float] = (6, 4)):
    """``with figure("out.png", ncols=2) as axes:`` draw on the axes; the PNG is saved on exit."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        from ..errors import ScorekitError

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


def labeled_grid(path: str | Path, cells, *, title: str, col_labels: list[str] | None = None,
                 row_labels: list[str] | None = None, xlabel: str | None = None, ylabel: str | None = None) -> Path:
    """A grid of uint8 images ``cells`` (rows, cols, C, H, W) as a figure with a title, column labels on
    top and row labels on the left; small images are enlarged without blurring (nearest neighbour)."""
    from ..images import grid

    rows, cols, ch, h, w = cells.shape
    mosaic = grid(cells.reshape(rows * cols, ch, h, w), nrow=cols)
    cell_in = min(0.9, max(0.35, 9.0 / max(cols, 1)))  # inches per cell: readable but not huge
    width = cols * cell_in + (1.6 if row_labels else 0.4)
    height = rows * cell_in + 1.2 + (0.3 if xlabel else 0)
    with figure(path, size=(max(width, 4.0), height)) as ax:
        ax.imshow(mosaic[..., 0] if ch == 1 else mosaic, cmap="gray" if ch == 1 else None, vmin=0, vmax=255,
                  interpolation="nearest")
        ax.set_title(title, fontsize=10, pad=24 if cols > 8 else 12)
        ax.set_xticks([1 + c * (w + 1) + (w - 1) / 2 for c in range(cols)])
        ax.set_xticklabels(col_labels or [""] * cols, fontsize=7, rotation=45 if cols > 8 else 0,
                           ha="left" if cols > 8 else "center")
        ax.xaxis.tick_top()
        ax.set_yticks([1 + r * (h + 1) + (h - 1) / 2 for r in range(rows)])
        ax.set_yticklabels(row_labels or [""] * rows, fontsize=7)
        ax.tick_params(length=0)
        if xlabel:
            ax.set_xlabel(xlabel, fontsize=8)
        if ylabel:
            ax.set_ylabel(ylabel, fontsize=8)
        for side in ax.spines.values():
            side.set_visible(False)
    return Path(path)
