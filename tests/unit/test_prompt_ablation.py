"""Prompt styles of the ablation (07): natural language vs code, rationale from the data, parse back to graph JSON."""

from __future__ import annotations

import json

import pytest

from kgutils.io import read_jsonl
from kgutils.prompts import (
    NO_EVIDENCE,
    PROMPT_STYLES,
    ablation_answer,
    ablation_messages,
    evidence_sentence,
    parse_ablation_answer,
)

TEXT = ("Guernica is a large oil painting by Pablo Picasso, finished in June 1937. "
        "The Museo Reina Sofía in Madrid shows it. Picasso was born in Málaga.")


def T(s, rel, t, w=0.9, st="entity", tt="entity"):
    return {"source": {"title": s, "type": st}, "relation": {"type": rel, "weight": w},
            "target": {"title": t, "type": tt}}


ITEMS = [T("Guernica", "created_by", "Pablo Picasso", 0.95), T("Museo Reina Sofía", "located_in", "Madrid"),
         T("Guernica", "located_in", "Madrid", 0.5)]


@pytest.mark.parametrize("style", PROMPT_STYLES)
@pytest.mark.parametrize("rationale", [False, True])
def test_every_style_parses_back_to_the_same_graph(style, rationale):
    answer = ablation_answer(ITEMS, TEXT, style, rationale)
    assert parse_ablation_answer(answer, style) == (ITEMS, "ok")
    assert parse_ablation_answer(ablation_answer([], TEXT, style, rationale), style) == ([], "ok")


def test_rationales_are_sentences_of_the_passage():
    assert evidence_sentence(TEXT, ITEMS[0]) == "Guernica is a large oil painting by Pablo Picasso, finished in June 1937."
    assert evidence_sentence(TEXT, ITEMS[1]) == "The Museo Reina Sofía in Madrid shows it."
    assert evidence_sentence(TEXT, ITEMS[2]) is None  # no sentence names both: nothing is made up
    code = ablation_answer(ITEMS, TEXT, "code", True)
    assert "# evidence: The Museo Reina Sofía in Madrid shows it." in code and f"# evidence: {NO_EVIDENCE}" in code
    nl = ablation_answer(ITEMS, TEXT, "nl", True)
    assert nl.startswith("Evidence:\n- Guernica | created_by | Pablo Picasso: Guernica is") and "\nAnswer:\n[" in nl


def test_rationales_come_from_real_data():
    rows = [r for r in read_jsonl("data/sample/test.jsonl") if r["triplets"]]
    found = [evidence_sentence(r["text"], it) for r in rows for it in r["triplets"]]
    share = sum(s is not None for s in found) / len(found)
    assert 0.3 < share < 1.0  # most gold triplets have a sentence naming both ends; some are inferred across sentences
    for r in rows:
        for it in r["triplets"]:
            s = evidence_sentence(r["text"], it)
            assert s is None or s in r["text"]


def test_messages_put_demonstrations_first_with_answers_in_the_same_style():
    demo = {"text": TEXT, "triplets": ITEMS[:1]}
    msgs = ablation_messages({"text": "Ada Lovelace wrote notes on the Analytical Engine."}, "code", True, [demo, demo])
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant", "user"]
    assert msgs[1]["content"] == ablation_answer(ITEMS[:1], TEXT, "code", True)
    assert "class Triplet" in msgs[-1]["content"] and msgs[-1]["content"].count("Ada Lovelace") == 1
    assert "Answer:" in ablation_messages({"text": TEXT}, "nl", True)[-1]["content"]
    with pytest.raises(ValueError, match="style"):
        ablation_messages({"text": TEXT}, "yaml", False)


@pytest.mark.parametrize("raw, status, n", [
    ('triplets = [\n    Triplet(Entity("A (b)", "entity"), "part_of", Entity("C", "concept"), 0.7),\n]', "ok", 1),
    ('triplets = [Triplet(Entity("A"), "part_of")]', "bad_items", 0),  # wrong shape: counted, not guessed
    ('triplets = [Triplet(Entity("A", "entity"), "part_of", Entity("C", "entity"), 0.7), Triplet(os.system("x"))]',
     "bad_items", 1),  # nothing is executed: a call that is not a literal is skipped
    ("I think the answer is BERT.", "no_code", 0),
    ("triplets = []", "ok", 0),
])
def test_code_answers_are_read_as_literals_only(raw, status, n):
    items, got = parse_ablation_answer(raw, "code")
    assert (got, len(items)) == (status, n)


def test_nl_answers_use_the_cards_parse_after_the_rationale():
    assert parse_ablation_answer("Evidence:\n- x\nAnswer:\n[]", "nl") == ([], "ok")
    assert parse_ablation_answer("Evidence:\n- x\nAnswer:\n[{", "nl") == ([], "invalid_json")


def test_predict_file_scores_any_style_through_its_parser(tmp_path):
    """07's cells go through the one generator: the ablation prompt as messages, the style's parser for the
    answer, graph items in pred_parsed for the one scorer; the spo task refuses a graph parser."""
    from kgutils.evaluation import evaluate_file
    from kgutils.generate import predict_file
    from kgutils.models import load_model

    lm = load_model("tiny:qwen3")
    rows = [{"id": f"r{i}", "text": TEXT, "triplets": ITEMS} for i in range(3)]
    demos = [{"text": TEXT, "triplets": ITEMS[:1]}]
    seen = []

    def parse(raw):
        seen.append(raw)
        return parse_ablation_answer(raw, "code")

    out = predict_file(lm, rows, tmp_path / "p.jsonl", batch_size=3, max_new_tokens=8, progress=False,
                       messages=lambda r: ablation_messages(r, "code", True, demos), parse=parse)
    recs = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(seen) == 3 and out["n"] == 3
    assert all(r["parse_status"] == parse_ablation_answer(r["pred_raw"], "code")[1] for r in recs)
    assert all(r["pred_parsed"] == r["pred_repaired"] for r in recs)
    assert evaluate_file(tmp_path / "p.jsonl", "hgr", "card", 50, 0)["n"] == 3
    with pytest.raises(ValueError, match="parse applies"):
        predict_file(lm, rows, tmp_path / "q.jsonl", task="spo", messages=lambda r: [], parse=parse)
    with pytest.raises(ValueError, match="needs messages"):
        predict_file(lm, rows, tmp_path / "q.jsonl", task="spo")
