"""Per-epoch metrics: one CSV row per epoch and the loss / metric curves as a PNG (matplotlib, Agg)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["MetricsLog"]


class MetricsLog:
    """``metrics.csv`` (header = union of the keys seen, rewritten when a new key appears) and ``curves.png``."""

    def __init__(self, folder: Path, rows: Sequence[Mapping[str, Any]] = ()) -> None:
        self.csv_path = Path(folder) / "metrics.csv"
        self.png_path = Path(folder) / "curves.png"
        self.rows: list[dict[str, Any]] = [dict(r) for r in rows]

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))
        self._write_csv()
        self._plot()

    def _columns(self) -> list[str]:
        cols: list[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        return cols

    def _write_csv(self) -> None:
        cols = self._columns()
        tmp = self.csv_path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: _fmt(r.get(k)) for k in cols})
        tmp.replace(self.csv_path)

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        numeric = [c for c in self._columns() if c not in ("epoch", "step", "seconds", "lr")
                   and any(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) for r in self.rows)]
        losses = [c for c in numeric if "loss" in c]
        others = [c for c in numeric if c not in losses]
        panels = [p for p in (losses, others) if p]
        if not panels:
            return
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
        epochs = [r.get("epoch") for r in self.rows]
        for ax, cols, title in zip(axes[0], panels, ("loss", "metrics")):
            for c in cols:
                ys = [r.get(c) if isinstance(r.get(c), (int, float)) else math.nan for r in self.rows]
                ax.plot(epochs, ys, marker="o", ms=3, label=c)
            ax.set(xlabel="epoch", title=title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        tmp = self.png_path.with_suffix(".png.tmp")
        fig.savefig(tmp, dpi=90, format="png")
        plt.close(fig)
        tmp.replace(self.png_path)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v
