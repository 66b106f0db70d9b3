"""Run a model over a dataset (or read its predictions), score them and write the report directory.

Model protocol (``--config recipe.yaml --ckpt ...``). The recipe names a LightningModule (``model:``)
and a LightningDataModule (``data:``) the LightningCLI way (``class_path`` + ``init_args``). The runner
calls ``data.setup(stage)`` and iterates ``data.<stage>_dataloader()`` (stage ``test`` by default) in
order, and for each batch calls ``model.predict_step(batch, batch_idx)``, which must return a list with
one dict per utterance of the batch, each with its ``"id"`` (from ``batch["ids"]``) and:

- task ``asr``: ``"hypothesis"`` (or ``"prediction"``, as ``MinMo.predict_step`` writes it): str
- tasks ``emotion`` and ``lid``: ``"prediction"``: a label name, or ``"prediction_text"``: generated text to parse
- tasks ``s2tt``, ``speaker``, ``aed``, ``sqa``: ``"prediction_text"``: the generated answer
- tasks ``tts``, ``s2s``, ``voice_control``: audio fields (``{"waveform", "sample_rate"}``), written as WAVs
- task ``duplex``: ``"predicted_labels"``: one class id per frame (list or 1-D tensor)
- optionally anything else (kept in ``predictions.jsonl``), e.g. latency fields for ``duplex``.

References come from the batch through each task's ``TaskSpec.batch_references`` (``tasks.py``: ``text``;
``emotion`` indexed into ``data.emotion_labels``; ``translation``; ``events``; ``frame_labels`` cut at
``frame_lengths``, back-channels from ``events`` of type ``backchannel``, whose ``start``/``end`` seconds
become frames with ``metrics.frame_ms``; ...), so a model never echoes them. The runner times each batch (RTF against the batch's audio), runs under
``torch.inference_mode`` with a fixed seed and deterministic algorithms, and appends each finished batch
to ``predictions.jsonl`` at once (flushed and fsynced). Rerunning the same command resumes: batches whose
ids are all present are skipped without calling the model; a truncated last line from a crash is
discarded. A different config in the same output directory is refused (the config hash is stored).

Predictions mode (``--predictions file.jsonl``) scores existing outputs; references are taken from the
records themselves or from ``--references`` (a JSONL or a ``save_to_disk`` HF dataset directory).
Every reference id needs a prediction and every prediction a reference: mismatches are errors.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from minmo_lightning.evaluation.report import (
    baseline_table,
    config_hash,
    load_baselines,
    md_table,
    write_jsonl,
    write_report,
)
from minmo_lightning.evaluation.tasks import BatchLabels, TaskSpec, score, task_spec

from minmo_lightning.registry import resolve_class

PREDICTIONS = "predictions.jsonl"


# ------------------------------------------------------------------------------------------ I/O


def read_jsonl(path: str | Path, allow_truncated_tail: bool = False) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if allow_truncated_tail and number == len(lines):
                break  # an interrupted write: that batch is redone
            raise ValueError(
                f"{path}:{number} is not valid JSON ({error}); fix or remove that line"
            ) from error
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number} is not a JSON object")
        records.append(record)
    return records


def load_references(
    path: str | Path,
    spec: TaskSpec,
    split: str | None = None,
    id_column: str = "id",
    column: str | None = None,
    name: str | None = None,
) -> dict[str, dict]:
    """id -> reference fields, from a JSONL (fields as in predictions) or any dataset layout the
    datamodules read (``save_to_disk`` folder, parquet/json files, audio folder, cached hub id)."""
    if Path(path).suffix == ".jsonl":
        return {str(r["id"]): r for r in read_jsonl(path)}
    from minmo_lightning.datamodules.sources import load_source

    if spec.reference_field is None:
        raise ValueError(f"task {spec.name!r} reads its references from the records, not from a dataset")
    column = column or spec.reference_column
    field = spec.reference_field
    splits, _ = load_source(str(path), name)
    if split is None and len(splits) == 1:
        split = next(iter(splits))
    if split not in splits:
        raise ValueError(f"{path} has splits {sorted(splits)}; choose one with --split (or dataset.split)")
    data = splits[split]
    for wanted, setting in ((id_column, "dataset.id_column"), (column, "dataset.reference_column")):
        if wanted not in data.column_names:
            raise ValueError(
                f"{path} split {split!r} has no column {wanted!r} (columns: {data.column_names}); "
                f"set {setting}"
            )
    names = getattr(data.features[column], "names", None)
    data = data.select_columns([id_column, column])
    out = {}
    for row in data:
        value = row[column]
        out[str(row[id_column])] = {
            field: names[value] if names is not None and isinstance(value, int) else value
        }
    return out


def merge_references(predictions: list[dict], references: dict[str, dict], source: str) -> list[dict]:
    if not references:
        raise ValueError(f"the references for {source} are empty")
    pred_ids = {str(p.get("id")) for p in predictions}
    missing = [i for i in references if i not in pred_ids]
    if missing:
        raise ValueError(
            f"missing prediction ids: {len(missing)} of {len(references)} reference utterances have no prediction "
            f"in {source} (e.g. {missing[:5]}); finish the run (rerunning resumes) or score a matching subset"
        )
    extra = sorted(pred_ids - set(references))
    if extra:
        raise ValueError(
            f"{len(extra)} predictions in {source} have ids that are not in the references "
            f"(e.g. {extra[:5]}); are the predictions from another dataset or split?"
        )
    return [{**p, **references[str(p["id"])]} for p in predictions]


# ------------------------------------------------------------------------------ model inference


def build(spec: dict, base: type, what: str) -> Any:
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"the recipe's {what!r} entry needs class_path (and init_args)")
    return resolve_class(spec["class_path"], base, f"{what}.class_path")(**(spec.get("init_args") or {}))


def load_model(spec: dict, ckpt: str | None):
    """``class_path`` alone + a Lightning checkpoint: ``load_from_checkpoint`` (hyperparameters rebuild the
    model); ``load_args`` beside it override saved hyperparameters (a nested ``{class_path, init_args}``
    block's arguments are merged over its saved ones). With ``init_args``: build, ``configure_model()``,
    then load the checkpoint's weights strictly."""
    import lightning as L

    if isinstance(spec, dict) and "init_args" not in spec and ckpt:
        cls = resolve_class(spec.get("class_path", ""), L.LightningModule, "model.class_path")
        return cls.load_from_checkpoint(ckpt, map_location="cpu", **_load_args(ckpt, spec.get("load_args")))
    model = build(spec, L.LightningModule, "model")
    if hasattr(model, "configure_model"):
        model.configure_model()
    if ckpt:
        from minmo_lightning.checkpoints import load_state_dict_strict, read_state_dict

        load_state_dict_strict(model, read_state_dict(ckpt), source=str(ckpt))
    return model


def _load_args(ckpt: str, load_args: dict | None) -> dict:
    """``load_args`` merged over the checkpoint's saved hyperparameters, key by key and into nested dicts."""
    if not load_args:
        return {}
    from minmo_lightning.checkpoints import read_checkpoint

    saved = read_checkpoint(ckpt, mmap=True).get("hyper_parameters") or {}

    def merge(base: Any, override: Any) -> Any:
        if isinstance(base, dict) and isinstance(override, dict):
            return {**base, **{k: merge(base.get(k), v) for k, v in override.items()}}
        return override

    return {key: merge(saved.get(key), value) for key, value in load_args.items()}


def _audio_seconds(batch: dict, i: int) -> float | None:
    audio = batch.get("audio") or batch.get("user_audio")
    return None if audio is None else float(audio.lengths[i]) / audio.sample_rate


def _with_audio_files(record: dict, folder: Path, uid: str) -> dict:
    """A record's audio values (``{"waveform", "sample_rate"}``: spoken output) -> ``audio/<id>.<field>.wav``,
    named by ``<field>_path`` (relative to the report directory)."""
    record = dict(record)
    import soundfile

    for field in [
        k for k, v in record.items() if isinstance(v, dict) and {"waveform", "sample_rate"} <= v.keys()
    ]:
        clip = record.pop(field)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{uid}.{field}.wav"
        soundfile.write(str(path), np.asarray(clip["waveform"], dtype=np.float32), int(clip["sample_rate"]))
        record[f"{field}_path"] = str(path.relative_to(folder.parent))
    return record


def _clean(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def run_inference(
    model,
    datamodule,
    spec: TaskSpec,
    out_path: Path,
    stage: str = "test",
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
    frame_ms: float = 80.0,
) -> dict:
    """Predict every batch not already in ``out_path``; returns counts of computed and skipped batches."""
    import lightning as L
    import torch

    done = (
        {str(r["id"]) for r in read_jsonl(out_path, allow_truncated_tail=True)}
        if out_path.exists()
        else set()
    )
    if out_path.exists():  # rewrite without a truncated tail before appending
        write_jsonl(out_path, read_jsonl(out_path, allow_truncated_tail=True))
    L.seed_everything(seed, verbose=False)
    torch.use_deterministic_algorithms(True, warn_only=True)
    datamodule.setup(stage)
    loader = getattr(datamodule, f"{stage}_dataloader")()
    labels = BatchLabels(getattr(datamodule, "emotion_labels", None), frame_ms)
    frame_rate = getattr(datamodule, "frame_rate", None)
    if spec.per_frame and frame_rate and abs(1000 / float(frame_rate) - frame_ms) > 1e-6:
        raise ValueError(
            f"the datamodule labels frames at {frame_rate} Hz ({1000 / float(frame_rate):g} ms) but the "
            f"metric settings say frame_ms {frame_ms}; set metrics.frame_ms to match"
        )
    model.eval()
    stats = {"computed_batches": 0, "skipped_batches": 0, "new_utterances": 0}
    total = len(loader) if hasattr(loader, "__len__") else None
    batches = _tracked(loader, f"evaluate {spec.name}", total, progress)
    with out_path.open("a") as sink, torch.inference_mode():
        for batch_idx, batch in enumerate(batches):
            if limit is not None and batch_idx >= limit:
                break
            ids = [str(i) for i in batch["ids"]]
            if all(i in done for i in ids):
                stats["skipped_batches"] += 1
                continue
            start = time.perf_counter()
            outputs = model.predict_step(batch, batch_idx)
            elapsed = time.perf_counter() - start
            by_id = _check_outputs(outputs, ids, batch_idx)
            lines = []
            for i, uid in enumerate(ids):
                if uid in done:
                    continue
                record = _with_audio_files(by_id[uid], out_path.parent / "audio", uid)
                record = {k: _clean(v) for k, v in record.items()}
                record.update(spec.references_from_batch(batch, i, labels))
                if spec.per_frame and len(record.get("predicted_labels", [])) > len(
                    record["reference_labels"]
                ):
                    record["predicted_labels"] = record["predicted_labels"][: len(record["reference_labels"])]
                record["processing_s"] = elapsed / len(ids)
                record["audio_s"] = _audio_seconds(batch, i)
                lines.append(json.dumps(record, ensure_ascii=False))
                done.add(uid)
            sink.write("".join(line + "\n" for line in lines))
            sink.flush()
            os.fsync(sink.fileno())
            stats["computed_batches"] += 1
            stats["new_utterances"] += len(lines)
    return stats


def _tracked(items: Iterable, label: str, total: int | None, enabled: bool) -> Iterator:
    """``items``, with a progress display advanced after each: Rich's bar on a terminal, a plain line every
    30 s where stdout is not one (nohup, SLURM, CI logs; ``minmo_lightning.progress.ProgressLine``)."""
    from minmo_lightning.progress import ProgressLine, plain_progress_wanted

    if enabled and plain_progress_wanted():
        with ProgressLine(label, total, unit="batches") as line:
            for item in items:
                yield item
                line.advance()
    else:
        from rich.progress import track

        yield from track(items, description=label, total=total, disable=not enabled)


def run_variants(
    model,
    datamodule,
    recipe: dict,
    spec: TaskSpec,
    settings: dict,
    out_dir: Path,
    run_args: dict,
    overwrite: bool,
) -> dict[str, dict]:
    """The recipe's ``variants``: each swaps blocks of the model (``{slot: {class_path, init_args}}``, e.g. the
    VAD baseline for the duplex predictor) and runs the same data into ``out_dir/variants/NAME`` with its own
    report files; returns NAME -> summary. The model gets its own blocks back afterwards."""
    import torch.nn as nn

    summaries = {}
    for name, swaps in (recipe.get("variants") or {}).items():
        originals = {}
        for slot, block_spec in swaps.items():
            if not isinstance(getattr(model, slot, None), nn.Module | None):
                raise ValueError(f"variant {name!r} swaps {slot!r}, which is not a block of the model")
            originals[slot] = getattr(model, slot)
            setattr(model, slot, build(block_spec, nn.Module, f"variants.{name}.{slot}"))
        folder = out_dir / "variants" / name
        folder.mkdir(parents=True, exist_ok=True)
        try:
            _resume_guard(folder, config_hash({**run_args["fingerprint"], "variant": swaps}), overwrite)
            run_inference(model, datamodule, spec, folder / PREDICTIONS, **run_args["inference"])
        finally:
            for slot, block in originals.items():
                setattr(model, slot, block)
        scored = score(spec, read_jsonl(folder / PREDICTIONS), settings, folder, str(folder / PREDICTIONS))
        write_jsonl(folder / PREDICTIONS, scored.records)
        write_report(
            folder,
            {"task": spec.name, "variant": name, "summary": scored.summary, "settings": settings},
            scored.sections,
            f"{spec.name} evaluation: {name}",
        )
        summaries[name] = scored.summary
    return summaries


def variants_table(name: str, summary: dict, variants: dict[str, dict]) -> str:
    """The model's headline numbers beside each variant's."""
    keys = [k for k, v in summary.items() if isinstance(v, int | float)]
    rows = [[name, *(summary[k] for k in keys)]]
    rows += [[variant, *(numbers.get(k, "—") for k in keys)] for variant, numbers in variants.items()]
    return md_table(["model", *keys], rows)


def _check_outputs(outputs, ids: list[str], batch_idx: int) -> dict[str, dict]:
    if not isinstance(outputs, list | tuple) or not all(isinstance(o, dict) for o in outputs):
        raise TypeError(
            f"predict_step must return a list of dicts (one per utterance); batch {batch_idx} "
            f"returned {type(outputs).__name__}"
        )
    by_id = {str(o.get("id")): o for o in outputs}
    if sorted(by_id) != sorted(ids):
        raise ValueError(
            f"predict_step returned ids {sorted(by_id)[:5]} for batch {batch_idx} whose ids are "
            f"{sorted(ids)[:5]}; return one dict per utterance with its 'id'"
        )
    return by_id


# ------------------------------------------------------------------------------------ evaluate


def evaluate(
    task: str,
    out_dir: str | Path,
    settings: dict | None = None,
    predictions: str | Path | None = None,
    references: str | Path | None = None,
    dataset: dict | None = None,
    recipe: dict | None = None,
    ckpt: str | None = None,
    baselines: str | None = None,
    baseline_key: str | None = None,
    model_name: str | None = None,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Score ``predictions`` (or run the recipe's model first) and write the report; returns metrics.json."""
    spec = task_spec(task)
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {**spec.settings, **(settings or {})}
    dataset = dict(dataset or {})
    model_info: dict[str, Any]
    run: dict[str, Any] = {}
    variants: dict[str, dict] = {}
    if predictions is None:
        if recipe is None:
            raise ValueError(
                "give --predictions FILE to score existing outputs, or --config RECIPE to run a model"
            )
        fingerprint = {
            "task": task,
            "model": recipe.get("model"),
            "data": recipe.get("data"),
            "ckpt": ckpt,
            "stage": recipe.get("stage", "test"),
            "seed": recipe.get("seed", 0),
            "limit": limit,
        }
        run = _resume_guard(out_dir, config_hash(fingerprint), overwrite)
        model = load_model(recipe.get("model"), ckpt)
        import lightning as L

        datamodule = build(recipe.get("data"), L.LightningDataModule, "data")
        inference = {
            "stage": recipe.get("stage", "test"),
            "seed": recipe.get("seed", 0),
            "limit": limit,
            "progress": progress,
            "frame_ms": float(settings.get("frame_ms", 80.0)),
        }
        run.update(run_inference(model, datamodule, spec, out_dir / PREDICTIONS, **inference))
        variants = run_variants(
            model,
            datamodule,
            recipe,
            spec,
            settings,
            out_dir,
            {"fingerprint": fingerprint, "inference": inference},
            overwrite,
        )
        run["datamodule_skipped"] = {
            k: dict(v) for k, v in (getattr(datamodule, "skipped", None) or {}).items()
        }
        skipped_rows = list(getattr(datamodule, "skipped_rows", []))
        run["skipped_rows"] = len(skipped_rows)
        write_jsonl(out_dir / "skipped_rows.jsonl", skipped_rows)
        records = read_jsonl(out_dir / PREDICTIONS)
        source = str(out_dir / PREDICTIONS)
        model_info = {
            "class_path": recipe["model"]["class_path"],
            "ckpt": ckpt,
            "name": model_name or recipe["model"]["class_path"],
        }
    else:
        source = str(predictions)
        records = read_jsonl(predictions)
        if not records:
            raise ValueError(f"{predictions} is empty: no predictions to score")
        model_info = {"predictions": str(predictions), "name": model_name or Path(predictions).stem}
    for line, r in enumerate(records, 1):
        if r.get("id") is None:
            raise ValueError(f"{source}: record {line} has no 'id'; every prediction needs its utterance id")
        r["id"] = str(r["id"])
    if references is not None:
        refs = load_references(
            references,
            spec,
            dataset.get("split"),
            dataset.get("id_column", "id"),
            dataset.get("reference_column"),
        )
        records = merge_references(records, refs, source)
        dataset.setdefault("path", str(references))
    scored = score(spec, records, settings, out_dir, source)
    write_jsonl(out_dir / PREDICTIONS, scored.records)
    dataset["n_utterances"] = len(records)
    hashed = {
        "task": task,
        "settings": settings,
        "dataset": {k: v for k, v in dataset.items() if k != "n_utterances"},
        "model": model_info,
    }
    metrics = {
        "task": task,
        "dataset": dataset,
        "model": model_info,
        "config_hash": config_hash(hashed),
        "settings": settings,
        "summary": scored.summary,
        "metrics": scored.metrics,
    }
    sections = [
        (
            "Run",
            md_table(
                ["task", "dataset", "model", "utterances", "config hash"],
                [
                    [
                        task,
                        dataset.get("name") or dataset.get("path") or "—",
                        model_info["name"],
                        len(records),
                        metrics["config_hash"],
                    ]
                ],
            ),
        )
    ]
    sections += scored.sections
    if run.get("skipped_rows"):
        sections.append(("Skipped rows", _skipped_text(out_dir / "skipped_rows.jsonl")))
    if variants:
        metrics["variants"] = variants
        sections.append(
            (
                "Variants (blocks swapped, same data)",
                variants_table(model_info["name"], scored.summary, variants),
            )
        )
    if baselines and baseline_key:
        entry = load_baselines(baselines, baseline_key)
        metrics["baselines"] = {"file": str(baselines), "key": baseline_key, **entry}
        sections.append(
            (
                f"Comparison with published figures ({baseline_key})",
                baseline_table(scored.summary, entry, model_info["name"]),
            )
        )
    if run:
        metrics["inference"] = run
    metrics["timing"] = {"wall_s": time.perf_counter() - started}
    settings_text = "\n".join(f"- `{k}`: {v}" for k, v in settings.items())
    sections.append(("Settings", settings_text or "(defaults)"))
    write_report(out_dir, metrics, sections, f"{task} evaluation: {model_info['name']}")
    return json.loads((out_dir / "metrics.json").read_text())


def _skipped_text(path: Path) -> str:
    """The rows the datamodule left out, counted per reason, with the first ids."""
    rows = read_jsonl(path)
    reasons: dict[str, list[str]] = {}
    for row in rows:
        reasons.setdefault(row["reason"], []).append(row["id"])
    table = md_table(
        ["reason", "rows", "first ids"],
        [[reason, len(ids), ", ".join(ids[:5])] for reason, ids in reasons.items()],
    )
    return f"{len(rows)} rows were not scored (every id in `{path.name}`):\n\n{table}"


def _resume_guard(out_dir: Path, fingerprint: str, overwrite: bool) -> dict:
    state = out_dir / "run.json"
    predictions = out_dir / PREDICTIONS
    if overwrite:
        predictions.unlink(missing_ok=True)
    elif predictions.exists():
        previous = json.loads(state.read_text()).get("config_hash") if state.exists() else None
        if previous != fingerprint:
            raise ValueError(
                f"{out_dir} holds predictions from another config (hash {previous}, now {fingerprint}); "
                "use another --out or --overwrite"
            )
    state.write_text(json.dumps({"config_hash": fingerprint}))
    return {"run_config_hash": fingerprint, "resumed": predictions.exists()}
