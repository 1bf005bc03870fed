"""Reports: JSON (everything), Markdown (for people), PNG plots; and the compare mode.

``write_report(report, out_dir)`` writes ``report.json``, ``report.md`` and ``plots/*.png``
(per-frame curves of each metric, one line per video, and the distributions of per-frame
values). ``compare_reports([dir, …], out_dir)`` puts several reports side by side in one table
and one set of plots, and says loudly when their protocols or networks differ. Every file is
written to a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from kinemate.errors import InputError, UsageError
from kinemate.io.atomic import atomic_path, write_text_atomic

__all__ = ["write_report", "compare_reports", "load_report", "METRICS"]

# metric key -> (label, better: "up" | "down", format)
METRICS: dict[str, tuple[str, str, str]] = {
    "psnr": ("PSNR (dB, float; mean of frames)", "up", "{:.2f}"),
    "psnr_pooled": ("PSNR (dB, pooled MSE)", "up", "{:.2f}"),
    "ssim": ("SSIM", "up", "{:.4f}"),
    "l1": ("L1 (0..1)", "down", "{:.4f}"),
    "lpips": ("LPIPS", "down", "{:.4f}"),
    "flicker_warp_mae": ("flicker: warping error (grey levels)", "down", "{:.3f}"),
    "flicker_warp_mse": ("flicker: E_warp (MSE, 0..1)", "down", "{:.6f}"),
    "gt_flicker_warp_mae": ("ground truth's own warping error (reference level)", "", "{:.3f}"),
    "pck@0.1": ("pose PCK@0.1", "up", "{:.3f}"),
    "pck@0.2": ("pose PCK@0.2", "up", "{:.3f}"),
    "pck@0.05": ("pose PCK@0.05", "up", "{:.3f}"),
    "mke_norm": ("pose mean keypoint error (/ body size)", "down", "{:.4f}"),
    "mke_px": ("pose mean keypoint error (px)", "down", "{:.2f}"),
    "pose_detection_rate": ("pose re-detection rate", "up", "{:.3f}"),
    "identity_mean": ("identity similarity to reference (proxy)", "up", "{:.4f}"),
    "identity_drop": ("identity drift: first-10% minus last-10%", "down", "{:.4f}"),
    "identity_slope_per_100f": ("identity slope per 100 frames", "up", "{:.4f}"),
    "flicker_valid_fraction": ("flicker: fraction of pixels with reliable flow", "", "{:.3f}"),
    "psnr_uint8_trap": ("PSNR as the uint8-overflow script computes it (WRONG, for comparison only)", "", "{:.2f}"),
}
SET_METRICS = {"fid": "FID (frames)", "fid_vid": "FID-VID (clips, 3D ResNet-50)", "fvd": "FVD (clips, I3D)"}
PER_FRAME_PLOTS = ["psnr", "ssim", "lpips", "warp_mae", "identity", "pck"]


# ----------------------------------------------------------------------------------- writing helpers

def _savefig(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def _plt():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - dev/eval extra
        raise UsageError("plots need matplotlib: pip install matplotlib==3.10.3 (requirements/dev.txt)") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _json_safe(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else ("inf" if obj > 0 else "-inf" if obj < 0 else None)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _json_safe(obj.item())
    return obj


def _fmt(key: str, v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    fmt = METRICS.get(key, ("", "", "{:.4g}"))[2]
    return fmt.format(v)


def _label(key: str) -> str:
    return METRICS.get(key, (key, "", ""))[0]


def _arrow(key: str) -> str:
    return {"up": " ↑", "down": " ↓"}.get(METRICS.get(key, ("", "", ""))[1], "")


def _ordered(keys) -> list[str]:
    keys = list(keys)
    return [k for k in METRICS if k in keys] + sorted(k for k in keys if k not in METRICS)


def summary_lines(summary: dict) -> list[str]:
    """``label: value`` lines of a report's summary, in the metrics' order (for terminals)."""
    return [f"{_label(k)}: {_fmt(k, summary[k])}" for k in _ordered(summary)]


# ----------------------------------------------------------------------------------- plots

def _plots(report: dict, plot_dir: Path) -> list[str]:
    plt = _plt()
    plot_dir.mkdir(parents=True, exist_ok=True)
    written = []
    videos = report["videos"]
    for key in PER_FRAME_PLOTS:
        series = [(v["name"], np.asarray(v["per_frame"][key], np.float64)) for v in videos if key in v["per_frame"]]
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7, 3.2))
        if len(series) <= 12:
            for name, y in series:
                ax.plot(np.arange(len(y)), np.where(np.isfinite(y), y, np.nan), lw=1.2, label=name)
            ax.legend(fontsize=7, ncol=2, loc="best")
        else:  # many videos: median and inter-quartile band over videos, per frame index
            n = max(len(y) for _, y in series)
            mat = np.full((len(series), n), np.nan)
            for i, (_, y) in enumerate(series):
                mat[i, : len(y)] = np.where(np.isfinite(y), y, np.nan)
            q = np.nanpercentile(mat, [25, 50, 75], axis=0)
            ax.fill_between(np.arange(n), q[0], q[2], alpha=0.3, label="25–75 %")
            ax.plot(np.arange(n), q[1], lw=1.5, label=f"median of {len(series)} videos")
            ax.legend(fontsize=7)
        ax.set_xlabel("frame (after the protocol's start/stride)")
        ax.set_ylabel(key)
        ax.set_title(f"per-frame {key}")
        ax.grid(alpha=0.3)
        path = plot_dir / f"per_frame_{key}.png"
        _savefig(fig, path)
        plt.close(fig)
        written.append(path.name)
    keys = [k for k in PER_FRAME_PLOTS if any(k in v["per_frame"] for v in videos)]
    if keys:
        cols = min(3, len(keys))
        rows = math.ceil(len(keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
        for ax, key in zip(axes.ravel(), keys):
            vals = np.concatenate([np.asarray(v["per_frame"][key], np.float64) for v in videos if key in v["per_frame"]])
            vals = vals[np.isfinite(vals)]
            if vals.size:
                ax.hist(vals, bins=30, color="#4472c4")
            ax.set_title(f"{key} (n={vals.size})", fontsize=9)
            ax.grid(alpha=0.3)
        for ax in axes.ravel()[len(keys):]:
            ax.axis("off")
        fig.tight_layout()
        path = plot_dir / "distributions.png"
        _savefig(fig, path)
        plt.close(fig)
        written.append(path.name)
    return written


# ----------------------------------------------------------------------------------- markdown

def _networks_md(nets: dict) -> list[str]:
    lines = ["| metric | network and weights |", "| --- | --- |"]
    for metric, d in nets.items():
        if not d.get("available"):
            lines.append(f"| {metric} | {d.get('why', 'not available')} |")
            continue
        text = d.get("text", "")
        checks = [f"{Path(f['path']).name}: sha256 {f['sha256']}" + (
            f" (file-name hash {f['filename_hash_check']})" if f.get("filename_hash_check") not in (None, "n/a") else "")
            for f in d.get("files", [])]
        lines.append(f"| {metric} | {text}" + ("<br>" + "<br>".join(checks) if checks else "") + " |")
    return lines


def _markdown(report: dict, plots: list[str]) -> str:
    p = report["protocol"]
    size = f"{p['size'][0]}x{p['size'][1]}" if p.get("size") else "ground truth's own size"
    out = [f"# kinemate evaluation ({report['mode']})", ""]
    for note in report["notes"]:
        if note.startswith("RANDOM"):
            out += [f"> **{note}**", ""]
    out += [f"{report['num_videos']} videos, {report['num_frames']} frames; kinemate {report['kinemate_version']}, "
            f"{report['created']}, {report['seconds']} s.", "",
            "## Protocol", "",
            "| setting | value |", "| --- | --- |",
            f"| resolution | {size}, aspect-preserving {p['fit']} (never stretched) |",
            f"| frames | from {p['start']}, every {p['stride']}, at most {p['max_frames'] or 'all'} |",
            f"| FVD / FID-VID clips | {p['clip_len']} consecutive protocol frames, non-overlapping |",
            f"| pose | {'PCK@' + str(p['pck_alpha']) + ' vs. the ground-truth (or driving) pose' if p['pose'] else 'off'} |",
            f"| flicker flow | {p['flow']} (DIS optical flow, forward-backward occlusion check) |",
            f"| PSNR | float MSE, 255 peak; per frame, then averaged (pooled-MSE value also given) |", "",
            "## Networks and weights", ""] + _networks_md(report["networks"]) + [""]
    out += ["## Results", "", "| metric | value |", "| --- | --- |"]
    for k in _ordered(report["summary"]):
        out.append(f"| {_label(k)}{_arrow(k)} | {_fmt(k, report['summary'][k])} |")
    for k, label in SET_METRICS.items():
        d = report["set_metrics"].get(k, {})
        if d.get("value") is None:
            out.append(f"| {label} ↓ | n/a — {d.get('why', '')} |")
        else:
            extra = f" ({d['n_generated']} vs {d['n_ground_truth']} {d['unit']})"
            out.append(f"| {label} ↓ | {d['value']:.3f}{extra}{' ⚠' if 'warning' in d else ''} |")
    if "psnr_uint8_trap" in report["summary"]:
        out += ["", "The *uint8-overflow PSNR* row reproduces the widely copied evaluation script, which "
                "subtracts and squares uint8 arrays (both wrap modulo 256); it is shown only so numbers can be "
                "compared with published ones. Report the float PSNR. See docs/evaluation.md."]
    out += ["", "## Per video", ""]
    cols = [k for k in ("psnr", "ssim", "lpips", "flicker_warp_mae", "identity_mean", "pck@" + f"{p['pck_alpha']:g}")
            if any(k in v["summary"] for v in report["videos"])]
    out += ["| video | frames | " + " | ".join(cols) + " |", "| --- | --- |" + " --- |" * len(cols)]
    for v in report["videos"]:
        out.append(f"| {v['name']} | {v['frames']} | " + " | ".join(_fmt(k, v['summary'].get(k)) for k in cols) + " |")
    if plots:
        out += ["", "## Plots", ""] + [f"![{name}](plots/{name})" for name in plots]
    other = [n for n in report["notes"] if not n.startswith("RANDOM")]
    warnings = [f"{k}: {d['warning']}" for k, d in report["set_metrics"].items() if d.get("warning")]
    if other or warnings:
        out += ["", "## Notes", ""] + [f"- {n}" for n in other + warnings]
    return "\n".join(out) + "\n"


def write_report(report: dict, out_dir: str | Path, *, plots: bool = True) -> Path:
    """Write report.json, report.md and plots/ into ``out_dir``; returns the Markdown path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = _plots(report, out_dir / "plots") if plots else []
    write_text_atomic(out_dir / "report.json", json.dumps(_json_safe(report), indent=1))
    md = out_dir / "report.md"
    write_text_atomic(md, _markdown(report, names))
    return md


def load_report(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    if not p.is_file():
        raise InputError(f"{path} holds no report.json; pass folders written by 'kinemate eval videos|dataset'")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{p} is not valid JSON ({exc}); re-run the evaluation") from exc


# ----------------------------------------------------------------------------------- compare

def _net_signature(nets: dict) -> dict:
    return {m: ([f["sha256"] for f in d.get("files", [])] if d.get("available") else None) for m, d in nets.items()
            if m not in ("identity",)}


def compare_reports(dirs: list[str | Path], out_dir: str | Path, *, names: list[str] | None = None) -> Path:
    """Put several reports side by side: compare.md, compare.json and plots/compare_*.png."""
    if len(dirs) < 2:
        raise UsageError("compare needs at least two report folders")
    reports = [load_report(d) for d in dirs]
    names = names or [Path(d).name or str(d) for d in dirs]
    if len(names) != len(reports):
        raise UsageError(f"--names gives {len(names)} names for {len(reports)} reports")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    warnings = []
    base = reports[0]
    for n, r in zip(names[1:], reports[1:]):
        if r["protocol"] != base["protocol"]:
            diff = {k: (base["protocol"].get(k), r["protocol"].get(k)) for k in set(base["protocol"]) | set(r["protocol"])
                    if base["protocol"].get(k) != r["protocol"].get(k)}
            warnings.append(f"PROTOCOLS DIFFER between {names[0]} and {n}: {diff} — the numbers are not comparable")
        if _net_signature(r["networks"]) != _net_signature(base["networks"]):
            warnings.append(f"metric networks/weights differ between {names[0]} and {n}: network-based metrics are not comparable")
        if any(x.startswith("RANDOM") for x in r.get("notes", [])):
            warnings.append(f"{n} used RANDOM metric networks (plumbing test)")
        if sorted(v["name"] for v in r["videos"]) != sorted(v["name"] for v in base["videos"]):
            warnings.append(f"{n} evaluated a different set of videos than {names[0]}")
    keys = _ordered({k for r in reports for k in r["summary"]})
    table = {k: [r["summary"].get(k) for r in reports] for k in keys}
    for k in SET_METRICS:
        table[k] = [r["set_metrics"].get(k, {}).get("value") for r in reports]
    lines = ["# kinemate evaluation: comparison", ""]
    lines += [f"> **{w}**" for w in warnings] + ([""] if warnings else [])
    lines += ["| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for k, vals in table.items():
        label = SET_METRICS.get(k, _label(k)) + (" ↓" if k in SET_METRICS else _arrow(k))
        better = METRICS.get(k, ("", "down" if k in SET_METRICS else "", ""))[1] or ("down" if k in SET_METRICS else "")
        finite = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
        best = (max(finite) if better == "up" else min(finite)) if finite and better else None
        cells = [("**" + _fmt(k, v) + "**") if (best is not None and v == best and len(finite) > 1) else _fmt(k, v) for v in vals]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Protocol of the first report: `" + json.dumps(base["protocol"]) + "`", ""]
    # plots: per-metric bars, and per-frame distributions side by side
    plt = _plt()
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    plot_keys = [k for k in ("psnr", "ssim", "lpips", "flicker_warp_mae", "identity_mean", "pck@0.1", "fid", "fvd", "fid_vid")
                 if any(isinstance(v, (int, float)) and v is not None and math.isfinite(v) for v in table.get(k, []))]
    if plot_keys:
        cols = min(3, len(plot_keys))
        rows = math.ceil(len(plot_keys) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
        for ax, k in zip(axes.ravel(), plot_keys):
            vals = [v if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else 0.0 for v in table[k]]
            ax.bar(range(len(vals)), vals, color=[f"C{i}" for i in range(len(vals))])
            ax.set_xticks(range(len(vals)), names, rotation=20, fontsize=8)
            ax.set_title(SET_METRICS.get(k, k), fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        for ax in axes.ravel()[len(plot_keys):]:
            ax.axis("off")
        fig.tight_layout()
        _savefig(fig, plot_dir / "compare_summary.png")
        plt.close(fig)
        lines.append("![summary](plots/compare_summary.png)")
    dist_keys = [k for k in ("psnr", "ssim", "lpips", "warp_mae", "identity")
                 if any(k in v["per_frame"] for r in reports for v in r["videos"])]
    if dist_keys:
        fig, axes = plt.subplots(1, len(dist_keys), figsize=(3.6 * len(dist_keys), 3), squeeze=False)
        for ax, k in zip(axes.ravel(), dist_keys):
            data = []
            for r in reports:
                vals = np.array([x for v in r["videos"] for x in v["per_frame"].get(k, [])
                                 if isinstance(x, (int, float)) and x is not None and math.isfinite(x)], np.float64)
                data.append(vals if vals.size else np.array([np.nan]))
            ax.boxplot(data, showfliers=False)
            ax.set_xticks(range(1, len(names) + 1), names, rotation=20, fontsize=8)
            ax.set_title(f"per-frame {k}", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        _savefig(fig, plot_dir / "compare_distributions.png")
        plt.close(fig)
        lines.append("![distributions](plots/compare_distributions.png)")
    write_text_atomic(out_dir / "compare.json", json.dumps(_json_safe(
        {"names": names, "reports": [str(d) for d in dirs], "table": table, "warnings": warnings,
         "protocols": [r["protocol"] for r in reports]}), indent=1))
    md = out_dir / "compare.md"
    write_text_atomic(md, "\n".join(lines) + "\n")
    return md
