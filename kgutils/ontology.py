"""The study's ontology and the typed records it constrains.

Three record shapes appear in the study:

* the graph-JSON triplet the extraction models emit
  (``{source{title,type}, relation{type,weight}, target{title,type}}``),
* the subject/predicate/object triple with qualifiers used by the Gemma recipe,
* the relation-classification example used by the MixTune recipe.

The pydantic models here are strict about the ontology; the metric in
:mod:`kgutils.metrics` deliberately checks shape only (as the card does) and
does not use them.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator

RELATIONS: tuple[str, ...] = (
    "implements",
    "trained_on",
    "evaluates",
    "part_of",
    "introduces",
    "extends",
    "depends_on",
    "contrasts_with",
    "applied_to",
    "measured_by",
    "founded_by",
    "developed_by",
    "defined_as",
    "consists_of",
    "is_type_of",
    "based_on",
    "used_for",
    "created_by",
    "located_in",
    "predecessor_of",
)
RELATION_SET: frozenset[str] = frozenset(RELATIONS)
# Relations whose direction carries no meaning: "A contrasts_with B" states exactly what "B contrasts_with A" does.
# Every other relation is directed (part_of, extends, predecessor_of, ... read one way only). The graph stores a
# symmetric edge once, endpoints ordered (kgutils.graph).
SYMMETRIC_RELATIONS: frozenset[str] = frozenset({"contrasts_with"})

ENTITY_TYPES: tuple[str, ...] = ("entity", "concept")
ENTITY_TYPE_SET: frozenset[str] = frozenset(ENTITY_TYPES)

RelationType = Literal[RELATIONS]  # type: ignore[valid-type]
EntityType = Literal[ENTITY_TYPES]  # type: ignore[valid-type]


class Node(BaseModel):
    """One endpoint of a triplet: a named entity or a concept."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, description="Entity name as it should appear in the graph.")
    type: EntityType = Field(description="'entity' for named things, 'concept' for abstract ideas.")

    @field_validator("title")
    @classmethod
    def _strip_title(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("title is empty")
        return v


class Relation(BaseModel):
    """A typed, weighted edge label."""

    model_config = ConfigDict(extra="forbid")

    type: RelationType = Field(description="One of the 20 ontology relations.")
    # strict: lax mode would coerce the string "0.9" to 0.9, accepting items the metric's shape check rejects.
    weight: float = Field(ge=0.0, le=1.0, strict=True, description="Confidence that the passage supports the edge.")

    @field_validator("weight", mode="before")
    @classmethod
    def _no_bool(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("weight must be a number, not a boolean")
        return v


class Triplet(BaseModel):
    """The graph-JSON triplet: ``{source, relation, target}``."""

    model_config = ConfigDict(extra="forbid")

    source: Node
    relation: Relation
    target: Node


class SPOTriple(BaseModel):
    """Subject/predicate/object triple with free-form qualifiers (Gemma recipe)."""

    model_config = ConfigDict(extra="forbid")

    subject: str = Field(min_length=1)
    predicate: str = Field(min_length=1)
    object: str = Field(min_length=1)
    qualifiers: dict[str, Any] = Field(default_factory=dict)


class SPODocument(BaseModel):
    """The Gemma recipe's output object: ``{"triples": [...]}``."""

    model_config = ConfigDict(extra="forbid")

    triples: list[SPOTriple] = Field(default_factory=list)


class RelationExample(BaseModel):
    """A relation-classification example: two marked entities in a sentence and one label."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1)
    head: str = Field(min_length=1)
    tail: str = Field(min_length=1)
    label: str = Field(description="Relation label; dataset-specific, may be a negative label such as 'Other'.")
    dataset: str = ""
    id: str = ""


class Extraction(RootModel[list[Triplet]]):
    """Root model of the extraction output: a JSON array of triplets."""


def extraction_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the extraction output: an array of ontology triplets."""
    item = Triplet.model_json_schema()
    defs = item.pop("$defs", {})
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "KG triplet extraction output",
        "type": "array",
        "items": {"$ref": "#/$defs/Triplet"},
        "$defs": {**defs, "Triplet": item},
    }
    return schema


def _regex_char(c: str) -> str:
    """One literal character in the regex dialect xgrammar reads (only the operators are escaped)."""
    return "\\" + c if c in "\\.^$|?*+()[]{}/-" else c


def _title_may_end(chain: str, k: int) -> bool:
    """Whether a title may end before ``chain[k]``: after a word (or a closing sign such as ``.``, ``*`` or ``+``)
    or before a plural ``s``/``es`` that ends the word; never inside a word otherwise, nor after a space."""
    last = chain[k - 1]
    if last.isspace():
        return False
    rest = re.match(r"\w*", chain[k:]).group(0)
    return not rest or rest in ("s", "es")


def title_pattern(passage: str, max_length: int = 80) -> str:
    """A regular expression (JSON-schema ``pattern``) matching exactly the titles drawn from ``passage``: a
    substring of at most ``max_length`` characters that starts at the beginning of a word, its first letter in
    either case, ends at the end of a word (or before a plural ``s``/``es``, or after a closing sign: ``W.``,
    ``A*``, ``k-means++``), and holds no double quote, backslash or line break.

    The curated labels name entities as they occur in the text, in the singular ("support vector machine" in
    "support vector machines") and without the possessive ("Yann LeCun" in "Yann LeCun's"): 2,133 of the 2,136
    gold titles of the cpu profile's splits are such substrings (the others: "India" from "Indian", "regional
    army" from "regional armies", titles over 80 characters). The titles are laid out as a character trie
    (:func:`_trie_regex`).

    Raises:
        ValueError: for a passage with no word, or ``max_length`` < 1.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    trie: dict[str, Any] = {}  # char -> node; a node is {"": may end here, other keys: the next chars}
    for start in re.finditer(r"(?<!\w)\w", passage):
        chain = re.split(r'["\\\t\r\n]', passage[start.start(): start.start() + max_length])[0]
        first = chain[0]
        heads = {first.upper(), first.lower()} if len(first.upper()) == len(first.lower()) == 1 else {first}
        for head in heads:
            node = trie.setdefault(head, {})
            for k, c in enumerate(chain[1:], start=1):
                if _title_may_end(chain, k):
                    node[""] = True
                node = node.setdefault(c, {})
            node[""] = True
    if not trie:
        raise ValueError(f"no word to draw titles from in passage {passage[:60]!r}")
    return _trie_regex(trie)


def _trie_regex(node: dict[str, Any]) -> str:
    """The regex of a character trie: one branch per next character, the rest optional where a title may end.
    Every choice is decided by one character, so the pattern is deterministic (one state at a time, which keeps
    xgrammar's per-token masks cheap)."""
    branches = [_regex_char(c) + _trie_regex(child) for c, child in sorted(node.items()) if c]
    if not branches:
        return ""
    body = branches[0] if len(branches) == 1 else "(" + "|".join(branches) + ")"
    return "(" + body + ")?" if node.get("") else body


def decoding_schema(max_items: int = 16, max_title_length: int = 80, passage: str | None = None) -> dict[str, Any]:
    """The ontology as a JSON schema for constrained decoding (:mod:`kgutils.decoding`).

    An array of at most ``max_items`` triplets; relation types and entity types are enums, the weight is a number
    in [0, 1], titles are non-empty strings of at most ``max_title_length`` characters; keys come in the order the
    prompt and the training answers use, with no extra keys.

    Args:
        max_items: the ``maxItems`` bound.
        max_title_length: the longest title, in characters.
        passage: ground the titles in this passage: each title must be drawn from it (:func:`title_pattern`), so
            every entity the answer names occurs in the text. This is one schema per passage (compiled per
            passage); ``None`` allows any title.
    """
    if max_items < 1 or max_title_length < 1:
        raise ValueError(f"max_items and max_title_length must be >= 1, got {max_items}, {max_title_length}")
    node = {
        "type": "object",
        "properties": {"title": {"type": "string", "minLength": 1, "maxLength": max_title_length},
                       "type": {"type": "string", "enum": list(ENTITY_TYPES)}},
        "required": ["title", "type"],
        "additionalProperties": False,
    }
    relation = {
        "type": "object",
        "properties": {"type": {"type": "string", "enum": list(RELATIONS)},
                       "weight": {"type": "number", "minimum": 0, "maximum": 1}},
        "required": ["type", "weight"],
        "additionalProperties": False,
    }
    item = {
        "type": "object",
        # One definition of an endpoint, referenced twice: one grammar rule (a grounded title compiles once).
        "properties": {"source": {"$ref": "#/$defs/node"}, "relation": relation, "target": {"$ref": "#/$defs/node"}},
        "required": ["source", "relation", "target"],
        "additionalProperties": False,
    }
    schema = {"title": "KG triplet extraction output (decoding)", "type": "array", "items": item,
              "maxItems": max_items, "$defs": {"node": node}}
    return schema if passage is None else ground_titles(schema, passage)


def ground_titles(schema: dict[str, Any], passage: str) -> dict[str, Any]:
    """A copy of a decoding schema whose entity titles must be drawn from ``passage`` (:func:`title_pattern`).

    Every string property named ``title`` gets the passage's pattern, bounded by its ``maxLength`` (80 when it has
    none); the pattern replaces ``minLength``/``maxLength``, which xgrammar ignores beside a pattern.

    Raises:
        ValueError: when the schema has no string ``title`` property to ground.
    """
    out = json.loads(json.dumps(schema))
    found = 0

    def walk(node: Any) -> None:
        nonlocal found
        if isinstance(node, dict):
            title = node.get("properties", {}).get("title") if isinstance(node.get("properties"), dict) else None
            if isinstance(title, dict) and title.get("type") == "string":
                node["properties"]["title"] = {"type": "string",
                                               "pattern": title_pattern(passage, int(title.get("maxLength", 80)))}
                found += 1
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    if not found:
        raise ValueError("the decoding schema has no string 'title' property to ground in the passage")
    return out


# Qualifier keys of the Gemma recipe's SPO triples (the card names dates, locations, roles, scores and units;
# ``quantity`` holds a number with its unit, as 05 derives it from the passage).
SPO_QUALIFIERS: tuple[str, ...] = ("date", "location", "role", "score", "unit", "quantity")


def spo_decoding_schema(max_items: int = 16, qualifier_keys: tuple[str, ...] | list[str] = SPO_QUALIFIERS,
                        max_length: int = 80) -> dict[str, Any]:
    """The Gemma recipe's output object as a JSON schema for constrained decoding (05).

    ``{"triples": [{"subject", "predicate", "object", "qualifiers": {...}}]}`` with at most ``max_items`` triples.
    The track is open-relation: the predicate is free text (a non-empty string), not an enum. Qualifiers are
    optional string values under the listed keys only, so a model cannot invent a qualifier key; keys come in the
    order the training answers use (:func:`kgutils.formats.spo_document`), with no white space.
    """
    if max_items < 1 or max_length < 1:
        raise ValueError(f"max_items and max_length must be >= 1, got {max_items}, {max_length}")
    keys = list(qualifier_keys)
    if len(set(keys)) != len(keys) or not all(isinstance(k, str) and k for k in keys):
        raise ValueError(f"qualifier_keys must be distinct non-empty strings, got {qualifier_keys!r}")
    text = {"type": "string", "minLength": 1, "maxLength": max_length}
    triple = {
        "type": "object",
        "properties": {"subject": text, "predicate": {**text, "maxLength": min(max_length, 40)}, "object": text,
                       "qualifiers": {"type": "object",
                                      "properties": {k: {**text, "maxLength": min(max_length, 40)} for k in keys},
                                      "additionalProperties": False}},
        "required": ["subject", "predicate", "object", "qualifiers"],
        "additionalProperties": False,
    }
    return {"title": "SPO triples (decoding)", "type": "object",
            "properties": {"triples": {"type": "array", "items": triple, "maxItems": max_items}},
            "required": ["triples"], "additionalProperties": False}


def validate_triplet(obj: Any) -> tuple[Triplet | None, str | None]:
    """Validate one item against the ontology.

    Returns:
        ``(triplet, None)`` when valid, ``(None, reason)`` otherwise. Never raises.
    """
    try:
        return Triplet.model_validate(obj), None
    except Exception as exc:  # pydantic.ValidationError or anything odd in obj
        errors = exc.errors() if hasattr(exc, "errors") else [{"msg": str(exc), "loc": ()}]
        first = errors[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return None, f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))


def is_ontology_relation(name: Any) -> bool:
    """True when ``name`` (stripped, lowercased) is one of the 20 relations."""
    return isinstance(name, str) and name.strip().lower() in RELATION_SET


def schema_for_prompt() -> str:
    """A compact JSON example of the output shape, for prompts."""
    example = [
        {
            "source": {"title": "BERT", "type": "entity"},
            "relation": {"type": "developed_by", "weight": 0.95},
            "target": {"title": "Google", "type": "entity"},
        }
    ]
    return json.dumps(example)
