"""Checks on the fixed evaluation set ``data/sample/test.jsonl``.

Each check is a small function that returns a list of problems. The tests run every check on the real
file (expecting no problems) and on a deliberately broken record (expecting at least one problem), so
every check is shown to be able to fail.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from kgutils.ontology import RELATION_SET, validate_triplet

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_PATH = REPO_ROOT / "data" / "sample" / "test.jsonl"

DOMAINS = frozenset(
    {"science", "ml_papers", "technology", "history", "geography", "companies", "culture"}
)
MIN_ROWS = 60
EXPLICIT_WEIGHT = 0.8
HARD_NEGATIVE_SHARE = (0.05, 0.20)
MAX_TRIPLETS = 6


def load_rows(path: Path = SAMPLE_PATH) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:  # pragma: no cover - reported as a test failure
                raise AssertionError(f"{path.name}:{lineno} is not valid JSON: {exc}") from exc
    return rows


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    assert SAMPLE_PATH.is_file(), f"missing {SAMPLE_PATH}"
    return load_rows()


# --------------------------------------------------------------------------- checks


def check_record_shape(rows: list[dict[str, Any]]) -> list[str]:
    problems = []
    for i, row in enumerate(rows):
        rid = row.get("id", f"#{i}")
        if not isinstance(row.get("id"), str) or not row["id"]:
            problems.append(f"{rid}: id must be a non-empty string")
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            problems.append(f"{rid}: text must be a non-empty string")
        if not isinstance(row.get("triplets"), list):
            problems.append(f"{rid}: triplets must be a list")
        if "hard_negative" in row and not isinstance(row["hard_negative"], bool):
            problems.append(f"{rid}: hard_negative must be a boolean")
    return problems


def check_unique_ids(rows: list[dict[str, Any]]) -> list[str]:
    counts = Counter(row.get("id") for row in rows)
    return [f"duplicate id {rid!r} ({n} times)" for rid, n in counts.items() if n > 1]


def check_domains(rows: list[dict[str, Any]]) -> list[str]:
    problems = [
        f"{row.get('id')}: unknown domain {row.get('domain')!r}"
        for row in rows
        if row.get("domain") not in DOMAINS
    ]
    missing = DOMAINS - {row.get("domain") for row in rows}
    if missing:
        problems.append(f"domains with no passage: {sorted(missing)}")
    return problems


def _triplets(rows: list[dict[str, Any]]):
    for row in rows:
        for j, trip in enumerate(row.get("triplets") or []):
            yield f"{row.get('id')}[{j}]", row, trip


def check_ontology(rows: list[dict[str, Any]]) -> list[str]:
    problems = []
    for where, _row, trip in _triplets(rows):
        triplet, reason = validate_triplet(trip)
        if triplet is None:
            problems.append(f"{where}: {reason}")
        elif triplet.relation.type not in RELATION_SET:
            problems.append(f"{where}: relation {triplet.relation.type!r} not in the ontology")
    return problems


def check_weights(rows: list[dict[str, Any]]) -> list[str]:
    problems = []
    for where, _row, trip in _triplets(rows):
        w = (trip.get("relation") or {}).get("weight")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
            problems.append(f"{where}: weight {w!r} is not a number in [0, 1]")
    return problems


def check_no_self_loops(rows: list[dict[str, Any]]) -> list[str]:
    problems = []
    for where, _row, trip in _triplets(rows):
        src = str((trip.get("source") or {}).get("title", "")).strip().casefold()
        tgt = str((trip.get("target") or {}).get("title", "")).strip().casefold()
        if src and src == tgt:
            problems.append(f"{where}: self-loop on {src!r}")
    return problems


def check_triplet_counts(rows: list[dict[str, Any]]) -> list[str]:
    problems = []
    for row in rows:
        n = len(row.get("triplets") or [])
        if row.get("hard_negative"):
            if n:
                problems.append(f"{row.get('id')}: hard negative has {n} triplets")
        elif not 1 <= n <= MAX_TRIPLETS:
            problems.append(f"{row.get('id')}: {n} triplets (expected 1-{MAX_TRIPLETS})")
    return problems


def check_hard_negative_share(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return ["no rows"]
    share = sum(1 for row in rows if row.get("hard_negative")) / len(rows)
    lo, hi = HARD_NEGATIVE_SHARE
    if not lo <= share <= hi:
        return [f"hard-negative share {share:.3f} outside [{lo}, {hi}]"]
    return []


def title_in_text(title: str, text: str) -> bool:
    """True if the title occurs in the text (case-insensitive), or all its alphanumeric
    tokens longer than two characters do."""
    hay = text.casefold()
    needle = title.strip().casefold()
    if needle and needle in hay:
        return True
    tokens = [tok for tok in re.findall(r"[^\W_]+", needle) if len(tok) > 2]
    return bool(tokens) and all(tok in hay for tok in tokens)


def check_explicit_titles_grounded(rows: list[dict[str, Any]]) -> list[str]:
    problems = []
    for where, row, trip in _triplets(rows):
        w = (trip.get("relation") or {}).get("weight")
        if not isinstance(w, (int, float)) or w < EXPLICIT_WEIGHT:
            continue
        for side in ("source", "target"):
            title = str((trip.get(side) or {}).get("title", ""))
            if not title_in_text(title, str(row.get("text", ""))):
                problems.append(f"{where}: explicit {side} title {title!r} not found in the passage")
    return problems


# --------------------------------------------------------------------------- tests on the real file


def test_row_count(rows):
    assert len(rows) >= MIN_ROWS, f"only {len(rows)} rows, expected at least {MIN_ROWS}"


@pytest.mark.parametrize(
    "check",
    [
        check_record_shape,
        check_unique_ids,
        check_domains,
        check_ontology,
        check_weights,
        check_no_self_loops,
        check_triplet_counts,
        check_hard_negative_share,
        check_explicit_titles_grounded,
    ],
)
def test_sample_file(rows, check):
    problems = check(rows)
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------- each check can fail


def _trip(src="BERT", rel="developed_by", tgt="Google", weight=0.95, stype="entity", ttype="entity"):
    return {
        "source": {"title": src, "type": stype},
        "relation": {"type": rel, "weight": weight},
        "target": {"title": tgt, "type": ttype},
    }


def _row(rid="x1", domain="ml_papers", text="BERT was developed by Google.", triplets=None, **extra):
    return {"id": rid, "domain": domain, "text": text, "triplets": [_trip()] if triplets is None else triplets, **extra}


def test_good_record_passes_every_check():
    good = [_row()]
    for check in (
        check_record_shape,
        check_unique_ids,
        check_ontology,
        check_weights,
        check_no_self_loops,
        check_triplet_counts,
        check_explicit_titles_grounded,
    ):
        assert check(good) == [], check.__name__


@pytest.mark.parametrize(
    "check, bad_rows",
    [
        (check_record_shape, [_row(text="")]),
        (check_record_shape, [_row(triplets=None) | {"triplets": "none"}]),
        (check_unique_ids, [_row(rid="a"), _row(rid="a")]),
        (check_domains, [_row(domain="sports")]),
        (check_ontology, [_row(triplets=[_trip(rel="invented_by")])]),
        (check_ontology, [_row(triplets=[_trip(stype="person")])]),
        (check_weights, [_row(triplets=[_trip(weight=1.5)])]),
        (check_weights, [_row(triplets=[_trip(weight=True)])]),
        (check_no_self_loops, [_row(triplets=[_trip(src="BERT", tgt="bert ")])]),
        (check_triplet_counts, [_row(triplets=[], hard_negative=False)]),
        (check_triplet_counts, [_row(hard_negative=True)]),
        (check_triplet_counts, [_row(triplets=[_trip()] * (MAX_TRIPLETS + 1))]),
        (check_hard_negative_share, [_row(rid=str(i)) for i in range(20)]),
        (check_hard_negative_share, [_row(rid=str(i), triplets=[], hard_negative=True) for i in range(5)]),
        (check_explicit_titles_grounded, [_row(triplets=[_trip(tgt="Microsoft")])]),
    ],
)
def test_check_detects_bad_data(check, bad_rows):
    assert check(bad_rows), f"{check.__name__} accepted bad data"


def test_row_count_threshold_can_fail():
    assert len([_row()]) < MIN_ROWS


def test_title_matching():
    assert title_in_text("ImageNet", "a model evaluated on imagenet")
    assert title_in_text("Watt steam engine", "Watt's engine replaced the old steam pumps")
    assert not title_in_text("Microsoft Research", "work done at Google Research")
    assert not title_in_text("C", "written in Rust")
