"""Each evaluation task's records turned into a :class:`Scored`: figures, per-utterance records, report
sections and plots (``tasks.TASK_SPECS`` names which of these scores which task).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from minmo_lightning.evaluation import plots
from minmo_lightning.evaluation.asr import render_alignment, score_asr
from minmo_lightning.evaluation.duplex import DuplexRecord, score_duplex
from minmo_lightning.evaluation.latency import LatencyRecord, score_latency
from minmo_lightning.evaluation.normalizers import get_scheme
from minmo_lightning.evaluation.report import image, md_table


@dataclass
class Scored:
    summary: dict  # headline numbers (flat), what baselines compare against
    metrics: dict  # everything, as written under "metrics" in metrics.json
    records: list[dict]  # per-utterance records for predictions.jsonl
    sections: list[tuple[str, str]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------- ASR


def asr_report(records: list[dict], settings: dict, out_dir: Path) -> Scored:
    scheme = get_scheme(settings.get("normalizer", "whisper_english"), settings.get("unit"))
    result = score_asr(
        [r["reference"] for r in records],
        [r["hypothesis"] for r in records],
        ids=[r["id"] for r in records],
        scheme=scheme,
    )
    summary = result.summary()
    metrics = dict(summary)
    if settings.get("crosscheck_torchmetrics"):
        metrics["crosscheck_torchmetrics"] = _torchmetrics_crosscheck(result)
    out = []
    for rec, utt in zip(records, result.utterances):
        out.append({**rec, **utt.to_record(), "alignment_text": render_alignment(utt, scheme.unit)})
    name = result.metric.upper()
    c = result.counts
    n = c.reference_tokens or None
    headline = md_table(
        [name, "sub", "del", "ins", "ref tokens", "utterances", "skipped (empty ref)", "normaliser", "unit"],
        [
            [
                result.rate,
                c.substitutions / n if n else None,
                c.deletions / n if n else None,
                c.insertions / n if n else None,
                c.reference_tokens,
                len(records),
                len(result.skipped_empty_reference),
                scheme.name,
                scheme.unit,
            ]
        ],
    )
    sections = [
        (
            "Summary",
            headline + f"\n\n{name} is corpus-level: (S + D + I) / reference tokens, summed over "
            "utterances. Utterances whose normalised reference is empty are excluded and counted.",
        )
    ]
    rates = [u.counts.rate for u in result.utterances if u.counts.rate is not None]
    if rates:
        hist = plots.histogram_png(
            {f"per-utterance {name}": rates},
            out_dir / "utterance_error_rate.png",
            name,
            f"{name} per utterance",
        )
        bars = plots.bar_png(
            {"substitutions": c.substitutions, "deletions": c.deletions, "insertions": c.insertions},
            out_dir / "error_types.png",
            "count",
            "edit types",
        )
        sections.append(
            ("Plots", image(hist, "per-utterance error rate") + "\n\n" + image(bars, "edit types"))
        )
    worst = sorted(result.utterances, key=lambda u: (-u.counts.errors, -(u.counts.rate or 0.0)))[:10]
    sections.append(
        (
            "Worst utterances",
            md_table(
                ["id", "errors", "ref tokens", "alignment"],
                [
                    [
                        u.id,
                        u.counts.errors,
                        u.counts.reference_tokens,
                        render_alignment(u, scheme.unit).replace("|", "\\|"),
                    ]
                    for u in worst
                    if u.counts.errors
                ],
            ),
        )
    )
    return Scored({result.metric: result.rate}, metrics, out, sections)


def _torchmetrics_crosscheck(result) -> dict:
    from torchmetrics.text import CharErrorRate, WordErrorRate

    pairs = [
        (u.hypothesis_normalized, u.reference_normalized)
        for u in result.utterances
        if u.counts.reference_tokens
    ]
    if not pairs:
        return {"value": None, "agrees": None}
    hyps, refs = zip(*pairs)
    if result.unit == "char":
        value = float(CharErrorRate()(list(hyps), list(refs)))
    else:
        value = float(WordErrorRate()(list(hyps), list(refs)))
    return {"value": value, "agrees": abs(value - result.rate) < 1e-6}


# ---------------------------------------------------------------------------------------- duplex


def duplex_report(records: list[dict], settings: dict, out_dir: Path) -> Scored:
    dialogues = [
        DuplexRecord(
            r["id"],
            r["reference_labels"],
            r["predicted_labels"],
            [tuple(b) for b in r.get("backchannels", [])],
            [tuple(p) for p in r.get("pauses", [])],
            list(r.get("pause_kinds", [])),
        )
        for r in records
    ]
    metrics = score_duplex(
        dialogues,
        settings["tolerances"],
        settings["tolerance_unit"],
        settings["frame_ms"],
        settings["window"],
    )
    unit = "frames" if settings["tolerance_unit"] == "frames" else "ms"
    rows = []
    for kind in ("assistant_turn_taking", "user_turn_taking"):
        m = metrics[kind]
        rows.append(
            [kind.replace("_", " ")]
            + [m["at_k"][str(t)]["f1"] for t in settings["tolerances"]]
            + [m["n_reference_events"], m["n_predicted_events"], m["mean_offset_ms"]]
        )
    table = md_table(
        ["event"]
        + [f"F1@{t} {unit}" for t in settings["tolerances"]]
        + ["ref events", "pred events", f"mean offset (ms) @{max(settings['tolerances'])}"],
        rows,
    )
    bc, pause = metrics["backchannel"], metrics["pause"]
    text = (
        table + f"\n\nBack-channel accuracy: {bc['correct']}/{bc['n']} = {_pct(bc['accuracy'])}. "
        f"Mid-turn pauses taken over (a respond decision inside the pause): {pause['taken']}/{pause['n']} = "
        f"{_pct(pause['rate'])}"
        + "".join(
            f"; {kind.replace('_', ' ')} {k['taken']}/{k['n']} = {_pct(k['rate'])}"
            for kind, k in pause["by_kind"].items()
        )
        + ". "
        f"Average response latency (assistant turn-taking, signed, matched events): "
        f"{_ms(metrics['response_latency_ms'])}. Matching: one-to-one, greedy in time, window "
        f"{settings['window']}, frame {settings['frame_ms']} ms."
    )
    sections = [("Summary", text)]
    timeline = plots.duplex_timeline_png(dialogues, out_dir / "timeline.png", settings["frame_ms"])
    figures = [image(timeline, "turn-taking timeline")]
    offsets = {
        k.replace("_", " "): np.asarray(metrics[k]["offsets_frames"]) * settings["frame_ms"]
        for k in ("assistant_turn_taking", "user_turn_taking")
    }
    if any(len(v) for v in offsets.values()):
        hist = plots.histogram_png(
            offsets,
            out_dir / "onset_offsets.png",
            "predicted - reference onset (ms)",
            "onset offsets of matched events",
            bin_width=settings["frame_ms"],
        )
        figures.append(image(hist, "onset offsets"))
    sections.append(("Plots", "\n\n".join(figures)))
    primary = str(max(settings["tolerances"]))
    flat = {
        f"assistant_f1@{t}": metrics["assistant_turn_taking"]["at_k"][str(t)]["f1"]
        for t in settings["tolerances"]
    } | {f"user_f1@{t}": metrics["user_turn_taking"]["at_k"][str(t)]["f1"] for t in settings["tolerances"]}
    flat |= {
        "backchannel_accuracy": bc["accuracy"],
        "pause_takeover_rate": pause["rate"],
        **{f"pause_takeover_rate_{kind}": k["rate"] for kind, k in pause["by_kind"].items()},
        "response_latency_ms": metrics["response_latency_ms"],
        "median_response_offset_ms": metrics["assistant_turn_taking"]["median_offset_ms"],
        "user_median_offset_ms": metrics["user_turn_taking"]["median_offset_ms"],
        f"assistant_precision@{primary}": metrics["assistant_turn_taking"]["at_k"][primary]["precision"],
    }
    if all("respond_probability" in r for r in records):
        sweep = respond_threshold_sweep(dialogues, records, settings)
        metrics["respond_threshold_sweep"] = sweep
        sections.append(
            ("Respond threshold: take-over against latency", _sweep_section(sweep, settings, out_dir))
        )
    latency_records = [r for r in records if "first_packet_s" in r]
    if latency_records:
        extra = latency_report(latency_records, {}, out_dir)
        metrics["latency"] = extra.metrics
        sections += extra.sections
    return Scored(flat, metrics, list(records), sections)


#: respond thresholds the duplex report sweeps when the predictions carry probabilities
SWEEP_THRESHOLDS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def respond_threshold_sweep(dialogues: list[DuplexRecord], records: list[dict], settings: dict) -> list[dict]:
    """Assistant turn-taking at each respond threshold: decide ``respond`` where its probability reaches it
    (``stop_speaking`` decisions kept), scored like the model's own decisions."""
    rows = []
    primary = str(max(settings["tolerances"]))
    for threshold in settings.get("respond_thresholds", SWEEP_THRESHOLDS):
        moved = []
        for dialogue, record in zip(dialogues, records):
            predicted = np.asarray(dialogue.predicted)
            respond = np.asarray(record["respond_probability"])[: len(predicted)] >= threshold
            labels = np.where(predicted == 2, 2, np.where(respond, 1, 0))
            moved.append(
                DuplexRecord(
                    dialogue.id,
                    dialogue.reference,
                    labels.tolist(),
                    dialogue.backchannels,
                    dialogue.pauses,
                    dialogue.pause_kinds,
                )
            )
        scored = score_duplex(
            moved,
            settings["tolerances"],
            settings["tolerance_unit"],
            settings["frame_ms"],
            settings["window"],
        )
        assistant = scored["assistant_turn_taking"]
        rows.append(
            {
                "threshold": threshold,
                "f1": assistant["at_k"][primary]["f1"],
                "precision": assistant["at_k"][primary]["precision"],
                "recall": assistant["at_k"][primary]["recall"],
                "predicted_events": assistant["n_predicted_events"],
                "median_offset_ms": assistant["median_offset_ms"],
                "pause_takeover": scored["pause"]["rate"],
            }
        )
    return rows


def _sweep_section(sweep: list[dict], settings: dict, out_dir: Path) -> str:
    primary = max(settings["tolerances"])
    table = md_table(
        [
            "respond threshold",
            f"F1@{primary}",
            "precision",
            "recall",
            "predicted turns",
            "median offset (ms)",
            "pauses taken over",
        ],
        [
            [
                r["threshold"],
                r["f1"],
                r["precision"],
                r["recall"],
                r["predicted_events"],
                _ms(r["median_offset_ms"]),
                _pct(r["pause_takeover"]),
            ]
            for r in sweep
        ],
    )
    curve = plots.threshold_curve_png(sweep, out_dir / "respond_threshold.png", f"F1@{primary}")
    return table + "\n\n" + image(curve, "F1 and median offset against the respond threshold")


# --------------------------------------------------------------------------------------- latency


def latency_report(records: list[dict], settings: dict, out_dir: Path) -> Scored:
    recs = [
        LatencyRecord(
            r["id"],
            float(r["first_packet_s"]),
            dict(r.get("components_s") or {}),
            r.get("d_llm_s"),
            r.get("d_lm_s"),
            r.get("d_syn_s"),
            r.get("processing_s"),
            r.get("audio_s"),
        )
        for r in records
    ]
    metrics = score_latency(recs)
    fp = metrics["first_packet_s"]
    rows = [["first packet", fp["n"], fp["mean"], fp["p50"], fp["p90"], fp["p95"], fp["p99"], fp["max"]]]
    for name, d in metrics.get("components_s", {}).items():
        rows.append([name, d["n"], d["mean"], d["p50"], d["p90"], d["p95"], d["p99"], d["max"]])
    sections = [("Latency (s)", md_table(["stage", "n", "mean", "p50", "p90", "p95", "p99", "max"], rows))]
    if "theory" in metrics:
        t = metrics["theory"]
        sections.append(
            (
                "Theoretical vs measured",
                md_table(
                    [
                        "d_llm",
                        "d_lm",
                        "d_syn",
                        "5*d_llm + 15*d_lm + 15*d_syn",
                        "measured p50",
                        "overhead",
                        "ratio",
                    ],
                    [
                        [
                            t["d_llm_s"],
                            t["d_lm_s"],
                            t["d_syn_s"],
                            t["theoretical_s"],
                            t["measured_p50_s"],
                            t["overhead_s"],
                            t["measured_over_theory"],
                        ]
                    ],
                ),
            )
        )
    series = {"first packet (s)": [r.first_packet_s for r in recs]}
    series |= {
        f"{k} (s)": [r.components_s.get(k, 0.0) for r in recs]
        for k in metrics.get("components_s", {})
        if k != "other"
    }
    hist = plots.histogram_png(series, out_dir / "latency_histograms.png", "seconds", "latency per turn")
    figures = [image(hist, "latency histograms")]
    if "theory" in metrics:
        versus = plots.histogram_png(
            {"first packet (s)": series["first packet (s)"]},
            out_dir / "first_packet.png",
            "seconds",
            "first-packet latency vs 5*d_llm + 15*d_lm + 15*d_syn",
            markers={"theory": metrics["theory"]["theoretical_s"]},
        )
        figures.append(image(versus, "first packet vs theory"))
    sections.append(("Latency plots", "\n\n".join(figures)))
    flat = {
        "first_packet_p50_s": fp["p50"],
        "first_packet_p90_s": fp["p90"],
        "first_packet_mean_s": fp["mean"],
    }
    return Scored(flat, metrics, list(records), sections)


def text_cell(text: str) -> str:
    """Free text (a reference, an answer) as one markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"
