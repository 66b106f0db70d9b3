"""Instruction-controlled speech: did the generated voice move the way the instruction asked?

A record has ``control`` (``rate``, ``pitch`` or ``emotion``), ``target`` (rate: ``slow`` / ``fast``;
pitch: ``high`` / ``low``; emotion: a label such as ``happy``), ``output_audio_path`` (the generated WAV,
relative to the report directory as the runner writes it, or absolute) and the neutral reading of the same
text to compare with: ``neutral_audio_path``, or its statistics ``neutral_seconds_per_phoneme`` (rate) /
``neutral_f0_hz`` (pitch). Rate records also need ``phonemes`` (the text's phonemes: a count, a list, or a
space-separated string).

- rate: seconds of speech per phoneme, leading and trailing silence trimmed (``prosody.speech_seconds``),
  over the neutral reading's; ``fast`` moved when the ratio is below 1 / (1 + ``rate_margin``), ``slow``
  when above 1 + ``rate_margin``.
- pitch: the shift of the median F0 in semitones, 12 log2(F0 / neutral F0) (Praat's pitch tracker,
  ``prosody.median_f0_hz``); ``high`` moved above +``pitch_margin_st``, ``low`` below -``pitch_margin_st``.
- emotion: an emotion classifier (``emotion_judge``: the dotted path of a callable, or ``{class_path,
  init_args}`` of a class whose instances are; called as ``judge(waveform, sample_rate) -> label``) hears the
  output; moved when it names the target. Without a judge these records are reported as needing one and
  left out of the headline.

Ceiling: where a record also has ``ceiling_audio_path`` and ``ceiling_neutral_audio_path`` (the dataset's
styled and neutral readings, as speech tokens, through the model's own token2wav), the same measure on that
pair: how much of each control the speech chain below the voice LM can carry at all.

Headline: the share of records moved in the asked direction, per control and overall. An output with no
speech (or no voiced frame, for pitch) has not moved; its id is listed. Beside it the chance level: 0.5 for a
rate or pitch change in a random direction (the neutral reading itself scores 0), and for emotion 1 / the
emotions asked for, with the judge's reading of the neutral clips (how often it already hears the target).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from minmo_lightning.evaluation.prosody import (
    PITCH_TRACKER,
    median_f0_hz,
    phoneme_count,
    read_mono,
    speech_seconds,
)
from minmo_lightning.evaluation.report import md_table
from minmo_lightning.evaluation.scorers import Scored

#: measured change -> the sign each target asks for (rate: log seconds-per-phoneme ratio; pitch: semitones)
DIRECTIONS = {"rate": {"slow": 1, "fast": -1}, "pitch": {"high": 1, "low": -1}}
CONTROLS = (*DIRECTIONS, "emotion")
#: the record field of the change each control measures (emotion: only the judge's hits)
CHANGES = {"rate": "rate_ratio", "pitch": "semitone_shift"}


def load_judge(spec: str | dict | None) -> Callable[[np.ndarray, int], str] | None:
    """The ``emotion_judge`` setting as a callable (``None``: no judge)."""
    if spec is None:
        return None
    path, init_args = (
        (spec, {}) if isinstance(spec, str) else (spec["class_path"], spec.get("init_args") or {})
    )
    module_name, _, name = path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            f"metrics.emotion_judge {path!r} cannot be imported ({error}); give module.callable or "
            "{class_path, init_args}"
        ) from error
    return target(**init_args) if isinstance(target, type) else target


class _Clips:
    """Measurements of the WAVs a report reads, each clip measured once (neutral readings are shared)."""

    def __init__(self, out_dir: Path, settings: dict) -> None:
        self.out_dir, self.settings = out_dir, settings
        self.waves: dict[str, tuple[np.ndarray, int]] = {}

    def wave(self, path: str) -> tuple[np.ndarray, int]:
        if path not in self.waves:
            file = self.out_dir / path
            if not file.is_file():
                raise FileNotFoundError(f"{file} not found (a voice-control record's audio)")
            self.waves[path] = read_mono(file)
        return self.waves[path]

    def seconds(self, path: str) -> float:
        return speech_seconds(*self.wave(path), float(self.settings["trim_db"]))

    def f0(self, path: str) -> float | None:
        s = self.settings
        return median_f0_hz(*self.wave(path), float(s["pitch_floor_hz"]), float(s["pitch_ceiling_hz"]))


def _neutral(record: dict, statistic: str) -> str:
    if record.get("neutral_audio_path") is None:
        raise ValueError(
            f"voice-control record {record['id']!r} ({record['control']}) has neither neutral_audio_path nor "
            f"{statistic}: give the neutral reading to compare with"
        )
    return record["neutral_audio_path"]


def _rate(record: dict, clips: _Clips, settings: dict) -> dict:
    if "phonemes" not in record:
        raise ValueError(f"rate record {record['id']!r} has no phonemes (a count, list or string)")
    n = phoneme_count(record["phonemes"])
    if n <= 0:
        raise ValueError(
            f"rate record {record['id']!r} has {n} phonemes; seconds per phoneme need at least one"
        )
    spoken = clips.seconds(record["output_audio_path"]) / n
    neutral = record.get("neutral_seconds_per_phoneme")
    if neutral is None:
        neutral = clips.seconds(_neutral(record, "neutral_seconds_per_phoneme")) / n
    if spoken == 0 or not neutral:
        return {"seconds_per_phoneme": spoken, "neutral_seconds_per_phoneme": neutral, "moved": False}
    ratio = spoken / neutral
    change = DIRECTIONS["rate"][record["target"]] * math.log(ratio)
    return {
        "seconds_per_phoneme": spoken,
        "neutral_seconds_per_phoneme": neutral,
        "rate_ratio": ratio,
        "moved": change > math.log1p(float(settings["rate_margin"])),
    }


def _pitch(record: dict, clips: _Clips, settings: dict) -> dict:
    f0 = clips.f0(record["output_audio_path"])
    neutral = record.get("neutral_f0_hz")
    if neutral is None:
        neutral = clips.f0(_neutral(record, "neutral_f0_hz"))
    if f0 is None or neutral is None:
        return {"f0_hz": f0, "neutral_f0_hz": neutral, "moved": False}
    shift = 12 * math.log2(f0 / neutral)
    return {
        "f0_hz": f0,
        "neutral_f0_hz": neutral,
        "semitone_shift": shift,
        "moved": DIRECTIONS["pitch"][record["target"]] * shift > float(settings["pitch_margin_st"]),
    }


def _emotion(record: dict, clips: _Clips, judge: Callable | None) -> dict:
    if judge is None:
        return {"moved": None}
    heard = str(judge(*clips.wave(record["output_audio_path"])))
    out = {"judged_emotion": heard, "moved": heard.lower() == str(record["target"]).lower()}
    if record.get("neutral_audio_path") is not None:
        neutral = str(judge(*clips.wave(record["neutral_audio_path"])))
        out |= {"neutral_judged_emotion": neutral, "neutral_hit": neutral.lower() == record["target"].lower()}
    return out


def _check(record: dict) -> None:
    control, target = record["control"], record["target"]
    if control not in CONTROLS:
        raise ValueError(
            f"voice-control record {record['id']!r}: control {control!r} is not one of {CONTROLS}"
        )
    if control in DIRECTIONS and target not in DIRECTIONS[control]:
        raise ValueError(
            f"voice-control record {record['id']!r}: {control} target {target!r} is not one of "
            f"{tuple(DIRECTIONS[control])}"
        )


def _share(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def voice_control_report(records: list[dict], settings: dict, out_dir: Path) -> Scored:
    """Settings: ``trim_db``, ``rate_margin``, ``pitch_margin_st``, ``pitch_floor_hz``, ``pitch_ceiling_hz``,
    ``emotion_judge``."""
    for record in records:
        _check(record)
    clips, judge = _Clips(out_dir, settings), load_judge(settings.get("emotion_judge"))
    measure = {
        "rate": lambda r: _rate(r, clips, settings),
        "pitch": lambda r: _pitch(r, clips, settings),
        "emotion": lambda r: _emotion(r, clips, judge),
    }
    out = [{**r, **measure[r["control"]](r), **_ceiling(r, measure)} for r in records]
    emotions = sorted({r["target"] for r in out if r["control"] == "emotion"})
    rows, summary, per_target, chances = [], {}, {}, {}
    for control in CONTROLS:
        group = [r for r in out if r["control"] == control]
        if not group:
            continue
        chance = chances[control] = 0.5 if control in DIRECTIONS else 1 / len(emotions)
        judged = [r["moved"] for r in group if r["moved"] is not None]
        summary[f"{control}_moved"] = _share(judged)
        summary[f"{control}_chance"] = chance
        summary[f"{control}_ceiling_moved"] = _ceiling_share(group)
        for target in sorted({r["target"] for r in group}):
            items = [r for r in group if r["target"] == target]
            moved = [r["moved"] for r in items if r["moved"] is not None]
            unmeasured = [r["id"] for r in items if r["moved"] is False and _unmeasured(r)]
            figures = {
                "n": len(items),
                "moved": _share(moved),
                "ceiling_moved": _ceiling_share(items),
                "mean_change": _mean_change(control, items),
                "unmeasured_ids": unmeasured[:50],
                "neutral_hit": _share([r["neutral_hit"] for r in items if "neutral_hit" in r]),
            }
            per_target[f"{control}/{target}"] = figures
            rows.append(
                [
                    control,
                    target,
                    figures["n"],
                    "needs a judge" if figures["moved"] is None else figures["moved"],
                    chance,
                    "—" if figures["ceiling_moved"] is None else figures["ceiling_moved"],
                    figures["mean_change"],
                    figures["neutral_hit"],
                    len(unmeasured),
                ]
            )
    measured = [r for r in out if r["moved"] is not None]
    summary["moved"] = _share([r["moved"] for r in measured])
    summary["chance"] = _share([chances[r["control"]] for r in measured])  # over the headline's records
    summary["ceiling_moved"] = _ceiling_share(out)
    sections = [
        (
            "Summary",
            md_table(
                [
                    "control",
                    "target",
                    "n",
                    "moved as asked",
                    "chance",
                    "ceiling",
                    "mean change",
                    "judge on neutral",
                    "no speech / pitch",
                ],
                rows,
            )
            + "\n\nMean change: rate, seconds-per-phoneme ratio to the neutral reading (silence trimmed); pitch, "
            f"median-F0 shift in semitones ({PITCH_TRACKER}). Judge on neutral: how often the emotion judge already "
            "hears the target in the neutral reading. Moved: "
            f"beyond a {settings['rate_margin']:g} rate margin / {settings['pitch_margin_st']:g} semitones. "
            "Chance: 0.5 for a random direction (the neutral reading itself scores 0); emotion 1 / the emotions "
            "asked for. Ceiling: the dataset's styled reading against its neutral one, both as speech tokens through "
            "the model's token2wav (what the chain below the voice LM carries)."
            + ("" if judge or not emotions else " Emotion records need a judge (metrics.emotion_judge)."),
        )
    ]
    metrics = {**summary, "per_target": per_target, "pitch_tracker": PITCH_TRACKER}
    return Scored(summary, metrics, out, sections)


def _ceiling(record: dict, measure: dict[str, Callable[[dict], dict]]) -> dict:
    """The control measured on the reference pair through token2wav (``ceiling_*`` fields), when given."""
    if record.get("ceiling_audio_path") is None or record.get("ceiling_neutral_audio_path") is None:
        return {}
    pair = {
        **record,
        "output_audio_path": record["ceiling_audio_path"],
        # rate and pitch against the neutral reading through the same chain, never the record's own statistics;
        # emotion needs no neutral clip (the judge's hit rate on it is the output's figure, not the ceiling's)
        "neutral_audio_path": record["ceiling_neutral_audio_path"]
        if record["control"] in DIRECTIONS
        else None,
        "neutral_seconds_per_phoneme": None,
        "neutral_f0_hz": None,
    }
    measured = measure[record["control"]](pair)
    return {"ceiling_moved": measured["moved"]} | {
        f"ceiling_{key}": measured[key] for key in (*CHANGES.values(), "judged_emotion") if key in measured
    }


def _ceiling_share(records: list[dict]) -> float | None:
    return _share([r["ceiling_moved"] for r in records if r.get("ceiling_moved") is not None])


def _unmeasured(record: dict) -> bool:
    return not any(key in record for key in (*CHANGES.values(), "judged_emotion"))


def _mean_change(control: str, items: list[dict]) -> float | None:
    if control not in CHANGES:
        return None
    return _share([float(r[CHANGES[control]]) for r in items if r.get(CHANGES[control]) is not None])
