"""Parse raw model output into graph-JSON triplets, and convert between record formats.

The study's models are asked for a JSON array of graph-JSON triplets::

    [{"source": {"title": "BERT", "type": "entity"},
      "relation": {"type": "developed_by", "weight": 0.95},
      "target": {"title": "Google", "type": "entity"}}]

What they actually emit is messier: reasoning in ``<think>`` blocks, Markdown fences, prose around the JSON,
a single object instead of an array, wrapper objects, generations cut off by ``max_new_tokens``, and fields of
the wrong type. :func:`parse_output` recovers the array and reports *what it had to do* in a
:class:`ParseResult`, so evaluation can separate formatting failures from extraction errors.

Repair rules (``repair=True``), applied per item and all-or-nothing:

* An item is repaired only when the repaired item passes the shape check (the metric's check: ``source`` and
  ``target`` objects with string ``title`` and ``type``, a ``relation`` object with a string ``type`` and a
  numeric, non-boolean ``weight`` in [0, 1]; this parser also requires non-empty titles and relation types).
* An item that cannot be fully repaired is kept *unchanged* and the result is marked ``"bad_items"``: the metric
  should see what the model really produced, and hiding invalid items would inflate precision. Items are only
  ever *dropped* when they are not JSON at all (the incomplete tail of a truncated array, or a malformed element
  in the middle of one); ``n_dropped`` counts them.
* Weights: numeric strings are parsed (``"0.9"`` → 0.9); percentages are scaled (``"90%"`` → 0.9, and any number
  in (1, 100] is read as a percentage: ``90`` → 0.9); booleans, ``None``, NaN, negative numbers, numbers above 100
  and non-numeric strings are unrepairable. A missing weight is unrepairable: no confidence is ever invented.
* Entities: a bare string becomes ``{"title": s, "type": "entity"}``; ``name``/``text``/``label`` stand in for
  ``title``; titles are stripped and numbers turned into strings; types are stripped and lowercased
  (``"Entity"`` → ``"entity"``) and a missing type becomes ``"entity"``. Type names outside the ontology are kept
  (the metric checks shape, not the ontology).
* Relations: a bare string is the relation type (its weight may sit at the item's top level); relation types are
  turned into snake case (``"Developed By"``, ``"developed-by"``, ``"developedBy"`` → ``"developed_by"``).
* Flat variants ``{head|subject, relation|predicate|type, tail|object, weight|confidence|score}`` (also with
  ``qualifiers: {confidence, subject_type, object_type}`` as in the SPO format, and ``[head, relation, tail,
  weight]`` lists) are converted to graph JSON, with type ``"entity"`` where no type is given.
* Unknown extra keys are preserved.

Statuses, from best to worst (the result reports the worst that happened; the order is that of
:data:`PARSE_STATUSES`): ``ok`` (a JSON array was found and no item had to change; removing ``<think>`` blocks,
fences and surrounding prose is extraction, not repair), ``repaired`` (something was changed, including a single
object or a wrapper object turned into a list, and JSON syntax fixes), ``empty`` (no text at all, e.g. only a
``<think>`` block), ``no_json`` (no JSON array or object found), ``invalid_json`` (JSON-looking text that does not
parse), ``truncated`` (the array was cut off: complete items kept, the incomplete tail dropped),
``not_a_list`` (JSON that is neither an array nor an object holding one, e.g. ``{"answer": "none"}``), and
``bad_items`` (some items are invalid or were dropped). An empty array ``[]`` is ``ok``: "no triplets" is a
valid answer.
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PARSE_STATUSES",
    "UNUSABLE_STATUSES",
    "ParseResult",
    "parse_output",
    "strip_think",
    "strip_fences",
    "extract_json_span",
    "to_json",
    "graph_to_spo",
    "spo_to_graph",
    "graph_to_rebel",
    "rebel_to_graph",
    "rebel_to_records",
    "SPO_STATUSES",
    "passage_sentences",
    "spo_qualifiers",
    "spo_document",
    "parse_spo_output",
]

PARSE_STATUSES: tuple[str, ...] = (
    "ok",
    "repaired",
    "empty",
    "no_json",
    "invalid_json",
    "truncated",
    "not_a_list",
    "bad_items",
)
_SEVERITY = {s: i for i, s in enumerate(PARSE_STATUSES)}
# Statuses that leave no complete list to use as a *label* (a truncated list would be an incomplete one).
UNUSABLE_STATUSES: frozenset[str] = frozenset({"empty", "no_json", "invalid_json", "truncated", "not_a_list"})

# Keys of an object that wraps the list of triplets.
_WRAPPER_KEYS = ("triplets", "triples", "relations", "edges")
# Keys that make an object look like one triplet (graph, flat or SPO shape).
_ITEM_KEYS = frozenset({"source", "target", "relation", "head", "tail", "subject", "object", "predicate"})

_MAX_NOTES = 50
# Upper bound on scanner steps per call: keeps pathological inputs (megabytes of "[[[[") fast.
_SCAN_BUDGET = 400_000
# ast.literal_eval is only tried on spans up to this size.
_MAX_LITERAL_CHARS = 200_000

_DECODER = json.JSONDecoder(strict=False)  # strict=False: tolerate raw newlines inside strings
_MISSING = object()


# --------------------------------------------------------------------------------------------------
# Result type
# --------------------------------------------------------------------------------------------------


@dataclass
class ParseResult:
    """What :func:`parse_output` recovered from one raw model output.

    Attributes:
        items: Items in graph-JSON shape (after repair when enabled); ``[]`` on failure.
        status: One of :data:`PARSE_STATUSES`: the worst thing that happened.
        n_raw_items: Items seen in the output before dropping (an incomplete tail counts as one).
        n_dropped: Items dropped because they were not JSON (``len(items) == n_raw_items - n_dropped``).
        notes: Human-readable notes: what was extracted, repaired or dropped, and why.
    """

    items: list = field(default_factory=list)
    status: str = "ok"
    n_raw_items: int = 0
    n_dropped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the output was usable as is or after repair."""
        return self.status in ("ok", "repaired")

    def _worsen(self, status: str) -> None:
        if _SEVERITY[status] > _SEVERITY[self.status]:
            self.status = status

    def _note(self, msg: str) -> None:
        if len(self.notes) < _MAX_NOTES:
            self.notes.append(msg)
        elif len(self.notes) == _MAX_NOTES:
            self.notes.append("(further notes omitted)")


# --------------------------------------------------------------------------------------------------
# Text-level extraction
# --------------------------------------------------------------------------------------------------

# Bounded attribute part: an unbounded [^>]* would make many unclosed "<think" tags quadratic.
_THINK_TAG = re.compile(r"<think\b[^<>]{0,200}>|</think\s*>", re.IGNORECASE)


def _split_think(text: str) -> tuple[str, str | None]:
    """Split text into (answer, reasoning of an unclosed ``<think>`` or None)."""
    out: list[str] = []
    pos = 0
    open_end: int | None = None
    for m in _THINK_TAG.finditer(text):
        if m.group().startswith("</"):
            if open_end is None:
                # Orphan closing tag: the opening tag was in the prompt (template-forced thinking),
                # so everything before it is reasoning.
                out = []
            open_end = None
            pos = m.end()
        elif open_end is None:
            out.append(text[pos : m.start()])
            open_end = m.end()
        # A nested opening tag inside a block is part of the reasoning.
    if open_end is None:
        out.append(text[pos:])
        return "".join(out), None
    return "".join(out), text[open_end:]


def strip_think(text: str) -> str:
    """Remove reasoning blocks from a model output.

    Closed ``<think>…</think>`` blocks are removed; an orphan ``</think>`` (the opening tag was part of the
    prompt) removes everything before it; an unclosed ``<think>`` removes everything after it, since the
    generation stopped while still reasoning. Tags are matched case-insensitively.

    Args:
        text: Raw model output.

    Returns:
        The answer part, stripped of surrounding white space.
    """
    if not isinstance(text, str):
        return ""
    return _split_think(text)[0].strip()


# Opening fence with an optional info string on the same line; the block ends at the next fence or at the
# end of the text (a generation cut off inside a block has no closing fence).
_FENCE_BLOCK = re.compile(r"```[ \t]*[A-Za-z0-9_+.-]*[^\n`]*?\n?(.*?)(?:```|\Z)", re.DOTALL)


def _fence_blocks(text: str) -> list[str]:
    return [m.group(1) for m in _FENCE_BLOCK.finditer(text)]


def strip_fences(text: str) -> str:
    """Return the content of the first Markdown code block, or the text itself when it has none.

    An unclosed fence (generation cut off inside the block) yields everything after it.

    Args:
        text: Text that may contain ````` ```lang … ``` ````` blocks.

    Returns:
        The block's content (or the text), stripped.
    """
    if not isinstance(text, str):
        return ""
    blocks = _fence_blocks(text)
    return (blocks[0] if blocks else text).strip()


class _Budget:
    __slots__ = ("left",)

    def __init__(self, n: int = _SCAN_BUDGET) -> None:
        self.left = n


_COMPLETE, _INCOMPLETE, _MISMATCH, _EXHAUSTED = "complete", "incomplete", "mismatch", "exhausted"
_SCAN_TOKEN = re.compile(r'[\[\]{}",]')
_STRING_STOP = re.compile(r'["\\]')
_JSON_WS = re.compile(r"[ \t\r\n]*")
_START = re.compile(r"[\[{]")
_CLOSER = {"[": "]", "{": "}"}
_JUNK_END = re.compile(r'[,\]\[{"]')  # where junk between array elements ends


def _scan(text: str, pos: int, budget: _Budget, *, element: bool = False) -> tuple[int, str]:
    """Bracket scanner that respects JSON strings and escapes.

    With ``element=False`` it scans the bracketed value starting at ``text[pos]`` and returns the index just
    after its closing bracket. With ``element=True`` it scans one array element starting at ``pos`` and returns
    the index of the ``,`` or ``]`` that ends it.

    Returns:
        ``(index, state)`` where state is complete, incomplete (text ended first), mismatch (a closing bracket
        that does not match) or exhausted (scan budget spent).
    """
    stack: list[str] = []
    n = len(text)
    while True:
        budget.left -= 1
        if budget.left <= 0:
            return pos, _EXHAUSTED
        m = _SCAN_TOKEN.search(text, pos)
        if m is None:
            return n, _INCOMPLETE
        ch = m.group()
        pos = m.end()
        if ch == '"':
            while True:
                budget.left -= 1
                s = _STRING_STOP.search(text, pos)
                if s is None:
                    return n, _INCOMPLETE
                if s.group() == "\\":
                    pos = s.end() + 1  # skip the escaped character, whatever it is
                    continue
                pos = s.end()
                break
        elif ch == ",":
            if element and not stack:
                return m.start(), _COMPLETE
        elif ch in "[{":
            stack.append(_CLOSER[ch])
        else:
            if not stack:
                if element and ch == "]":
                    return m.start(), _COMPLETE
                return m.start(), _MISMATCH
            if stack.pop() != ch:
                return m.start(), _MISMATCH
            if not stack and not element:
                return pos, _COMPLETE


def _skip_ws(text: str, pos: int) -> int:
    return _JSON_WS.match(text, pos).end()


def _jsonish_value_at(text: str, pos: int) -> bool:
    """Whether a JSON (or Python-literal) value plausibly starts at ``pos``; tells JSON from prose brackets."""
    if pos >= len(text):
        return False
    c = text[pos]
    if c in "{[\"'-0123456789":
        return True
    if c in "tfnTFN":
        head = text[pos : pos + 5]
        for lit in ("true", "false", "null", "True", "False", "None"):
            if head.startswith(lit):
                return True
            if lit.startswith(head) and pos + len(head) == len(text):
                return True  # a literal cut off by the end of the generation
    return False


def _jsonish_start(text: str, i: int) -> bool:
    """Whether the bracket at ``i`` plausibly opens JSON rather than prose such as ``[1]`` or ``{see below}``."""
    p = _skip_ws(text, i + 1)
    if p >= len(text):
        return True  # a bracket at the very end: a cut-off generation
    if text[i] == "{":
        return text[p] in "\"'}"
    return text[p] == "]" or _jsonish_value_at(text, p)


def extract_json_span(text: str) -> str | None:
    """Find the first balanced JSON array or object in a text.

    A bracket scanner (aware of strings and escapes) finds balanced spans from each ``[`` or ``{`` in turn; the
    first span that ``json.loads`` accepts is returned, so prose brackets such as ``[sic]`` are skipped.

    Args:
        text: Any text.

    Returns:
        The span, or None when there is none. Inside a truncated array the first balanced value is its first
        complete element; :func:`parse_output` is what handles truncation.
    """
    if not isinstance(text, str):
        return None
    budget = _Budget()
    pos = 0
    while budget.left > 0:
        m = _START.search(text, pos)
        if m is None:
            return None
        i = m.start()
        end, state = _scan(text, i, budget)
        if state == _COMPLETE:
            span = text[i:end]
            try:
                json.loads(span, strict=False)
                return span
            except Exception:  # noqa: BLE001 - any failure just means "not this span"
                pass
        elif state == _EXHAUSTED:
            return None
        pos = i + 1
    return None


# --------------------------------------------------------------------------------------------------
# Finding and salvaging the JSON value
# --------------------------------------------------------------------------------------------------


@dataclass
class _Found:
    kind: str  # good | weak | truncated | invalid | none
    value: Any = _MISSING
    end: int = 0
    resume: int = 0  # where the caller continues looking after a weak/invalid candidate
    notes: list[str] = field(default_factory=list)
    fixed: bool = False  # JSON syntax or shape had to be repaired
    truncated: bool = False
    n_tail: int = 0  # incomplete trailing element (0/1)
    n_malformed: int = 0  # malformed elements dropped from the middle of the array
    n_seen_extra: int = 0  # elements seen but not returned (tail + malformed)


_TRAILING_COMMA = re.compile(r""""(?:\\.|[^"\\])*"|,(\s*[\]}])""", re.DOTALL)
_NAMES = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def _literal(node: ast.AST) -> Any:
    """Evaluate a Python/JSON literal expression tree (JSON names true/false/null allowed)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            key = _literal(k) if k is not None else None
            if not isinstance(key, str):
                raise ValueError("non-string key")
            out[key] = _literal(v)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal(node.operand)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    raise ValueError(f"not a literal: {type(node).__name__}")


def _loose_value(span: str) -> Any:
    """Parse JSON with common syntax slips: trailing commas, Python-style quotes and literals.

    Python syntax is parsed with :mod:`ast` and evaluated by :func:`_literal`, which accepts only literals.

    Returns:
        The value, or ``_MISSING``.
    """
    if len(span) > _MAX_LITERAL_CHARS:
        return _MISSING
    try:
        fixed = _TRAILING_COMMA.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(0), span)
        return json.loads(fixed, strict=False)
    except Exception:  # noqa: BLE001
        pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in model text are not our concern
            tree = ast.parse(span.strip(), mode="eval")
        return _literal(tree.body)
    except Exception:  # noqa: BLE001 - SyntaxError, ValueError, RecursionError, MemoryError
        return _MISSING


def _is_good(value: Any) -> bool:
    """A value worth stopping the search for: an object, or an array that is empty or holds containers."""
    if isinstance(value, dict):
        return True
    if isinstance(value, list):
        return not value or any(isinstance(v, (dict, list)) for v in value)
    return False


def _item_like(value: Any) -> bool:
    return isinstance(value, dict) and any(
        isinstance(k, str) and k.strip().lower() in _ITEM_KEYS for k in value
    )


def _preview(s: str, n: int = 40) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def _salvage_array(text: str, i: int, repair: bool, budget: _Budget) -> _Found:
    """Walk an array that ``json`` rejected, element by element.

    Keeps every complete element; an incomplete last element (truncated generation) is dropped. With
    ``repair``, malformed elements in the middle are re-read loosely or dropped, and stray, trailing or missing
    commas are tolerated; without it they make the array invalid.
    """
    n = len(text)
    out = _Found("good", value=[])
    items: list = out.value

    def invalid() -> _Found:
        # Resume the search after the balanced span when there is one, else at the next bracket.
        end, state = _scan(text, i, budget)
        resume = end if state == _COMPLETE else i + 1
        return _Found("invalid", end=resume, resume=resume)

    def fix(note: str) -> None:
        out.fixed = True
        out.notes.append(note)

    pos = i + 1
    while True:
        # One element.
        pos = _skip_ws(text, pos)
        if pos >= n:
            out.truncated = True
            break
        c = text[pos]
        if c == "]":
            pos += 1
            break
        if c == ",":
            if not repair:
                return invalid()
            fix("removed a stray comma in the array")
            pos += 1
            continue
        try:
            value, pos_after = _DECODER.raw_decode(text, pos)
        except Exception:  # noqa: BLE001 - ValueError, RecursionError
            value = _MISSING
        if value is not _MISSING:
            items.append(value)
            pos = pos_after
        else:
            el_end, state = _scan(text, pos, budget, element=True)
            if state == _INCOMPLETE:
                if not _jsonish_value_at(text, pos):
                    return invalid()  # prose after a bracket, not a cut-off item
                out.truncated = True
                out.n_tail = 1
                out.notes.append(f"dropped the incomplete last item: {_preview(text[pos:])!r}")
                break
            if state != _COMPLETE or not repair:
                return invalid()
            loose = _loose_value(text[pos:el_end])
            if loose is not _MISSING:
                items.append(loose)
                fix(f"item {len(items) - 1}: repaired JSON syntax")
            else:
                out.n_malformed += 1
                out.notes.append(f"dropped a malformed item: {_preview(text[pos:el_end])!r}")
            pos = el_end
        # Its separator.
        pos = _skip_ws(text, pos)
        if pos >= n:
            out.truncated = True
            break
        c = text[pos]
        if c == ",":
            pos = _skip_ws(text, pos + 1)
            if pos < n and text[pos] == "]":
                if not repair:
                    return invalid()
                fix("removed a trailing comma")
        elif c == "]":
            pos += 1
            break
        elif not repair:
            return invalid()
        elif c in '{["':
            fix("inserted a missing comma between items")
        else:
            m = _JUNK_END.search(text, pos)
            if m is None or not isinstance(items[-1], dict):
                # Junk running to the end of the text, or after scalars, is more likely prose after a
                # bracket ("in [0, 1 (inclusive)") than an array of triplets with a stray word.
                return invalid()
            fix(f"skipped junk between items: {_preview(text[pos:m.start()])!r}")
            pos = m.start()
            if text[pos] == ",":
                pos += 1
            elif text[pos] == "]":
                pos += 1
                break
            # Otherwise the next element starts here (its comma was missing).
    if out.truncated:
        out.kind = "truncated"
        out.notes.insert(0, f"output cut off inside the array: kept {len(items)} complete item(s)")
    elif not _is_good(items):
        out.kind = "weak"
    out.n_seen_extra = out.n_tail + out.n_malformed
    out.end = out.resume = pos
    return out


def _salvage_object(text: str, i: int, span_end: int, state: str, repair: bool, budget: _Budget) -> _Found:
    """Handle an object that ``json`` rejected: syntax slips, a wrapper around a broken array, or truncation."""
    complete = state == _COMPLETE
    resume = span_end if complete else i + 1
    if complete and repair:
        loose = _loose_value(text[i:span_end])
        if isinstance(loose, dict):
            return _Found("good", value=loose, end=span_end, resume=span_end, fixed=True,
                          notes=["repaired JSON syntax"])
    n = len(text)
    pos = i + 1
    while True:
        pos = _skip_ws(text, pos)
        if pos >= n or text[pos] == "}":
            break
        if text[pos] == ",":
            pos += 1
            continue
        try:
            key, pos = _DECODER.raw_decode(text, pos)
        except Exception:  # noqa: BLE001
            break
        pos = _skip_ws(text, pos)
        if not isinstance(key, str) or pos >= n or text[pos] != ":":
            break
        pos = _skip_ws(text, pos + 1)
        try:
            _, pos = _DECODER.raw_decode(text, pos)
            continue
        except Exception:  # noqa: BLE001
            pass
        if pos < n and text[pos] == "[" and key.strip().lower() in _WRAPPER_KEYS:
            arr = _salvage_array(text, pos, repair, budget)
            if arr.kind == "invalid":
                break
            arr.value = {key: arr.value}
            arr.kind = "truncated" if arr.truncated else "good"
            if not complete and not arr.truncated:
                # Only the closing brace is missing: no item was lost.
                arr.fixed = True
                arr.notes.append("added the missing closing brace of the wrapper object")
            arr.end = arr.resume = span_end if complete else n
            return arr
        break
    if not complete and _jsonish_start(text, i):
        # Cut off inside a single object: there is no complete item to keep.
        return _Found("truncated", value=None, end=n, resume=n, truncated=True, n_tail=1, n_seen_extra=1,
                      notes=[f"output cut off inside a JSON object: {_preview(text[i:])!r}"])
    return _Found("invalid", end=resume, resume=resume)


def _join_objects(text: str, first: dict, end: int, budget: _Budget) -> _Found | None:
    """Collect objects emitted one after another without an enclosing array (JSON Lines style)."""
    items = [first]
    n = len(text)
    pos = end
    tail = 0
    sep = re.compile(r"[\s,]*")
    while True:
        pos = sep.match(text, pos).end()
        if pos >= n or text[pos] != "{":
            break
        try:
            value, new_end = _DECODER.raw_decode(text, pos)
        except Exception:  # noqa: BLE001
            _, state = _scan(text, pos, budget)
            if state == _INCOMPLETE and _jsonish_start(text, pos):
                tail = 1
            break
        if not _item_like(value):
            break
        items.append(value)
        pos = end = new_end
    if len(items) == 1 and not tail:
        return None
    found = _Found("truncated" if tail else "good", value=items, end=end, resume=end, fixed=True,
                   truncated=bool(tail), n_tail=tail, n_seen_extra=tail,
                   notes=[f"joined {len(items)} top-level objects into a list"])
    if tail:
        found.notes.append("output cut off inside the last object: dropped it")
    return found


def _decode_at(text: str, i: int, repair: bool, budget: _Budget) -> _Found | None:
    """Decode the JSON value opening at ``text[i]``; None when the bracket does not open JSON."""
    try:
        value, end = _DECODER.raw_decode(text, i)
    except Exception:  # noqa: BLE001 - ValueError, RecursionError
        value = _MISSING
    if value is not _MISSING:
        if repair and _item_like(value):
            joined = _join_objects(text, value, end, budget)
            if joined is not None:
                return joined
        return _Found("good" if _is_good(value) else "weak", value=value, end=end, resume=end)
    if text[i] == "[":
        # Walked element by element (no full scan first): a long truncated array stays cheap.
        return _salvage_array(text, i, repair, budget)
    end, state = _scan(text, i, budget)
    if state in (_MISMATCH, _EXHAUSTED):
        return None
    return _salvage_object(text, i, end, state, repair, budget)


def _find_json(text: str, repair: bool, budget: _Budget) -> _Found:
    """First usable JSON value in a text: the first good or truncated candidate, else the best fallback."""
    weak: _Found | None = None
    invalid: _Found | None = None
    pos = 0
    while True:
        m = _START.search(text, pos)
        if m is None:
            break
        budget.left -= 1
        if budget.left <= 0:
            break
        i = m.start()
        if not _jsonish_start(text, i):
            pos = i + 1
            continue
        found = _decode_at(text, i, repair, budget)
        if found is None:
            pos = i + 1
            continue
        if found.kind in ("good", "truncated"):
            return found
        if found.kind == "weak":
            weak = weak or found
        else:
            invalid = invalid or found
        pos = max(found.resume, i + 1)
    return weak or invalid or _Found("none")


# --------------------------------------------------------------------------------------------------
# Item repair
# --------------------------------------------------------------------------------------------------


def _snake(name: str) -> str:
    """``"Developed By"``, ``"developed-by"``, ``"developedBy"`` → ``"developed_by"``."""
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    s = re.sub(r"\W+", "_", s.lower())
    return re.sub(r"_+", "_", s).strip("_")


def _shape_problem(item: Any) -> str | None:
    """Why an item fails the shape check (the metric's, plus non-empty titles and types), or None."""
    if not isinstance(item, dict):
        return f"item is not an object ({type(item).__name__})"
    for side in ("source", "target"):
        node = item.get(side)
        if not isinstance(node, dict):
            return f"{side} is missing or not an object"
        if not isinstance(node.get("title"), str):
            return f"{side}.title is missing or not a string"
        if not node["title"].strip():
            return f"{side}.title is empty"
        if not isinstance(node.get("type"), str):
            return f"{side}.type is missing or not a string"
    rel = item.get("relation")
    if not isinstance(rel, dict):
        return "relation is missing or not an object"
    if not isinstance(rel.get("type"), str) or not rel["type"].strip():
        return "relation.type is missing, empty or not a string"
    if "weight" not in rel:
        return "relation.weight is missing"
    w = rel["weight"]
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        return f"relation.weight is not a number: {w!r}"
    if not (0.0 <= w <= 1.0):  # also rejects NaN
        return f"relation.weight is out of [0, 1]: {w!r}"
    return None


def _coerce_weight(v: Any) -> tuple[float | int | None, str | None]:
    """Read a confidence weight; returns (weight, None) or (None, reason)."""
    if isinstance(v, bool) or v is None:
        return None, f"weight {v!r} is not a number"
    pct = False
    if isinstance(v, str):
        s = v.strip()
        if s.endswith("%"):
            pct, s = True, s[:-1].strip()
        try:
            x = float(s)
        except ValueError:
            return None, f"weight {v!r} is not a number"
    elif isinstance(v, (int, float)):
        x = v
    else:
        return None, f"weight {v!r} is not a number"
    if not math.isfinite(x):
        return None, f"weight {v!r} is not finite"
    if pct or 1.0 < x <= 100.0:
        x = x / 100.0
    if not (0.0 <= x <= 1.0):
        return None, f"weight {v!r} is out of range"
    return x, None


def _lower_keys(d: dict) -> dict[str, tuple[Any, Any]]:
    """Map stripped, lowercased string keys to (original key, value); the first spelling wins."""
    out: dict[str, tuple[Any, Any]] = {}
    for k, v in d.items():
        if isinstance(k, str):
            out.setdefault(k.strip().lower(), (k, v))
    return out


class _Taker:
    """Look up keys case-insensitively, remembering which were used so the rest can be preserved."""

    def __init__(self, d: dict) -> None:
        self.d = d
        self.low = _lower_keys(d)
        self.used: set = set()

    def take(self, *names: str, kinds: tuple[type, ...] | None = None) -> tuple[Any, bool]:
        for name in names:
            if name in self.low:
                key, value = self.low[name]
                if kinds is not None and not isinstance(value, kinds):
                    continue
                self.used.add(key)
                return value, True
        return None, False

    def rest(self) -> dict:
        return {k: v for k, v in self.d.items() if k not in self.used}


_TITLE_KEYS = ("title", "name", "text", "surfaceform", "label", "value", "entity")
_TYPE_KEYS = ("type", "entity_type", "category")
_WEIGHT_KEYS = ("weight", "confidence", "score", "probability")


def _coerce_entity(v: Any, type_hint: Any) -> tuple[dict | None, str | None]:
    default_type = type_hint.strip().lower() if isinstance(type_hint, str) and type_hint.strip() else "entity"
    extra: dict = {}
    etype: Any = default_type
    if isinstance(v, dict):
        t = _Taker(v)
        title, _ = t.take(*_TITLE_KEYS)
        etype_raw, has_type = t.take(*_TYPE_KEYS)
        if has_type and etype_raw is not None:
            if not isinstance(etype_raw, str):
                return None, f"entity type {etype_raw!r} is not a string"
            etype = etype_raw.strip().lower() or default_type
        extra = t.rest()
    else:
        title = v
    if isinstance(title, (int, float)) and not isinstance(title, bool):
        title = str(title)
    if not isinstance(title, str):
        return None, "entity title is missing or not a string"
    title = title.strip()
    if not title:
        return None, "entity title is empty"
    return {"title": title, "type": etype, **extra}, None


def _coerce_item(item: Any) -> tuple[dict | None, str | None]:
    """Build a graph-JSON item from any supported shape; (None, reason) when that is impossible."""
    if isinstance(item, str):
        s = item.strip()
        try:
            item = json.loads(s) if s.startswith("{") else item
        except Exception:  # noqa: BLE001
            pass
        if isinstance(item, str):
            return None, "item is a string, not an object"
    if isinstance(item, (list, tuple)):
        scalars = all(isinstance(x, (str, int, float)) and not isinstance(x, bool) for x in item)
        if len(item) in (3, 4) and scalars:
            keys = ("head", "relation", "tail", "weight")
            item = dict(zip(keys, item))
        else:
            return None, "item is a list, not an object"
    if not isinstance(item, dict):
        return None, f"item is not an object ({type(item).__name__})"

    t = _Taker(item)
    src, has_src = t.take("source", "head", "subject", "from")
    tgt, has_tgt = t.take("target", "tail", "object", "to")
    rel, has_rel = t.take("relation", "predicate", "relation_type", "rel", "type", "label")
    w_top, has_w_top = t.take(*_WEIGHT_KEYS)
    quals, _ = t.take("qualifiers", kinds=(dict,))
    quals = _lower_keys(quals or {})
    src_type, _ = t.take("source_type", "head_type", "subject_type")
    tgt_type, _ = t.take("target_type", "tail_type", "object_type")
    if src_type is None and "subject_type" in quals:
        src_type = quals["subject_type"][1]
    if tgt_type is None and "object_type" in quals:
        tgt_type = quals["object_type"][1]
    if not has_w_top and "confidence" in quals:
        w_top, has_w_top = quals["confidence"][1], True
    missing = [name for name, ok in (("source", has_src), ("relation", has_rel), ("target", has_tgt)) if not ok]
    if missing:
        return None, f"{', '.join(missing)} missing"

    source, why = _coerce_entity(src, src_type)
    if source is None:
        return None, f"source: {why}"
    target, why = _coerce_entity(tgt, tgt_type)
    if target is None:
        return None, f"target: {why}"

    rel_extra: dict = {}
    if isinstance(rel, dict):
        rt = _Taker(rel)
        rtype, _ = rt.take("type", "name", "label", "relation", "predicate")
        w, has_w = rt.take(*_WEIGHT_KEYS)
        rel_extra = rt.rest()
        if not has_w:
            w, has_w = w_top, has_w_top
    else:
        rtype, w, has_w = rel, w_top, has_w_top
    if not isinstance(rtype, str):
        return None, "relation.type is missing or not a string"
    rtype = _snake(rtype)
    if not rtype:
        return None, "relation.type is empty"
    if not has_w:
        return None, "relation.weight is missing"
    weight, why = _coerce_weight(w)
    if weight is None:
        return None, f"relation.{why}"
    return {"source": source, "relation": {"type": rtype, "weight": weight, **rel_extra}, "target": target,
            **t.rest()}, None


def _repair_item(item: Any) -> tuple[Any, bool, str | None]:
    """All-or-nothing repair of one item.

    Returns:
        ``(item, changed, problem)``: the repaired item when repair succeeded, otherwise the original item with
        the reason it is invalid (None when it was valid as it was).
    """
    problem = _shape_problem(item)
    try:
        cand, why = _coerce_item(item)
    except Exception as exc:  # noqa: BLE001 - odd values (e.g. unhashable keys) must not break parsing
        cand, why = None, f"{type(exc).__name__}: {exc}"
    if cand is None or _shape_problem(cand) is not None:
        return item, False, problem and (why or problem)
    if cand == item:
        return item, False, None
    return cand, True, None


def _describe_change(before: Any, after: dict) -> str:
    if not isinstance(before, dict):
        return f"{type(before).__name__} item converted to graph JSON"
    if not {"source", "relation", "target"} <= set(before):
        return "flat/variant item converted to graph JSON"
    changes = []
    for side in ("source", "relation", "target"):
        if before.get(side) != after.get(side):
            changes.append(f"{side} {_preview(json.dumps(before.get(side), ensure_ascii=False, default=str), 60)}"
                           f" -> {_preview(json.dumps(after.get(side), ensure_ascii=False), 60)}")
    return "; ".join(changes) or "normalised"


# --------------------------------------------------------------------------------------------------
# parse_output
# --------------------------------------------------------------------------------------------------


def _to_list(value: Any, res: ParseResult) -> list | None:
    """Turn the decoded JSON value into the list of items (recording reshaping in ``res``)."""
    if value is None:  # a truncated single object: nothing complete
        return []
    if isinstance(value, list):
        if len(value) == 1 and isinstance(value[0], dict) and not _item_like(value[0]):
            inner = _to_list_from_wrapper(value[0])
            if inner is not None:
                res._worsen("repaired")
                res._note("unwrapped a wrapper object inside a one-element array")
                return inner
        return value
    if isinstance(value, dict):
        inner = _to_list_from_wrapper(value)
        if inner is not None:
            res._worsen("repaired")
            res._note("took the list out of its wrapper object")
            return inner
        if _item_like(value):
            res._worsen("repaired")
            res._note("a single object instead of an array: wrapped it in a list")
            return [value]
        res._note(f"JSON object without triplets: keys {sorted(map(str, value))[:8]}")
        return None
    res._note(f"JSON value is a {type(value).__name__}, not an array")
    return None


def _to_list_from_wrapper(d: dict) -> list | None:
    low = _lower_keys(d)
    for key in _WRAPPER_KEYS:
        if key in low and isinstance(low[key][1], list):
            return low[key][1]
    return None


def _coerce_raw(raw: Any) -> tuple[str | None, Any]:
    """Input to (text, already-decoded value)."""
    if raw is None:
        return None, _MISSING
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw).decode("utf-8", errors="replace"), _MISSING
    if isinstance(raw, str):
        return raw, _MISSING
    if isinstance(raw, (list, dict)):
        return None, raw
    return str(raw), _MISSING


def parse_output(raw: str | None, *, repair: bool = True) -> ParseResult:
    """Parse one raw model output into graph-JSON items. Never raises.

    Extraction (always): removes ``<think>`` blocks, takes the first Markdown code block that holds JSON (else
    the whole text), skips prose around the JSON, turns a single object or a wrapper object
    (``{"triplets"|"triples"|"relations"|"edges": [...]}``) into the list, and salvages truncated arrays
    (complete items kept, the incomplete tail dropped). When an unclosed ``<think>`` leaves no answer, JSON
    found inside the unfinished reasoning is used (complete JSON only) and the result is marked repaired;
    without any, the status is ``no_json``.

    Repair (``repair=True``): fixes JSON syntax slips (trailing/missing commas, Python-style quotes and
    literals), joins objects emitted one after another, drops malformed elements from the middle of an array,
    and repairs items as described in the module docstring. With ``repair=False`` items are left untouched and
    only checked.

    Args:
        raw: The model's raw output. ``bytes`` are decoded as UTF-8; an already-decoded list or dict is taken
            as the JSON value; other objects are converted with ``str``.
        repair: Whether to repair JSON syntax and items.

    Returns:
        A :class:`ParseResult`.
    """
    try:
        return _parse(raw, repair)
    except Exception as exc:  # noqa: BLE001 - last-resort guard: one odd output must not stop an evaluation
        return ParseResult([], "invalid_json", 0, 0, [f"parser error: {type(exc).__name__}: {exc}"])


def _parse(raw: Any, repair: bool) -> ParseResult:
    res = ParseResult()
    text, value = _coerce_raw(raw)
    if value is _MISSING:
        if text is None or not text.strip():
            return ParseResult([], "empty", 0, 0, ["no output"])
        found, from_reasoning = _locate(text, repair, res)
        if found is None:
            return res
        value = found.value
        res.notes.extend(found.notes[:_MAX_NOTES])
        if found.fixed or from_reasoning:
            res._worsen("repaired")
    else:
        found = _Found("good", value=value)
        res._note("input was already decoded JSON")

    items = _to_list(value, res)
    if items is None:
        res.status = "not_a_list"
        return res
    n_extra = found.n_seen_extra
    res.n_raw_items = len(items) + n_extra
    res.n_dropped = n_extra
    if found.truncated:
        res._worsen("truncated")
    if found.n_malformed:
        res._worsen("bad_items")

    out = []
    for k, item in enumerate(items):
        if repair:
            new, changed, problem = _repair_item(item)
            if changed:
                res._worsen("repaired")
                res._note(f"item {k}: {_describe_change(item, new)}")
        else:
            new, problem = item, _shape_problem(item)
        if problem:
            res._worsen("bad_items")
            res._note(f"item {k} invalid (kept as is): {problem}")
        out.append(new)
    res.items = out
    return res


def _locate(text: str, repair: bool, res: ParseResult) -> tuple[_Found | None, bool]:
    """Find the JSON value in a raw text; on failure set ``res`` and return None."""
    answer, reasoning = _split_think(text)
    if answer.strip() != text.strip():
        res._note("removed <think> reasoning")
    budget = _Budget()

    def candidates(t: str) -> list[str]:
        blocks = [b for b in _fence_blocks(t) if b.strip()]
        return blocks + [t]

    best: _Found | None = None
    from_reasoning = False
    sources = [(answer, False)]
    if reasoning is not None:
        sources.append((reasoning, True))
    rank = {"good": 0, "truncated": 1, "weak": 2, "invalid": 3, "none": 4}
    for src_text, is_reasoning in sources:
        if not src_text.strip():
            continue
        for cand in candidates(src_text):
            found = _find_json(cand, repair, budget)
            if is_reasoning and found.kind != "good":
                continue  # fragments in cut-off reasoning are not an answer
            if best is None or rank[found.kind] < rank[best.kind]:
                best, from_reasoning = found, is_reasoning
            if best.kind == "good":
                break
        if best is not None and best.kind in ("good", "truncated"):
            break
    if best is None:
        # Nothing but reasoning, or white space.
        res.status = "no_json" if reasoning is not None else "empty"
        res._note("unclosed <think>: no answer after the reasoning" if reasoning is not None
                  else "no answer outside <think> reasoning")
        return None, False
    if best.kind == "none":
        res.status = "no_json"
        res._note("no JSON array or object found" + (" (unclosed <think>)" if reasoning is not None else ""))
        return None, False
    if best.kind == "invalid":
        res.status = "invalid_json"
        res._note("JSON-like text that does not parse")
        return None, False
    if from_reasoning:
        res._note("unclosed <think>: used JSON found inside the unfinished reasoning")
    return best, from_reasoning


# --------------------------------------------------------------------------------------------------
# Serialisation and converters
# --------------------------------------------------------------------------------------------------


def _canonical(item: Any) -> Any:
    """Graph-JSON item with keys in the order the prompt shows them; other values as they are."""
    if not isinstance(item, dict) or not all(isinstance(item.get(k), dict) for k in ("source", "relation", "target")):
        return item

    def ordered(d: dict, first: tuple[str, ...]) -> dict:
        out = {k: d[k] for k in first if k in d}
        out.update((k, v) for k, v in d.items() if k not in out)
        return out

    out = {
        "source": ordered(item["source"], ("title", "type")),
        "relation": ordered(item["relation"], ("type", "weight")),
        "target": ordered(item["target"], ("title", "type")),
    }
    out.update((k, v) for k, v in item.items() if k not in out)
    return out


def to_json(items: list) -> str:
    """Compact, canonical JSON of graph-JSON items, used as training targets.

    Keys are ordered ``source{title,type}``, ``relation{type,weight}``, ``target{title,type}`` (extra keys
    after them), separators carry no spaces, and non-ASCII text is written as is.

    Args:
        items: Graph-JSON items.

    Returns:
        The JSON text.

    Raises:
        ValueError: for NaN or infinite numbers (not valid JSON). TypeError: for values JSON cannot hold.
    """
    return json.dumps([_canonical(it) for it in items], ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False)


def _title_of(v: Any) -> str | None:
    """Entity name from a string or an object (``title``/``name``/``surfaceform``…), stripped."""
    if isinstance(v, dict):
        low = _lower_keys(v)
        v = next((low[k][1] for k in _TITLE_KEYS if k in low), None)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if isinstance(v, str) and v.strip():
        return v.strip()
    return None


def graph_to_spo(items: list[dict]) -> dict:
    """Graph JSON to the Gemma recipe's subject/predicate/object document.

    Items without a source title, target title or relation type are skipped. ``qualifiers`` carries
    ``confidence`` (the weight), ``subject_type`` and ``object_type`` where the item has them.

    Args:
        items: Graph-JSON items.

    Returns:
        ``{"triples": [{"subject", "predicate", "object", "qualifiers": {...}}]}``.
    """
    triples = []
    for it in items or []:
        if not isinstance(it, dict):
            continue
        src, rel, tgt = it.get("source"), it.get("relation"), it.get("target")
        if not (isinstance(src, dict) and isinstance(rel, dict) and isinstance(tgt, dict)):
            continue
        s, o, p = _title_of(src), _title_of(tgt), rel.get("type")
        if s is None or o is None or not isinstance(p, str) or not p.strip():
            continue
        quals: dict[str, Any] = {}
        w = rel.get("weight")
        if isinstance(w, (int, float)) and not isinstance(w, bool):
            quals["confidence"] = w
        if isinstance(src.get("type"), str):
            quals["subject_type"] = src["type"]
        if isinstance(tgt.get("type"), str):
            quals["object_type"] = tgt["type"]
        triples.append({"subject": s, "predicate": p.strip(), "object": o, "qualifiers": quals})
    return {"triples": triples}


def spo_to_graph(doc: dict | list, default_weight: float = 1.0) -> list[dict]:
    """Subject/predicate/object triples to graph JSON (the inverse of :func:`graph_to_spo`).

    Predicates become snake-case relation types; ``qualifiers.confidence`` becomes the weight (``default_weight``
    when absent or unreadable), ``qualifiers.subject_type``/``object_type`` the entity types (``"entity"`` when
    absent). Subjects and objects may be strings or objects with a ``title``/``name``/``surfaceform`` (as in the
    REBEL data). Incomplete triples are skipped; never raises on odd input.

    Args:
        doc: ``{"triples": [...]}`` or the list of triples.
        default_weight: Weight for triples without a usable confidence.

    Returns:
        Graph-JSON items.
    """
    if isinstance(doc, dict):
        low = _lower_keys(doc)
        triples = next((low[k][1] for k in ("triples", "triplets") if k in low), [])
    else:
        triples = doc
    if not isinstance(triples, list):
        return []
    out = []
    for tr in triples:
        if not isinstance(tr, dict):
            continue
        low = _lower_keys(tr)
        s = _title_of(low.get("subject", (None, None))[1])
        o = _title_of(low.get("object", (None, None))[1])
        p = _title_of(low.get("predicate", (None, None))[1])
        if s is None or o is None or p is None or not _snake(p):
            continue
        quals = low.get("qualifiers", (None, {}))[1]
        quals = _lower_keys(quals) if isinstance(quals, dict) else {}
        weight = default_weight
        if "confidence" in quals:
            w, _ = _coerce_weight(quals["confidence"][1])
            weight = default_weight if w is None else w

        def etype(key: str) -> str:
            t = quals.get(key, (None, None))[1]  # noqa: B023 - called at once, inside this iteration
            return t.strip().lower() if isinstance(t, str) and t.strip() else "entity"

        out.append({
            "source": {"title": s, "type": etype("subject_type")},
            "relation": {"type": _snake(p), "weight": weight},
            "target": {"title": o, "type": etype("object_type")},
        })
    return out


def _clean(s: str) -> str:
    return " ".join(s.split())


def graph_to_rebel(items: list[dict]) -> str:
    """Linearise graph JSON in the REBEL format.

    Triplets are grouped by subject in order of first appearance:
    ``<triplet> HEAD <subj> TAIL1 <obj> relation one <subj> TAIL2 <obj> relation two <triplet> HEAD2 ...``.
    Relation types are written with spaces instead of underscores. Entity types and weights have no place in
    REBEL text and are lost; white space inside titles is collapsed; titles containing the marker tokens cannot
    be represented. Items without titles or relation type are skipped.

    Args:
        items: Graph-JSON items.

    Returns:
        The linearised text (``""`` for no items).
    """
    groups: dict[str, list[tuple[str, str]]] = {}
    for it in items or []:
        if not isinstance(it, dict) or not isinstance(it.get("relation"), dict):
            continue
        head, tail, rel = _title_of(it.get("source")), _title_of(it.get("target")), it["relation"].get("type")
        if head is None or tail is None or not isinstance(rel, str) or not rel.strip():
            continue
        groups.setdefault(_clean(head), []).append((_clean(tail), _clean(rel.replace("_", " "))))
    parts = []
    for head, pairs in groups.items():
        parts.append(f"<triplet> {head}")
        parts.extend(f"<subj> {tail} <obj> {rel}" for tail, rel in pairs)
    return " ".join(parts)


_REBEL_NOISE = re.compile(r"</?s>|<pad>|<unk>")
_REBEL_MARK = re.compile(r"(<triplet>|<subj>|<obj>)")


def rebel_to_records(text: str) -> list[dict]:
    """Decode REBEL-linearised text into ``{"head", "type", "tail"}`` records.

    ``<s>``, ``</s>``, ``<pad>`` and ``<unk>`` are ignored; white space is collapsed. Incomplete triplets
    (missing head, tail or relation) are dropped. Text before the first marker is taken as the head when a
    ``<subj>`` follows it (the first ``<triplet>`` is sometimes eaten by the tokenizer). Relation labels are
    returned as written (with spaces). Never raises.

    Args:
        text: Generated REBEL text.

    Returns:
        The records in order.
    """
    if not isinstance(text, str):
        return []
    records: list[dict] = []
    head = tail = rel = ""
    state = "lead"  # lead | head | tail | rel | skip

    def flush() -> None:
        h, t, r = _clean(head), _clean(tail), _clean(rel)
        if h and t and r:
            records.append({"head": h, "type": r, "tail": t})

    for part in _REBEL_MARK.split(_REBEL_NOISE.sub(" ", text)):
        if part == "<triplet>":
            if state == "rel":
                flush()
            head, tail, rel, state = "", "", "", "head"
        elif part == "<subj>":
            if state == "rel":
                flush()
            tail, rel, state = "", "", "tail"
        elif part == "<obj>":
            if state == "tail":
                rel, state = "", "rel"
            else:
                state = "skip"  # a relation without a tail: ignore it
        elif state in ("lead", "head"):
            head += part
        elif state == "tail":
            tail += part
        elif state == "rel":
            rel += part
    if state == "rel":
        flush()
    return records


def rebel_to_graph(text: str, default_weight: float = 1.0) -> list[dict]:
    """Decode REBEL-linearised text into graph JSON.

    Relation labels become snake case (``"developed by"`` → ``"developed_by"``); every entity gets type
    ``"entity"`` and every relation ``default_weight``, since REBEL text carries neither. Hence
    ``rebel_to_graph(graph_to_rebel(x)) == x`` for items with weight 1.0, type ``"entity"``, snake-case relation
    types and stripped titles without repeated white space, when items with the same source are adjacent
    (otherwise the same items come back grouped by source).

    Args:
        text: Generated REBEL text.
        default_weight: Weight given to every relation.

    Returns:
        Graph-JSON items.
    """
    out = []
    for r in rebel_to_records(text):
        rtype = _snake(r["type"])
        if not rtype:
            continue
        out.append({
            "source": {"title": r["head"], "type": "entity"},
            "relation": {"type": rtype, "weight": default_weight},
            "target": {"title": r["tail"], "type": "entity"},
        })
    return out


# --------------------------------------------------------------------------------------------------
# SPO documents with qualifiers (the Gemma track, notebook 05)
# --------------------------------------------------------------------------------------------------

SPO_STATUSES: tuple[str, ...] = ("ok", "repaired", "empty", "no_json", "invalid_json", "not_a_document", "bad_items")
_SPO_SEVERITY = {s: i for i, s in enumerate(SPO_STATUSES)}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\u201c])")
_MONTHS = ("January|February|March|April|May|June|July|August|September|October|November|December|"
           "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec")
_DATE = re.compile(rf"\b(?:(?:\d{{1,2}} )?(?:{_MONTHS})\.?(?: \d{{1,2}},?)? )?(?:1[6-9]|20)\d\d(?:s\b)?(?![\d,.]\d)\b")
_UNITS = ("%|percent|per cent|km²|km2|km|kilometres|kilometers|kilometre|kilometer|metres|meters|metre|meter|"
          "m|cm|mm|kg|tonnes|tonne|tons|GB|MB|TB|GHz|MHz|kW|MW|GW|W|°C|°F|degrees|million|billion|trillion|"
          "thousand|parameters|tokens|images|words|languages|hours|minutes|seconds|inhabitants|people|employees|"
          "miles|feet|litres|liters|dollars|euros|points")
_QUANTITY = re.compile(rf"(?<![\w.])[$€£]?\d+(?:[.,]\d+)*(?:\s?(?:{_UNITS}))(?![\w])")


def passage_sentences(text: str) -> list[str]:
    """The passage split into sentences (at ``.``/``!``/``?`` followed by white space and a capital, digit or
    opening quote/bracket): enough for the short encyclopaedic passages of the study."""
    return [s.strip() for s in _SENTENCE_END.split(text or "") if s.strip()]


def spo_qualifiers(text: str, subject: str, obj: str) -> dict[str, str]:
    """Qualifiers of one fact read from its passage, never invented.

    The evidence sentence is the first sentence that names both the subject and the object (case-insensitive). A
    ``date`` (a year, a decade such as "1990s", or a day/month date ending in a year) and a ``quantity`` (a number
    with a unit or a percent sign: "92.3%", "7 billion", "1,200 km") are taken from it when the sentence holds
    exactly one of that kind; two dates (or two quantities) leave that qualifier out, since which one belongs to
    the fact is then unclear. A number that is part of a quantity is not also a date.

    Returns:
        ``{"date": ..., "quantity": ...}`` with the keys found (possibly none), in :data:`SPO_QUALIFIERS` order.
    """
    s_low, o_low = (subject or "").strip().lower(), (obj or "").strip().lower()
    if not s_low or not o_low:
        return {}
    evidence = next((s for s in passage_sentences(text) if s_low in s.lower() and o_low in s.lower()), None)
    if evidence is None:
        return {}
    # Names are masked so a year inside a title ("GPT-3 (2020)") is still found but "Windows 95" is not a number.
    masked = evidence
    for name in sorted({subject.strip(), obj.strip()}, key=len, reverse=True):
        masked = re.sub(re.escape(name), lambda m: "\0" * len(m.group()), masked, flags=re.IGNORECASE)
    quantities = [m for m in _QUANTITY.finditer(masked)]
    taken = [(m.start(), m.end()) for m in quantities]
    dates = [m for m in _DATE.finditer(masked) if not any(a <= m.start() < b for a, b in taken)]
    out: dict[str, str] = {}
    if len({m.group() for m in dates}) == 1:
        out["date"] = dates[0].group()
    if len({m.group() for m in quantities}) == 1:
        out["quantity"] = quantities[0].group()
    return out


def spo_document(items: list[dict], text: str | None = None) -> dict:
    """Graph-JSON triplets as the Gemma recipe's answer: ``{"triples": [{subject, predicate, object,
    qualifiers}]}``, via :func:`graph_to_spo`.

    The track is open-relation: predicates are written as words (``based_on`` → ``based on``). Qualifiers are
    the passage's own (:func:`spo_qualifiers`, when ``text`` is given); the graph format's weight and entity types
    are not part of this answer. Keys come in the order of :func:`kgutils.ontology.spo_decoding_schema`.
    """
    triples = []
    for t in graph_to_spo(items)["triples"]:
        quals = spo_qualifiers(text, t["subject"], t["object"]) if text else {}
        triples.append({"subject": t["subject"], "predicate": _clean(t["predicate"].replace("_", " ")),
                        "object": t["object"], "qualifiers": quals})
    return {"triples": triples}


def _spo_triple(item: Any) -> tuple[dict | None, bool]:
    """(clean triple or None, changed): a dict with non-empty string subject, predicate and object; qualifiers an
    object of scalar values (numbers become strings), absent qualifiers become ``{}``."""
    if not isinstance(item, dict):
        return None, False
    low = _lower_keys(item)
    vals = [low.get(k, (None, None))[1] for k in ("subject", "predicate", "object")]
    if not all(isinstance(v, str) and v.strip() for v in vals):
        return None, False
    quals = low.get("qualifiers", (None, {}))[1]
    changed = "qualifiers" not in item or set(low) - {"subject", "predicate", "object", "qualifiers"} != set()
    if not isinstance(quals, dict):
        quals, changed = {}, True
    clean_q = {}
    for k, v in quals.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)) or not str(v).strip():
            changed = True
            continue
        changed = changed or not isinstance(v, str)
        clean_q[str(k)] = v.strip() if isinstance(v, str) else str(v)
    s, p, o = (v.strip() for v in vals)
    return {"subject": s, "predicate": p, "object": o, "qualifiers": clean_q}, changed


def parse_spo_output(raw: Any) -> dict[str, Any]:
    """Parse a model's answer in the Gemma recipe's format.

    ``<think>`` blocks, code fences and prose around the JSON are removed (extraction, status ``ok``). A bare list
    of triples or a single triple object is wrapped (``repaired``); triples without three non-empty strings are
    dropped and counted (``bad_items``); anything else is ``empty``, ``no_json``, ``invalid_json`` or
    ``not_a_document`` with an empty document. ``{"triples": []}`` is ``ok``.

    Returns:
        ``{"doc": {"triples": [...]}, "status", "n_items" (triples in the answer), "n_invalid" (dropped)}``.
    """
    def result(doc_items: list, status: str, n_items: int = 0, n_invalid: int = 0) -> dict[str, Any]:
        return {"doc": {"triples": doc_items}, "status": status, "n_items": n_items, "n_invalid": n_invalid}

    if not isinstance(raw, str) or not strip_think(raw).strip():
        return result([], "empty")
    text = strip_fences(strip_think(raw)).strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        span = extract_json_span(text)
        if span is None:  # JSON that never closes (cut by the budget without the guard) is invalid, not absent
            return result([], "invalid_json" if text[:1] in "{[" else "no_json")
        try:
            value = json.loads(span)
        except json.JSONDecodeError:
            return result([], "invalid_json")
    status = "ok"
    if isinstance(value, dict) and isinstance(_lower_keys(value).get("triples", (None, None))[1], list):
        items = _lower_keys(value)["triples"][1]
    elif isinstance(value, list):
        items, status = value, "repaired"
    elif isinstance(value, dict) and _spo_triple(value)[0] is not None:
        items, status = [value], "repaired"
    else:
        return result([], "not_a_document")
    triples, invalid = [], 0
    for it in items:
        clean, changed = _spo_triple(it)
        if clean is None:
            invalid += 1
            continue
        if changed and _SPO_SEVERITY[status] < _SPO_SEVERITY["repaired"]:
            status = "repaired"
        triples.append(clean)
    if invalid:
        status = "bad_items"
    return result(triples, status, len(items), invalid)


# ------------------------------------------------------------------------------ code answers (07's CodeKGC style)

_CODE_CALL = re.compile(r"\bTriplet\(")


def code_calls(text: str, start: int = 0) -> list[tuple[int, int, dict | None]]:
    """The complete ``Triplet(Entity(title, type), relation, Entity(title, type), weight)`` calls of a code answer,
    from ``start`` on: ``(begin, end, item)`` with the call as a graph item, or ``None`` for a complete call of
    another shape. The call's end is its closing bracket (brackets inside strings do not count); a call still
    open at the end of ``text`` is not returned. Arguments are read with :func:`ast.literal_eval` (literals only,
    nothing is executed), positionally or by keyword."""
    out: list[tuple[int, int, dict | None]] = []
    pos = start
    while (m := _CODE_CALL.search(text, pos)) is not None:
        depth, end, quote, escape = 0, None, None, False
        for j in range(m.end() - 1, len(text)):
            c = text[j]
            if quote:
                escape, quote = (False, quote) if escape else (c == "\\", None if c == quote else quote)
                continue
            if c in "\"'":
                quote = c
            depth += {"(": 1, ")": -1}.get(c, 0)
            if depth == 0:
                end = j + 1
                break
        if end is None:
            break
        out.append((m.start(), end, _code_item(text[m.start():end])))
        pos = end
    return out


def _code_item(call: str) -> dict | None:
    """One ``Triplet(...)`` call as a graph item, or ``None`` when it is not of that shape."""
    def entity(node: ast.AST) -> tuple[Any, Any]:
        if not isinstance(node, ast.Call):
            raise ValueError("not an Entity(...) call")
        kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        args = [ast.literal_eval(a) for a in node.args] + [kw.get("title"), kw.get("type")][len(node.args):]
        return args[0], args[1]

    try:
        node = ast.parse(call, mode="eval").body
        names = ("source", "relation", "target", "weight")
        kw = {k.arg: k.value for k in node.keywords}
        args = list(node.args) + [kw[n] for n in names[len(node.args):] if n in kw]
        if len(args) != 4:
            return None
        (s_title, s_type), (t_title, t_type) = entity(args[0]), entity(args[2])
        rel, weight = ast.literal_eval(args[1]), ast.literal_eval(args[3])
    except (SyntaxError, ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError):
        return None
    return {"source": {"title": s_title, "type": s_type}, "relation": {"type": rel, "weight": weight},
            "target": {"title": t_title, "type": t_type}}
