"""Loss curves: a CSV log per stage (appended, resume-safe) and a PNG plot made with matplotlib."""

from __future__ import annotations

import csv
from pathlib import Path

from kinemate.io.atomic import atomic_path

FIELDS = ["step", "loss", "loss_ema", "lr", "elapsed_s", "steps_per_s"]


class LossLog:
    """Append-only ``log.csv`` in a stage folder. On resume, rows after the resumed step (written
    by the killed run after its last checkpoint) are dropped so the curve has no duplicates."""

    def __init__(self, stage_dir: Path, resume_step: int = 0):
        self.path = Path(stage_dir) / "log.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.read(self.path)
        rows = [r for r in rows if int(r["step"]) <= resume_step]
        self._write_all(rows)
        self.smoothed = float(rows[-1]["loss_ema"]) if rows else None

    @staticmethod
    def read(path: Path) -> list[dict]:
        path = Path(path)
        if not path.is_file():
            return []
        with path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _write_all(self, rows: list[dict]) -> None:
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS)
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in FIELDS})

    def append(self, step: int, loss: float, lr: float, elapsed_s: float, steps_per_s: float) -> float:
        self.smoothed = loss if self.smoothed is None else 0.95 * self.smoothed + 0.05 * loss
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=FIELDS).writerow({
                "step": step, "loss": f"{loss:.6g}", "loss_ema": f"{self.smoothed:.6g}",
                "lr": f"{lr:.3g}", "elapsed_s": f"{elapsed_s:.1f}", "steps_per_s": f"{steps_per_s:.3g}",
            })
        return self.smoothed


def plot_losses(csv_paths: dict[str, Path], out_png: Path) -> Path | None:
    """One panel per stage (loss and its moving average against step) → ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = {name: LossLog.read(p) for name, p in csv_paths.items()}
    data = {k: v for k, v in data.items() if v}
    if not data:
        return None
    fig, axes = plt.subplots(1, len(data), figsize=(4.2 * len(data), 3.2), squeeze=False)
    for ax, (name, rows) in zip(axes[0], data.items()):
        steps = [int(r["step"]) for r in rows]
        losses = [float(r["loss"]) for r in rows]
        smooth = [float(r["loss_ema"]) for r in rows]
        ax.plot(steps, losses, lw=0.6, alpha=0.4, label="loss")
        ax.plot(steps, smooth, lw=1.5, label="moving avg")
        ax.set_title(name)
        ax.set_xlabel("step")
        if min(losses + smooth) > 0:  # a log axis needs positive values
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return out_png
