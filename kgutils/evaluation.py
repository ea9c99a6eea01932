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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .formats import parse_output
from .io import read_jsonl, resolve
from .metrics import evaluate, parse_card_output, read_entry

PARSERS = ("card", "robust")
AXES = ("schema", "entity_f1", "relation_acc", "weight", "grounding", "composite")


def choose_prediction(row: Any, parser: str = "card", where: str = "") -> tuple[str, Any, Any, str]:
    """``(prompt, gold, pred, parse_status)`` of one predictions row, the prediction chosen by ``parser``.

    Both layouts are read by :func:`kgutils.metrics.read_entry`. ``"card"`` keeps the stored card parse
    (``pred_parsed``; else the card's parse of ``pred_raw``) with its stored status (else the card parse's status
    of the raw text); ``"robust"`` takes the repaired parse (stored ``pred_repaired``, or
    :func:`kgutils.formats.parse_output` of ``pred_raw``). ``gold`` is returned as found (``None`` when absent).

    Raises:
        ValueError: on an unknown parser, or a row without the prediction the parser reads (``where`` names the
            file and row in the message).
    """
    if parser not in PARSERS:
        raise ValueError(f"unknown parser {parser!r}; choose one of {list(PARSERS)}")
    prompt, gold, pred, status = read_entry(row)
    raw = row.get("pred_raw") if isinstance(row, dict) else None
    if parser == "robust" and isinstance(row, dict) and "pred_repaired" in row:
        return prompt, gold, row["pred_repaired"], row.get("repair_status", "ok")
    if pred is None and not isinstance(raw, str):
        fields = "pred_parsed, pred, pred_repaired, pred_raw" if parser == "robust" else "pred_parsed, pred, pred_raw"
        raise ValueError(f"{where or 'row'} has none of {fields}")
    if parser == "robust" and isinstance(raw, str):
        repaired = parse_output(raw)
        return prompt, gold, repaired.items, repaired.status
    # The stored card-parse status, else the card parse of the raw text, else the parsed list was given.
    status = row.get("parse_status") or status or (parse_card_output(raw)[1] if isinstance(raw, str) else "ok")
    return prompt, gold, pred, status


def load_predictions(path: str | Path, parser: str = "card") -> list[dict[str, Any]]:
    """Read a predictions file into metric entries ``{id, prompt, gold, pred, parse_status}``, the prediction
    chosen by :func:`choose_prediction`.

    Raises:
        ValueError: on an unknown parser, or a row without gold or without a prediction (the message names
            the file and row).
    """
    if parser not in PARSERS:
        raise ValueError(f"unknown parser {parser!r}; choose one of {list(PARSERS)}")
    entries = []
    for n, row in enumerate(read_jsonl(path)):
        prompt, gold, pred, status = choose_prediction(row, parser, f"{path}: row {n + 1}")
        if gold is None:
            raise ValueError(f"{path}: row {n + 1} has no gold_parsed/gold field")
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


# ------------------------------------------------------------------------------------ prompt ablation (07)

#: The factors of a cell of 07's grid; a paired comparison varies one and matches the cells on the others.
ABLATION_FACTORS = ("model", "tuning", "style", "rationale", "k")
ABLATION_PLANS = ("full", "focused")
VERDICTS = ("supported", "refuted", "inconclusive", "not tested")


@dataclass(frozen=True)
class AblationCell:
    """One cell of 07's grid.

    Attributes:
        model: The base model's label (e.g. ``smollm2-135m``).
        tuning: ``base`` (not fine-tuned), ``ft`` (an adapter fine-tuned on this cell's prompt format) or the label
            of a reference adapter (e.g. ``ft-03``).
        style: ``nl`` or ``code`` (:data:`kgutils.prompts.PROMPT_STYLES`).
        rationale: A rationale (the evidence sentence of each triplet) comes before the answer.
        k: In-context examples from the train split.
    """

    model: str
    tuning: str
    style: str
    rationale: bool
    k: int

    @property
    def prompt(self) -> str:
        """The prompt format's name (``nl``, ``code``, ``nl+r``, ``code+r``)."""
        return self.style + ("+r" if self.rationale else "")

    @property
    def name(self) -> str:
        return f"{self.model} {self.tuning} {self.prompt}@{self.k}"

    @property
    def slug(self) -> str:
        """The cell's name as a file-name part."""
        return "_".join((self.model, self.tuning, self.prompt.replace("+", "-"), f"k{self.k}")).replace("/", "-")


def ablation_plan(plan: str, models: list[str], formats: list[str], shots: list[int], tuned: list[str], *,
                  square_shots: list[int] = (), size_shots: list[int] = (), references: list[str] = ()
                  ) -> list[AblationCell]:
    """The cells of 07's grid.

    Args:
        plan: ``full``: every prompt format at every k, for every model without fine-tuning and for the first
            model fine-tuned on each of ``tuned``. ``focused`` (a budget): the first model with and without
            fine-tuning gets the prompt formats it has (all of ``formats``; ``tuned`` when fine-tuned) at each of
            ``square_shots``, and the first format of each (``nl``) at every k of ``shots``; the other models get
            the first format at ``size_shots`` without fine-tuning.
        models: Base-model labels, the fine-tuned one first.
        formats: Prompt formats of the cells without fine-tuning (:func:`kgutils.prompts.prompt_format` names).
        shots: k values.
        tuned: Prompt formats that the first model is fine-tuned on (one adapter each); empty for none.
        references: Labels of extra adapters of the first model, trained on the first format: they get the
            first format at ``square_shots`` (``focused``) or every k (``full``).

    Raises:
        ValueError: on an unknown plan or prompt format, or no model.
    """
    from .prompts import prompt_format

    if plan not in ABLATION_PLANS:
        raise ValueError(f"unknown plan {plan!r}; choose one of {list(ABLATION_PLANS)}")
    if not models:
        raise ValueError("no models")
    fmt = {f: prompt_format(f) for f in [*formats, *tuned]}
    cells: list[AblationCell] = []

    def add(model: str, tuning: str, formats_: list[str], ks: list[int]) -> None:
        for f in formats_:
            for k in ks:
                cell = AblationCell(model, tuning, *fmt[f], int(k))
                if cell not in cells:
                    cells.append(cell)

    first = models[0]
    if plan == "full":
        for m in models:
            add(m, "base", formats, shots)
        for f in tuned:
            add(first, "ft", [f], shots)
        for ref in references:
            add(first, ref, formats[:1], shots)
        return cells
    add(first, "base", formats, square_shots)
    add(first, "base", formats[:1], shots)
    for f in tuned:
        add(first, "ft", [f], square_shots)
    add(first, "ft", tuned[:1], shots)
    for ref in references:
        add(first, ref, formats[:1], square_shots)
    for m in models[1:]:
        add(m, "base", formats[:1], size_shots)
    return cells


def ablation_scores(paths: dict[AblationCell, str | Path], n_resamples: int = 1000, seed: int = 0):
    """Score every cell's predictions with the ``hgr`` and ``corrected`` composites and triplet F1.

    Returns:
        ``(per_entry, summary)`` pandas DataFrames: one row per (cell, passage) with the factors, ``id``,
        ``parse_status``, ``hgr``, ``corrected`` (the per-passage composites) and ``triplet_f1`` (``hgr``'s); and
        one row per cell with the macro composites and their bootstrap intervals, micro triplet F1 and the parse
        failure rate.
    """
    import pandas as pd

    entries, summary = [], []
    for cell, path in paths.items():
        factors = {f: getattr(cell, f) for f in ABLATION_FACTORS}
        res = {m: evaluate_file(path, m, "card", n_resamples, seed) for m in ("hgr", "corrected")}
        for h, c in zip(res["hgr"]["per_entry"], res["corrected"]["per_entry"]):
            entries.append({"cell": cell.name, **factors, "prompt": cell.prompt, "id": h["id"],
                            "parse_status": h["parse_status"], "hgr": h["composite"], "corrected": c["composite"],
                            "triplet_f1": h["triplet_f1"]})
        row = {"cell": cell.name, **factors, "prompt": cell.prompt, "n": res["hgr"]["n"]}
        for m in ("hgr", "corrected"):
            row[m] = res[m]["macro"]["composite"]
            row[f"{m}_lo"], row[f"{m}_hi"] = res[m]["ci"].get("composite") or (None, None)
        row["triplet_f1"] = res["hgr"]["macro"]["triplet_f1"]
        row["micro_triplet_f1"] = res["hgr"]["micro"]["triplet_f1"]
        row["parse_failure_rate"] = res["hgr"]["parse_failure_rate"]
        summary.append(row)
    return pd.DataFrame(entries), pd.DataFrame(summary)


def _select(frame, where: dict[str, Any] | None):
    """The rows of ``frame`` whose columns equal ``where``'s values (or lie in them, for a list)."""
    for key, value in (where or {}).items():
        frame = frame[frame[key].isin(value) if isinstance(value, (list, tuple, set)) else frame[key] == value]
    return frame


def paired_cells(per_entry, vary: str, a: Any, b: Any, where: dict[str, Any] | None = None,
                 metric: str = "hgr") -> dict[str, Any]:
    """Per-passage scores of two sides of a comparison, paired over the same passages.

    The cells with ``vary == a`` and those with ``vary == b`` (among the cells matching ``where``) are matched on
    the other factors; each passage's score on a side is its mean over the matched cells. Returns ``{"ids", "a",
    "b", "pairs"}`` where ``pairs`` names the matched cells (empty when no cell has both sides).
    """
    frame = _select(per_entry, where)
    others = [f for f in ABLATION_FACTORS if f != vary]
    side_a, side_b = frame[frame[vary] == a], frame[frame[vary] == b]
    matched = ({tuple(r) for r in side_a[others].itertuples(index=False)}
               & {tuple(r) for r in side_b[others].itertuples(index=False)})
    if not matched:
        return {"ids": [], "a": [], "b": [], "pairs": []}

    def side(part):
        part = part[[tuple(r) in matched for r in part[others].itertuples(index=False)]]
        return part.groupby("id")[metric].mean()

    sa, sb = side(side_a), side(side_b)
    ids = sorted(set(sa.index) & set(sb.index))
    named = [f for f in others if f != "model" or frame["model"].nunique() > 1]
    pairs = [" ".join(f"{f}={dict(zip(others, key))[f]}" for f in named) for key in sorted(matched, key=str)]
    return {"ids": ids, "a": [float(sa[i]) for i in ids], "b": [float(sb[i]) for i in ids], "pairs": pairs}


def _verdict(kind: str, res: dict[str, Any], margin: float, alpha: float) -> str:
    """``better``: supported when b beats a significantly, refuted when the interval rules out a gain of
    ``margin`` or more. ``not_better``: the reverse. ``same``: supported when the interval lies within
    ±``margin``, refuted when the difference is significant and at least ``margin``."""
    if res["effect"] is None or res["n"] < 2:
        return "not tested"
    lo, hi = res["ci"]
    p = res["p_permutation"]
    significant = p is not None and p < alpha
    if kind == "same":
        if -margin <= lo and hi <= margin:
            return "supported"
        return "refuted" if significant and abs(res["effect"]) >= margin else "inconclusive"
    better = "supported" if significant and res["effect"] > 0 else "refuted" if hi < margin else "inconclusive"
    if kind == "better":
        return better
    if kind == "not_better":
        return {"supported": "refuted", "refuted": "supported"}.get(better, better)
    raise ValueError(f"unknown claim kind {kind!r}")


#: 07's seed findings as comparisons: (id, claim, kind, where, vary, a, b). ``kind`` says what would support the
#: claim (see :func:`_verdict`); ``where`` selects cells ("base" = not fine-tuned, "ft" = fine-tuned).
FINDINGS: tuple[tuple[str, str, str, dict[str, Any], str, Any, Any], ...] = (
    ("F1", "fine-tuned: code and natural-language prompts perform about the same", "same",
     {"tuning": "ft"}, "style", "nl", "code"),
    ("F2", "fine-tuned: a rationale before the answer is ineffective or harmful, at any k", "not_better",
     {"tuning": "ft"}, "rationale", False, True),
    ("F3a", "not fine-tuned: code prompts do better than natural language", "better",
     {"tuning": "base"}, "style", "nl", "code"),
    ("F3b", "not fine-tuned: a rationale helps", "better", {"tuning": "base"}, "rationale", False, True),
    ("F4a", "the largest gain comes from going from 0 to 3 examples", "better", {}, "k", 0, 3),
    ("F4b", "beyond 3 examples there is little or negative change", "not_better", {}, "k", 3, 5),
)


def ablation_findings(per_entry, metric: str = "hgr", margin: float = 0.05, alpha: float = 0.05,
                      n_resamples: int = 2000, seed: int = 0, models: list[str] | None = None):
    """The findings table of 07: for each seed finding, the paired effect (b − a, per-passage ``metric``), its
    bootstrap interval, the Wilcoxon signed-rank and paired permutation p-values
    (:func:`kgutils.metrics.paired_difference`) and a verdict (:func:`_verdict`; ``margin`` is the smallest
    difference that matters, on the composite's 0–1 scale). F1–F4 are pooled over every matched cell pair and
    also given per k (``scope``); F4 uses the first model's cells, pooled over its tunings and per tuning. F5 (size)
    compares each model with the next larger one in ``models`` (smallest first) on the cells both ran without
    fine-tuning; with two models only "size helps" can be tested, not "not monotonically".

    Returns:
        A pandas DataFrame: ``finding, claim, scope, a, b, cells, n, mean_a, mean_b, effect, ci_lo, ci_hi,
        p_wilcoxon, p_permutation, verdict``.
    """
    import pandas as pd

    from .metrics import paired_difference

    rows = []

    def add(fid, claim, kind, scope, where, vary, a, b):
        paired = paired_cells(per_entry, vary, a, b, where, metric)
        res = paired_difference(paired["a"], paired["b"], n_resamples=n_resamples, seed=seed)
        rows.append({"finding": fid, "claim": claim, "scope": scope, "a": f"{vary}={a}", "b": f"{vary}={b}",
                     "cells": "; ".join(paired["pairs"]), "n": res["n"], "mean_a": res["mean_a"],
                     "mean_b": res["mean_b"], "effect": res["effect"], "ci_lo": res["ci"][0], "ci_hi": res["ci"][1],
                     "p_wilcoxon": res["p_wilcoxon"], "p_permutation": res["p_permutation"],
                     "verdict": _verdict(kind, res, margin, alpha)})

    models = list(models or per_entry["model"].drop_duplicates())
    first = {"model": models[0]} if models else {}
    for fid, claim, kind, where, vary, a, b in FINDINGS:
        where = {**first, **where}
        add(fid, claim, kind, "pooled", where, vary, a, b)
        if vary != "k":
            ks = sorted(_select(per_entry, where)["k"].unique())
            if len(ks) > 1:
                for k in ks:
                    add(fid, claim, kind, f"k={k}", {**where, "k": k}, vary, a, b)
        else:
            for tuning in per_entry.loc[per_entry["model"] == models[0], "tuning"].drop_duplicates():
                add(fid, claim, kind, tuning, {**where, "tuning": tuning}, vary, a, b)
    for small, large in zip(models, models[1:]):
        add("F5", "size helps (larger model, same cells, not fine-tuned)", "better", f"{small} → {large}",
            {"tuning": "base"}, "model", small, large)
    table = pd.DataFrame(rows)
    return table[(table["n"] > 0) | (table["scope"] == "pooled")].reset_index(drop=True)
