"""Evaluate predictions files: the glue between predictions JSONL, :mod:`kgutils.metrics`, tables and figures.

Two layouts are read, both one JSON object a line:

* the repository's (written by :func:`kgutils.generate.predict_file`): ``id, prompt, gold_parsed, pred_raw,
  pred_parsed, parse_status, pred_repaired, repair_status, ...``;
* the seed card's published prediction files: ``prompt, gold_raw, gold_parsed, pred_raw, pred_parsed``.

``parser="card"`` scores ``pred_parsed`` as stored (or the card's parse of ``pred_raw`` when absent): the
numbers compare with the card. ``parser="robust"`` scores the repaired parse instead.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .formats import parse_output
from .io import read_jsonl, resolve
from .metrics import evaluate, parse_card_output, read_entry

PARSERS = ("card", "robust")
AXES = ("schema", "entity_f1", "relation_acc", "weight", "grounding", "composite")


def load_predictions(path: str | Path, parser: str = "card") -> list[dict[str, Any]]:
    """Read a predictions file into metric entries ``{id, prompt, gold, pred, parse_status}``.

    Both layouts are read by :func:`kgutils.metrics.read_entry`; ``parser="robust"`` then replaces the
    prediction by the repaired parse (stored ``pred_repaired``, or :func:`kgutils.formats.parse_output` of
    ``pred_raw``).

    Raises:
        ValueError: on an unknown parser, or a row without gold or without a prediction (the message names
            the file and row).
    """
    if parser not in PARSERS:
        raise ValueError(f"unknown parser {parser!r}; choose one of {list(PARSERS)}")
    entries = []
    for n, row in enumerate(read_jsonl(path)):
        prompt, gold, pred, status = read_entry(row)
        raw = row.get("pred_raw")
        if gold is None:
            raise ValueError(f"{path}: row {n + 1} has no gold_parsed/gold field")
        if pred is None and not isinstance(raw, str):
            raise ValueError(f"{path}: row {n + 1} has none of pred_parsed, pred, pred_raw")
        if parser == "robust" and "pred_repaired" in row:
            pred, status = row["pred_repaired"], row.get("repair_status", "ok")
        elif parser == "robust" and isinstance(raw, str):
            repaired = parse_output(raw)
            pred, status = repaired.items, repaired.status
        else:
            # The stored card-parse status, else the card parse of the raw text, else the parsed list was given.
            status = row.get("parse_status") or status or (parse_card_output(raw)[1] if isinstance(raw, str) else "ok")
        entries.append(
            {"id": str(row.get("id", n)), "prompt": prompt or row.get("text") or "", "gold": gold, "pred": pred,
             "parse_status": status}
        )  # fmt: skip
    return entries


def evaluate_file(
    path: str | Path, metric: str = "hgr", parser: str = "card", n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Score one predictions file; returns :func:`kgutils.metrics.evaluate`'s result plus parse statistics.

    Raises:
        ValueError: on an unknown metric or parser, or a malformed file (see :func:`load_predictions`).
    """
    entries = load_predictions(path, parser)
    result = evaluate(entries, metric=metric, n_resamples=n_resamples, seed=seed)
    statuses = Counter(e["parse_status"] for e in entries)
    n = len(entries)
    result["file"] = str(resolve(path))
    result["parser"] = parser
    result["parse_status"] = dict(statuses)
    result["parse_failure_rate"] = (n - statuses.get("ok", 0) - statuses.get("repaired", 0)) / n if n else 0.0
    for entry, scored in zip(entries, result["per_entry"]):
        scored["id"] = entry["id"]
        scored["parse_status"] = entry["parse_status"]
    return result


def summary_row(result: dict[str, Any], label: str = "") -> dict[str, Any]:
    """One flat row for a comparison table: macro axes with intervals, micro F1, parse failures."""
    row: dict[str, Any] = {
        "run": label or Path(result.get("file", "")).stem,
        "parser": result.get("parser", "card"),
        "metric": result["metric"],
        "n": result["n"],
    }
    for axis in AXES:
        row[axis] = result["macro"].get(axis)
        ci = result.get("ci", {}).get(axis)
        if ci:
            row[f"{axis}_lo"], row[f"{axis}_hi"] = ci
    micro = result.get("micro", {})
    for k in ("entity_p", "entity_r", "entity_f1", "triplet_f1", "hard_hallucination_rate"):
        row[f"micro_{k}"] = micro.get(k)
    cal = result.get("calibration") or {}
    row["ece"], row["brier"] = cal.get("ece"), cal.get("brier")
    row["parse_failure_rate"] = result.get("parse_failure_rate")
    return row


def per_entry_frame(result: dict[str, Any]):
    """A pandas DataFrame with one row per entry (scores and counts, no pair details)."""
    import pandas as pd

    keep = [
        "id", "parse_status", "n_gold", "n_pred", "entity_tp", "schema", "entity_p", "entity_r", "entity_f1",
        "triplet_f1", "relation_acc", "weight", "grounding", "composite", "n_self_loops", "n_hard_halluc",
    ]  # fmt: skip
    rows = [{k: e.get(k) for k in keep} for e in result["per_entry"]]
    return pd.DataFrame(rows, columns=keep)


def relation_confusion(result: dict[str, Any]):
    """Gold × predicted relation counts over kept pairs whose entities match (a pandas DataFrame)."""
    import pandas as pd

    counts: Counter[tuple[str, str]] = Counter()
    for entry in result["per_entry"]:
        for pair in entry.get("pairs", []):
            if pair.get("entity_match"):
                counts[(pair["gold_relation"], pair["pred_relation"] or "(none)")] += 1
    if not counts:
        return pd.DataFrame()
    frame = pd.Series(counts).unstack(fill_value=0)
    frame.index.name, frame.columns.name = "gold relation", "predicted relation"
    return frame.sort_index().sort_index(axis=1)


def score_files(
    files: list[str | Path],
    labels: list[str] | None,
    metrics: list[str],
    parsers: list[str],
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Score every predictions file with every metric and parser.

    Args:
        files: predictions JSONL files.
        labels: display names, one per file; files without one are named by their file name.
        metrics, parsers: the variants to score (see :data:`kgutils.metrics.METRICS`, :data:`PARSERS`).

    Returns:
        ``{(label, metric, parser): evaluate_file(...) result}`` in file, parser, metric order.
    """
    labels = list(labels or [])
    if len(labels) > len(files):
        raise ValueError(f"{len(labels)} labels for {len(files)} predictions files")
    labels += [Path(f).stem for f in files[len(labels) :]]
    results = {}
    for path, label in zip(files, labels):
        for parser in parsers:
            for metric in metrics:
                results[(label, metric, parser)] = evaluate_file(path, metric, parser, n_resamples, seed)
    return results


def summary_frame(results: dict[tuple[str, str, str], dict[str, Any]]):
    """One :func:`summary_row` per scored (file, metric, parser), as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame([summary_row(res, label) for (label, _, _), res in results.items()])


def metrics_record(results: dict[tuple[str, str, str], dict[str, Any]]) -> dict[str, Any]:
    """The compact metrics a run records (metrics.json, the W&B summary): no per-entry rows, no bins."""
    return {
        f"{label}/{parser}/{metric}": {
            "n": res["n"],
            "macro": res["macro"],
            "micro": res["micro"],
            "ci": res["ci"],
            "calibration": {k: v for k, v in (res["calibration"] or {}).items() if k != "bins"},
            "parse_failure_rate": res["parse_failure_rate"],
            "parse_status": res["parse_status"],
        }
        for (label, metric, parser), res in results.items()
    }


def constrained_effect(results: dict[tuple[str, str, str], dict[str, Any]], metric: str = "hgr",
                       parser: str = "card") -> dict[str, Any] | None:
    """How much of fine-tuning's gain constrained decoding alone gives the base model.

    Reads the composites of the runs labelled ``base unconstrained``, ``base constrained`` and ``fine-tuned
    unconstrained`` (``fine-tuned constrained`` when present) for one metric and parser. ``format_share`` is
    (constrained base − unconstrained base) / (unconstrained fine-tuned − unconstrained base): the part of
    fine-tuning's gain that forcing the output format alone recovers; ``None`` when fine-tuning gained nothing.

    Returns:
        The composites, the two gains and the share (``None`` where a run is missing), or ``None`` without both
        base runs.
    """
    def composite(label: str) -> float | None:
        for (lab, m, p), res in results.items():
            if m == metric and p == parser and (lab == label or lab.startswith(label + " (")):
                return res["macro"]["composite"]
        return None

    names = ["base unconstrained", "base constrained", "fine-tuned unconstrained", "fine-tuned constrained"]
    values = {n: composite(n) for n in names}
    if values["base unconstrained"] is None or values["base constrained"] is None:
        return None
    fmt = values["base constrained"] - values["base unconstrained"]
    tuned = values["fine-tuned unconstrained"]
    gain = None if tuned is None else tuned - values["base unconstrained"]
    return {"metric": metric, "parser": parser, "composites": values, "fine_tuning_gain": gain,
            "format_gain": fmt, "format_share": fmt / gain if gain is not None and gain > 0 else None}


def describe_constrained_effect(effect: dict[str, Any] | None) -> str:
    """One sentence for a notebook about :func:`constrained_effect`'s figures."""
    if effect is None:
        return "constrained vs unconstrained base model: not both scored here"
    text = (f"{effect['metric']} ({effect['parser']} parse): constraining the base model's output changes its "
            f"composite by {effect['format_gain']:+.3f}")
    if effect["fine_tuning_gain"] is None:
        return text
    share = ("n/a (fine-tuning gained nothing)" if effect["format_share"] is None
             else f"{100 * effect['format_share']:.0f} %")
    return (text + f"; fine-tuning (both unconstrained) changes it by {effect['fine_tuning_gain']:+.3f}: the format "
            f"alone is {share} of fine-tuning's gain")


# ------------------------------------------------------------------------------------ SPO triples (05, Gemma)


def score_spo_file(path: str | Path, *, ids: list[str] | None = None, n_resamples: int = 1000, seed: int = 0,
                   generation: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score a predictions file of the SPO task (:func:`kgutils.generate.predict_file` with ``task="spo"``).

    Args:
        path: the predictions JSONL.
        ids: score only these passages (a subset shared by several models), in this order; every id must be in
            the file.
        n_resamples / seed: the bootstrap of the F1 interval (:func:`kgutils.metrics.spo_f1_ci`).
        generation: the generation summary of the file (``predict_file``'s return value), for its new tokens/s
            (measured over the whole run that wrote the file).

    Returns:
        :func:`kgutils.metrics.spo_report` plus ``f1_lo``/``f1_hi``, ``n`` passages, ``parse_failure_rate``
        (answers whose parse status is not ``ok``), ``invalid_items``, ``new_tokens_per_second``, and the
        duplicates the loop guard cut: ``repeat_stop_rate`` (answers it ended at a repeated triple) and
        ``duplicate_rate_with_guard`` (duplicates in the answers plus the one repeated triple of each such stop, over
        predicted triples plus those), so that the guard does not hide the duplicated-fact failure mode.
    """
    from .metrics import spo_f1_ci, spo_report

    rows = read_jsonl(path)
    if ids is not None:
        by_id = {str(r.get("id")): r for r in rows}
        missing = [i for i in ids if str(i) not in by_id]
        if missing:
            raise ValueError(f"{path}: no prediction for passages {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        rows = [by_id[str(i)] for i in ids]
    gold = [r.get("gold_parsed") or {"triples": []} for r in rows]
    pred = [r.get("pred_parsed") or {"triples": []} for r in rows]
    report = spo_report(gold, pred)
    lo, hi = spo_f1_ci(gold, pred, n_resamples=n_resamples, seed=seed)
    statuses = Counter(r.get("parse_status", "unknown") for r in rows)
    speed = generation.get("new_tokens_per_second") if generation else None
    repeats = sum(r.get("stop_reason") == "repeat" for r in rows)
    total = report["n_pred_triples"] + repeats
    return {**report, "f1_lo": lo, "f1_hi": hi, "n": len(rows),
            "repeat_stop_rate": repeats / len(rows) if rows else None,
            "duplicate_rate_with_guard": (report["n_duplicates"] + repeats) / total if total else None,
            "parse_failure_rate": 1 - statuses.get("ok", 0) / len(rows) if rows else 0.0,
            "parse_status": dict(statuses), "invalid_items": sum(r.get("n_invalid_items", 0) for r in rows),
            "new_tokens_per_second": speed}
