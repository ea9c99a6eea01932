"""Relation-classification data for the MixTune recipe (notebook 04): nine loaders, one row shape, the mixtures.

Every loader returns a :class:`Loaded` whose rows share one shape (:data:`ROW_KEYS`)::

    {"id", "text", "e1", "e2", "e1_type", "e2_type", "relation", "dataset", "domain"}

``e1`` is the head (subject) and ``e2`` the tail (object), both surface strings of ``text``; the types are
``None`` where the set does not give them. Labels keep each set's own spelling (only known misspellings are
repaired, :data:`LABEL_FIXES`); the negative label is the set's own (``Other``, ``NA``, ``no_relation``, …),
and generated negatives get ``no_relation``. The scorer (:func:`kgutils.metrics.relation_classification_f1`)
treats {none, other, no_relation, na} as negative, whatever the case.

Formats read (each tested on real files where ``../shared/data`` has them, on small files in the published
format otherwise):

=============  ==============================================================  ==============================
set            file format                                                     negatives
=============  ==============================================================  ==============================
semeval        SemEval-2010 Task 8 ``TRAIN_FILE.TXT`` (id, quoted sentence      ``Other`` in the data
               with ``<e1>``/``<e2>`` tags, label, comment, blank line)
conll04, ade   unified JSON (``tokens``, ``entities`` [s, e, type],            generated (entity pairs
               ``relations`` [hs, he, ts, te, type]; ends exclusive)            without a relation)
nyt            CasRel/PRGC triples JSON (``text``, ``triple_list``)            generated (swapped / unlinked
                                                                               pairs of the sentence)
gids           six-column TSV (mids, names with ``_``, relation, text ending    ``NA`` in the data
               `` ###END###``)
redocred       Re-DocRED JSON (``sents``, ``vertexSet``, ``labels``)            generated (co-sentential
                                                                               pairs without a label)
rebel          REBEL JSONL (``text``, ``entities``/``triples`` with character  generated
               ``boundaries``)
tacred         TACRED JSON (``token``, ``subj_start``/``subj_end``…, inclusive) ``no_relation`` in the data
biographical   Biographical TSV (``sentence`` with ``<e1>``/``<e2>``, ``P1``    ``Other`` in the data
               names the person's tag, ``relation``)
pairs          entity-pair records (``text``, ``entity1``, ``entity2``,         generated (unlinked pairs of
(pg_fiction)   ``entity1Type``, ``entity2Type``, ``relation``): PG-Fiction      one text); null-pair chunks
               and the MixTune paper's per-set Hub copies                       are counted
rows           this row shape as JSONL (``data/sample/relcls``)                 in the data
=============  ==============================================================  ==============================

``format`` in a source spec is the first column's key (``unified`` for CoNLL04 and ADE).

In the ``full`` profile the same converters read rows from ``datasets.load_dataset(hub_id, …)``
(:func:`load_source` with ``hub=``); a local JSON(L) file can stand in through the ``json`` builder.

Malformed rows are never skipped silently: each loader counts them by reason (:attr:`Loaded.problems`) and keeps
an example of each; :func:`problems_frame` tabulates them.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .io import resolve
from .prompts import rc_messages

__all__ = [
    "ROW_KEYS", "GENERAL", "LITERARY", "DOMAIN_OF", "LABEL_FIXES", "Loaded",
    "read_semeval", "read_unified", "read_nyt", "read_gids", "read_redocred", "read_rebel", "read_tacred",
    "read_biographical", "read_pairs", "read_rows", "load_source", "load_sources", "mixture", "MIXTURES",
    "label_set", "problems_frame", "split_rows", "load_splits", "DemoPool", "build_prompts", "labels_by_dataset",
    "classify", "score_table", "RC_MODES", "DEMO_POLICIES", "cap_per_dataset", "sizes_frame", "demonstration_leaks", "read_sources",
]

ROW_KEYS = ("id", "text", "e1", "e2", "e1_type", "e2_type", "relation", "dataset", "domain")

# The MixTune sides (the seed card: seven general sets, two literary ones).
GENERAL = ("tacred", "semeval", "conll04", "nyt", "gids", "redocred", "rebel")
LITERARY = ("biographical", "pg_fiction")
DOMAIN_OF = {**{n: "general" for n in GENERAL}, **{n: "literary" for n in LITERARY}, "ade": "general",
             "semeval2010_task8": "general", "nyt11": "general", "re_docred": "general", "rebel-dataset": "general"}

NEGATIVE = "no_relation"  # the label of generated negatives

# Known misspellings, per set: GIDS's relation2id.txt says ``.../degrees`` where its TSV files say ``.../degree``.
LABEL_FIXES: dict[str, dict[str, str]] = {
    "gids": {"/people/person/education./education/education/degrees":
             "/people/person/education./education/education/degree"},
}


@dataclass
class Loaded:
    """Rows of one source, and what could not be read (``problems``: reason → count, ``examples``: reason →
    the first offending record, shortened)."""

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    generated_negatives: int = 0

    def bad(self, reason: str, record: Any) -> None:
        self.problems[reason] += 1
        self.examples.setdefault(reason, str(record)[:200])

    def add(self, rid: str, text: str, e1: str, e2: str, relation: str, e1_type: str | None = None,
            e2_type: str | None = None, domain: str | None = None) -> None:
        self.rows.append({"id": rid, "text": text, "e1": e1, "e2": e2, "e1_type": e1_type, "e2_type": e2_type,
                          "relation": relation, "dataset": self.name,
                          "domain": domain or DOMAIN_OF.get(self.name, "general")})

    def summary(self) -> str:
        parts = [f"{self.name}: {len(self.rows)} rows"]
        if self.generated_negatives:
            parts.append(f"{self.generated_negatives} generated negatives")
        if self.problems:
            parts.append("skipped " + ", ".join(f"{n} {r}" for r, n in self.problems.most_common()))
        return "; ".join(parts)


def _fix_label(name: str, label: str) -> str:
    label = label.strip()
    return LABEL_FIXES.get(name, {}).get(label, label)


def _negatives(out: Loaded, candidates: list[tuple[str, str, str, str | None, str | None]], rid: str,
               rng: random.Random, per_sentence: int) -> None:
    """Add up to ``per_sentence`` generated negatives (text, e1, e2, types) drawn from ``candidates``."""
    if per_sentence <= 0 or not candidates:
        return
    for j, (text, e1, e2, t1, t2) in enumerate(rng.sample(candidates, min(per_sentence, len(candidates)))):
        out.add(f"{rid}-neg{j}", text, e1, e2, NEGATIVE, t1, t2)
        out.generated_negatives += 1


# ----------------------------------------------------------------------------------------------- SemEval-2010 T8

_TAG_RE = re.compile(r"<e([12])>(.*?)</e\1>")


def read_semeval(path: str | Path, name: str = "semeval") -> Loaded:
    """SemEval-2010 Task 8 text format: blocks of ``id<TAB>"sentence"``, label, ``Comment:``, blank line.

    The label keeps its direction (``Component-Whole(e2,e1)``): it is part of the class in the task's scoring.
    """
    out = Loaded(name)
    text = resolve(path).read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        if len(lines) < 2 or "\t" not in lines[0]:
            out.bad("block without an id<TAB>sentence line and a label", block)
            continue
        rid, sentence = lines[0].split("\t", 1)
        sentence = sentence.strip()
        if len(sentence) >= 2 and sentence[0] == sentence[-1] == '"':
            sentence = sentence[1:-1]
        tags = {m.group(1): m.group(2) for m in _TAG_RE.finditer(sentence)}
        if set(tags) != {"1", "2"} or not all(t.strip() for t in tags.values()):
            out.bad("sentence without both <e1> and <e2> tags", lines[0])
            continue
        label = lines[1].strip()
        if not label or label.lower().startswith("comment"):
            out.bad("missing label", block)
            continue
        plain = _TAG_RE.sub(lambda m: m.group(2), sentence)
        out.add(f"{name}-{rid.strip()}", plain, tags["1"], tags["2"], _fix_label(name, label))
    return out


# ---------------------------------------------------------------------------------- unified JSON (CoNLL04, ADE)

def _span(tokens: list[str], s: Any, e: Any) -> str | None:
    if not (isinstance(s, int) and isinstance(e, int) and 0 <= s < e <= len(tokens)):
        return None
    return " ".join(tokens[s:e])


def convert_unified(records: Iterable[dict], name: str, *, negatives_per_sentence: int = 2, seed: int = 0) -> Loaded:
    """Rows from unified-JSON records (``tokens``, ``entities`` [s, e, type], ``relations`` [hs, he, ts, te, type],
    ends exclusive). Every relation is a row; ordered entity pairs of the sentence without one are candidate
    negatives, ``negatives_per_sentence`` of them drawn per sentence."""
    out, rng = Loaded(name), random.Random(seed)
    for i, rec in enumerate(records):
        tokens = rec.get("tokens") if isinstance(rec, dict) else None
        if not isinstance(tokens, list) or not tokens:
            out.bad("record without tokens", rec)
            continue
        text = " ".join(map(str, tokens))
        types: dict[tuple[int, int], str] = {}
        for ent in rec.get("entities") or []:
            if isinstance(ent, (list, tuple)) and len(ent) == 3 and _span(tokens, ent[0], ent[1]):
                types[(ent[0], ent[1])] = str(ent[2])
            else:
                out.bad("entity outside the sentence or malformed", ent)
        linked = set()
        for j, rel in enumerate(rec.get("relations") or []):
            if not (isinstance(rel, (list, tuple)) and len(rel) == 5):
                out.bad("relation not [hs, he, ts, te, type]", rel)
                continue
            hs, he, ts, te, label = rel
            e1, e2 = _span(tokens, hs, he), _span(tokens, ts, te)
            if e1 is None or e2 is None:
                out.bad("relation span outside the sentence", rel)
                continue
            linked.add(((hs, he), (ts, te)))
            out.add(f"{name}-{i}-{j}", text, e1, e2, _fix_label(name, str(label)),
                    types.get((hs, he)), types.get((ts, te)))
        spans = sorted(types)
        cands = [(text, _span(tokens, *a), _span(tokens, *b), types[a], types[b])
                 for a in spans for b in spans if a != b and (a, b) not in linked]
        _negatives(out, cands, f"{name}-{i}", rng, negatives_per_sentence)
    return out


def read_unified(path: str | Path, name: str = "conll04", **kw: Any) -> Loaded:
    """CoNLL04 / ADE in the unified JSON of "Two are better than one" (a JSON array of sentences)."""
    return convert_unified(_read_json_array(path), name, **kw)


# ------------------------------------------------------------------------------------------------- NYT triples

def convert_nyt(records: Iterable[dict], name: str = "nyt", *, relations: Iterable[str] | None = None,
                negatives_per_sentence: int = 1, seed: int = 0) -> Loaded:
    """Rows from CasRel/PRGC triple records (``text``, ``triple_list`` of [subject, relation, object]).

    Entities are surface strings, so a triple whose subject or object is not in the text is malformed. Candidate
    negatives: ordered pairs of the sentence's entities that no triple links (swapped pairs included).
    ``relations`` (e.g. from ``rel2id.json``) rejects labels outside the list.
    """
    out, rng = Loaded(name), random.Random(seed)
    known = set(relations) if relations is not None else None
    for i, rec in enumerate(records):
        text = rec.get("text") if isinstance(rec, dict) else None
        if not isinstance(text, str) or not text.strip():
            out.bad("record without text", rec)
            continue
        linked, ents = set(), []
        for j, tr in enumerate(rec.get("triple_list") or []):
            if not (isinstance(tr, (list, tuple)) and len(tr) == 3 and all(isinstance(x, str) for x in tr)):
                out.bad("triple not [subject, relation, object]", tr)
                continue
            s, r, o = tr
            if s not in text or o not in text:
                out.bad("triple entity not in the text", tr)
                continue
            if known is not None and r not in known:
                out.bad("relation not in the label list", tr)
                continue
            if (s, o) in linked:
                continue  # a pair with two relations is a multi-label case: the first one is kept
            linked.add((s, o))
            ents += [e for e in (s, o) if e not in ents]
            out.add(f"{name}-{i}-{j}", text, s, o, _fix_label(name, r))
        cands = [(text, a, b, None, None) for a in ents for b in ents if a != b and (a, b) not in linked]
        _negatives(out, cands, f"{name}-{i}", rng, negatives_per_sentence)
    return out


def read_nyt(path: str | Path, name: str = "nyt", rel2id: str | Path | None = None, **kw: Any) -> Loaded:
    """NYT in the CasRel/PRGC format (``*_triples.json``; ``rel2id.json`` = [id→relation, relation→id])."""
    relations = None
    if rel2id is not None:
        data = _read_json_array(rel2id)
        if not (isinstance(data, list) and len(data) == 2 and isinstance(data[1], dict)):
            raise ValueError(f"{rel2id}: expected [id->relation, relation->id]")
        relations = list(data[1])
    return convert_nyt(_read_json_array(path), name, relations=relations, **kw)


# ------------------------------------------------------------------------------------------------------ GIDS

def convert_gids(lines: Iterable[list[str]], name: str = "gids", *, relations: Iterable[str] | None = None) -> Loaded:
    """Rows from GIDS TSV columns (subject mid, object mid, subject name, object name, relation, text).

    Names spell spaces as ``_`` in both the name columns and the text: both are turned back into spaces. The
    trailing `` ###END###`` is dropped. The ``.../degrees`` spelling becomes ``.../degree`` (:data:`LABEL_FIXES`).
    """
    out = Loaded(name)
    known = {_fix_label(name, r) for r in relations} if relations is not None else None
    for i, cols in enumerate(lines):
        if len(cols) != 6:
            out.bad(f"line with {len(cols)} columns, not 6", "\t".join(cols))
            continue
        _, _, s_raw, o_raw, label, text = (c.strip() for c in cols)
        label = _fix_label(name, label)
        if known is not None and label not in known:
            out.bad("relation not in relation2id.txt", label)
            continue
        text = re.sub(r"\s*###END###\s*$", "", text)
        if not s_raw or not o_raw or s_raw not in text or o_raw not in text:
            out.bad("entity name not in the text", cols[:5])
            continue
        text = text.replace(s_raw, s_raw.replace("_", " ")).replace(o_raw, o_raw.replace("_", " "))
        out.add(f"{name}-{i}", text, s_raw.replace("_", " "), o_raw.replace("_", " "), label)
    return out


def read_gids(path: str | Path, name: str = "gids", relation2id: str | Path | None = None) -> Loaded:
    """GIDS TSV (``dev.tsv``/``test.tsv``/``train.tsv``), optionally checked against ``relation2id.txt``."""
    relations = None
    if relation2id is not None:
        relations = [ln.rsplit(" ", 1)[0] for ln in resolve(relation2id).read_text().splitlines() if ln.strip()]
    with resolve(path).open(encoding="utf-8", newline="") as fh:
        return convert_gids((ln.rstrip("\n").split("\t") for ln in fh if ln.strip()), name, relations=relations)


# ------------------------------------------------------------------------------------------------- Re-DocRED

def convert_redocred(docs: Iterable[dict], name: str = "redocred", *, relation_names: dict[str, str] | None = None,
                     negatives_per_sentence: int = 1, seed: int = 0) -> Loaded:
    """Sentence-level rows from Re-DocRED documents.

    A labelled pair becomes a row when one mention of the head and one of the tail share a sentence (that
    sentence is the text); pairs that never share a sentence are document-level facts a sentence classifier
    cannot see, counted as ``cross-sentence pair``. Entity pairs sharing a sentence without any label are
    candidate negatives. ``relation_names`` maps Wikidata ids (``P17``) to names; unmapped ids stay as they are.
    """
    out, rng = Loaded(name), random.Random(seed)
    names = relation_names or {}
    for d, doc in enumerate(docs):
        sents, vs = (doc.get("sents"), doc.get("vertexSet")) if isinstance(doc, dict) else (None, None)
        if not isinstance(sents, list) or not isinstance(vs, list):
            out.bad("document without sents and vertexSet", doc)
            continue
        by_sent: dict[int, dict[int, dict]] = defaultdict(dict)  # sentence -> entity -> first mention there
        for e, mentions in enumerate(vs):
            for m in mentions or []:
                try:
                    sid, (s, t) = int(m["sent_id"]), m["pos"]
                    if not (0 <= sid < len(sents) and 0 <= s < t <= len(sents[sid])):
                        raise ValueError
                except (KeyError, TypeError, ValueError):
                    out.bad("mention outside its sentence or malformed", m)
                    continue
                by_sent[sid].setdefault(e, m)
        labelled = set()
        for j, lab in enumerate(doc.get("labels") or []):
            try:
                h, t, r = int(lab["h"]), int(lab["t"]), str(lab["r"])
            except (KeyError, TypeError, ValueError):
                out.bad("label without h, t and r", lab)
                continue
            if (h, t) in labelled:
                continue  # multi-label pair: one row, the first label
            shared = [sid for sid in sorted(by_sent) if h in by_sent[sid] and t in by_sent[sid] and h != t]
            if not shared:
                out.bad("cross-sentence pair", lab)
                continue
            sid = shared[0]
            mh, mt = by_sent[sid][h], by_sent[sid][t]
            toks = sents[sid]
            labelled.add((h, t))
            out.add(f"{name}-{d}-{j}", " ".join(toks), " ".join(toks[slice(*mh["pos"])]),
                    " ".join(toks[slice(*mt["pos"])]), names.get(r, r), mh.get("type"), mt.get("type"))
        all_labelled = {(int(x["h"]), int(x["t"])) for x in doc.get("labels") or []
                        if isinstance(x, dict) and "h" in x and "t" in x}
        for sid, ents in sorted(by_sent.items()):
            toks = sents[sid]
            cands = [(" ".join(toks), " ".join(toks[slice(*ents[a]["pos"])]), " ".join(toks[slice(*ents[b]["pos"])]),
                      ents[a].get("type"), ents[b].get("type"))
                     for a in ents for b in ents if a != b and (a, b) not in all_labelled
                     and " ".join(toks[slice(*ents[a]["pos"])]) != " ".join(toks[slice(*ents[b]["pos"])])]
            _negatives(out, cands, f"{name}-{d}-s{sid}", rng, negatives_per_sentence)
    return out


def read_redocred(path: str | Path, name: str = "redocred", **kw: Any) -> Loaded:
    """Re-DocRED (``train_revised.json``, ``dev_revised.json``, ``test_revised.json``)."""
    return convert_redocred(_read_json_array(path), name, **kw)


# ------------------------------------------------------------------------------------------------------ REBEL

_SENT_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def _sentence_bounds(text: str, spans: Iterable[Any] = ()) -> list[tuple[int, int]]:
    """Sentence (start, end) offsets, split after ``.``/``!``/``?`` before a capital or digit; sentences that an
    entity span crosses (``U.S. Army``) are joined, so every entity lies inside one sentence."""
    cuts = [(m.start(), m.end()) for m in _SENT_END_RE.finditer(text)]
    for b in spans:
        if isinstance(b, (list, tuple)) and len(b) == 2 and all(isinstance(x, int) for x in b):
            cuts = [(s, e) for s, e in cuts if not (b[0] < e and s < b[1])]
    bounds, start = [], 0
    for s, e in cuts:
        bounds.append((start, s))
        start = e
    bounds.append((start, len(text)))
    return bounds


def convert_rebel(docs: Iterable[dict], name: str = "rebel", *, negatives_per_sentence: int = 1,
                  seed: int = 0) -> Loaded:
    """Rows from REBEL JSONL documents: one per triple, the label being the predicate's surface form
    (``publisher``). The text is the sentence holding both entities (sentences split at ``. ``, ``! ``, ``? ``);
    a triple whose entities are in different sentences gets the stretch of text that covers both. Entity pairs
    of one sentence that no triple links are candidate negatives."""
    out, rng = Loaded(name), random.Random(seed)
    for d, doc in enumerate(docs):
        text = doc.get("text") if isinstance(doc, dict) else None
        if not isinstance(text, str) or not text:
            out.bad("document without text", doc)
            continue
        spans = [x.get("boundaries") for x in doc.get("entities") or [] if isinstance(x, dict)]
        spans += [tr[k].get("boundaries") for tr in doc.get("triples") or [] if isinstance(tr, dict)
                  for k in ("subject", "object") if isinstance(tr.get(k), dict)]
        bounds = _sentence_bounds(text, spans)

        def sent_of(b: Any) -> int | None:
            if not (isinstance(b, (list, tuple)) and len(b) == 2 and 0 <= b[0] < b[1] <= len(text)):
                return None
            return next((k for k, (s, e) in enumerate(bounds) if s <= b[0] and b[1] <= e), None)

        linked = set()
        for j, tr in enumerate(doc.get("triples") or []):
            try:
                subj, obj, pred = tr["subject"], tr["object"], tr["predicate"]["surfaceform"]
                sb, ob = subj["boundaries"], obj["boundaries"]
            except (KeyError, TypeError):
                out.bad("triple without subject/object boundaries and predicate", tr)
                continue
            ks, ko = sent_of(sb), sent_of(ob)
            if ks is None or ko is None:
                out.bad("entity boundaries outside the text", tr)
                continue
            s0, e0 = bounds[min(ks, ko)][0], bounds[max(ks, ko)][1]
            e1, e2 = text[sb[0]:sb[1]], text[ob[0]:ob[1]]
            if e1 == e2:
                out.bad("subject and object are the same string", tr)
                continue
            linked.add((e1, e2))
            out.add(f"{name}-{doc.get('docid', d)}-{j}", text[s0:e0].strip(), e1, e2, str(pred).strip())
        per_sent: dict[int, list[str]] = defaultdict(list)
        for ent in doc.get("entities") or []:
            k = sent_of(ent.get("boundaries") if isinstance(ent, dict) else None)
            if k is not None:
                sf = text[ent["boundaries"][0]:ent["boundaries"][1]]
                if sf not in per_sent[k]:
                    per_sent[k].append(sf)
        for k, ents in sorted(per_sent.items()):
            sent = text[bounds[k][0]:bounds[k][1]].strip()
            cands = [(sent, a, b, None, None) for a in ents for b in ents if a != b and (a, b) not in linked]
            _negatives(out, cands, f"{name}-{doc.get('docid', d)}-s{k}", rng, negatives_per_sentence)
    return out


def read_rebel(path: str | Path, name: str = "rebel", **kw: Any) -> Loaded:
    """REBEL JSONL (``sample.jsonl`` or the full release's ``en_{train,val,test}.jsonl``)."""
    out_docs, bad = [], Loaded(name)
    with resolve(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out_docs.append(json.loads(line))
                except json.JSONDecodeError:
                    bad.bad("line is not JSON", f"line {n}")
    result = convert_rebel(out_docs, name, **kw)
    result.problems.update(bad.problems)
    result.examples.update(bad.examples)
    return result


# -------------------------------------------------------------------------------------------------- helpers

def _read_json_array(path: str | Path) -> Any:
    p = resolve(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    with p.open(encoding="utf-8") as fh:
        if p.suffix == ".jsonl":
            return [json.loads(ln) for ln in fh if ln.strip()]
        return json.load(fh)


def label_set(rows: Iterable[dict], dataset: str | None = None) -> list[str]:
    """The sorted labels of ``rows`` (of one ``dataset`` when given). Build prompts' label lists from the
    *train* split only."""
    return sorted({r["relation"] for r in rows if dataset is None or r["dataset"] == dataset})


def split_rows(rows: list[dict], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0,
               key: Callable[[dict], str] = lambda r: r["text"]) -> tuple[list[dict], list[dict], list[dict]]:
    """Train/val/test split by sentence (all rows of one sentence land in one split), seeded."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n = len(keys)
    a, b = round(n * fractions[0]), round(n * (fractions[0] + fractions[1]))
    pick = lambda ks: [r for k in ks for r in groups[k]]  # noqa: E731
    return pick(keys[:a]), pick(keys[a:b]), pick(keys[b:])


def problems_frame(loaded: Iterable[Loaded]):
    """One row per (source, reason): the count and an example of what was skipped."""
    import pandas as pd

    rows = [{"source": ld.name, "reason": r, "count": n, "example": ld.examples.get(r, "")}
            for ld in loaded for r, n in ld.problems.most_common()]
    return pd.DataFrame(rows, columns=["source", "reason", "count", "example"])


# ------------------------------------------------------------------------------------------------------ TACRED

_PTB = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}", "``": '"', "''": '"'}


def convert_tacred(records: Iterable[dict], name: str = "tacred") -> Loaded:
    """Rows from TACRED records (LDC release JSON; TACRED-Revisited and Re-TACRED keep the layout): ``token``,
    ``subj_start``/``subj_end`` and ``obj_start``/``obj_end`` (0-based, **inclusive** ends), ``subj_type``,
    ``obj_type``, ``relation`` (``no_relation`` is the negative). The text is the tokens joined by spaces, Penn
    Treebank bracket escapes (``-LRB-``) turned back into brackets. A span outside the sentence is malformed."""
    out = Loaded(name)
    for i, rec in enumerate(records):
        toks = rec.get("token") if isinstance(rec, dict) else None
        if not isinstance(toks, list) or not toks:
            out.bad("record without token list", rec)
            continue
        toks = [_PTB.get(t, t) for t in map(str, toks)]
        try:
            ss, se, os_, oe = (int(rec[k]) for k in ("subj_start", "subj_end", "obj_start", "obj_end"))
        except (KeyError, TypeError, ValueError):
            out.bad("record without subject/object offsets", rec)
            continue
        if not (0 <= ss <= se < len(toks) and 0 <= os_ <= oe < len(toks)):
            out.bad("subject or object span outside the sentence", {k: rec.get(k) for k in ("id", "subj_start",
                    "subj_end", "obj_start", "obj_end")} | {"n_tokens": len(toks)})
            continue
        label = rec.get("relation")
        if not isinstance(label, str) or not label:
            out.bad("record without relation", rec)
            continue
        out.add(f"{name}-{rec.get('id', i)}", " ".join(toks), " ".join(toks[ss:se + 1]), " ".join(toks[os_:oe + 1]),
                _fix_label(name, label), rec.get("subj_type"), rec.get("obj_type"))
    return out


def read_tacred(path: str | Path, name: str = "tacred") -> Loaded:
    """TACRED ``train.json`` / ``dev.json`` / ``test.json`` (one JSON array each)."""
    return convert_tacred(_read_json_array(path), name)


# ------------------------------------------------------------------------------------------------ Biographical

# Label aliases seen across Biographical's files and papers, mapped onto the spelling of its English TSVs.
BIOGRAPHICAL_LABELS = {"birthplace": "bplace_name", "deathplace": "dplace_name", "ofparent": "parent",
                       "haschild": "child", "educated": "educatedAt", "educatedat": "educatedAt", "other": "Other",
                       "birthdate": "birthdate", "deathdate": "deathdate", "bplace_name": "bplace_name",
                       "dplace_name": "dplace_name", "parent": "parent", "child": "child", "sibling": "sibling",
                       "occupation": "occupation"}


def convert_biographical(records: Iterable[dict], name: str = "biographical") -> Loaded:
    """Rows from Biographical TSV records (``id, sentence, relation, P1, P2, ...``): the two arguments are tagged
    ``<e1>``/``<e2>`` in the sentence (``<e1>`` first in the text) and ``P1`` names the tag of the relation's first
    argument (the person), so ``P1 = e2`` swaps them. In the human-annotated gold file the ``ANNOTATION`` column is
    the label. Label spellings are unified (:data:`BIOGRAPHICAL_LABELS`); an unknown label is malformed."""
    out = Loaded(name)
    for i, rec in enumerate(records):
        sentence = rec.get("sentence") if isinstance(rec, dict) else None
        tags = {m.group(1): m.group(2) for m in _TAG_RE.finditer(sentence or "")}
        if set(tags) != {"1", "2"} or not all(t.strip() for t in tags.values()):
            out.bad("sentence without both <e1> and <e2> spans", rec.get("id") if isinstance(rec, dict) else rec)
            continue
        raw = (rec.get("ANNOTATION") or rec.get("relation") or "").strip()
        label = BIOGRAPHICAL_LABELS.get(raw.lower())
        if label is None:
            out.bad("unknown relation label", raw)
            continue
        p1 = (rec.get("P1") or "e1").strip().lower()
        if p1 not in ("e1", "e2"):
            out.bad("P1 is neither e1 nor e2", rec.get("P1"))
            continue
        head, tail = (tags["1"], tags["2"]) if p1 == "e1" else (tags["2"], tags["1"])
        out.add(f"{name}-{rec.get('id', i)}-{i}", _TAG_RE.sub(lambda m: m.group(2), sentence), head, tail, label,
                domain="literary")
    return out


def read_biographical(path: str | Path, name: str = "biographical") -> Loaded:
    """Biographical's English TSV files (``m2_train.tsv``, ``m2_test.tsv``, ``m2_gold.tsv``, …), header row,
    tab-separated without quoting (sentences may hold ``"``)."""
    p = resolve(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    with p.open(encoding="utf-8", newline="") as fh:
        return convert_biographical(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE), name)


# --------------------------------------------------------------- entity-pair records (PG-Fiction, the Hub's per-set)

def convert_pairs(records: Iterable[dict], name: str = "pg_fiction", *, negatives_per_text: int = 1,
                  seed: int = 0) -> Loaded:
    """Rows from entity-pair records: ``text``, ``entity1``, ``entity2``, ``entity1Type``, ``entity2Type``,
    ``relation`` (PG-Fiction, and the per-set Hub copies of the MixTune paper, ``Despina/*``). There are no
    offsets: both entity strings must occur in the text.

    A record whose entities and relation are all null marks a chunk without any relation (PG-Fiction's
    negatives): it has no pair to classify, so it is counted (``chunk without an entity pair``) and the
    negatives come from pairs of entities of one text that no record links (``negatives_per_text`` per text)."""
    out, rng = Loaded(name), random.Random(seed)
    by_text: dict[str, dict] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            out.bad("record is not an object", rec)
            continue
        text, e1, e2, rel = rec.get("text"), rec.get("entity1"), rec.get("entity2"), rec.get("relation")
        if not isinstance(text, str) or not text.strip():
            out.bad("record without text", {k: rec.get(k) for k in ("entity1", "entity2", "relation")})
            continue
        if e1 is None and e2 is None and rel in (None, "", "none", "None"):
            out.bad("chunk without an entity pair (a no-relation chunk)", text[:80])
            continue
        if not all(isinstance(x, str) and x.strip() for x in (e1, e2, rel)):
            out.bad("pair with a missing entity or relation", rec)
            continue
        if e1 not in text or e2 not in text:
            out.bad("entity not in the text", {"entity1": e1, "entity2": e2})
            continue
        t1, t2 = rec.get("entity1Type"), rec.get("entity2Type")
        out.add(f"{name}-{i}", text, e1, e2, _fix_label(name, rel), t1, t2)
        entry = by_text.setdefault(text, {"ents": {}, "linked": set(), "id": i})
        entry["ents"].setdefault(e1, t1)
        entry["ents"].setdefault(e2, t2)
        entry["linked"].update({(e1, e2), (e2, e1)})
    for text, entry in by_text.items():
        ents = entry["ents"]
        cands = [(text, a, b, ents[a], ents[b]) for a in ents for b in ents if a != b and (a, b) not in entry["linked"]]
        _negatives(out, cands, f"{name}-{entry['id']}", rng, negatives_per_text)
    return out


def read_pairs(path: str | Path, name: str = "pg_fiction", **kw: Any) -> Loaded:
    """Entity-pair records from a JSONL or JSON-array file (the Hub parquet's columns)."""
    return convert_pairs(_read_json_array(path), name, **kw)


# --------------------------------------------------------------------------------- rows already in the row shape

def convert_rows(records: Iterable[dict], name: str | None = None) -> Loaded:
    """Records already in the row shape (:data:`ROW_KEYS`; e.g. ``data/sample/relcls``, which holds several data
    sets). Each row keeps its own ``dataset`` (``name`` where it has none). Rows whose entities are not in the
    text are malformed."""
    out = Loaded(name or "rows")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            out.bad("record is not an object", rec)
            continue
        missing = [k for k in ("text", "e1", "e2", "relation") if not isinstance(rec.get(k), str) or not rec[k]]
        if missing:
            out.bad(f"missing {', '.join(missing)}", rec)
            continue
        if rec["e1"] not in rec["text"] or rec["e2"] not in rec["text"]:
            out.bad("entity not in the text", rec)
            continue
        ds = rec.get("dataset") or name or "rows"
        out.rows.append({"id": str(rec.get("id", f"{ds}-{i}")), "text": rec["text"], "e1": rec["e1"],
                         "e2": rec["e2"], "e1_type": rec.get("e1_type"), "e2_type": rec.get("e2_type"),
                         "relation": _fix_label(ds, rec["relation"]), "dataset": ds,
                         "domain": rec.get("domain") or DOMAIN_OF.get(ds, "general")})
    return out


def read_rows(path: str | Path, name: str | None = None) -> Loaded:
    """A JSONL file in the row shape."""
    return convert_rows(_read_json_array(path), name)


# ------------------------------------------------------------------------------------------ sources and mixtures

def convert_semeval_hub(records: Iterable[dict], name: str = "semeval", label_names: list[str] | None = None) -> Loaded:
    """Rows of the Hub's SemEval-2010 Task 8 (``sentence`` with ``<e1>``/``<e2>`` tags, ``relation`` as a class
    index into ``label_names`` or as a string)."""
    out = Loaded(name)
    for i, rec in enumerate(records):
        sentence, rel = rec.get("sentence"), rec.get("relation")
        if isinstance(rel, int) and label_names is not None and 0 <= rel < len(label_names):
            rel = label_names[rel]
        tags = {m.group(1): m.group(2) for m in _TAG_RE.finditer(sentence or "")}
        if set(tags) != {"1", "2"} or not isinstance(rel, str):
            out.bad("sentence without both tags or relation", rec)
            continue
        out.add(f"{name}-{i}", _TAG_RE.sub(lambda m: m.group(2), sentence), tags["1"], tags["2"], rel)
    return out


_FILE_READERS: dict[str, Callable[..., Loaded]] = {}
_RECORD_CONVERTERS: dict[str, Callable[..., Loaded]] = {}


def _register() -> None:
    _FILE_READERS.update({"semeval": read_semeval, "unified": read_unified, "nyt": read_nyt, "gids": read_gids,
                          "redocred": read_redocred, "rebel": read_rebel, "tacred": read_tacred,
                          "biographical": read_biographical, "pairs": read_pairs, "rows": read_rows})
    _RECORD_CONVERTERS.update({"semeval": convert_semeval_hub, "unified": convert_unified, "nyt": convert_nyt,
                               "redocred": convert_redocred, "rebel": convert_rebel, "tacred": convert_tacred,
                               "biographical": convert_biographical, "pairs": convert_pairs, "rows": convert_rows})


def load_source(spec: dict[str, Any]) -> Loaded:
    """Load one source from a spec: ``{"name", "format", "path"}`` for a local file in the set's own format, or
    ``{"name", "format", "hub", "split", "config"?, "data_files"?}`` for ``datasets.load_dataset`` (a local
    JSON(L) file stands in for a hub set with ``hub: json`` and ``data_files``). Other keys are the loader's
    options (``negatives_per_sentence``, ``seed``, ``relation_names``, ``rel2id``, ``relation2id``) and
    ``domain`` (overrides the set's side).

    Raises:
        ValueError: for an unknown format or key, naming it; FileNotFoundError: for a missing file.
    """
    _register()
    spec = dict(spec)
    name, fmt = spec.pop("name", None), spec.pop("format", None)
    domain = spec.pop("domain", None)
    if not name or fmt not in _FILE_READERS:
        raise ValueError(f"source {spec!r}: needs a name and a format in {sorted(_FILE_READERS)}, got {fmt!r}")
    if "hub" in spec:
        from datasets import load_dataset

        hub, split = spec.pop("hub"), spec.pop("split", "train")
        config, data_files = spec.pop("config", None), spec.pop("data_files", None)
        if fmt not in _RECORD_CONVERTERS:
            raise ValueError(f"source {name!r}: format {fmt!r} has no Hub reader; give a local path")
        ds = load_dataset(hub, config, split=split, data_files=data_files)
        if fmt == "semeval":
            feat = ds.features.get("relation")
            spec.setdefault("label_names", getattr(feat, "names", None))
        loaded = _call(_RECORD_CONVERTERS[fmt], name, fmt, spec, list(ds))
    elif "path" in spec:
        path = spec.pop("path")
        loaded = _call(_FILE_READERS[fmt], name, fmt, spec, path)
    else:
        raise ValueError(f"source {name!r}: give a local 'path' or a 'hub' id")
    if domain:
        for r in loaded.rows:
            r["domain"] = domain
    return loaded


def _call(fn: Callable[..., Loaded], name: str, fmt: str, options: dict[str, Any], data: Any) -> Loaded:
    import inspect

    allowed = set(inspect.signature(fn).parameters) - {"path", "records", "docs", "lines", "name"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"source {name!r} ({fmt}): unknown option(s) {sorted(unknown)}; allowed {sorted(allowed)}")
    return fn(data, name=name, **options)


def load_sources(specs: Iterable[dict[str, Any]], progress: bool = True) -> list[Loaded]:
    """:func:`load_source` for each spec, printing one summary line per source."""
    out = []
    for spec in specs:
        ld = load_source(spec)
        if progress:
            print(ld.summary())
        out.append(ld)
    return out


MIXTURES = ("mixtune", "gentune", "littune")


def mixture(rows: list[dict], kind: str = "mixtune", *, per_source_cap: int | dict[str, int] | None = None,
            seed: int = 0) -> list[dict]:
    """A training mixture from rows of several sources (the ``dataset`` and ``domain`` fields say where each is
    from).

    Each source is first capped (``per_source_cap``: one number for all, or per data set name; a seeded sample of
    that many rows). Then ``mixtune`` takes n = min(|general|, |literary|) rows from each side (seeded), so the
    two domains weigh the same; ``gentune`` keeps the general side, ``littune`` the literary side.

    Raises:
        ValueError: for an unknown kind, a cap naming a data set that is not in ``rows`` (a mistyped key would
            otherwise silently leave that set uncapped), or an empty side of a MixTune mixture.
    """
    if kind not in MIXTURES:
        raise ValueError(f"mixture kind must be one of {MIXTURES}, got {kind!r}")
    by_ds: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_ds[r["dataset"]].append(r)
    caps = per_source_cap if isinstance(per_source_cap, dict) else {ds: per_source_cap for ds in by_ds}
    unknown = set(caps) - set(by_ds)
    if unknown:
        raise ValueError(f"per_source_cap names data sets not in the rows: {sorted(unknown)}; have {sorted(by_ds)}")
    rng = random.Random(seed)
    sides: dict[str, list[dict]] = {"general": [], "literary": []}
    for ds in sorted(by_ds):
        part, cap = by_ds[ds], caps.get(ds)
        if cap is not None and len(part) > cap:
            part = rng.sample(part, cap)
        for r in part:
            sides.setdefault(r["domain"], []).append(r)
    if kind == "gentune":
        out = sides["general"]
    elif kind == "littune":
        out = sides["literary"]
    else:
        n = min(len(sides["general"]), len(sides["literary"]))
        if n == 0:
            raise ValueError("a MixTune mixture needs rows from both domains; "
                             f"have {len(sides['general'])} general and {len(sides['literary'])} literary")
        out = rng.sample(sides["general"], n) + rng.sample(sides["literary"], n)
    out = list(out)
    rng.shuffle(out)
    return out


# ------------------------------------------------------------------------------------------- prompts (k-shot)

def _norm_text(s: str) -> str:
    return " ".join(str(s).lower().split())


class DemoPool:
    """Demonstrations for k-shot prompts, drawn from the *train* split only.

    Train rows whose sentence (normalised) also occurs in ``exclude`` (pass the val and test rows) are removed from
    the pool, so no evaluation sentence can reach a prompt as a demonstration even where a data set repeats a
    sentence across its splits. A query never gets its own sentence as a demonstration. Demonstrations come from
    the query's own data set (its label set), drawn by a generator seeded with the query's id: a prompt is the same
    in every run.
    """

    def __init__(self, train: list[dict], exclude: Iterable[dict] = (), seed: int = 0) -> None:
        banned = {_norm_text(r["text"]) for r in exclude}
        self.seed = seed
        self.by_ds: dict[str, list[dict]] = defaultdict(list)
        self.removed = 0
        for r in train:
            if _norm_text(r["text"]) in banned:
                self.removed += 1
            else:
                self.by_ds[r["dataset"]].append(r)
        self.banned = banned

    def pick(self, row: dict, k: int, shared: bool = False) -> list[dict]:
        """``k`` demonstrations for ``row``: drawn for this row (seeded by its id), or with ``shared`` the same
        ones for every query of its data set (seeded by the data set; a query whose own sentence is among them
        gets the next ones)."""
        if k <= 0:
            return []
        pool = self.by_ds.get(row["dataset"], [])
        own = _norm_text(row["text"])
        rng = random.Random(f"{self.seed}:{row['dataset']}" + ("" if shared else f":{row['id']}"))
        picked: list[dict] = []
        for r in rng.sample(pool, min(len(pool), k + 8)):
            if _norm_text(r["text"]) != own and r not in picked:
                picked.append(r)
            if len(picked) == k:
                break
        return picked


@dataclass
class PromptStats:
    """What fitting prompts to the length limit did: demonstrations dropped, sentences shortened."""

    n: int = 0
    demos_dropped: int = 0
    rows_fewer_demos: int = 0
    sentences_shortened: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"n": self.n, "demos_dropped": self.demos_dropped, "rows_fewer_demos": self.rows_fewer_demos,
                "sentences_shortened": self.sentences_shortened}


def _render(tokenizer: Any, msgs: list[dict], answer: str | None) -> str:
    if answer is None:
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    return tokenizer.apply_chat_template(msgs + [{"role": "assistant", "content": answer}], tokenize=False,
                                         add_generation_prompt=False, enable_thinking=False)


def _n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _shorten(tokenizer: Any, row: dict, budget: int) -> str | None:
    """The row's sentence cut to at most ``budget`` tokens, keeping both entities: whole words are removed from
    the end farther from the entities first. None when the entities alone do not fit."""
    text = row["text"]
    lo = min(text.find(row["e1"]), text.find(row["e2"]))
    hi = max(text.find(row["e1"]) + len(row["e1"]), text.find(row["e2"]) + len(row["e2"]))
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
    keep_lo = next((i for i, (s, e) in enumerate(words) if e > lo), 0)
    keep_hi = max((i for i, (s, e) in enumerate(words) if s < hi), default=len(words) - 1)
    a, b = 0, len(words) - 1
    while True:
        cut = text[words[a][0]:words[b][1]]
        if _n_tokens(tokenizer, cut) <= budget:
            return cut
        if a == keep_lo and b == keep_hi:
            return None
        if b > keep_hi and (a == keep_lo or (b - keep_hi) >= (keep_lo - a)):
            b -= 1
        else:
            a += 1


def fit_prompt(tokenizer: Any, row: dict, demos: list[dict], labels: list[str] | None, max_length: int,
               answer_tokens: int, stats: PromptStats | None = None) -> list[dict]:
    """Messages for ``row`` that leave ``answer_tokens`` free within ``max_length``: demonstrations are dropped
    (last first), then the sentence is shortened around its entities; the answer is never cut.

    Raises:
        ValueError: when even the entities with no demonstration do not fit (names the row).
    """
    demos = list(demos)
    n0 = len(demos)
    budget = max_length - answer_tokens
    msgs = rc_messages(row, demos, labels)
    while _n_tokens(tokenizer, _render(tokenizer, msgs, None)) > budget and demos:
        demos.pop()
        msgs = rc_messages(row, demos, labels)
    if stats is not None:
        stats.n += 1
        stats.demos_dropped += n0 - len(demos)
        stats.rows_fewer_demos += int(len(demos) < n0)
    over = _n_tokens(tokenizer, _render(tokenizer, msgs, None)) - budget
    if over > 0:
        short = _shorten(tokenizer, row, _n_tokens(tokenizer, row["text"]) - over)
        if short is None:
            raise ValueError(f"example {row['id']!r}: its entities alone exceed max_length {max_length} with "
                             f"{answer_tokens} tokens kept for the answer")
        msgs = rc_messages(row, demos, labels, text=short)
        if stats is not None:
            stats.sentences_shortened += 1
    return msgs


def labels_by_dataset(train: list[dict]) -> dict[str, list[str]]:
    """Each data set's label list, from the *train* split (the schema-enumerated prompts list these)."""
    return {ds: label_set(train, ds) for ds in sorted({r["dataset"] for r in train})}


DEMO_POLICIES = ("per_example", "per_dataset")


def build_prompts(rows: list[dict], pool: DemoPool, tokenizer: Any, *, k: int, labels: dict[str, list[str]] | None,
                  max_length: int, for_training: bool, demos: str = "per_example") -> tuple[list[dict], PromptStats]:
    """Prompt–completion records (``for_training``) or rendered inference prompts for ``rows``, one prompt shape
    for both: the same system turn, demonstrations and query (:func:`kgutils.prompts.rc_messages`).

    ``demos``: ``per_example`` draws each query's demonstrations for it; ``per_dataset`` gives every query of a data
    set the same ones, so the prompts of a data set share everything up to the query and the decoding loop
    computes that prefix once (:func:`classify` groups prompts by data set).

    Training records keep room for their own label (plus the end-of-turn token); inference prompts keep room for
    the longest label of the data set, so an answer is never cut, at training or at inference.

    Returns:
        (records, stats). A training record is ``{"prompt", "completion", "chat_template_kwargs"}``; an inference
        record is ``{"id", "prompt" (rendered text), "messages", "demo_ids", "choices"}``.
    """
    stats, out = PromptStats(), []
    longest: dict[str, int] = {}
    for ds, labs in (labels or {}).items():
        longest[ds] = max(_n_tokens(tokenizer, lab) for lab in labs) if labs else 8
    if demos not in DEMO_POLICIES:
        raise ValueError(f"demos must be one of {DEMO_POLICIES}, got {demos!r}")
    shared = demos == "per_dataset"
    for row in rows:
        chosen = pool.pick(row, k, shared=shared)
        labs = (labels or {}).get(row["dataset"])
        if for_training:
            room = _n_tokens(tokenizer, row["relation"]) + 4
        else:
            room = longest.get(row["dataset"], 16) + 4
        msgs = fit_prompt(tokenizer, row, chosen, labs if labels else None, max_length, room, stats)
        used = [d["id"] for d in chosen][: (len(msgs) - 2) // 2]
        if for_training:
            out.append({"prompt": msgs, "completion": [{"role": "assistant", "content": row["relation"]}],
                        "chat_template_kwargs": {"enable_thinking": False}})
        else:
            out.append({"id": row["id"], "prompt": _render(tokenizer, msgs, None), "messages": msgs,
                        "demo_ids": used, "choices": (labels or {}).get(row["dataset"])})
    return out, stats


# ------------------------------------------------------------------------------------------ label decoding (3 modes)

RC_MODES = ("free", "constrained", "likelihood")


def classify(lm: Any, records: list[dict], modes: Iterable[str] = RC_MODES, *, batch_size: int = 16,
             max_new_tokens: int = 24, progress: bool = True) -> dict[str, dict[str, Any]]:
    """Label every inference record (:func:`build_prompts`) with each decoding mode, side by side:

    * ``free``: greedy generation; the scorer takes the first line, ``Answer:`` stripped;
    * ``constrained``: greedy generation constrained to the data set's allowed labels
      (:class:`kgutils.decoding.Choices`, the extraction core's xgrammar machinery), one batch group per data set;
    * ``likelihood``: every allowed label scored by its likelihood (:func:`kgutils.generate.score_choices`: the
      labels packed as a prefix tree after each prompt, ``batch_size`` prompts per forward pass).

    Returns:
        mode → ``{"raw": [answer per record], "seconds", "ms_per_example"}``.
    """
    import time

    from .decoding import Choices
    from .generate import generate_texts, score_choices

    modes = list(modes)
    unknown = [m for m in modes if m not in RC_MODES]
    if unknown:
        raise ValueError(f"unknown decoding mode(s) {unknown}; choose from {RC_MODES}")
    if any(m != "free" for m in modes) and any(not r.get("choices") for r in records):
        missing = next(r["id"] for r in records if not r.get("choices"))
        raise ValueError(f"example {missing!r} has no label list: constrained and likelihood decoding need the "
                         "train split's labels of its data set")
    prompts = [r["prompt"] for r in records]
    # One group per label list (per data set): its prompts share the system turn, and with shared demonstrations
    # everything up to the query, which the decoding loop and the scorer compute once per group.
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[tuple(r.get("choices") or ())].append(i)
    out: dict[str, dict[str, Any]] = {}
    for mode in modes:
        t0 = time.perf_counter()
        raw: list[str] = [""] * len(records)
        if mode == "free":
            for idx in groups.values():
                gen = generate_texts(lm, [prompts[i] for i in idx], batch_size=batch_size,
                                     max_new_tokens=max_new_tokens, guard=False, desc="free", progress=progress)
                for i, g in zip(idx, gen):
                    raw[i] = g["text"]
        elif mode == "constrained":
            for labs, idx in groups.items():
                # The budget always fits the longest label, spelt in any tokenisation the grammar allows (at
                # worst one character a token): a constrained answer is never cut inside a label.
                longest = max(len(lab) for lab in labs)
                gen = generate_texts(lm, [prompts[i] for i in idx], batch_size=batch_size,
                                     max_new_tokens=max(max_new_tokens, longest + 1), guard=False,
                                     schema=Choices(labs),
                                     desc="constrained", progress=progress)
                for i, g in zip(idx, gen):
                    raw[i] = g["text"]
        else:
            for labs, idx in groups.items():
                scored = score_choices(lm, [prompts[i] for i in idx], [list(labs)] * len(idx), batch_size=batch_size,
                                       desc="likelihood", progress=progress)
                for i, sc in zip(idx, scored):
                    raw[i] = sc["text"]
        sec = time.perf_counter() - t0
        out[mode] = {"raw": raw, "seconds": round(sec, 2),
                     "ms_per_example": round(1000 * sec / max(1, len(records)), 1)}
    return out


def score_table(rows: list[dict], decoded: dict[str, dict[str, Any]], allowed: list[list[str]] | None = None):
    """Per data set and decoding mode: positive-class micro-F1 (the published semantics), accuracy, schema-valid
    and malformed rates; plus each domain's unweighted average over its data sets (the card's "general average"
    and "literary average"). Returns (per-data-set frame, averages frame, per-class frame)."""
    import pandas as pd

    from .metrics import relation_classification_report

    recs, classes = [], []
    for mode, d in decoded.items():
        by_ds: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(rows):
            by_ds[r["dataset"]].append(i)
        for ds, idx in sorted(by_ds.items()):
            rep = relation_classification_report([rows[i]["relation"] for i in idx], [d["raw"][i] for i in idx],
                                                 [allowed[i] for i in idx] if allowed else None)
            recs.append({"mode": mode, "dataset": ds, "domain": rows[idx[0]]["domain"], "n": len(idx),
                         "f1": rep["f1"], "precision": rep["precision"], "recall": rep["recall"],
                         "accuracy": rep["accuracy"], "schema_valid": rep["schema_valid_rate"],
                         "malformed": rep["malformed_rate"]})
            for c, v in rep["per_class"].items():
                classes.append({"mode": mode, "dataset": ds, "label": c, **v})
    table = pd.DataFrame(recs)
    avg = (table.groupby(["mode", "domain"])["f1"].mean().unstack("domain")
           .rename(columns=lambda c: f"{c} average") if len(table) else pd.DataFrame())
    return table, avg, pd.DataFrame(classes)


SPLITS = ("train", "val", "test")


def load_splits(specs: Iterable[dict[str, Any]], *, seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                progress: bool = True) -> tuple[dict[str, list[dict]], list[Loaded]]:
    """Train/val/test rows of several sources.

    A spec names its source and format (:func:`load_source`) and locates each split it has under ``train``,
    ``val``, ``test`` (each a ``{"path": ...}`` or ``{"hub": ..., "split": ...}``), or the whole source at its
    top level (``path``/``hub``). Missing splits are carved out of what is there, by sentence and seeded: a
    source with only ``train`` gets ``fractions``; one with ``train`` and ``test`` gets its val from train; one
    with only ``test`` (or a single file) is split three ways. The printout says which.

    Returns:
        ({"train": rows, "val": rows, "test": rows}, every :class:`Loaded` read, for the problem report).
    """
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    loaded: list[Loaded] = []
    for spec in specs:
        spec = dict(spec)
        if not isinstance(spec.get("name"), str):
            raise ValueError(f"source spec without a name: {spec!r}")
        parts = {s: spec.pop(s) for s in SPLITS if s in spec}
        if not parts:
            parts = {"all": {k: spec.pop(k) for k in ("path", "hub", "split", "config", "data_files") if k in spec}}
        got: dict[str, list[dict]] = {}
        for split, loc in parts.items():
            if not isinstance(loc, dict):
                raise ValueError(f"source {spec['name']!r}: split {split!r} must be a mapping with path or hub")
            ld = load_source({**spec, **loc})
            ld.name = f"{spec['name']}/{split}"
            loaded.append(ld)
            got[split] = ld.rows
        note = ""
        if "all" in got or set(got) == {"test"} or set(got) == {"train"}:
            rows = got.pop("all", None) or got.pop("test", None) or got.pop("train")
            got["train"], got["val"], got["test"] = split_rows(rows, fractions, seed)
            note = " (one part: split %.0f/%.0f/%.0f by sentence)" % tuple(100 * f for f in fractions)
        elif "val" not in got and "train" in got:
            share = fractions[1] / (fractions[0] + fractions[1])
            got["train"], got["val"], _ = split_rows(got["train"], (1 - share, share, 0.0), seed)
            note = " (val carved from train)"
        elif "train" not in got:
            raise ValueError(f"source {spec['name']!r} has {sorted(got)} but no train split")
        for s in SPLITS:
            out[s].extend(got.get(s, []))
        if progress:
            print(f"{spec['name']}: " + ", ".join(f"{s} {len(got.get(s, []))}" for s in SPLITS) + note)
    return out, loaded


def cap_per_dataset(rows: list[dict], cap: int, seed: int = 0) -> list[dict]:
    """At most ``cap`` rows per data set (a seeded sample, in the original order); ``cap`` ≤ 0 keeps all."""
    if not cap or cap <= 0:
        return list(rows)
    by_ds: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_ds[r["dataset"]].append(i)
    rng = random.Random(seed)
    keep = set()
    for ds in sorted(by_ds):
        idx = by_ds[ds]
        keep.update(idx if len(idx) <= cap else rng.sample(idx, cap))
    return [r for i, r in enumerate(rows) if i in keep]


def sizes_frame(parts: dict[str, list[dict]]):
    """Rows per data set (with its domain) and part, and the negative share of each part."""
    import pandas as pd

    from .metrics import NEGATIVE_LABELS, normalize_rc_label

    recs = []
    for part, rows in parts.items():
        for r in rows:
            recs.append({"part": part, "dataset": r["dataset"], "domain": r["domain"],
                         "negative": normalize_rc_label(r["relation"]) in NEGATIVE_LABELS})
    df = pd.DataFrame(recs, columns=["part", "dataset", "domain", "negative"])
    table = df.pivot_table(index=["domain", "dataset"], columns="part", values="negative", aggfunc="size",
                           fill_value=0)[list(parts)]
    table.loc[("", "negative share"), :] = [round(float(df[df.part == p].negative.mean() or 0), 3) for p in parts]
    return table


def demonstration_leaks(records: list[dict], rows: list[dict], pool: DemoPool) -> int:
    """How many test prompts hold a demonstration whose sentence is a test sentence (or comes from outside the
    train pool). Must be 0; the notebook asserts it, a unit test proves it on data built to tempt a leak."""
    test_texts = {_norm_text(r["text"]) for r in rows}
    by_id = {r["id"]: r for rs in pool.by_ds.values() for r in rs}
    leaks = 0
    for rec in records:
        for did in rec.get("demo_ids", []):
            demo = by_id.get(did)
            if demo is None or _norm_text(demo["text"]) in test_texts:
                leaks += 1
    return leaks


def read_sources(path: str | Path) -> list[dict[str, Any]]:
    """The source specs of a YAML file (a list, or a mapping with a ``sources`` list); see :func:`load_splits`.

    Raises:
        FileNotFoundError: for a missing file; ValueError: for a file that is not a list of mappings with names.
    """
    import yaml

    p = resolve(path)
    if not p.is_file():
        raise FileNotFoundError(f"sources file not found: {p}")
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("sources")
    if not isinstance(data, list) or not all(isinstance(s, dict) and s.get("name") for s in data):
        raise ValueError(f"{p}: expected a list of source mappings, each with a name")
    return data
