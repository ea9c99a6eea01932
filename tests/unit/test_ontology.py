"""Tests for kgutils.ontology: the relation set, the strict models and the JSON schema."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from kgutils.ontology import (
    ENTITY_TYPE_SET,
    ENTITY_TYPES,
    RELATION_SET,
    RELATIONS,
    Extraction,
    Node,
    Relation,
    RelationExample,
    SPODocument,
    SPOTriple,
    Triplet,
    extraction_json_schema,
    is_ontology_relation,
    schema_for_prompt,
    validate_triplet,
)

# The ontology as the design document lists it.
DESIGN_RELATIONS = (
    "implements trained_on evaluates part_of introduces extends depends_on contrasts_with applied_to measured_by "
    "founded_by developed_by defined_as consists_of is_type_of based_on used_for created_by located_in "
    "predecessor_of"
).split()

VALID = {
    "source": {"title": "BERT", "type": "entity"},
    "relation": {"type": "developed_by", "weight": 0.95},
    "target": {"title": "Google", "type": "entity"},
}


def variant(path: str, value: Any = None, *, delete: bool = False) -> dict:
    """A copy of VALID with the dotted ``path`` set to ``value`` (or deleted)."""
    item = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = item
    for p in parents:
        node = node[p]
    if delete:
        del node[last]
    else:
        node[last] = value
    return item


# ------------------------------------------------------------------------------------------------
# The relation set
# ------------------------------------------------------------------------------------------------


def test_twenty_unique_relations_matching_the_design():
    assert len(RELATIONS) == 20
    assert len(set(RELATIONS)) == 20
    assert list(RELATIONS) == DESIGN_RELATIONS
    assert RELATION_SET == frozenset(DESIGN_RELATIONS)
    assert all(r == r.strip().lower() and " " not in r for r in RELATIONS)


def test_two_unique_entity_types():
    assert ENTITY_TYPES == ("entity", "concept")
    assert ENTITY_TYPE_SET == {"entity", "concept"}


@pytest.mark.parametrize(("name", "expected"), [("developed_by", True), (" Developed_By ", True),
                                                ("developed by", False), ("invented_by", False), (None, False)])
def test_is_ontology_relation(name, expected):
    assert is_ontology_relation(name) is expected


# ------------------------------------------------------------------------------------------------
# Triplet validation
# ------------------------------------------------------------------------------------------------


def test_valid_triplet_validates():
    triplet, reason = validate_triplet(VALID)
    assert reason is None
    assert isinstance(triplet, Triplet)
    assert triplet.relation.type == "developed_by"
    assert triplet.relation.weight == 0.95
    assert triplet.model_dump() == VALID


@pytest.mark.parametrize("rel", RELATIONS)
def test_every_relation_and_type_validates(rel):
    item = variant("relation.type", rel)
    item["target"]["type"] = "concept"
    assert validate_triplet(item)[1] is None


@pytest.mark.parametrize("weight", [0, 0.0, 1, 1.0, 0.5])
def test_boundary_weights_validate(weight):
    assert validate_triplet(variant("relation.weight", weight))[1] is None


@pytest.mark.parametrize(
    ("item", "field"),
    [
        (variant("relation.type", "invented_by"), "relation.type"),
        (variant("relation.type", "Developed By"), "relation.type"),
        (variant("relation.weight", 1.5), "relation.weight"),
        (variant("relation.weight", -0.01), "relation.weight"),
        (variant("relation.weight", True), "relation.weight"),
        (variant("relation.weight", False), "relation.weight"),
        (variant("relation.weight", "0.9"), "relation.weight"),  # strings are not coerced
        (variant("relation.weight", None), "relation.weight"),
        (variant("relation.weight", delete=True), "relation.weight"),
        (variant("source.title", ""), "source.title"),
        (variant("target.title", "   "), "target.title"),
        (variant("source.type", "Entity"), "source.type"),
        (variant("target.type", "person"), "target.type"),
        (variant("evidence", "BERT was developed by Google."), "evidence"),
        (variant("source.id", 3), "source.id"),
        (variant("relation.note", "x"), "relation.note"),
    ],
)
def test_invalid_triplets_are_rejected_with_the_field(item, field):
    triplet, reason = validate_triplet(item)
    assert triplet is None
    assert isinstance(reason, str)
    assert reason.startswith(field), reason


def test_weight_reasons_say_why():
    assert "boolean" in validate_triplet(variant("relation.weight", True))[1]
    assert "less than or equal to 1" in validate_triplet(variant("relation.weight", 2))[1]


@pytest.mark.parametrize("obj", [None, 1, "BERT developed_by Google", [], [VALID], {}, {"source": None}])
def test_validate_triplet_never_raises(obj):
    triplet, reason = validate_triplet(obj)
    assert triplet is None
    assert reason


def test_title_is_stripped():
    triplet, _ = validate_triplet(variant("source.title", "  BERT "))
    assert triplet.source.title == "BERT"


def test_models_forbid_extra_keys_directly():
    with pytest.raises(ValueError):
        Node(title="x", type="entity", extra=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        Relation(type="used_for", weight=0.5, note="x")  # type: ignore[call-arg]
    assert Relation(type="used_for", weight=0.5).weight == 0.5


def test_extraction_root_model_validates_an_array():
    ext = Extraction.model_validate([VALID, VALID])
    assert len(ext.root) == 2
    assert ext.model_dump() == [VALID, VALID]
    with pytest.raises(ValueError):
        Extraction.model_validate([VALID, variant("relation.type", "nope")])


def test_schema_for_prompt_example_is_valid():
    example = json.loads(schema_for_prompt())
    assert isinstance(example, list) and example
    for item in example:
        assert validate_triplet(item)[1] is None


# ------------------------------------------------------------------------------------------------
# The JSON schema
# ------------------------------------------------------------------------------------------------


def resolve(schema: dict, node: dict) -> dict:
    """Follow local ``$ref`` pointers (``#/$defs/Name``) until a concrete schema."""
    seen = 0
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = schema
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
        seen += 1
        assert seen < 10, "reference cycle"
    return node


def walk(node: Any) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)


def test_extraction_schema_is_an_array_of_triplets_with_the_relation_enum():
    schema = extraction_json_schema()
    assert json.loads(json.dumps(schema)) == schema  # valid JSON
    assert schema["type"] == "array"
    assert "2020-12" in schema["$schema"]
    item = resolve(schema, schema["items"])
    assert item["type"] == "object"
    assert set(item["required"]) == {"source", "relation", "target"}
    relation = resolve(schema, item["properties"]["relation"])
    assert relation["properties"]["type"]["enum"] == list(RELATIONS)
    weight = relation["properties"]["weight"]
    assert (weight["minimum"], weight["maximum"]) == (0, 1)
    for side in ("source", "target"):
        node = resolve(schema, item["properties"][side])
        assert node["properties"]["type"]["enum"] == list(ENTITY_TYPES)
        assert node["additionalProperties"] is False
    # Exactly one enum in the whole schema lists the relations, and every $ref resolves.
    enums = [n["enum"] for n in walk(schema) if "enum" in n]
    assert sum(1 for e in enums if sorted(e) == sorted(RELATIONS)) == 1
    for n in walk(schema):
        if "$ref" in n:
            resolve(schema, n)


def test_extraction_schema_accepts_and_rejects_with_jsonschema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = extraction_json_schema()
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert validator.is_valid([VALID])
    assert validator.is_valid([])
    assert not validator.is_valid(VALID)  # an object, not an array
    assert not validator.is_valid([variant("relation.type", "invented_by")])
    assert not validator.is_valid([variant("relation.weight", 1.5)])
    assert not validator.is_valid([variant("evidence", "x")])


# ------------------------------------------------------------------------------------------------
# SPO and relation-classification records
# ------------------------------------------------------------------------------------------------


def test_spo_triple_round_trip():
    data = {"subject": "BERT", "predicate": "developed_by", "object": "Google",
            "qualifiers": {"confidence": 0.9, "subject_type": "entity"}}
    triple = SPOTriple.model_validate(data)
    assert triple.model_dump() == data
    assert SPOTriple.model_validate(triple.model_dump()) == triple
    assert SPOTriple(subject="a", predicate="p", object="b").qualifiers == {}


def test_spo_document_round_trip_and_rejections():
    doc = {"triples": [{"subject": "a", "predicate": "p", "object": "b", "qualifiers": {}}]}
    assert SPODocument.model_validate(doc).model_dump() == doc
    assert SPODocument().triples == []
    for bad in ({"subject": "", "predicate": "p", "object": "b"}, {"subject": "a", "predicate": "p"},
                {"subject": "a", "predicate": "p", "object": "b", "extra": 1}):
        with pytest.raises(ValueError):
            SPODocument.model_validate({"triples": [bad]})


def test_relation_example_round_trip():
    data = {"text": "<e1>BERT</e1> was built by <e2>Google</e2>.", "head": "BERT", "tail": "Google",
            "label": "developed_by", "dataset": "sample", "id": "7"}
    ex = RelationExample.model_validate(data)
    assert ex.model_dump() == data
    assert RelationExample.model_validate_json(ex.model_dump_json()) == ex
    # Negative labels are allowed; defaults fill dataset and id.
    neg = RelationExample(text="t", head="h", tail="x", label="Other")
    assert (neg.dataset, neg.id) == ("", "")
    with pytest.raises(ValueError):
        RelationExample.model_validate({**data, "text": ""})
    with pytest.raises(ValueError):
        RelationExample.model_validate({**data, "split": "train"})
