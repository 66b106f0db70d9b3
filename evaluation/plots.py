"""PNG figures for reports (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DUPLEX_COLORS = {1: ("respond", "tab:green"), 2: ("stop_speaking", "tab:red")}


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def confusion_png(labels: Sequence[str], confusion: np.ndarray, path: Path, title: str) -> Path:
    """Row-normalised heat map (recall per reference class) annotated with counts."""
    cm = np.asarray(confusion)
    columns = list(labels) + (["unparseable"] if cm.shape[1] > len(labels) else [])
    if cm.shape[1] > len(labels) and cm[:, -1].sum() == 0:
        cm, columns = cm[:, :-1], columns[:-1]
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    size = 1.0 + 0.75 * max(len(columns), 3)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if share[i, j] > 0.6 else "black",
            )
    ax.set_xticks(range(len(columns)), columns, rotation=35, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of reference row")
    return _save(fig, path)


def histogram_png(
    series: dict[str, Sequence[float]],
    path: Path,
    xlabel: str,
    title: str,
    markers: dict[str, float] | None = None,
    bin_width: float | None = None,
) -> Path:
    """One histogram panel per series, with the median and p90 marked (and optional reference lines).

    ``bin_width`` centres one bin on each multiple of it (for values on a grid, such as frame offsets)."""
    series = {k: np.asarray(v, dtype=float) for k, v in series.items() if len(v)}
    if not series:
        raise ValueError(f"nothing to plot for {title!r}: every series is empty")
    # one set of bins for all panels (same unit), so the panels line up and can be compared
    everything = np.concatenate(list(series.values()))
    low, high = float(everything.min()), float(everything.max())
    if bin_width:
        bins = np.arange(low - bin_width / 2, high + bin_width, bin_width)
    else:
        pad = 0.0 if high > low else max(abs(low) * 0.05, 1e-3)
        bins = np.linspace(low - pad, high + pad, min(40, max(5, everything.size // 3)) + 1)
    fig, axes = plt.subplots(len(series), 1, figsize=(7, 2.0 * len(series) + 0.8), squeeze=False, sharex=True)
    for ax, (name, values) in zip(axes[:, 0], series.items()):
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.75, edgecolor="white")
        for q, style in ((50, "-"), (90, "--")):
            v = float(np.percentile(values, q))
            ax.axvline(v, color="black", linestyle=style, linewidth=1, label=f"p{q} = {v:.3g}")
        for label, value in (markers or {}).items():
            ax.axvline(value, color="tab:red", linewidth=1.5, label=f"{label} = {value:.3g}")
        ax.set_title(f"{name} (n = {len(values)})", fontsize=10)
        ax.set_ylabel("count")
        ax.legend(fontsize=8)
    axes[-1, 0].set_xlabel(xlabel)
    fig.suptitle(title)
    return _save(fig, path)


def bar_png(values: dict[str, float], path: Path, ylabel: str, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(values), 3.2))
    bars = ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def interval_png(
    values: dict[str, float | None],
    intervals: dict[str, tuple[float, float]],
    path: Path,
    ylabel: str,
    title: str,
) -> Path:
    """One bar per run, with an interval drawn over the runs that have one."""
    names = list(values)
    heights = [np.nan if values[n] is None else values[n] for n in names]
    fig, ax = plt.subplots(figsize=(1.4 + 1.1 * len(names), 3.4))
    bars = ax.bar(names, heights, color=["tab:gray" if n not in intervals else "tab:blue" for n in names])
    ax.bar_label(bars, fmt="%.3g", fontsize=8)
    for x, name in enumerate(names):
        if name in intervals:
            low, high = intervals[name]
            ax.plot([x, x], [low, high], color="black", linewidth=2)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelrotation=20)
    return _save(fig, path)


def _runs(labels: np.ndarray, cls: int) -> list[tuple[int, int]]:
    is_cls = np.concatenate([[False], np.asarray(labels) == cls, [False]])
    edges = np.flatnonzero(np.diff(is_cls.astype(np.int8)))
    return list(zip(edges[0::2], edges[1::2] - edges[0::2]))


def duplex_timeline_png(records: Sequence, path: Path, frame_ms: float, max_dialogues: int = 6) -> Path:
    """Reference vs predicted turn-taking decisions over time for the first dialogues."""
    shown = list(records)[:max_dialogues]
    fig, ax = plt.subplots(figsize=(10, 0.9 * len(shown) + 1.2))
    scale = frame_ms / 1000.0
    yticks, ylabels = [], []
    for row, rec in enumerate(shown):
        for offset, (name, labels) in enumerate((("ref", rec.reference), ("pred", rec.predicted))):
            y = row * 3 + offset
            for cls, (_, color) in DUPLEX_COLORS.items():
                spans = [(s * scale, n * scale) for s, n in _runs(labels, cls)]
                ax.broken_barh(spans, (y - 0.35, 0.7), color=color, alpha=0.85 if name == "pred" else 0.5)
            yticks.append(y)
            ylabels.append(f"{rec.id} {name}")
        bc = [(s * scale, (e - s + 1) * scale) for s, e in rec.backchannels]
        ax.broken_barh(bc, (row * 3 - 0.4, 0.8), facecolor="none", edgecolor="tab:purple", hatch="//")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for _, c in DUPLEX_COLORS.values()]
    handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="none", edgecolor="tab:purple", hatch="//"))
    ax.legend(
        handles,
        [n for n, _ in DUPLEX_COLORS.values()] + ["user back-channel"],
        fontsize=8,
        loc="upper right",
        ncols=3,
    )
    ax.set_yticks(yticks, ylabels, fontsize=8)
    ax.set_xlabel("time (s)")
    ax.set_title("turn-taking timeline: reference (pale) vs predicted (solid)")
    ax.set_ylim(3 * len(shown) - 0.5, -2.2)  # first dialogue on top, room for the legend
    ax.set_xlim(left=0)
    return _save(fig, path)


def fdb_timeline_png(per_sample: Sequence[dict], task: str, path: Path, max_samples: int = 8) -> Path:
    """Model words (and VAD segments) per sample on the input timeline, with the reference time."""
    shown = list(per_sample)[:max_samples]
    fig, ax = plt.subplots(figsize=(10, 0.7 * len(shown) + 1.4))
    for row, sample in enumerate(shown):
        words = [(s, (e if e is not None else s) - s) for _, s, e in sample["words"] if s is not None]
        color = "tab:green" if sample["tor"] else "tab:gray"
        ax.broken_barh(words, (row - 0.3, 0.6), facecolor=color, edgecolor="white", alpha=0.8)
        for s, e in sample.get("segments", []):
            ax.broken_barh([(s, e - s)], (row - 0.42, 0.84), facecolor="none", edgecolor="tab:purple")
        for s, e in sample.get("backchannels", []):
            ax.broken_barh([(s, e - s)], (row - 0.42, 0.84), facecolor="tab:purple", alpha=0.25)
        if sample.get("t_ref") is not None:
            ax.plot([sample["t_ref"]] * 2, [row - 0.45, row + 0.45], color="tab:red", linewidth=2)
        if sample.get("latency") is not None:
            ax.text(
                sample["t_ref"],
                row - 0.45,
                f" latency {sample['latency'] * 1000:.0f} ms",
                fontsize=7,
                color="tab:red",
                va="bottom",
            )
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("tab:green", "tab:gray")]
    names = ["words, took the turn", "words, did not"]
    if any(s.get("t_ref") is not None for s in shown):
        handles.append(plt.Line2D([0], [0], color="tab:red", linewidth=2))
        names.append("end of user turn / interruption")
    if any(s.get("segments") for s in shown):
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="none", edgecolor="tab:purple"))
        names.append("VAD segment")
        handles.append(plt.Rectangle((0, 0), 1, 1, facecolor="tab:purple", alpha=0.25))
        names.append("counted as backchannel")
    ax.legend(handles, names, fontsize=8, loc="upper right", ncols=2)
    ax.set_yticks(range(len(shown)), [s["id"] for s in shown], fontsize=8)
    ax.set_ylim(len(shown) - 0.4, -1.3)  # first sample on top, room for the legend
    ax.set_xlabel("time on the input timeline (s)")
    ax.set_ylabel("sample")
    ax.set_title(f"Full-Duplex-Bench {task}: model speech per sample")
    return _save(fig, path)


def threshold_curve_png(sweep: Sequence[dict], path: Path, f1_label: str) -> Path:
    """F1 and median onset offset against the respond threshold (two y axes)."""
    fig, axis = plt.subplots(figsize=(6, 3.2))
    thresholds = [r["threshold"] for r in sweep]
    axis.plot(thresholds, [r["f1"] for r in sweep], marker="o", color="tab:blue")
    axis.set_xlabel("respond threshold")
    axis.set_ylabel(f1_label, color="tab:blue")
    offsets = axis.twinx()
    offsets.plot(
        thresholds,
        [np.nan if r["median_offset_ms"] is None else r["median_offset_ms"] for r in sweep],
        marker="s",
        color="tab:orange",
    )
    offsets.set_ylabel("median offset (ms)", color="tab:orange")
    axis.set_title("take-over against latency")
    return _save(fig, path)
