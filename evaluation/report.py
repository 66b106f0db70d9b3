"""Report directories: ``metrics.json`` (machine), ``report.md`` (people), ``predictions.jsonl``, PNGs.

Baselines are a YAML of published figures (``recipes/eval/baselines_minmo.yaml``)::

    emotion/iemocap:                     # the key a recipe or --baseline-key names
      scale: percent                     # published values are percentages of our fractions
      systems:
        MinMo (arXiv 2501.06282, Table 11): {ua: 74.9, wa: 75.7, macro_f1: 74.2}

Each listed metric name must be a key of our summary metrics; the report puts ours beside them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import yaml

PACKAGES = (
    "minmo-lightning",
    "torch",
    "lightning",
    "jiwer",
    "torchmetrics",
    "whisper-normalizer",
    "numpy",
    "datasets",
    "matplotlib",
)


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def config_hash(settings: dict) -> str:
    """Stable hash of the settings that decide the numbers (sorted-key JSON, sha256, 16 hex digits)."""
    blob = json.dumps(settings, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}f}"
    return str(value)


def md_table(header: Sequence[str], rows: Iterable[Sequence], digits: int = 4) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def find_file(path: str | Path) -> Path:
    """A path as given, else one under the installed recipes (``recipes/eval/x.yaml`` works from any folder)."""
    path = Path(path)
    if path.is_file():
        return path
    import minmo_lightning.recipes as recipes

    parts = path.parts[1:] if path.parts and path.parts[0] == "recipes" else path.parts
    shipped = Path(recipes.__file__).parent.joinpath(*parts)
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(f"{path} not found (also looked for {shipped})")


def load_baselines(path: str | Path, key: str) -> dict:
    path = find_file(path)
    data = yaml.safe_load(path.read_text()) or {}
    if key not in data:
        raise KeyError(f"baseline key {key!r} not in {path}; available: {', '.join(data)}")
    entry = data[key]
    if not isinstance(entry, dict) or "systems" not in entry:
        raise ValueError(f"{path}: entry {key!r} needs 'systems: {{name: {{metric: value}}}}'")
    return entry


def baseline_table(ours: dict, entry: dict, model_name: str) -> str:
    """Our summary metrics beside the published ones, in the baseline's scale."""
    factor = 100.0 if entry.get("scale") == "percent" else 1.0
    metrics = list(dict.fromkeys(m for values in entry["systems"].values() for m in values))
    missing = [m for m in metrics if m not in ours]
    if missing:
        raise KeyError(f"baseline metrics {missing} are not computed by this task; ours: {sorted(ours)}")
    rows = [[model_name + " (this run)"] + [None if ours[m] is None else ours[m] * factor for m in metrics]]
    rows += [[name] + [values.get(m) for m in metrics] for name, values in entry["systems"].items()]
    note = f"\n\nScale: {entry.get('scale', 'as computed')}." + (
        f" {entry['note']}" if entry.get("note") else ""
    )
    return md_table(["system"] + metrics, rows, digits=2 if factor == 100.0 else 4) + note


def write_jsonl(path: Path, records: Iterable[dict]) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_report(
    out_dir: Path,
    metrics: dict,
    sections: list[tuple[str, str]],
    title: str,
) -> None:
    """``metrics.json`` (with versions and a timestamp added) and ``report.md`` from markdown sections."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {**metrics, "versions": versions(), "created": datetime.now(UTC).isoformat(timespec="seconds")}
    (out_dir / "metrics.json").write_text(
        json.dumps(metrics, indent=2, ensure_ascii=False, default=_json_default)
    )
    body = [f"# {title}", ""]
    for heading, text in sections:
        body += [f"## {heading}", "", text.rstrip(), ""]
    v = metrics["versions"]
    body += ["---", "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val), ""]
    (out_dir / "report.md").write_text("\n".join(body))


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def image(path: Path, caption: str) -> str:
    return f"![{caption}]({path.name})"
