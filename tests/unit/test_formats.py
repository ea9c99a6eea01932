"""Tests for kgutils.formats: the model-output parser and the format converters."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest

from kgutils.formats import (
    PARSE_STATUSES,
    ParseResult,
    extract_json_span,
    graph_to_rebel,
    graph_to_spo,
    parse_output,
    rebel_to_graph,
    rebel_to_records,
    spo_to_graph,
    strip_fences,
    strip_think,
    to_json,
)
from kgutils.ontology import RELATIONS, SPODocument, validate_triplet

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def T(src="BERT", rel="developed_by", tgt="Google", w=0.9, st="entity", tt="entity"):
    """A graph-JSON triplet."""
    return {
        "source": {"title": src, "type": st},
        "relation": {"type": rel, "weight": w},
        "target": {"title": tgt, "type": tt},
    }


A = T()
B = T("GPT-2", "based_on", "Transformer", 0.8, tt="concept")
ARRAY = json.dumps([A, B])


def check_invariants(res: ParseResult) -> None:
    assert isinstance(res, ParseResult)
    assert res.status in PARSE_STATUSES
    assert isinstance(res.items, list)
    assert res.n_dropped >= 0
    assert len(res.items) == res.n_raw_items - res.n_dropped
    assert all(isinstance(n, str) for n in res.notes)


def parse(raw, **kw) -> ParseResult:
    res = parse_output(raw, **kw)
    check_invariants(res)
    return res


# ------------------------------------------------------------------------------------------------
# Plain output and the ok property
# ------------------------------------------------------------------------------------------------


def test_plain_array_is_ok_and_untouched():
    res = parse(ARRAY)
    assert res.status == "ok" and res.ok
    assert res.items == [A, B]
    assert (res.n_raw_items, res.n_dropped) == (2, 0)


def test_empty_array_is_a_valid_answer():
    res = parse("[]")
    assert res.status == "ok" and res.items == [] and res.n_raw_items == 0


@pytest.mark.parametrize(
    ("status", "ok"),
    [("ok", True), ("repaired", True)] + [(s, False) for s in PARSE_STATUSES if s not in ("ok", "repaired")],
)
def test_ok_property(status, ok):
    assert ParseResult([], status, 0, 0, []).ok is ok


# ------------------------------------------------------------------------------------------------
# <think> blocks
# ------------------------------------------------------------------------------------------------


def test_think_block_with_brackets_is_removed():
    raw = '<think>Maybe [BERT] or {"x": 1}? Let me output:</think>\n' + ARRAY
    res = parse(raw)
    assert res.status == "ok"
    assert res.items == [A, B]


def test_strip_think_variants():
    assert strip_think("<think>a [1]</think> [2]") == "[2]"
    assert strip_think("<THINK>a</Think>x<think>b</think>y") == "xy"
    # Orphan closing tag: the opening tag was part of the prompt.
    assert strip_think("reasoning [1] </think> answer") == "answer"
    # Nested tags: a stray closing tag after a closed block still ends the reasoning.
    assert strip_think("<think>a <think> b</think> c </think> answer") == "answer"
    assert strip_think("<think>a</think> b </think> answer") == "answer"
    assert strip_think("x <think>a</think> b </think> answer") == "answer"
    # Unclosed: the generation stopped while reasoning, nothing after it is an answer.
    assert strip_think("pre <think> still thinking [1]") == "pre"
    assert strip_think("no tags") == "no tags"


def test_orphan_closing_think_tag():
    res = parse("we need [1] here</think>" + ARRAY)
    assert res.status == "ok" and res.items == [A, B]


def test_unclosed_think_without_json_is_no_json():
    res = parse("<think>The passage mentions BERT. I should output [")
    assert res.status == "no_json"
    assert res.items == []


def test_unclosed_think_with_json_inside_is_used_and_marked():
    res = parse("<think>Let me list them.\n" + ARRAY)
    assert res.status == "repaired"
    assert res.items == [A, B]
    assert any("unclosed <think>" in n for n in res.notes)


def test_only_a_think_block_is_empty():
    assert parse("<think>nothing to extract</think>\n  ").status == "empty"


# ------------------------------------------------------------------------------------------------
# Fences and prose
# ------------------------------------------------------------------------------------------------


def test_fenced_json():
    res = parse("Here you go:\n```json\n" + ARRAY + "\n```\nLet me know [if] you need more.")
    assert res.status == "ok" and res.items == [A, B]


def test_strip_fences():
    assert strip_fences("x\n```json\n[1]\n```\ny") == "[1]"
    assert strip_fences("```\n{}\n```") == "{}"
    assert strip_fences("no fence") == "no fence"
    assert strip_fences("```json\n[1, 2") == "[1, 2"  # unclosed fence: rest of the text


def test_multiple_fences_take_the_first_that_parses():
    raw = "```python\nprint([1,\n```\nThen:\n```json\n" + json.dumps([A]) + "\n```\n```json\n" + json.dumps([B]) + "\n```"
    res = parse(raw)
    assert res.status == "ok"
    assert res.items == [A]


def test_prose_with_brackets_around_json():
    raw = "Here [as requested] are the triplets (see [1]): " + ARRAY + " Hope {this} helps [2]."
    res = parse(raw)
    assert res.status == "ok"
    assert res.items == [A, B]


@pytest.mark.parametrize("title", ['a "quoted" ]} title', 'one \\"]} quote', "back\\slash ]", "\\"])
def test_extract_json_span_respects_strings_and_escapes(title):
    obj = {"source": {"title": title, "type": "entity"}, "n": [1, {"x": "{["}]}
    text = "prose [not json] " + json.dumps(obj) + " trailing ] } ["
    span = extract_json_span(text)
    assert span == json.dumps(obj)
    assert json.loads(span) == obj


def test_unclosed_prose_bracket_before_the_json():
    res = parse("Weights lie in [0, 1 (inclusive). Output: " + ARRAY)
    assert res.status == "ok"
    assert res.items == [A, B]


def test_extract_json_span_none_cases():
    assert extract_json_span("no json here") is None
    assert extract_json_span('[{"a": 1, "b"') is None  # unbalanced (truncated), nothing complete inside
    # Inside a truncated array the first balanced value is its first complete element.
    assert extract_json_span('[{"a": 1}, {"b"') == '{"a": 1}'
    assert extract_json_span("[see below]") is None
    assert extract_json_span('x {"a": [1, {"b": "]"}]} y') == '{"a": [1, {"b": "]"}]}'


def test_nested_brackets_inside_strings():
    weird = T('f(x) = [a, {b}] "q"', "defined_as", "set {1, 2]", 0.5)
    res = parse("Result: " + json.dumps([weird, A]) + " [end]")
    assert res.status == "ok"
    assert res.items == [weird, A]


# ------------------------------------------------------------------------------------------------
# Dict instead of a list
# ------------------------------------------------------------------------------------------------


def test_single_object_becomes_a_list():
    res = parse(json.dumps(A))
    assert res.status == "repaired" and res.ok
    assert res.items == [A]


@pytest.mark.parametrize("key", ["triplets", "triples", "relations", "Triplets"])
def test_wrapper_keys(key):
    res = parse(json.dumps({key: [A, B], "note": "x"}))
    assert res.status == "repaired"
    assert res.items == [A, B]


def test_wrapper_inside_a_one_element_array():
    res = parse(json.dumps([{"triplets": [A, B]}]))
    assert res.status == "repaired"
    assert res.items == [A, B]


@pytest.mark.parametrize("raw", ['{"answer": "none"}', "{}", '{"triplets": "none"}'])
def test_objects_without_triplets_are_not_a_list(raw):
    res = parse(raw)
    assert res.status == "not_a_list"
    assert res.items == []


# ------------------------------------------------------------------------------------------------
# Truncation
# ------------------------------------------------------------------------------------------------


def test_truncated_in_the_middle_of_an_item():
    raw = ARRAY[: ARRAY.index('"relation"', len(json.dumps(A)))]  # cut inside B, after its source
    res = parse(raw)
    assert res.status == "truncated"
    assert res.items == [A]
    assert (res.n_raw_items, res.n_dropped) == (2, 1)


def test_truncated_in_the_middle_of_a_string_with_brackets():
    raw = json.dumps([A]) [:-1] + ', {"source": {"title": "weird ]} title \\" still [in'
    res = parse(raw)
    assert res.status == "truncated"
    assert res.items == [A]
    assert res.n_dropped == 1


def test_truncated_right_after_a_complete_item():
    raw = "```json\n[" + json.dumps(A) + ",\n  "
    res = parse(raw)
    assert res.status == "truncated"
    assert res.items == [A]
    assert res.n_dropped == 0


def test_truncated_wrapper_object():
    raw = json.dumps({"triplets": [A, B]})[:-30]
    res = parse(raw)
    assert res.status == "truncated"
    assert res.items == [A]
    assert res.n_dropped == 1


def test_truncated_single_object_keeps_nothing():
    raw = json.dumps(A)[:-20]
    res = parse(raw)
    assert res.status == "truncated"
    assert res.items == []
    assert (res.n_raw_items, res.n_dropped) == (1, 1)


def test_truncation_is_salvaged_without_repair_too():
    res = parse(ARRAY[:-15], repair=False)
    assert res.status == "truncated"
    assert res.items == [A]


def test_truncation_takes_precedence_over_item_repairs_in_status():
    flat = {"head": "X", "relation": "uses", "tail": "Y", "weight": 0.5}
    raw = json.dumps([flat, A])[:-10]
    res = parse(raw)
    assert res.status == "truncated"
    assert res.items == [T("X", "uses", "Y", 0.5)]


# ------------------------------------------------------------------------------------------------
# JSON syntax repairs
# ------------------------------------------------------------------------------------------------


def test_trailing_comma():
    raw = json.dumps([A, B])[:-1] + ",\n]"
    assert parse(raw).items == [A, B]
    assert parse(raw).status == "repaired"
    assert parse(raw, repair=False).status == "invalid_json"


def test_python_style_literals():
    raw = repr([A, B])  # single quotes, Python repr
    res = parse(raw)
    assert res.status == "repaired"
    assert res.items == [A, B]
    assert parse(raw, repair=False).status == "invalid_json"


@pytest.mark.parametrize("sep", [" ", "\n", " oops, ", " (and) "])
def test_missing_commas_and_junk_between_items(sep):
    raw = "[" + json.dumps(A) + sep + json.dumps(B) + "]"
    res = parse(raw)
    assert res.status == "repaired"
    assert res.items == [A, B]
    assert parse(raw, repair=False).status == "invalid_json"


def test_objects_one_after_another_are_joined():
    raw = json.dumps(A) + "\n" + json.dumps(B) + "\n"
    res = parse(raw)
    assert res.status == "repaired" and res.items == [A, B]
    assert parse(raw, repair=False).items == [A]


def test_malformed_item_in_the_middle_is_dropped():
    raw = "[" + json.dumps(A) + ', {"source": oops}, ' + json.dumps(B) + "]"
    res = parse(raw)
    assert res.status == "bad_items"
    assert res.items == [A, B]
    assert (res.n_raw_items, res.n_dropped) == (3, 1)
    assert parse(raw, repair=False).status == "invalid_json"


# ------------------------------------------------------------------------------------------------
# Item repairs
# ------------------------------------------------------------------------------------------------


def with_weight(w):
    item = copy.deepcopy(A)
    item["relation"]["weight"] = w
    return item


@pytest.mark.parametrize(
    ("given", "expected"),
    [("0.9", 0.9), (" 0.25 ", 0.25), (90, 0.9), ("90", 0.9), ("90%", 0.9), ("7.5 %", 0.075), (100, 1.0)],
)
def test_weight_repairs(given, expected):
    res = parse(json.dumps([with_weight(given)]))
    assert res.status == "repaired"
    assert res.items[0]["relation"]["weight"] == pytest.approx(expected)
    assert isinstance(res.items[0]["relation"]["weight"], float)


@pytest.mark.parametrize("given", ["high", True, None, -0.1, 150, "", [0.9]])
def test_unrepairable_weights_keep_the_item_unchanged(given):
    item = with_weight(given)
    res = parse(json.dumps([item, A]))
    assert res.status == "bad_items"
    assert res.items == [item, A]  # kept as produced, so the metric sees it as invalid
    assert res.n_dropped == 0
    assert any("item 0" in n and "weight" in n for n in res.notes)


def test_nan_weight_is_unrepairable():
    res = parse('[{"source": {"title": "a", "type": "entity"}, "relation": {"type": "r", "weight": NaN},'
                ' "target": {"title": "b", "type": "entity"}}]')
    assert res.status == "bad_items"
    assert math.isnan(res.items[0]["relation"]["weight"])


def test_valid_integer_weight_is_not_changed():
    res = parse(json.dumps([with_weight(1)]))
    assert res.status == "ok"
    assert res.items[0]["relation"]["weight"] == 1


def test_missing_weight_keeps_item_unchanged():
    item = copy.deepcopy(A)
    del item["relation"]["weight"]
    res = parse(json.dumps([item]))
    assert res.status == "bad_items"
    assert res.items == [item]
    assert any("weight" in n and "missing" in n for n in res.notes)


def test_bare_string_entities():
    item = {"source": "BERT", "relation": {"type": "developed_by", "weight": 0.9}, "target": " Google "}
    res = parse(json.dumps([item]))
    assert res.status == "repaired"
    assert res.items == [A]


def test_entity_type_is_lowercased_and_defaulted():
    item = {"source": {"title": "BERT", "type": " Entity"}, "relation": {"type": "developed_by", "weight": 0.9},
            "target": {"name": "Google"}}
    res = parse(json.dumps([item]))
    assert res.status == "repaired"
    assert res.items == [A]


@pytest.mark.parametrize("rtype", ["Developed By", "developed-by", "developedBy", "DEVELOPED_BY", " developed  by "])
def test_relation_type_snake_case(rtype):
    res = parse(json.dumps([T(rel=rtype)]))
    assert res.status == "repaired"
    assert res.items[0]["relation"]["type"] == "developed_by"


def test_bare_string_relation_without_weight_is_bad():
    item = {"source": {"title": "BERT", "type": "entity"}, "relation": "developed_by",
            "target": {"title": "Google", "type": "entity"}}
    res = parse(json.dumps([item]))
    assert res.status == "bad_items"
    assert res.items == [item]


def test_bare_string_relation_with_top_level_weight_is_repaired():
    item = {"source": "BERT", "relation": "Developed By", "target": "Google", "weight": "0.9"}
    res = parse(json.dumps([item]))
    assert res.status == "repaired"
    assert res.items == [A]


def test_weight_at_the_top_level_moves_into_the_relation():
    item = {"source": A["source"], "relation": {"type": "developed_by"}, "target": A["target"], "confidence": 0.9}
    res = parse(json.dumps([item]))
    assert res.status == "repaired"
    assert res.items == [A]


def test_extra_keys_are_preserved():
    item = {**A, "evidence": "BERT was developed by Google."}
    assert parse(json.dumps([item])).items == [item]
    item2 = {"source": "BERT", "relation": "developed_by", "target": "Google", "weight": 0.9, "evidence": "e"}
    assert parse(json.dumps([item2])).items == [{**A, "evidence": "e"}]


@pytest.mark.parametrize(
    "flat",
    [
        {"head": "BERT", "relation": "developed_by", "tail": "Google", "weight": 0.9},
        {"subject": "BERT", "predicate": "developed by", "object": "Google", "confidence": 0.9},
        {"Head": "BERT", "Relation": "Developed By", "Tail": "Google", "score": "90%"},
        {"head": "BERT", "type": "developed_by", "tail": "Google", "weight": 0.9},  # REBEL record shape
        {"subject": "BERT", "predicate": "developed_by", "object": "Google",
         "qualifiers": {"confidence": 0.9, "subject_type": "entity", "object_type": "entity"}},
        ["BERT", "developed_by", "Google", 0.9],
    ],
)
def test_flat_variants_are_converted(flat):
    res = parse(json.dumps([flat]))
    assert res.status == "repaired"
    assert res.items == [A]


def test_flat_variant_with_types():
    flat = {"head": "GPT-2", "head_type": "Entity", "relation": "based_on", "tail": "Transformer",
            "tail_type": "concept", "weight": 0.8}
    assert parse(json.dumps([flat])).items == [B]


def test_spo_document_is_unwrapped_and_converted():
    doc = graph_to_spo([A, B])
    res = parse(json.dumps(doc))
    assert res.status == "repaired"
    assert res.items == [A, B]


def test_non_object_items_are_kept_and_flagged():
    res = parse(json.dumps([A, "BERT developed_by Google", 3, None]))
    assert res.status == "bad_items"
    assert res.items == [A, "BERT developed_by Google", 3, None]
    assert res.n_dropped == 0


def test_empty_title_is_flagged():
    item = T(src="  ")
    res = parse(json.dumps([item]))
    assert res.status == "bad_items"
    assert res.items == [item]


def test_repair_false_leaves_items_alone():
    flat = {"head": "BERT", "relation": "Developed By", "tail": "Google", "weight": "0.9"}
    str_weight = with_weight("0.9")
    res = parse(json.dumps([flat, str_weight, A]), repair=False)
    assert res.items == [flat, str_weight, A]
    assert res.status == "bad_items"
    # With repair, both become the same valid triplet.
    assert parse(json.dumps([flat, str_weight, A])).items == [A, A, A]


def test_repair_false_does_not_fix_valid_but_unusual_items():
    item = T(rel="Developed By", st="Entity")
    res = parse(json.dumps([item]), repair=False)
    assert res.status == "ok"
    assert res.items == [item]


def test_repaired_items_pass_the_ontology():
    raw = json.dumps([
        {"source": "BERT", "relation": {"type": "Developed By", "weight": "95%"}, "target": {"title": "Google"}},
        {"subject": "GPT-2", "predicate": "based-on", "object": "Transformer", "confidence": 0.8},
    ])
    res = parse(raw)
    assert res.status == "repaired"
    for item in res.items:
        triplet, reason = validate_triplet(item)
        assert reason is None, reason


# ------------------------------------------------------------------------------------------------
# Inputs that must never raise
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (None, "empty"),
        ("", "empty"),
        ("   \n\t", "empty"),
        ("I could not find any relations.", "no_json"),
        ('"just a string"', "no_json"),
        ("[not, json]", "no_json"),
        ('[{"a": 1} {"b": }]', "invalid_json"),
    ],
)
def test_failure_statuses(raw, status):
    res = parse(raw, repair=False)
    assert res.status == status
    assert res.items == []
    assert not res.ok


@pytest.mark.parametrize(
    "raw",
    [
        b'[{"source": "BERT"}]',
        bytearray(b"\xff\xfe garbage ["),
        "\x00\x01\x02",
        "]]]}}}[[[{{{",
        '"\\',
        "[" * 100_000,
        '{"a":' * 50_000,
        "x" * 1_000_000,
        "<think>" * 10_000,
        "```" * 10_001,
        12345,
        ["not", "a", "string"],
        {"triplets": [A]},
    ],
)
def test_odd_inputs_never_raise(raw):
    for repair in (True, False):
        parse(raw, repair=repair)


def test_bytes_and_decoded_inputs():
    assert parse(ARRAY.encode()).items == [A, B]
    assert parse({"triplets": [A]}).items == [A]


def test_random_junk_never_raises():
    rng = random.Random(1234)
    atoms = ["[", "]", "{", "}", '"', "\\", ",", ":", " ", "\n", "a", "7", "0.5", "-", "true", "null", "NaN", "'",
             "<think>", "</think>", "```", "```json\n", '"source"', '"relation"', '"target"', '"title"', '"weight"',
             '"triplets"', '{"title": "x", "type": "entity"}', json.dumps(A), "<triplet>", "<subj>", "<obj>", "%",
             "é", "\u2028", "\ud800"]

    def junk(depth: int = 0) -> str:
        parts = []
        for _ in range(rng.randint(0, 12)):
            r = rng.random()
            if r < 0.15 and depth < 6:
                open_, close = rng.choice([("[", "]"), ("{", "}"), ('"', '"')])
                inner = junk(depth + 1)
                # Sometimes leave the bracket open, like a truncated generation.
                parts.append(open_ + inner + (close if rng.random() < 0.8 else ""))
            else:
                parts.append(rng.choice(atoms))
        return "".join(parts)

    statuses = set()
    for _ in range(3000):
        text = junk()
        for repair in (True, False):
            res = parse(text, repair=repair)
            statuses.add(res.status)
        rebel_to_records(text)
        rebel_to_graph(text)
        extract_json_span(text)
        strip_think(text)
        strip_fences(text)
    # The generator is varied enough to reach most outcomes: guards against a parser that gives up early.
    assert {"ok", "no_json", "truncated", "bad_items", "not_a_list"} <= statuses


# ------------------------------------------------------------------------------------------------
# to_json
# ------------------------------------------------------------------------------------------------


def test_to_json_is_compact_canonical_and_round_trips():
    scrambled = {"target": {"type": "entity", "title": "Zürich"}, "relation": {"weight": 0.7, "type": "located_in"},
                 "source": {"type": "entity", "title": "ETH"}}
    text = to_json([scrambled])
    assert text == ('[{"source":{"title":"ETH","type":"entity"},"relation":{"type":"located_in","weight":0.7},'
                    '"target":{"title":"Zürich","type":"entity"}}]')
    res = parse(text)
    assert res.status == "ok" and res.items == [scrambled]
    assert to_json([]) == "[]"


def test_to_json_rejects_nan():
    with pytest.raises(ValueError):
        to_json([with_weight(float("nan"))])


# ------------------------------------------------------------------------------------------------
# SPO converters
# ------------------------------------------------------------------------------------------------


def test_graph_to_spo_shape():
    doc = graph_to_spo([A, B])
    assert doc == {
        "triples": [
            {"subject": "BERT", "predicate": "developed_by", "object": "Google",
             "qualifiers": {"confidence": 0.9, "subject_type": "entity", "object_type": "entity"}},
            {"subject": "GPT-2", "predicate": "based_on", "object": "Transformer",
             "qualifiers": {"confidence": 0.8, "subject_type": "entity", "object_type": "concept"}},
        ]
    }
    SPODocument.model_validate(doc)  # conforms to the Gemma recipe's model


def test_spo_round_trip():
    items = [A, B, T("ETH", "located_in", "Zürich", 0.0)]
    assert spo_to_graph(graph_to_spo(items)) == items
    assert spo_to_graph(graph_to_spo(items)["triples"]) == items  # a bare list works too


def test_spo_to_graph_defaults_and_tolerance():
    doc = {"triples": [
        {"subject": "BERT", "predicate": "Developed By", "object": "Google"},
        {"subject": "X", "predicate": "uses", "object": "Y", "qualifiers": {"confidence": "high"}},
        {"subject": "", "predicate": "uses", "object": "Y"},  # incomplete: skipped
        {"predicate": "uses"},
        "junk",
    ]}
    out = spo_to_graph(doc, default_weight=0.5)
    assert out == [T("BERT", "developed_by", "Google", 0.5), T("X", "uses", "Y", 0.5)]
    assert spo_to_graph({"nothing": 1}) == []
    assert spo_to_graph("junk") == []


@pytest.mark.skipif(not (SHARED_DATA / "rebel" / "sample.jsonl").exists(), reason="shared REBEL sample absent")
def test_spo_to_graph_reads_the_rebel_sample():
    """Real REBEL rows hold subject/predicate/object objects with a ``surfaceform``."""
    with open(SHARED_DATA / "rebel" / "sample.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(line) for _, line in zip(range(50), fh)]
    n = 0
    for row in rows:
        items = spo_to_graph(row)
        assert len(items) == len(row["triples"])
        for item, tr in zip(items, row["triples"]):
            assert item["source"]["title"] == tr["subject"]["surfaceform"].strip()
            assert item["target"]["title"] == tr["object"]["surfaceform"].strip()
            rtype = item["relation"]["type"]
            assert rtype and " " not in rtype and rtype == rtype.lower()
            n += 1
        # Through REBEL text and back: the same items, grouped by source in order of first appearance.
        heads = [i["source"]["title"] for i in items]
        grouped = sorted(items, key=lambda i: heads.index(i["source"]["title"]))
        back = rebel_to_graph(graph_to_rebel(items))
        assert [(b["source"]["title"], b["target"]["title"]) for b in back] == [
            (" ".join(g["source"]["title"].split()), " ".join(g["target"]["title"].split())) for g in grouped
        ]
    assert n > 50


# ------------------------------------------------------------------------------------------------
# REBEL converters
# ------------------------------------------------------------------------------------------------


def test_graph_to_rebel_groups_by_subject():
    items = [A, T("BERT", "introduces", "masked language modelling"), B, T("BERT", "part_of", "NLP")]
    text = graph_to_rebel(items)
    assert text == ("<triplet> BERT <subj> Google <obj> developed by <subj> masked language modelling "
                    "<obj> introduces <subj> NLP <obj> part of <triplet> GPT-2 <subj> Transformer <obj> based on")
    assert graph_to_rebel([]) == ""


def test_rebel_round_trip_exact():
    items = [T(w=1.0), T("BERT", "part_of", "NLP", 1.0), T("GPT-2", "based_on", "Transformer", 1.0)]
    assert rebel_to_graph(graph_to_rebel(items)) == items


def test_rebel_round_trip_drops_types_and_weights():
    assert rebel_to_graph(graph_to_rebel([B])) == [T("GPT-2", "based_on", "Transformer", 1.0)]
    assert rebel_to_graph(graph_to_rebel([B]), default_weight=0.3)[0]["relation"]["weight"] == 0.3


def test_rebel_round_trip_property():
    rng = random.Random(7)
    words = ["BERT", "Google", "GPT-2", "Transformer", "ETH Zürich", "self-attention", "2019", "A.I.", "x"]
    for _ in range(300):
        heads = rng.sample(words, rng.randint(1, 4))
        items = []
        for h in heads:  # same-subject items adjacent, as the linearisation groups them
            for _ in range(rng.randint(1, 3)):
                tail = " ".join(rng.sample(words, rng.randint(1, 2)))
                items.append(T(h, rng.choice(RELATIONS), tail, 1.0))
        assert rebel_to_graph(graph_to_rebel(items)) == items


def test_rebel_decoding_messy_text():
    text = ("<s><triplet>  Transportation Journal <subj> Penn State\nUniversity Press <obj> publisher"
            "<subj> academic journal <obj> instance of </s><pad><pad>")
    assert rebel_to_records(text) == [
        {"head": "Transportation Journal", "type": "publisher", "tail": "Penn State University Press"},
        {"head": "Transportation Journal", "type": "instance of", "tail": "academic journal"},
    ]
    assert rebel_to_graph(text)[1] == T("Transportation Journal", "instance_of", "academic journal", 1.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Missing relation at the end (cut off): dropped.
        ("<triplet> A <subj> B <obj> r1 <subj> C <obj>", [("A", "r1", "B")]),
        # Tail without relation, followed by a new tail: the incomplete one is dropped.
        ("<triplet> A <subj> B <subj> C <obj> r", [("A", "r", "C")]),
        # Relation without tail: ignored, later tails keep the head.
        ("<triplet> A <obj> r0 <subj> C <obj> r", [("A", "r", "C")]),
        # Empty head: dropped.
        ("<triplet> <subj> B <obj> r <triplet> D <subj> E <obj> s", [("D", "s", "E")]),
        # Missing first <triplet> (eaten by the tokenizer): leading text is the head.
        ("<s>A <subj> B <obj> r</s>", [("A", "r", "B")]),
        # Nothing usable.
        ("", []),
        ("<pad><pad></s>", []),
        ("just prose", []),
        ("<triplet><triplet><subj><obj>", []),
    ],
)
def test_rebel_decoding_incomplete_parts(text, expected):
    assert [(r["head"], r["type"], r["tail"]) for r in rebel_to_records(text)] == expected


def test_rebel_decoding_never_raises_on_non_strings():
    assert rebel_to_records(None) == []  # type: ignore[arg-type]
    assert rebel_to_graph(123) == []  # type: ignore[arg-type]
