"""Evaluation metrics for every recipe in the study.

The main scorer is the seed card's Hungarian-matching composite (``metric="hgr"``),
implemented exactly as ``DESIGN.md`` ("The Hungarian-matching evaluation") states so
that numbers compare with the card:

1. raw output -> list (:func:`parse_card_output`);
2. shape-only validity (:func:`is_valid_item`) and the schema score;
3. title / type normalisation (:func:`normalize_title`, :func:`normalize_type`);
4. valid items only; self-loops dropped from the predictions (and counted), kept in the gold;
5. field / relation similarity (:func:`field_similarity`, :func:`relation_similarity`)
   and the pair alignment ``0.45 source + 0.45 target + 0.10 relation``;
6. Hungarian assignment on a square, padded cost matrix; pairs with align >= 0.50 kept;
7. entity (and triplet) P/R/F1 with *all* predicted list items as the precision denominator;
8. relation accuracy; 9. weight score (|dw| buckets); 10. hallucinations / grounding;
11. composite with renormalised weights over the defined axes;
12. macro means over entries skipping undefined values, micro P/R/F1 from summed counts.

Every threshold of ``hgr`` (0.80 field similarity, 0.50 alignment, 0.60 token share, the
0.10 / 0.20 weight bands) is a plain floating-point comparison, as in the card's evaluator:
``|0.53 - 0.43|`` is ``0.10000000000000003`` in binary floating point, which is not
``<= 0.10``, so that pair scores 0.5 on the weight axis.

The ``corrected`` variant (``metric="corrected"``) uses the same parsing, validity,
normalisation and matching, and differs in exactly these places:

a. **schema** also requires the normalised ``relation.type`` to be one of the 20
   ontology relations and both entity types to be ``entity`` or ``concept``;
b. **correct empty answers are perfect**: when the valid gold list is empty and the
   prediction list is empty, entity and triplet P/R/F1 are 1.0 (the card scores them 0)
   and the composite is 1.0; when gold is empty and the prediction is not, precision
   and F1 are 0 and the composite is 0 (as in ``hgr``);
c. the **weight axis of the composite** is replaced by a per-entry calibration score,
   ``1 - mean((w - correct)^2)`` over the entry's predictions (a Brier score, where
   ``correct`` means "part of a kept full-match pair"); undefined when the entry has no
   valid, non-self-loop prediction;
d. **an unparseable output is not an empty answer**: when the entry's parse status says
   the raw text gave no usable list (:data:`kgutils.formats.UNUSABLE_STATUSES`: empty output, no JSON,
   invalid or truncated JSON, JSON that is not a list), the schema score is 0 and counts
   in the composite, and on an entry with empty gold the composite is 0. The card's
   definition only sees the parsed list, so there an answer that is not JSON at all
   scores schema 1.0 — the quirk this removes. Entries scored without a parse status
   (lists given directly) are unaffected;
e. **gold self-loops are left out** (a valid gold item whose non-empty normalised source
   and target titles are equal, e.g. "Acme Corporation" -> "Acme Corp", both "acme"):
   ``hgr`` keeps them matchable and counts them in ``|valid G|``, although the identical
   prediction is a self-loop too and is dropped before matching (in both variants), so
   such gold items lower the card's recall; ``corrected`` drops them from matching, from
   ``|valid G|`` and from the known gold titles of the grounding check. Both report
   ``n_gold_self_loops``;
f. **thresholds carry a tolerance of 1e-9** (``_EPS``), so that a difference that is
   exactly 0.10 or 0.20 in decimal (``|0.8 - 0.7|`` = ``0.10000000000000009``) falls in
   the band the definition intends, and likewise at the 0.80, 0.50 and 0.60 cuts.

Both variants report the card's bucketed ``weight`` score and the per-entry
``calibration`` score side by side, and :func:`evaluate` reports corpus-level expected
calibration error and Brier score for both; the metric name changes what feeds the
schema axis, the empty-gold case, the composite, the gold self-loops and the thresholds.

Other scorers the study needs live here too: strict exact (s, p, o) F1
(:func:`strict_spo_f1`, Gemma recipe), REBEL-style strict / boundaries P/R/F1
(:func:`rebel_scores`) and positive-class micro-F1 for relation classification
(:func:`relation_classification_f1`, MixTune recipe).
"""

from __future__ import annotations

import difflib
import json
import math
import re
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from kgutils.formats import UNUSABLE_STATUSES
from kgutils.ontology import ENTITY_TYPE_SET, RELATION_SET

__all__ = [
    "AXES",
    "CI_AXES",
    "COMPOSITE_AXES",
    "COMPOSITE_WEIGHTS",
    "METRICS",
    "read_entry",
    "NEGATIVE_LABELS",
    "bootstrap_ci",
    "calibration_summary",
    "evaluate",
    "field_similarity",
    "is_valid_item",
    "normalize_rc_label",
    "normalize_title",
    "normalize_type",
    "parse_card_output",
    "REBEL_SEMANTICS",
    "rebel_scores",
    "relation_classification_f1",
    "relation_classification_report",
    "relation_similarity",
    "score_entry",
    "strict_spo_f1",
    "spo_report",
    "spo_f1_ci",
    "paired_difference",
]

METRICS: tuple[str, ...] = ("hgr", "corrected")

COMPOSITE_WEIGHTS: dict[str, float] = {
    "schema": 0.30,
    "entity_f1": 0.25,
    "relation_acc": 0.20,
    "weight": 0.10,
    "grounding": 0.15,
}

# Which per-entry key feeds each composite slot; `corrected` swaps the weight slot
# for the Brier-based calibration score (difference c in the module docstring).
COMPOSITE_AXES: dict[str, dict[str, str]] = {
    "hgr": {k: k for k in COMPOSITE_WEIGHTS},
    "corrected": {**{k: k for k in COMPOSITE_WEIGHTS}, "weight": "calibration"},
}

# Axes averaged by `evaluate` (macro) and those that get a bootstrap interval.
AXES: tuple[str, ...] = (
    "schema",
    "entity_p",
    "entity_r",
    "entity_f1",
    "triplet_p",
    "triplet_r",
    "triplet_f1",
    "relation_acc",
    "weight",
    "calibration",
    "grounding",
    "composite",
)
CI_AXES: tuple[str, ...] = (
    "composite",
    "entity_f1",
    "relation_acc",
    "schema",
    "weight",
    "calibration",
    "grounding",
)

NEGATIVE_LABELS: frozenset[str] = frozenset({"none", "other", "no_relation", "na", "nan", "null", ""})

SIM_THRESHOLD = 0.80
ALIGN_THRESHOLD = 0.50
HALLUCINATION_TOKEN_SHARE = 0.60
# Absorbs binary floating-point noise at the thresholds: `corrected` only (difference f in
# the module docstring); `hgr` compares plain floats, as the card's evaluator does.
_EPS = 1e-9
_TOLERANCE: dict[str, float] = {"hgr": 0.0, "corrected": _EPS}

_SUFFIX_RE = re.compile(
    r"[\s,]+(incorporated|corporation|limited|company|inc|llc|ltd|co|corp|plc|gmbh|ag|sa|nv|bv)\.?$"
)
_WS_RE = re.compile(r"\s+")
_TOKEN_RE = re.compile(r"[a-z0-9]+")
# Quotes (ASCII and typographic; NFKC leaves the latter alone), brackets and .,;:
_EDGE_CHARS = " \t\n\r\f\v\"'`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u00ab\u00bb()[]{}<>.,;:"
_THINK_BLOCK_RE = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE_RE = re.compile(r"</think>", re.IGNORECASE)
_FENCE_RE = re.compile(r"```[A-Za-z0-9_+\-]*")


# --------------------------------------------------------------------------- normalisation


def normalize_title(x: Any) -> str:
    """Normalise an entity title (design step 3).

    NFKC, ``_`` -> space, collapse white space, strip, lowercase; then repeatedly strip
    a trailing company suffix ("Acme Corp." -> "acme"); then strip quotes, brackets and
    ``.,;:`` from both ends and collapse white space again.

    Args:
        x: The title; anything that is not a string normalises to ``""``.

    Returns:
        The normalised title.
    """
    if not isinstance(x, str):
        return ""
    s = unicodedata.normalize("NFKC", x).replace("_", " ")
    s = _WS_RE.sub(" ", s).strip().lower()
    # Repeat so that stacked suffixes ("X Ltd. Co.") all go.
    while True:
        stripped = _SUFFIX_RE.sub("", s)
        if stripped == s:
            break
        s = stripped
    s = s.strip(_EDGE_CHARS)
    return _WS_RE.sub(" ", s).strip()


def normalize_type(x: Any) -> str:
    """Normalise an entity or relation type: strip and lowercase (non-strings -> ``""``)."""
    if not isinstance(x, str):
        return ""
    return x.strip().lower()


# --------------------------------------------------------------------------- parsing


def parse_card_output(raw: Any) -> tuple[list, str]:
    """Turn a model's raw output into a list of items (design step 1).

    Closed ``<think>…</think>`` blocks are removed, and so is everything up to a stray
    ``</think>`` (a reasoning model whose opening tag was part of the prompt). An unclosed
    ``<think>`` is left in place, so such an output fails to parse, as in the card. Code
    fence markers (```` ``` ```` and ```` ```json ````) are removed before ``json.loads``.

    Args:
        raw: The generated text. ``None`` counts as empty; an already decoded list or
            dict is accepted as is.

    Returns:
        ``(items, status)``: a dict becomes ``[dict]``, a list stays a list, anything
        else becomes ``[]``. ``status`` is ``"ok"``, ``"empty"`` (nothing left after
        stripping), ``"invalid_json"`` or ``"not_a_list"`` (valid JSON that is neither a
        list nor an object). Never raises.
    """
    if raw is None:
        return [], "empty"
    if isinstance(raw, list):
        return raw, "ok"
    if isinstance(raw, dict):
        return [raw], "ok"
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", errors="replace")
    if not isinstance(raw, str):
        return [], "invalid_json"
    s = _THINK_BLOCK_RE.sub("", raw)
    parts = _THINK_CLOSE_RE.split(s)
    s = parts[-1]
    s = _FENCE_RE.sub("", s).strip().lstrip("\ufeff").strip()
    if not s:
        return [], "empty"
    try:
        obj = json.loads(s)
    except Exception:  # ValueError, RecursionError on pathological nesting, ...
        return [], "invalid_json"
    if isinstance(obj, list):
        return obj, "ok"
    if isinstance(obj, dict):
        return [obj], "ok"
    return [], "not_a_list"


def is_valid_item(item: Any) -> bool:
    """Shape-only validity of one predicted or gold item (design step 2).

    Valid: a dict whose ``source`` and ``target`` are dicts with a string ``title`` and a
    string ``type``, and whose ``relation`` is a dict with a string ``type`` and a
    ``weight`` that is an int or float (not a bool) in [0, 1]. The ontology is not
    checked here.
    """
    if not isinstance(item, dict):
        return False
    for key in ("source", "target"):
        node = item.get(key)
        if not isinstance(node, dict):
            return False
        if not isinstance(node.get("title"), str) or not isinstance(node.get("type"), str):
            return False
    rel = item.get("relation")
    if not isinstance(rel, dict) or not isinstance(rel.get("type"), str):
        return False
    w = rel.get("weight")
    # bool is an int subclass: exclude it explicitly (true/false are not confidences).
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        return False
    return 0.0 <= w <= 1.0  # False for NaN as well


def _is_ontology_item(item: Any) -> bool:
    """Valid shape and in the ontology: the `corrected` schema check."""
    return (
        is_valid_item(item)
        and normalize_type(item["relation"]["type"]) in RELATION_SET
        and normalize_type(item["source"]["type"]) in ENTITY_TYPE_SET
        and normalize_type(item["target"]["type"]) in ENTITY_TYPE_SET
    )


# --------------------------------------------------------------------------- similarity


def _tokens(s: str) -> set[str]:
    return set(_TOKEN_RE.findall(s))


def _tolerance(metric: str) -> float:
    try:
        return _TOLERANCE[metric]
    except KeyError:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}") from None


def field_similarity(a: str, b: str, metric: str = "hgr") -> float:
    """Similarity of two normalised strings (design step 5).

    1.0 when equal and non-empty; otherwise
    ``0.5 * SequenceMatcher(None, a, b).ratio() + 0.5 * Jaccard([a-z0-9]+ tokens)``,
    kept only when >= 0.80 (else 0.0); 0.0 when either string is empty.

    ``SequenceMatcher.ratio`` is not symmetric in general; the scorers always pass the
    gold string first.

    Args:
        a: The gold string (normalised).
        b: The predicted string (normalised).
        metric: ``"hgr"`` compares with 0.80 as a plain float (the card); ``"corrected"``
            allows a tolerance of 1e-9 below it.

    Raises:
        ValueError: For an unknown metric name.
    """
    return _field_similarity(a, b, _tolerance(metric))


@lru_cache(maxsize=1 << 17)
def _field_similarity(a: str, b: str, eps: float) -> float:
    # Cached per tolerance: the two metrics may disagree on a pair right at the cut.
    if a == b:
        return 1.0 if a else 0.0
    if not a or not b:
        return 0.0
    ta, tb = _tokens(a), _tokens(b)
    union = ta | tb
    jac = len(ta & tb) / len(union) if union else 0.0
    cut = SIM_THRESHOLD - eps
    # Cheap exact upper bounds first: most pairs in a matrix are far apart, and
    # ratio() is the expensive part.
    if 0.5 * 1.0 + 0.5 * jac < cut:
        return 0.0
    sm = difflib.SequenceMatcher(None, a, b)
    if 0.5 * sm.real_quick_ratio() + 0.5 * jac < cut:
        return 0.0
    if 0.5 * sm.quick_ratio() + 0.5 * jac < cut:
        return 0.0
    sim = 0.5 * sm.ratio() + 0.5 * jac
    return sim if sim >= cut else 0.0


def relation_similarity(a: str, b: str, metric: str = "hgr") -> float:
    """Similarity of two normalised relation types (design step 5).

    1.0 when equal and non-empty, else :func:`field_similarity` of the types with
    ``_`` replaced by a space (so ``used_for`` and ``used for`` are equal).

    Raises:
        ValueError: For an unknown metric name.
    """
    return _relation_similarity(a, b, _tolerance(metric))


@lru_cache(maxsize=1 << 12)
def _relation_similarity(a: str, b: str, eps: float) -> float:
    if a == b:
        return 1.0 if a else 0.0
    return _field_similarity(a.replace("_", " "), b.replace("_", " "), eps)


# --------------------------------------------------------------------------- per entry


def _normalise_item(item: dict) -> tuple[str, str, str, str, str, float]:
    """(source title, source type, relation type, target title, target type, weight)."""
    src, rel, tgt = item["source"], item["relation"], item["target"]
    return (
        normalize_title(src["title"]),
        normalize_type(src["type"]),
        normalize_type(rel["type"]),
        normalize_title(tgt["title"]),
        normalize_type(tgt["type"]),
        float(rel["weight"]),
    )


def _is_self_loop(n: tuple) -> bool:
    return bool(n[0]) and n[0] == n[3]


def _prf(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    """The card's per-entry P/R/F1: a zero denominator gives 0, F1 is 0 when P + R = 0."""
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f1


def _weight_bucket(delta: float, metric: str = "hgr") -> float:
    """Design step 9: |dw| <= 0.10 -> 1, <= 0.20 -> 0.5, else 0 (``corrected``: 1e-9 tolerance)."""
    eps = _tolerance(metric)
    if delta <= 0.10 + eps:
        return 1.0
    if delta <= 0.20 + eps:
        return 0.5
    return 0.0


def _composite(values: dict[str, float | None]) -> float | None:
    """Weighted mean over the defined axes, weights renormalised (design step 11)."""
    num = den = 0.0
    for axis, w in COMPOSITE_WEIGHTS.items():
        v = values.get(axis)
        if v is not None:
            num += w * v
            den += w
    return num / den if den > 0 else None


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def _known_endpoint(
    title: str, gold_titles: set[str], prompt_norm: str, prompt_tokens: set[str], metric: str = "hgr"
) -> bool:
    """Design step 10: gold title, substring of the prompt, or >= 60 % of tokens in it."""
    if not title:
        # An empty title is "in" every string; it names nothing, so it is not known.
        return False
    if title in gold_titles or title in prompt_norm:
        return True
    toks = _tokens(title)
    if not toks:
        return False
    return len(toks & prompt_tokens) / len(toks) >= HALLUCINATION_TOKEN_SHARE - _tolerance(metric)


def score_entry(
    prompt: str, gold: list, pred: list, metric: str = "hgr", parse_status: str | None = None
) -> dict:
    """Score one entry (design steps 2-11).

    Args:
        prompt: The text given to the model (instruction + passage); used for grounding.
        gold: Parsed gold list; invalid items are ignored.
        pred: Parsed predicted list.
        metric: ``"hgr"`` (the card's definition) or ``"corrected"``.
        parse_status: How ``pred`` came out of the raw text, when known; ``corrected`` scores an
            unparseable output (:data:`kgutils.formats.UNUSABLE_STATUSES`) as a schema failure. ``hgr`` ignores it.

    Returns:
        A flat dict with the axes ``schema, entity_p, entity_r, entity_f1, triplet_p,
        triplet_r, triplet_f1, relation_acc, weight, calibration, grounding, composite``
        (``None`` when undefined), the counts ``n_pred, n_valid_pred, n_gold,
        n_gold_self_loops, entity_tp, triplet_tp, relation_tp, n_self_loops,
        n_hard_halluc, n_grounded_unmatched, n_unmatched, n_missed``, ``pairs`` (kept
        pairs, indices into the original lists) and ``pred_outcomes`` (one per valid,
        non-self-loop prediction: ``{pred_idx, weight, correct}``). ``n_gold`` is
        ``|valid G|``, the recall denominator: gold self-loops included under ``hgr``,
        left out under ``corrected``; ``n_gold_self_loops`` counts them under both.

    Raises:
        ValueError: For an unknown metric name.
    """
    _check_metric(metric)
    eps = _tolerance(metric)
    prompt = prompt if isinstance(prompt, str) else ""
    gold = gold if isinstance(gold, list) else []
    pred = pred if isinstance(pred, list) else []
    n_pred = len(pred)

    # Step 2 (schema) and 4 (valid, normalised; predicted self-loops dropped). The card
    # keeps gold self-loops: matchable and in |valid G|. `corrected` leaves them out of
    # both (difference e), since the identical prediction is dropped as a self-loop.
    g_items: list[tuple[int, tuple]] = []
    n_gold_self_loops = 0
    drop_gold_loops = metric == "corrected"
    for i, it in enumerate(gold):
        if is_valid_item(it):
            n = _normalise_item(it)
            if _is_self_loop(n):
                n_gold_self_loops += 1
                if drop_gold_loops:
                    continue
            g_items.append((i, n))
    p_items: list[tuple[int, tuple]] = []
    n_valid_pred = n_self_loops = n_schema_ok = 0
    schema_check = _is_ontology_item if metric == "corrected" else is_valid_item
    for j, it in enumerate(pred):
        if schema_check(it):
            n_schema_ok += 1
        if is_valid_item(it):
            n_valid_pred += 1
            n = _normalise_item(it)
            if _is_self_loop(n):
                n_self_loops += 1
            else:
                p_items.append((j, n))
    schema = n_schema_ok / n_pred if n_pred else 1.0
    unparseable = metric == "corrected" and parse_status in UNUSABLE_STATUSES
    if unparseable:
        schema = 0.0
    n_gold = len(g_items)

    # Steps 5-6: alignment matrix (gold rows, prediction columns) and assignment.
    pairs: list[dict] = []
    matched_g: set[int] = set()
    matched_p: set[int] = set()
    if g_items and p_items:
        G, P = len(g_items), len(p_items)
        fs, rs = _field_similarity, _relation_similarity
        # (G, P, 3): source, target, relation similarity; built as lists (cheaper than cell writes).
        sims = np.array(
            [[(fs(g[0], p[0], eps), fs(g[3], p[3], eps), rs(g[2], p[2], eps)) for _, p in p_items] for _, g in g_items],
            dtype=float,
        )
        align = 0.45 * sims[..., 0] + 0.45 * sims[..., 1] + 0.10 * sims[..., 2]
        size = max(G, P)
        cost = np.ones((size, size))  # padding cells cost 1.0
        cost[:G, :P] = 1.0 - align
        rows, cols = linear_sum_assignment(cost)
        for a, b in zip(rows.tolist(), cols.tolist()):
            if a >= G or b >= P or align[a, b] < ALIGN_THRESHOLD - eps:
                continue
            gi, g = g_items[a]
            pj, p = p_items[b]
            ent = bool(sims[a, b, 0] > 0 and sims[a, b, 1] > 0)
            rel = bool(sims[a, b, 2] > 0)
            matched_g.add(a)
            matched_p.add(b)
            pairs.append(
                {
                    "gold_idx": gi,
                    "pred_idx": pj,
                    "align": float(align[a, b]),
                    "source_sim": float(sims[a, b, 0]),
                    "target_sim": float(sims[a, b, 1]),
                    "relation_sim": float(sims[a, b, 2]),
                    "entity_match": ent,
                    "relation_match": rel,
                    "gold_relation": g[2],
                    "pred_relation": p[2],
                    "gold_weight": g[5],
                    "pred_weight": p[5],
                }
            )
    pairs.sort(key=lambda d: d["gold_idx"])

    # Steps 7-9.
    entity_tp = sum(1 for d in pairs if d["entity_match"])
    full = [d for d in pairs if d["entity_match"] and d["relation_match"]]
    triplet_tp = relation_tp = len(full)
    entity_p, entity_r, entity_f1 = _prf(entity_tp, n_pred, n_gold)
    triplet_p, triplet_r, triplet_f1 = _prf(triplet_tp, n_pred, n_gold)
    if metric == "corrected" and n_gold == 0 and n_pred == 0 and not unparseable:
        # A correct empty answer: nothing to find, nothing invented.
        entity_p = entity_r = entity_f1 = triplet_p = triplet_r = triplet_f1 = 1.0
    relation_acc = relation_tp / entity_tp if entity_tp else None
    weight = (
        float(np.mean([_weight_bucket(abs(d["gold_weight"] - d["pred_weight"]), metric) for d in full]))
        if full
        else None
    )

    full_pred = {d["pred_idx"] for d in full}
    pred_outcomes = [
        {"pred_idx": j, "weight": p[5], "correct": j in full_pred} for j, p in p_items
    ]
    calibration = (
        1.0 - float(np.mean([(o["weight"] - float(o["correct"])) ** 2 for o in pred_outcomes]))
        if pred_outcomes
        else None
    )

    # Step 10: hallucinations among unmatched predictions only.
    prompt_norm = normalize_title(prompt)
    prompt_tokens = _tokens(prompt_norm)
    gold_titles = {t for _, g in g_items for t in (g[0], g[3]) if t}
    n_hard = n_grounded = 0
    unmatched = [p for b, (_, p) in enumerate(p_items) if b not in matched_p]
    for p in unmatched:
        if p[2] not in RELATION_SET:
            n_hard += 1
        elif _known_endpoint(p[0], gold_titles, prompt_norm, prompt_tokens, metric) and _known_endpoint(
            p[3], gold_titles, prompt_norm, prompt_tokens, metric
        ):
            n_grounded += 1
        else:
            n_hard += 1
    grounding = 1.0 - (n_hard + n_self_loops) / n_pred if n_pred else 1.0

    # Step 11: schema and grounding are vacuous for an empty prediction list.
    slot_values = {
        "schema": schema if n_pred or unparseable else None,
        "entity_f1": entity_f1,
        "relation_acc": relation_acc,
        "weight": calibration if metric == "corrected" else weight,
        "grounding": grounding if n_pred else None,
    }
    if n_gold == 0:
        composite = 1.0 if n_pred == 0 and not unparseable else 0.0
    else:
        composite = _composite(slot_values)

    return {
        "schema": schema,
        "entity_p": entity_p,
        "entity_r": entity_r,
        "entity_f1": entity_f1,
        "triplet_p": triplet_p,
        "triplet_r": triplet_r,
        "triplet_f1": triplet_f1,
        "relation_acc": relation_acc,
        "weight": weight,
        "calibration": calibration,
        "grounding": grounding,
        "composite": composite,
        "n_pred": n_pred,
        "n_valid_pred": n_valid_pred,
        "n_gold": n_gold,
        "n_gold_self_loops": n_gold_self_loops,
        "entity_tp": entity_tp,
        "triplet_tp": triplet_tp,
        "relation_tp": relation_tp,
        "n_self_loops": n_self_loops,
        "n_hard_halluc": n_hard,
        "n_grounded_unmatched": n_grounded,
        "n_unmatched": len(unmatched),
        "n_missed": n_gold - len(matched_g),
        "pairs": pairs,
        "pred_outcomes": pred_outcomes,
    }


# --------------------------------------------------------------------------- aggregation


def bootstrap_ci(
    values: Iterable[float | None],
    confidence: float = 0.95,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap confidence interval of the mean.

    BCa (``scipy.stats.bootstrap``), falling back to the percentile method when BCa is
    undefined. ``None`` and non-finite values are ignored.

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` for no values, ``(v, v)`` for one value or a
        constant sample (where resampling has nothing to say). Never raises on such input.
    """
    from scipy.stats import bootstrap

    arr = np.array([float(v) for v in values if v is not None], dtype=float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return (math.nan, math.nan)
    if arr.size == 1 or np.all(arr == arr[0]):
        v = float(arr.mean())
        return (v, v)
    lo = hi = math.nan
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DegenerateDataWarning etc.: handled by the fallback
            try:
                res = bootstrap(
                    (arr,),
                    np.mean,
                    n_resamples=n_resamples,
                    confidence_level=confidence,
                    method=method,
                    vectorized=True,
                    rng=np.random.default_rng(seed),
                )
                lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            except Exception:
                lo = hi = math.nan
        if math.isfinite(lo) and math.isfinite(hi):
            break
    return (lo, hi)


def calibration_summary(outcomes: Iterable[dict], n_bins: int = 10) -> dict:
    """Expected calibration error and Brier score of predicted weights.

    Args:
        outcomes: Dicts with ``weight`` (in [0, 1]) and ``correct`` (bool), as in
            ``score_entry(...)["pred_outcomes"]``.
        n_bins: Number of equal-width bins over [0, 1] (the last one closed).

    Returns:
        ``{"ece", "brier", "n", "bins": [{"lo", "hi", "count", "mean_weight",
        "accuracy"}]}``; ``ece`` and ``brier`` are ``None`` without outcomes, and an empty
        bin has ``None`` mean weight and accuracy.
    """
    items = list(outcomes)
    w = np.array([float(o["weight"]) for o in items], dtype=float)
    y = np.array([1.0 if o["correct"] else 0.0 for o in items], dtype=float)
    # Bin k holds [k/n, (k+1)/n); the epsilon keeps a weight that binary rounding puts a
    # hair below an edge in the bin its decimal value belongs to.
    idx = np.minimum(np.floor(w * n_bins + _EPS).astype(int), n_bins - 1) if items else np.array([], int)
    bins = []
    ece = 0.0
    for k in range(n_bins):
        mask = idx == k
        count = int(mask.sum())
        mean_w = float(w[mask].mean()) if count else None
        acc = float(y[mask].mean()) if count else None
        if count:
            ece += count / len(items) * abs(mean_w - acc)
        bins.append({"lo": k / n_bins, "hi": (k + 1) / n_bins, "count": count, "mean_weight": mean_w, "accuracy": acc})
    if not items:
        return {"ece": None, "brier": None, "n": 0, "bins": bins}
    return {"ece": float(ece), "brier": float(np.mean((w - y) ** 2)), "n": len(items), "bins": bins}


def read_entry(entry: Any) -> tuple[str, Any, Any, str | None]:
    """Read prompt, gold and prediction from either row layout.

    The repository writes ``prompt, gold, pred``; the card's files have ``gold_raw,
    gold_parsed, pred_raw, pred_parsed``. Missing parsed fields fall back to parsing the
    raw text. Returns the values as found (possibly not lists) and the parse status when
    the prediction was parsed here.
    """
    if not isinstance(entry, dict):
        return "", None, None, None
    prompt = entry.get("prompt")
    prompt = prompt if isinstance(prompt, str) else ""
    status = None
    if entry.get("gold") is not None:
        gold = entry["gold"]
    elif entry.get("gold_parsed") is not None:
        gold = entry["gold_parsed"]
    elif "gold_raw" in entry:
        gold, _ = parse_card_output(entry["gold_raw"])
    else:
        gold = None
    if entry.get("pred") is not None:
        pred = entry["pred"]
    elif entry.get("pred_parsed") is not None:
        pred = entry["pred_parsed"]
    elif "pred_raw" in entry:
        pred, status = parse_card_output(entry["pred_raw"])
    else:
        pred = None
    return prompt, gold, pred, status


def _safe_div(num: float, den: float) -> float | None:
    return num / den if den else None


def _f1(p: float | None, r: float | None) -> float | None:
    # One side undefined and the other 0 (e.g. no predictions at all against non-empty gold): F1 is 0.
    if p is None or r is None:
        return 0.0 if (p == 0 or r == 0) else None
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def evaluate(
    entries: Iterable[dict],
    metric: str = "hgr",
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """Score a prediction file: per entry, macro, micro, bootstrap CIs and calibration.

    Args:
        entries: Dicts with ``prompt`` (optional), ``gold`` and ``pred`` lists, or the
            card's ``gold_parsed`` / ``pred_parsed`` / ``pred_raw`` layout.
        metric: ``"hgr"`` or ``"corrected"``.
        n_resamples: Bootstrap resamples for the confidence intervals.
        confidence: Confidence level of the intervals.
        seed: Seed of the bootstrap.

    Returns:
        ``{"metric", "n", "n_bad_rows", "per_entry", "macro", "macro_n", "ci", "micro",
        "calibration", "parse_status_counts"}``. Macro means skip undefined values (as the
        card did); micro P/R/F1 come from summed TP, predicted items and gold counts
        (``None`` when a denominator is 0). A row whose gold or prediction is missing or
        not a list is scored with ``[]`` in its place and counted in ``n_bad_rows``.

    Raises:
        ValueError: For an unknown metric name.
    """
    _check_metric(metric)
    per_entry: list[dict] = []
    n_bad = 0
    statuses: Counter[str] = Counter()
    for i, entry in enumerate(entries):
        prompt, gold, pred, status = read_entry(entry)
        if not isinstance(gold, list) or not isinstance(pred, list):
            n_bad += 1
        if isinstance(entry, dict) and isinstance(entry.get("parse_status"), str):
            status = entry["parse_status"]
        row = score_entry(
            prompt,
            gold if isinstance(gold, list) else [],
            pred if isinstance(pred, list) else [],
            metric=metric,
            parse_status=status,
        )
        row["index"] = i
        if status is not None:
            row["parse_status"] = status
            statuses[status] += 1
        per_entry.append(row)

    macro: dict[str, float | None] = {}
    macro_n: dict[str, int] = {}
    for axis in AXES:
        vals = [r[axis] for r in per_entry if r[axis] is not None]
        macro[axis] = float(np.mean(vals)) if vals else None
        macro_n[axis] = len(vals)
    ci = {}
    for axis in CI_AXES:
        lo, hi = bootstrap_ci(
            [r[axis] for r in per_entry], confidence=confidence, n_resamples=n_resamples, seed=seed
        )
        ci[axis] = [lo, hi]

    tot = Counter()
    for r in per_entry:
        for k in ("entity_tp", "triplet_tp", "n_pred", "n_gold", "n_hard_halluc"):
            tot[k] += r[k]
    micro: dict[str, float | None] = {}
    for name, tp in (("entity", tot["entity_tp"]), ("triplet", tot["triplet_tp"])):
        p = _safe_div(tp, tot["n_pred"])
        rr = _safe_div(tp, tot["n_gold"])
        micro[f"{name}_p"], micro[f"{name}_r"], micro[f"{name}_f1"] = p, rr, _f1(p, rr)
    micro["hard_hallucination_rate"] = _safe_div(tot["n_hard_halluc"], tot["n_pred"])
    micro.update({"entity_tp": tot["entity_tp"], "triplet_tp": tot["triplet_tp"],
                  "n_pred": tot["n_pred"], "n_gold": tot["n_gold"], "n_hard_halluc": tot["n_hard_halluc"]})

    outcomes = [o for r in per_entry for o in r["pred_outcomes"]]
    return {
        "metric": metric,
        "n": len(per_entry),
        "n_bad_rows": n_bad,
        "per_entry": per_entry,
        "macro": macro,
        "macro_n": macro_n,
        "ci": ci,
        "micro": micro,
        "calibration": calibration_summary(outcomes),
        "parse_status_counts": dict(statuses),
    }


# --------------------------------------------------------------------------- other scorers


def _spo_key(item: Any) -> tuple[str, str, str] | None:
    """(s, p, o) of a tuple, an SPO dict or a graph-JSON dict; ``None`` when unreadable."""
    if isinstance(item, (tuple, list)) and len(item) == 3:
        s, p, o = item
    elif isinstance(item, dict) and {"subject", "predicate", "object"} <= item.keys():
        s, p, o = item["subject"], item["predicate"], item["object"]
    elif isinstance(item, dict) and all(isinstance(item.get(k), dict) for k in ("source", "relation", "target")):
        s, p, o = item["source"].get("title"), item["relation"].get("type"), item["target"].get("title")
    else:
        return None
    return normalize_title(s), normalize_type(p), normalize_title(o)


def _doc_items(doc: Any) -> list:
    # The Gemma recipe's output object {"triples": [...]} is accepted as a document too.
    if isinstance(doc, dict) and isinstance(doc.get("triples"), list):
        return doc["triples"]
    return doc if isinstance(doc, list) else []


def strict_spo_f1(gold: Sequence[Sequence[Any]], pred: Sequence[Sequence[Any]]) -> dict:
    """Strict micro exact-match (s, p, o) F1 over documents (Gemma recipe).

    Subjects and objects are compared after :func:`normalize_title`, predicates after
    :func:`normalize_type`; each document is a set (duplicates count once). Items that
    cannot be read as a triple are skipped and counted in ``n_skipped``.

    Args:
        gold: Per-document lists of triples (tuples, ``{subject, predicate, object}``
            dicts or graph-JSON dicts); a ``{"triples": [...]}`` dict is also accepted.
        pred: The same for predictions, aligned with ``gold``.

    Returns:
        ``{"precision", "recall", "f1", "tp", "n_pred", "n_gold", "n_skipped"}``;
        P/R/F1 are 0.0 when their denominator is 0.

    Raises:
        ValueError: When the two sequences differ in length.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} documents, pred has {len(pred)}")
    tp = n_pred = n_gold = skipped = 0
    for g_doc, p_doc in zip(gold, pred):
        sets = []
        for doc in (g_doc, p_doc):
            keys = set()
            for it in _doc_items(doc):
                k = _spo_key(it)
                if k is None:
                    skipped += 1
                else:
                    keys.add(k)
            sets.append(keys)
        g, p = sets
        tp += len(g & p)
        n_gold += len(g)
        n_pred += len(p)
    prec, rec, f1 = _prf(tp, n_pred, n_gold)
    return {"precision": prec, "recall": rec, "f1": f1, "tp": tp, "n_pred": n_pred, "n_gold": n_gold,
            "n_skipped": skipped}


def _qualifier_pairs(item: Any) -> set[tuple[str, str]]:
    """A triple's qualifiers as (key, value) pairs, both lowercased with white space collapsed; empty values and
    values that are not strings or numbers are left out."""
    quals = item.get("qualifiers") if isinstance(item, dict) else None
    pairs = set()
    for k, v in (quals.items() if isinstance(quals, dict) else []):
        if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip():
            pairs.add((str(k).strip().lower(), " ".join(str(v).lower().split())))
    return pairs


def spo_report(gold: Sequence[Any], pred: Sequence[Any]) -> dict:
    """The Gemma track's scores: :func:`strict_spo_f1` (unchanged) and its three known failure modes.

    * ``duplicate_rate``: predicted triples that repeat, after normalisation, an earlier triple of the same
      answer, over all readable predicted triples (the strict F1 counts a document's triples as a set, so
      duplicates cost nothing there and are measured here).
    * ``qualifier_coverage``: of the gold qualifiers on gold triples that were predicted (same normalised s, p,
      o), the share that a matching predicted triple carries under the same key with the same value (lowercase,
      white space collapsed); ``qualifier_recall`` divides the same count by every gold qualifier;
      ``qualifier_precision``: of the qualifiers on matched predicted triples, the share that are gold.
    * ``flattened_rate``: predicted triples that match no gold triple and whose object contains a gold
      qualifier value of the same document (a date or quantity turned into the object), over distinct predicted
      triples.

    Rates whose denominator is 0 are ``None``.
    """
    base = strict_spo_f1(gold, pred)
    n_read = dup = n_distinct = 0
    q_gold_matched = q_gold_all = q_hit = q_pred = q_pred_hit = flat = 0
    for g_doc, p_doc in zip(gold, pred):
        g_items = [(k, _qualifier_pairs(it)) for it in _doc_items(g_doc) if (k := _spo_key(it)) is not None]
        p_items = [(k, _qualifier_pairs(it)) for it in _doc_items(p_doc) if (k := _spo_key(it)) is not None]
        seen: set = set()
        p_quals: dict[tuple, set] = {}
        for k, pairs in p_items:
            n_read += 1
            dup += k in seen
            seen.add(k)
            p_quals.setdefault(k, set()).update(pairs)
        g_quals: dict[tuple, set] = {}
        for k, pairs in g_items:
            g_quals.setdefault(k, set()).update(pairs)
            q_gold_all += len(pairs)
            if k in seen:
                q_gold_matched += len(pairs)
                q_hit += len(pairs & p_quals[k])
        for k in seen & g_quals.keys():
            q_pred += len(p_quals[k])
            q_pred_hit += len(p_quals[k] & g_quals[k])
        n_distinct += len(seen)
        doc_values = {v for pairs in g_quals.values() for _, v in pairs}
        for k in seen - g_quals.keys():
            flat += any(v in k[2] for v in doc_values)
    rate = lambda a, b: a / b if b else None  # noqa: E731
    return {**base, "n_pred_triples": n_read, "n_duplicates": dup, "duplicate_rate": rate(dup, n_read),
            "qualifier_coverage": rate(q_hit, q_gold_matched), "qualifier_recall": rate(q_hit, q_gold_all),
            "qualifier_precision": rate(q_pred_hit, q_pred), "flattened_rate": rate(flat, n_distinct),
            "n_gold_qualifiers": q_gold_all}


def spo_f1_ci(gold: Sequence[Any], pred: Sequence[Any], n_resamples: int = 1000, seed: int = 0,
              confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`strict_spo_f1`'s micro F1, resampling documents (the micro F1 is a
    ratio of sums, so documents, not triples, are the resampled unit). ``(nan, nan)`` for no documents."""
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} documents, pred has {len(pred)}")
    if not gold:
        return (math.nan, math.nan)
    counts = np.array([[s["tp"], s["n_pred"], s["n_gold"]] for s in (strict_spo_f1([g], [p]) for g, p in
                                                                     zip(gold, pred))], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(gold), size=(n_resamples, len(gold)))
    tp, n_pred, n_gold = (counts[:, j][idx].sum(axis=1) for j in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n_pred > 0, tp / n_pred, 0.0)
        r = np.where(n_gold > 0, tp / n_gold, 0.0)
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    alpha = (1 - confidence) / 2
    return float(np.quantile(f1, alpha)), float(np.quantile(f1, 1 - alpha))


def paired_difference(a: Sequence[float | None], b: Sequence[float | None], n_resamples: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> dict:
    """Paired comparison of two runs scored on the same items (07's findings): the effect is mean(b - a).

    * ``ci``: percentile bootstrap of the mean difference, resampling items (pairs stay together);
    * ``p_wilcoxon``: :func:`scipy.stats.wilcoxon`, two-sided, ``zero_method="zsplit"`` (ties at zero count half
      each way instead of being dropped); ``None`` when every difference is zero or fewer than 2 pairs remain;
    * ``p_permutation``: a paired sign-flip permutation test of the mean difference
      (:func:`scipy.stats.permutation_test`, ``permutation_type="samples"``).

    Pairs where either value is ``None`` or not finite are dropped and counted in ``n_dropped``.
    """
    from scipy.stats import permutation_test, wilcoxon

    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    pairs = [(float(x), float(y)) for x, y in zip(a, b) if x is not None and y is not None
             and math.isfinite(float(x)) and math.isfinite(float(y))]
    n = len(pairs)
    out = {"n": n, "n_dropped": len(a) - n, "mean_a": None, "mean_b": None, "effect": None,
           "ci": (math.nan, math.nan), "p_wilcoxon": None, "p_permutation": None}
    if n == 0:
        return out
    xa, xb = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    d = xb - xa
    out.update(mean_a=float(xa.mean()), mean_b=float(xb.mean()), effect=float(d.mean()))
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, n, size=(n_resamples, n))].mean(axis=1)
    alpha = (1 - confidence) / 2
    out["ci"] = (float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha)))
    if n >= 2 and np.any(d != 0):
        out["p_wilcoxon"] = float(wilcoxon(xb, xa, zero_method="zsplit").pvalue)
        res = permutation_test((xb, xa), lambda u, v: np.mean(u - v), permutation_type="samples",
                               n_resamples=n_resamples, random_state=seed)
        out["p_permutation"] = float(res.pvalue)
    elif n >= 2:
        out["p_wilcoxon"] = out["p_permutation"] = 1.0
    return out


def _prf_dict(tp: int, n_pred: int, n_gold: int) -> dict:
    p, r, f1 = _prf(tp, n_pred, n_gold)
    return {"p": p, "r": r, "f1": f1, "tp": tp, "n_pred": n_pred, "n_gold": n_gold}


REBEL_SEMANTICS: tuple[str, ...] = ("rebel", "normalised")


def rebel_scores(
    gold: Sequence[Sequence[dict]],
    pred: Sequence[Sequence[dict]],
    mode: str = "strict",
    relation_types: Iterable[str] | None = None,
    semantics: str = "rebel",
) -> dict:
    """REBEL-style micro / macro / per-relation P/R/F1.

    ``strict``: a prediction is correct when head, tail, both entity types and the
    relation type match a gold item of the same sentence; ``boundaries``: head, tail and
    relation type must match, entity types are ignored. Sentences are sets: a duplicate
    counts once. Per relation type, ``tp = |P & G|``, ``fp = |P - G|``, ``fn = |G - P|``.

    ``semantics="rebel"`` (the default) reproduces REBEL's own ``re_score``
    (Babelscape/rebel, ``src/score.py``): heads, tails and entity types are compared as
    exact surface strings, relation types by exact string equality with the listed types
    (no normalisation at all); predicted items whose type is not listed are ignored
    (``n_pred_ignored``), as are gold items whose type is not listed (``n_gold_ignored``).
    A type named ``"None"`` stays in the list (REBEL's line that would drop it is
    commented out); a type listed twice counts once (REBEL's code would count it repeatedly).
    **Every comparison with a published REBEL-family number (REBEL, ReLiK, ...) must use
    ``semantics="rebel"``.**

    ``semantics="normalised"`` is lenient on spelling and stricter on types: titles are
    compared after :func:`normalize_title`, types after :func:`normalize_type`, and
    predicted relation types outside the label set count as false positives, in an
    ``"unknown"`` bucket of ``per_relation`` and in the micro counts (``n_pred_ignored``
    is then 0).

    Values are fractions in [0, 1] under both semantics; REBEL prints percentages, so
    multiply by 100 to set a figure beside a published table. P and R are 0 when
    ``tp == 0`` and F1 is 0 when ``P + R == 0``, as in REBEL.

    Args:
        gold: Per-sentence lists of ``{head, head_type, type, tail, tail_type}`` dicts
            (anything that is not a dict is skipped).
        pred: The same for predictions, aligned with ``gold``.
        mode: ``"strict"`` or ``"boundaries"``.
        relation_types: The label set. ``None`` uses the relation types found in gold
            (under ``rebel`` semantics as spelled there; REBEL itself falls back to a
            fixed list).
        semantics: ``"rebel"`` or ``"normalised"``.

    Returns:
        ``{"micro": {p, r, f1, tp, n_pred, n_gold}, "macro": {p, r, f1}, "per_relation":
        {rel: {p, r, f1, tp, n_pred, n_gold}}, "n_gold_ignored", "n_pred_ignored",
        "semantics", "mode"}``. Micro values come from tp / fp / fn summed over the
        listed types (plus ``"unknown"`` under ``normalised``); macro values are the means
        over the listed types of the per-type P, R and F1 (macro F1 is the mean of the
        per-type F1s, not the F1 of macro P and R), ``None`` when the list is empty.
        Counts are of distinct items per sentence.

    Raises:
        ValueError: For an unknown mode or semantics, or sequences of different length.
    """
    if mode not in ("strict", "boundaries"):
        raise ValueError(f"unknown mode {mode!r}; choose one of strict, boundaries")
    if semantics not in REBEL_SEMANTICS:
        raise ValueError(f"unknown semantics {semantics!r}; choose one of {', '.join(REBEL_SEMANTICS)}")
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} documents, pred has {len(pred)}")
    exact = semantics == "rebel"
    title = (lambda x: x) if exact else normalize_title
    typ = (lambda x: x) if exact else normalize_type

    def key(it: Any) -> tuple | None:
        # (relation type, head, [head type,] tail[, tail type]); None when unusable.
        if not isinstance(it, dict):
            return None
        head, tail, rel = title(it.get("head")), title(it.get("tail")), typ(it.get("type"))
        if mode == "strict":
            k = (rel, head, typ(it.get("head_type")), tail, typ(it.get("tail_type")))
        else:
            k = (rel, head, tail)
        try:
            hash(k)
        except TypeError:  # a list or dict where a string belongs: nothing to compare
            return None
        return k

    gold_sets = [{k for k in map(key, doc or []) if k is not None} for doc in gold]
    pred_sets = [{k for k in map(key, doc or []) if k is not None} for doc in pred]
    if relation_types is None:
        labels = sorted({k[0] for s in gold_sets for k in s}, key=str)
    else:
        # REBEL's order is kept (duplicates once); the normalised variant sorts, as it always has.
        labels = list(dict.fromkeys(relation_types)) if exact else sorted({normalize_type(r) for r in relation_types})
    label_set = set(labels)
    n_gold_ignored = sum(1 for s in gold_sets for k in s if k[0] not in label_set)
    gold_sets = [{k for k in s if k[0] in label_set} for s in gold_sets]
    n_pred_ignored = 0
    if exact:
        # REBEL counts per listed type only: other predicted types are never looked at.
        n_pred_ignored = sum(1 for s in pred_sets for k in s if k[0] not in label_set)
        pred_sets = [{k for k in s if k[0] in label_set} for s in pred_sets]
    # Keep the bucket name from shadowing a real relation called "unknown".
    unknown = "unknown" if "unknown" not in label_set else "<unknown>"

    counts = {r: Counter() for r in labels}
    for g, p in zip(gold_sets, pred_sets):
        for k in g:
            counts[k[0]]["n_gold"] += 1
        for k in p:
            rel = k[0] if k[0] in label_set else unknown
            counts.setdefault(rel, Counter())["n_pred"] += 1
            if k in g:
                counts[rel]["tp"] += 1

    per_relation = {r: _prf_dict(c["tp"], c["n_pred"], c["n_gold"]) for r, c in counts.items()}
    tp = sum(c["tp"] for c in counts.values())
    n_pred = sum(c["n_pred"] for c in counts.values())
    n_gold = sum(c["n_gold"] for c in counts.values())
    if labels:
        macro = {m: float(np.mean([per_relation[r][m] for r in labels])) for m in ("p", "r", "f1")}
    else:
        macro = {"p": None, "r": None, "f1": None}
    return {"micro": _prf_dict(tp, n_pred, n_gold), "macro": macro,
            "per_relation": per_relation,
            "n_gold_ignored": n_gold_ignored, "n_pred_ignored": n_pred_ignored,
            "semantics": semantics, "mode": mode}


_ANSWER_PREFIX_RE = re.compile(r"^answer\s*:\s*")
_RC_QUOTES = "\"'`\u2018\u2019\u201c\u201d "


def normalize_rc_label(x: Any) -> str:
    """Normalise a relation-classification label or generated answer.

    First non-blank line, lowercase, white space collapsed, a leading ``answer:`` and
    surrounding quotes stripped. Non-strings give ``""`` (a negative label).
    """
    if not isinstance(x, str):
        return ""
    s = x.strip()
    s = s.splitlines()[0] if s else ""
    s = _WS_RE.sub(" ", s.lower()).strip().strip(_RC_QUOTES)
    s = _ANSWER_PREFIX_RE.sub("", s)
    return s.strip(_RC_QUOTES).strip()


def relation_classification_f1(
    gold: Sequence[str],
    pred: Sequence[str],
    negative_labels: Iterable[str] = NEGATIVE_LABELS,
) -> dict:
    """Positive-class micro-F1 for relation classification (MixTune recipe).

    Labels and predictions are normalised with :func:`normalize_rc_label`. A correct
    prediction of a positive gold label is a TP; any positive prediction that is wrong
    (on a negative example too) is an FP; a positive gold label not predicted is an FN.
    Predicting a negative label is never a TP or FP.

    Returns:
        ``{"precision", "recall", "f1", "tp", "fp", "fn", "n"}`` (0.0 on zero denominators).

    Raises:
        ValueError: When the two sequences differ in length.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels, pred has {len(pred)}")
    negatives = {normalize_rc_label(x) for x in negative_labels}
    tp = fp = fn = 0
    for g_raw, p_raw in zip(gold, pred):
        g, p = normalize_rc_label(g_raw), normalize_rc_label(p_raw)
        g_pos, p_pos = g not in negatives, p not in negatives
        if g_pos and p == g:
            tp += 1
            continue
        if p_pos:
            fp += 1
        if g_pos:
            fn += 1
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "n": len(gold)}


def relation_classification_report(
    gold: Sequence[str],
    pred: Sequence[Any],
    allowed: Sequence[Sequence[str]] | None = None,
    negative_labels: Iterable[str] = NEGATIVE_LABELS,
) -> dict:
    """:func:`relation_classification_f1` plus accuracy, per-class F1 and the answer-format rates.

    * ``accuracy``: normalised prediction equals the normalised gold label over all examples, every negative
      spelling counting as one class ``none`` (so ``""``, ``nan``, ``null``, ``none`` → ``none``).
    * ``per_class``: precision, recall, F1 and support of each gold class (normalised spelling).
    * ``schema_valid_rate``: the share of predictions that are one of the example's ``allowed`` labels (after
      normalisation); ``None`` without ``allowed``.
    * ``malformed_rate``: the share of raw answers that are not a bare label: empty, not a string, or more than one
      non-empty line.
    """
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} labels, pred has {len(pred)}")
    if allowed is not None and len(allowed) != len(gold):
        raise ValueError(f"allowed has {len(allowed)} label lists for {len(gold)} examples")
    negatives = {normalize_rc_label(x) for x in negative_labels}
    one = lambda x: "none" if normalize_rc_label(x) in negatives else normalize_rc_label(x)  # noqa: E731
    g, p = [one(x) for x in gold], [one(x) for x in pred]
    out = relation_classification_f1(gold, pred, negative_labels)
    n = len(gold)
    out["accuracy"] = sum(a == b for a, b in zip(g, p)) / n if n else 0.0
    per_class = {}
    for c in sorted(set(g)):
        tp = sum(a == b == c for a, b in zip(g, p))
        n_pred, n_gold = sum(b == c for b in p), sum(a == c for a in g)
        pr = tp / n_pred if n_pred else 0.0
        rc = tp / n_gold if n_gold else 0.0
        per_class[c] = {"precision": pr, "recall": rc, "f1": 2 * pr * rc / (pr + rc) if pr + rc else 0.0,
                        "support": n_gold}
    out["per_class"] = per_class
    if allowed is not None:
        ok = sum(one(b) in {one(x) for x in labs} for b, labs in zip(pred, allowed))
        out["schema_valid_rate"] = ok / n if n else 0.0
    else:
        out["schema_valid_rate"] = None
    bad = sum(not isinstance(x, str) or not x.strip() or len([ln for ln in x.splitlines() if ln.strip()]) > 1
              for x in pred)
    out["malformed_rate"] = bad / n if n else 0.0
    return out
