"""Decoding controls shared by every generation engine: the loop and budget guard, and grammar constraints.

**Loop and budget guard** (:class:`AnswerGuard`). Small models under greedy decoding often repeat their last item
until the token budget runs out, so the JSON array is never closed and the whole answer is lost to the parser. The
guard reads the answer as it grows and finds the items of its item list (the first JSON array that opens: the
graph format's top-level array, or ``"triples"`` in the SPO format):

* as soon as an item is completed that equals, after normalisation (:func:`item_key`), an item already emitted,
  the sequence stops (stop reason ``repeat``) and the answer ends after the last new item;
* when the token budget runs out inside an item, the answer ends after the last complete item (``budget``);
* in both cases the open brackets are closed, so the answer is valid JSON (``[]`` when no item was complete), and
  what was removed is kept beside it (``guard_removed``), so nothing is hidden from the scores.

The guard works on text, so the same code serves every engine: the ``hf`` engine checks it after every token and
takes finished rows out of the batch at once; vLLM applies it to the finished text, which under greedy decoding is
the same answer (vLLM only spends the tokens after the cut).

**Grammar constraints** (:func:`compile_grammar`): the answer is constrained to a JSON schema with xgrammar. The
default schema (:func:`kgutils.ontology.decoding_schema`) is the ontology's: the 20 relations and the two entity
types as enums, the weight a number in [0, 1] and a ``maxItems`` bound; other notebooks pass their own (05's SPO
format, 04's label set). A grammar is compiled once per tokenizer and schema and cached. Output is compact (no
white space between tokens, ``,`` and ``:`` separators): the format the models are trained on
(:func:`kgutils.formats.to_json`), and no room to loop on white space.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

STOP_REASONS: tuple[str, ...] = ("eos", "repeat", "budget")
_CLOSER = {"[": "]", "{": "}"}


def _norm(s: Any) -> str:
    if not isinstance(s, str):
        return json.dumps(s, sort_keys=True) if s is not None else ""
    s = unicodedata.normalize("NFKC", s).replace("_", " ").lower()
    return " ".join(s.split())


def item_key(item: Any) -> Any:
    """What makes two answer items "the same" for the guard.

    Graph-format items: normalised source title, relation type and target title (the edge; the weight and entity
    types do not make a repeat new). SPO items: subject, predicate, object. Anything else: the item with every
    string normalised. Titles are normalised as :func:`kgutils.metrics.normalize_title` does (company suffixes
    included), so "Acme Inc." repeating "Acme" is a repeat.
    """
    from .metrics import normalize_title

    if isinstance(item, dict):
        if all(isinstance(item.get(k), dict) for k in ("source", "relation", "target")):
            return ("graph", normalize_title(item["source"].get("title")), _norm(item["relation"].get("type")),
                    normalize_title(item["target"].get("title")))
        if all(k in item for k in ("subject", "predicate", "object")):
            return ("spo", normalize_title(item["subject"]), _norm(item["predicate"]), normalize_title(item["object"]))
        return ("dict", tuple(sorted((str(k), repr(item_key(v))) for k, v in item.items())))
    if isinstance(item, list):
        return ("list", tuple(repr(item_key(v)) for v in item))
    return ("value", _norm(item))


def is_self_loop(key: Any) -> bool:
    """True for the :func:`item_key` of a graph item whose source and target titles are the same after
    normalisation (the card's scorer drops such a prediction and counts it against grounding; the graph cannot
    hold it)."""
    return isinstance(key, tuple) and len(key) == 4 and key[0] == "graph" and bool(key[1]) and key[1] == key[3]


def _remove_spans(text: str, spans: list[tuple[int, int]]) -> tuple[str, list[str]]:
    """``text`` without the item ``spans`` (each with the comma that joined it to its neighbour), and the removed
    items' texts."""
    removed = [text[a:b] for a, b in spans]
    for a, b in sorted(spans, reverse=True):
        after = b + len(text[b:]) - len(text[b:].lstrip())
        before = len(text[:a].rstrip())
        if after < len(text) and text[after] == ",":
            b = after + 1
        elif before > 0 and text[before - 1] == ",":
            a = before - 1
        text = text[:a] + text[b:]
    return text, removed


@dataclass
class AnswerGuard:
    """Incremental scanner of one answer (see the module docstring). Feed it the answer text as it grows.

    Attributes:
        key: item -> hashable key; two items with equal keys are a repeat.
        cut: end (in the text) of the last complete, new item, or of the item list's ``[`` before any item.
        closers: the brackets that close the answer at ``cut`` (``"]"`` for the graph format, ``"]}"`` for SPO).
        repeated: set once an item repeated an earlier one; the answer ends at ``cut``.
        list_closed: the item list is complete (the model closed it itself).
        n_items: complete, new items so far (self-loops not counted).
        drop_self_loops: a graph item whose source and target are the same entity (:func:`is_self_loop`) is
            removed from the answer, which goes on; the removed items are reported with the rest of the cut.
        dropped: the (start, end) spans of the removed self-loops in the answer text.
    """

    key: Callable[[Any], Any] = item_key
    drop_self_loops: bool = True
    dropped: list[tuple[int, int]] = field(default_factory=list)
    cut: int | None = None
    closers: str = ""
    repeated: bool = False
    list_closed: bool = False
    n_items: int = 0
    _pos: int = 0
    _stack: list[str] = field(default_factory=list)
    _list_depth: int | None = None
    _in_string: bool = False
    _escape: bool = False
    _item_start: int | None = None
    _scalar: bool = False
    _seen: set = field(default_factory=set)
    _text: str = ""

    def feed(self, text: str) -> bool:
        """Scan ``text`` (the whole answer so far; it must extend what was fed before). True when the answer
        must stop here because an item repeated."""
        if self.repeated or self.list_closed:
            return self.repeated
        if not text.startswith(self._text[: self._pos]):
            raise ValueError("AnswerGuard.feed: the answer text changed behind the scanned position")
        # A trailing U+FFFD is half of a multi-byte character still being decoded: scan up to it.
        end = len(text.rstrip("\ufffd"))
        self._text = text
        for i in range(self._pos, end):
            self._step(text, i)
            if self.repeated or self.list_closed:
                self._pos = i + 1
                return self.repeated
        self._pos = end
        return False

    def _step(self, text: str, i: int) -> None:
        c = text[i]
        if self._in_string:
            if self._escape:
                self._escape = False
            elif c == "\\":
                self._escape = True
            elif c == '"':
                self._in_string = False
            return
        depth = len(self._stack)
        at_item_level = self._list_depth is not None and depth == self._list_depth
        if at_item_level and self._item_start is None and not c.isspace() and c not in ",]":
            self._item_start, self._scalar = i, c not in "[{"
        if at_item_level and self._scalar and c in ",]" and self._item_start is not None:
            self._finish_item(text, self._item_start, i)
        if c == '"':
            self._in_string = True
        elif c in "[{":
            self._stack.append(c)
            if self._list_depth is None and c == "[":
                self._list_depth = len(self._stack)
                self.closers = "".join(_CLOSER[b] for b in reversed(self._stack))
                self.cut = i + 1
        elif c in "]}":
            if self._stack:
                self._stack.pop()
            if self._list_depth is not None:
                if len(self._stack) == self._list_depth and self._item_start is not None and not self._scalar:
                    self._finish_item(text, self._item_start, i + 1)
                elif len(self._stack) < self._list_depth:
                    self.list_closed = True

    def _finish_item(self, text: str, start: int, end: int) -> None:
        self._item_start, self._scalar = None, False
        span = text[start:end].strip()
        try:
            value = json.loads(span)
        except json.JSONDecodeError:
            value = None  # complete but not JSON: kept as the model wrote it (the parser will judge it)
        if value is not None:
            k = self.key(value)
            if k in self._seen:
                self.repeated = True
                return
            if self.drop_self_loops and is_self_loop(k):
                self.dropped.append((start, end))  # (an item starts at its first non-space character)
                return
            self._seen.add(k)
        self.n_items += 1
        self.cut = end

    def close(self, text: str, stop_reason: str) -> tuple[str, str]:
        """The answer to keep and the text removed from it, for a sequence that ended with ``stop_reason``.

        ``repeat``: the text up to the last new item, closed. ``budget``: the same when the budget ran out inside
        the item list; an answer whose item list never opened or was already closed is kept as it is. ``eos``: the
        model ended the answer itself; kept as it is. In every case the dropped self-loops are taken out; the
        removed text lists them (one per line) before the cut tail.
        """
        if stop_reason not in STOP_REASONS:
            raise ValueError(f"unknown stop reason {stop_reason!r}; choose one of {STOP_REASONS}")
        self.feed(text)
        cut = not (stop_reason == "eos" or self.cut is None or (self.list_closed and not self.repeated))
        kept, tail = (text[: self.cut], text[self.cut:]) if cut else (text, "")
        kept, removed = _remove_spans(kept, [(a, b) for a, b in self.dropped if b <= len(kept)])
        return kept + (self.closers if cut else ""), "\n".join(removed + ([tail] if tail else []))


@dataclass
class CallGuard:
    """The loop and budget guard for code answers (07's CodeKGC-style prompts: ``triplets = [Triplet(...), ...]``):
    the same rules as :class:`AnswerGuard`, with the ``Triplet(...)`` calls as the items
    (:func:`kgutils.formats.code_calls`). A call that repeats an earlier one (same :func:`item_key`) stops the
    answer after the last new call; at the budget the answer ends after the last complete call. Either way the
    list is closed (``]``), so the answer stays a complete Python list."""

    key: Callable[[Any], Any] = item_key
    cut: int | None = None
    repeated: bool = False
    n_items: int = 0
    drop_self_loops: bool = True
    dropped: list[tuple[int, int]] = field(default_factory=list)
    _pos: int = 0
    _seen: set = field(default_factory=set)

    def feed(self, text: str) -> bool:
        """Scan ``text`` (the answer so far); True when the answer must stop because a call repeated. Self-loop
        calls are dropped, as :class:`AnswerGuard` drops self-loop items."""
        from .formats import code_calls

        if self.repeated:
            return True
        for begin, end, item in code_calls(text, self._pos):
            self._pos = end
            if item is not None:
                k = self.key(item)
                if k in self._seen:
                    self.repeated = True
                    return True
                if self.drop_self_loops and is_self_loop(k):
                    self.dropped.append((begin, end))
                    continue
                self._seen.add(k)
            self.n_items += 1
            self.cut = end + (1 if text[end:end + 1] == "," else 0)
        return False

    def close(self, text: str, stop_reason: str) -> tuple[str, str]:
        """The answer to keep and the text removed from it (see :meth:`AnswerGuard.close`)."""
        if stop_reason not in STOP_REASONS:
            raise ValueError(f"unknown stop reason {stop_reason!r}; choose one of {STOP_REASONS}")
        self.feed(text)
        cut = stop_reason != "eos" and self.cut is not None
        kept, tail = (text[: self.cut], text[self.cut:]) if cut else (text, "")
        kept, removed = _remove_spans(kept, [(a, b) for a, b in self.dropped if b <= len(kept)])
        return kept + ("\n]" if cut else ""), "\n".join(removed + ([tail] if tail else []))


#: The guards by the answer format they read: ``json`` (the graph and SPO formats) and ``code`` (07's code style).
GUARDS: dict[str, type] = {"json": AnswerGuard, "code": CallGuard}


def make_guard(kind: bool | str) -> AnswerGuard | CallGuard | None:
    """A fresh guard of ``kind`` (``True`` is ``json``), or ``None`` for ``False``.

    Raises:
        ValueError: for an unknown kind.
    """
    if kind is False or kind is None:
        return None
    name = "json" if kind is True else kind
    if name not in GUARDS:
        raise ValueError(f"unknown guard {kind!r}; choose True, False or one of {list(GUARDS)}")
    return GUARDS[name]()


def guard_text(text: str, stop_reason: str, key: Callable[[Any], Any] = item_key,
               kind: bool | str = "json") -> dict[str, Any]:
    """Apply the guard (``kind``: see :func:`make_guard`) to a finished answer (engines that cannot stop a
    sequence mid-way, e.g. vLLM).

    A repeat found anywhere in the text ends the answer there (stop reason ``repeat``), whatever ended the
    generation. Returns ``{"text", "stop_reason", "guard_removed"}``.
    """
    guard = make_guard(kind)
    guard.key = key
    if guard.feed(text):
        stop_reason = "repeat"
    kept, removed = guard.close(text, stop_reason)
    return {"text": kept, "stop_reason": stop_reason, "guard_removed": removed}


# ------------------------------------------------------------------------------------------- grammar (xgrammar)

_COMPILED: dict[tuple, Any] = {}
_COMPILERS: dict[tuple, Any] = {}
CACHE_SIZE = 32  # compiled grammars kept (a shared schema stays; per-passage ones are used once)


def _require_xgrammar() -> Any:
    try:
        import xgrammar
    except ImportError as exc:  # pragma: no cover - the CPU set-up installs it
        raise RuntimeError(
            "constrained decoding needs xgrammar: pip install --no-deps xgrammar apache-tvm-ffi "
            "(the CPU set-up does this; the gpu extra installs it with its GPU dependencies)"
        ) from exc
    return xgrammar


@dataclass(frozen=True)
class Choices:
    """A constraint to one of a few fixed strings (e.g. the allowed relation labels of a classification task),
    given wherever a JSON schema is accepted. The answer is the bare string, without JSON quotes.

    Raises:
        ValueError: for no options, or an empty or non-string option.
    """

    options: tuple[str, ...]

    def __post_init__(self) -> None:
        opts = tuple(self.options)
        if not opts or not all(isinstance(o, str) and o for o in opts):
            raise ValueError(f"Choices needs non-empty strings, got {self.options!r}")
        object.__setattr__(self, "options", tuple(dict.fromkeys(opts)))

    def ebnf(self) -> str:
        """The xgrammar EBNF grammar: ``root ::= "a" | "b" | ...`` (JSON string escapes are EBNF escapes)."""
        return "root ::= " + " | ".join(json.dumps(o, ensure_ascii=False) for o in self.options)


def schema_text(schema: dict[str, Any] | str | Choices) -> str:
    """JSON text of a schema (compiled, and the cache key), checking it is a JSON object. Keys keep their order:
    xgrammar emits properties in the order the schema lists them. :class:`Choices` give their grammar's text."""
    if isinstance(schema, Choices):
        return schema.ebnf()
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the decoding schema is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise ValueError(f"the decoding schema must be a JSON object, got {type(schema).__name__}")
    return json.dumps(schema)


def compile_grammar(tokenizer: Any, schema: dict[str, Any] | str | Choices, *, vocab_size: int | None = None,
                    stop_token_ids: list[int] | None = None) -> Any:
    """xgrammar ``CompiledGrammar`` for a JSON schema (or :class:`Choices`) and a tokenizer; compiled once, then
    served from a cache (the most recent :data:`CACHE_SIZE` grammars: per-passage schemas, such as titles grounded
    in the passage, come and go).

    Args:
        tokenizer: the model's Hugging Face tokenizer.
        schema: JSON schema (dict or JSON text).
        vocab_size: the model's logits width (``config.vocab_size``; may exceed the tokenizer's size).
        stop_token_ids: the model's end-of-answer ids; the grammar lets the answer end only with one of these.
    """
    xgr = _require_xgrammar()
    text = schema_text(schema)
    stops = tuple(sorted(set(stop_token_ids or [])))
    tok_key = (id(tokenizer), getattr(tokenizer, "name_or_path", ""), len(tokenizer), vocab_size, stops)
    key = (*tok_key, text)
    if key in _COMPILED:
        _COMPILED[key] = _COMPILED.pop(key)  # most recently used last
        return _COMPILED[key]
    if tok_key not in _COMPILERS:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=list(stops) or None)
        _COMPILERS[tok_key] = xgr.GrammarCompiler(info, max_threads=2, cache_enabled=False)
    compiler = _COMPILERS[tok_key]
    try:
        if isinstance(schema, Choices):
            compiled = compiler.compile_grammar(text)
        else:
            compiled = compiler.compile_json_schema(text, any_whitespace=False, separators=(",", ":"))
    except Exception as exc:  # xgrammar raises its own error types for unsupported or invalid schemas
        raise ValueError(f"xgrammar could not compile the decoding schema: {exc}") from exc
    _COMPILED[key] = compiled
    while len(_COMPILED) > CACHE_SIZE:
        _COMPILED.pop(next(iter(_COMPILED)))
    return compiled


class Grammar:
    """Compiled grammars applied row by row in a decoding batch (the ``hf`` engine's constraint).

    Each answer gets its own matcher (:meth:`matcher`), from the batch's grammar or its own (one schema per
    passage); :meth:`mask` masks a batch of logits to the tokens each row's matcher allows.
    """

    def __init__(self, compiled: Any, max_rows: int) -> None:
        self._xgr = _require_xgrammar()
        self.compiled = compiled
        self.vocab_size = compiled.tokenizer_info.vocab_size
        self.bitmask = self._xgr.allocate_token_bitmask(max_rows, self.vocab_size)

    def matcher(self, compiled: Any = None) -> Any:
        """A matcher of ``compiled`` (same tokenizer), or of the grammar this object was made with."""
        compiled = self.compiled if compiled is None else compiled
        if compiled.tokenizer_info.vocab_size != self.vocab_size:
            raise ValueError("a row's grammar was compiled for another vocabulary than the batch's")
        return self._xgr.GrammarMatcher(compiled)

    def mask(self, logits: Any, matchers: list[Any]) -> None:
        """Mask ``logits`` (one line per matcher, in place) to the tokens each matcher allows."""
        if len(matchers) > self.bitmask.shape[0]:
            self.bitmask = self._xgr.allocate_token_bitmask(len(matchers), self.vocab_size)
        bm = self.bitmask[: len(matchers)]
        for line, m in enumerate(matchers):
            m.fill_next_token_bitmask(bm, line)
        width = logits.shape[-1]
        if width > self.vocab_size:  # logits wider than the grammar's vocabulary: the extra ids are never allowed
            logits[:, self.vocab_size:] = float("-inf")
            self._xgr.apply_token_bitmask_inplace(logits[:, : self.vocab_size], bm)
        else:
            self._xgr.apply_token_bitmask_inplace(logits, bm, vocab_size=width)

    @staticmethod
    def accept(matcher: Any, token: int) -> bool:
        """Advance a matcher; True when its grammar is complete (the answer must end)."""
        if not matcher.accept_token(int(token)):
            raise RuntimeError(f"xgrammar rejected token {token} that its own mask allowed")
        return matcher.is_terminated()
