"""Hand-computed cases for kgutils.metrics.

Every expected number below is worked out in the comment next to it from the rules in
DESIGN.md ("The Hungarian-matching evaluation"); none is read back from the code.
"""

from __future__ import annotations

import json
import math

import pytest

from kgutils import metrics as M


def T(s, rel, t, w=0.9, st="entity", tt="entity"):
    """A graph-JSON triplet."""
    return {"source": {"title": s, "type": st}, "relation": {"type": rel, "weight": w}, "target": {"title": t, "type": tt}}


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Acme Corp.", "acme"),
        ("Foo, Inc.", "foo"),
        ("X Ltd. Co.", "x"),  # two suffixes, stripped repeatedly
        ("Apple Incorporated", "apple"),
        ("Siemens AG", "siemens"),
        ("Co", "co"),  # a suffix needs a separator before it
        ("Cocoa", "cocoa"),  # ...and a word boundary ("co" inside a word stays)
        ("ＡＣＭＥ_Labs", "acme labs"),  # NFKC folds full-width letters; _ -> space
        ('  "[Deep   Learning]".  ', "deep learning"),  # quotes, brackets, punctuation, spaces
        ("\u201cBERT\u201d", "bert"),  # typographic quotes
        ("(Foo Corp.)", "foo corp"),  # suffix rule runs before bracket stripping, so it misses here
        (None, ""),
        (42, ""),
    ],
)
def test_normalize_title(raw, expected):
    assert M.normalize_title(raw) == expected


def test_normalize_type():
    assert M.normalize_type("  Used_For ") == "used_for"
    assert M.normalize_type(None) == ""
    assert M.normalize_type(3) == ""


# --------------------------------------------------------------------------- parsing


def test_parse_card_output_categories():
    items = [T("a", "part_of", "b")]
    text = json.dumps(items)
    assert M.parse_card_output(text) == (items, "ok")
    # A think block and a ```json fence around the array.
    assert M.parse_card_output(f"<think>maybe [1, 2]?</think>\n```json\n{text}\n```") == (items, "ok")
    # Opening tag was in the prompt: only the stray closing tag appears.
    assert M.parse_card_output(f"I should list triples.</think>\n{text}") == (items, "ok")
    # A plain fence without a language.
    assert M.parse_card_output(f"```\n{text}\n```") == (items, "ok")
    # A single object becomes a one-item list.
    assert M.parse_card_output(json.dumps(items[0])) == (items, "ok")
    assert M.parse_card_output("not json at all") == ([], "invalid_json")
    assert M.parse_card_output('[{"a": 1}') == ([], "invalid_json")  # truncated
    # An unclosed think block is not stripped: the output does not parse.
    assert M.parse_card_output(f"<think>still thinking {text}") == ([], "invalid_json")
    assert M.parse_card_output("42") == ([], "not_a_list")
    assert M.parse_card_output('"a string"') == ([], "not_a_list")
    assert M.parse_card_output("null") == ([], "not_a_list")
    assert M.parse_card_output("") == ([], "empty")
    assert M.parse_card_output("  \n ") == ([], "empty")
    assert M.parse_card_output("<think>only reasoning</think>") == ([], "empty")
    assert M.parse_card_output(None) == ([], "empty")
    assert M.parse_card_output(12) == ([], "invalid_json")


def test_is_valid_item_shape_only():
    assert M.is_valid_item(T("a", "part_of", "b"))
    assert M.is_valid_item(T("a", "not_in_ontology", "b", st="person"))  # ontology not checked
    assert M.is_valid_item(T("a", "part_of", "b", w=1))  # int weight
    assert M.is_valid_item(T("a", "part_of", "b", w=0))
    assert not M.is_valid_item(T("a", "part_of", "b", w=True))  # bool is not a weight
    assert not M.is_valid_item(T("a", "part_of", "b", w=False))
    assert not M.is_valid_item(T("a", "part_of", "b", w=1.5))
    assert not M.is_valid_item(T("a", "part_of", "b", w=-0.1))
    assert not M.is_valid_item(T("a", "part_of", "b", w=float("nan")))
    assert not M.is_valid_item(T("a", "part_of", "b", w="0.9"))
    assert not M.is_valid_item(T(None, "part_of", "b"))
    assert not M.is_valid_item(T("a", 3, "b"))
    assert not M.is_valid_item({"source": {"title": "a", "type": "entity"}, "target": {"title": "b", "type": "entity"}})
    assert not M.is_valid_item({**T("a", "part_of", "b"), "source": "a"})
    assert not M.is_valid_item(["a", "part_of", "b"])


# --------------------------------------------------------------------------- similarity


def test_field_similarity_threshold():
    assert M.field_similarity("bert", "bert") == 1.0
    assert M.field_similarity("", "") == 0.0
    assert M.field_similarity("bert", "") == 0.0
    # "machine learning" (16 chars) vs "machine learning x" (18): 16 matching chars,
    # ratio = 2*16/34 = 16/17; token Jaccard = |{machine, learning}| / 3 = 2/3.
    # 0.5*16/17 + 0.5*2/3 = 41/51 = 0.8039 >= 0.80 -> kept.
    assert M.field_similarity("machine learning", "machine learning x") == pytest.approx(41 / 51)
    # "open ai research lab" (20) vs "...labs" (21): ratio = 40/41; Jaccard = 3/5
    # (lab != labs). 0.5*40/41 + 0.3 = 0.7878 < 0.80 -> 0.
    assert M.field_similarity("open ai research lab", "open ai research labs") == 0.0
    # "a b c d e" vs "a b c d f": ratio 16/18, Jaccard 4/6 -> 0.7778 -> 0.
    assert M.field_similarity("a b c d e", "a b c d f") == 0.0


def test_relation_similarity():
    assert M.relation_similarity("used_for", "used_for") == 1.0
    assert M.relation_similarity("used_for", "used for") == 1.0  # _ -> space, then equal
    # "used for" vs "used by": ratio 2*5/15 = 2/3, Jaccard 1/3 -> 0.5 -> 0.
    assert M.relation_similarity("used_for", "used_by") == 0.0
    assert M.relation_similarity("", "") == 0.0


# --------------------------------------------------------------------------- score_entry

PROMPT = "Extract triplets. BERT was developed by Google. GPT-2 was created by OpenAI."


def test_perfect_entry():
    g = [T("BERT", "developed_by", "Google", w=0.9)]
    r = M.score_entry(PROMPT, g, [T("bert", "Developed_By", "Google Inc.", w=0.95)])
    assert r["schema"] == 1.0 and r["entity_f1"] == 1.0 and r["triplet_f1"] == 1.0
    assert r["relation_acc"] == 1.0 and r["weight"] == 1.0 and r["grounding"] == 1.0
    assert r["composite"] == pytest.approx(1.0)
    (pair,) = r["pairs"]
    assert pair["gold_relation"] == pair["pred_relation"] == "developed_by"
    assert pair["align"] == pytest.approx(1.0)
    assert r["pred_outcomes"] == [{"pred_idx": 0, "weight": 0.95, "correct": True}]


def test_self_loop_dropped_but_counted():
    g = [T("BERT", "developed_by", "Google")]
    p = [T("BERT", "developed_by", "Google"), T("Google", "part_of", "google")]
    # Predicted self-loops are dropped before matching under both metrics.
    cor = M.score_entry(PROMPT, g, p, metric="corrected")
    assert cor["n_self_loops"] == 1 and cor["entity_p"] == pytest.approx(0.5) and cor["grounding"] == pytest.approx(0.5)
    r = M.score_entry(PROMPT, g, p)
    assert r["n_self_loops"] == 1 and r["n_pred"] == 2 and r["n_valid_pred"] == 2
    # TP 1 over 2 predicted items (the self-loop counts): P = .5, R = 1, F1 = 2/3.
    assert r["entity_p"] == pytest.approx(0.5)
    assert r["entity_f1"] == pytest.approx(2 / 3)
    # Grounding = 1 - (0 hard + 1 self-loop) / 2 = 0.5.
    assert r["grounding"] == pytest.approx(0.5)
    assert r["n_unmatched"] == 0  # the self-loop is not an unmatched prediction
    assert [o["pred_idx"] for o in r["pred_outcomes"]] == [0]  # no outcome for the self-loop
    # .30*1 + .25*2/3 + .20*1 + .10*1 + .15*.5 = 0.841667
    assert r["composite"] == pytest.approx(0.30 + 0.25 * 2 / 3 + 0.20 + 0.10 + 0.15 * 0.5)


def test_non_square_assignment_pads_and_keeps_original_indices():
    g = [T("BERT", "developed_by", "Google")]
    p = [
        T("GPT-2", "created_by", "OpenAI"),
        T("Google", "located_in", "OpenAI"),
        T("BERT", "developed_by", "Google"),
    ]
    r = M.score_entry(PROMPT, g, p)
    assert len(r["pairs"]) == 1
    assert (r["pairs"][0]["gold_idx"], r["pairs"][0]["pred_idx"]) == (0, 2)
    assert r["n_unmatched"] == 2 and r["n_missed"] == 0
    assert r["entity_p"] == pytest.approx(1 / 3) and r["entity_r"] == 1.0
    # Both unmatched predictions use ontology relations and titles from the prompt.
    assert r["n_hard_halluc"] == 0 and r["grounding"] == 1.0
    # The other way round: |G| = 3, |P| = 1.
    r2 = M.score_entry(PROMPT, p, g)
    assert (r2["pairs"][0]["gold_idx"], r2["pairs"][0]["pred_idx"]) == (2, 0)
    assert r2["n_missed"] == 2 and r2["entity_p"] == 1.0 and r2["entity_r"] == pytest.approx(1 / 3)


def test_similarity_threshold_decides_entity_match():
    prompt = "machine learning x is part of open ai research labs and ai"
    g = [T("machine learning", "part_of", "AI")]
    # Source 41/51 (>= .80): entity match; align = .45*41/51 + .45 + .10.
    r = M.score_entry(prompt, g, [T("machine learning x", "part_of", "AI")])
    assert r["entity_tp"] == 1 and r["triplet_tp"] == 1
    assert r["pairs"][0]["align"] == pytest.approx(0.45 * 41 / 51 + 0.55)
    # Source 0.7878 -> 0: align = .45 (target) + .10 (relation) = .55 >= .50, so the pair
    # is kept, but without an entity match.
    g2 = [T("open ai research labs", "part_of", "AI")]
    r2 = M.score_entry(prompt, g2, [T("open ai research lab", "part_of", "AI")])
    assert len(r2["pairs"]) == 1 and r2["pairs"][0]["align"] == pytest.approx(0.55)
    assert r2["entity_tp"] == 0 and not r2["pairs"][0]["entity_match"]


def test_alignment_threshold_and_renormalised_composite():
    prompt = "BERT was developed by Google."
    g = [T("BERT", "developed_by", "Google")]
    # Source equal, target different, relation equal: align .45 + .10 = .55 -> kept.
    kept = M.score_entry(prompt, g, [T("BERT", "developed_by", "Microsoft")])
    assert len(kept["pairs"]) == 1 and kept["n_unmatched"] == 0 and kept["n_missed"] == 0
    assert kept["entity_tp"] == 0
    assert kept["relation_acc"] is None and kept["weight"] is None
    # Kept pairs are not checked for hallucination: grounding 1. Composite over schema,
    # entity F1 and grounding only: (.30*1 + .25*0 + .15*1) / (.30 + .25 + .15) = 9/14.
    assert kept["grounding"] == 1.0
    assert kept["composite"] == pytest.approx(0.45 / 0.70)
    # Relation different too: align .45 < .50 -> nothing kept; the prediction is
    # unmatched and "microsoft" is neither in the prompt nor a gold title -> hard.
    dropped = M.score_entry(prompt, g, [T("BERT", "applied_to", "Microsoft")])
    assert dropped["pairs"] == [] and dropped["n_unmatched"] == 1 and dropped["n_missed"] == 1
    assert dropped["n_hard_halluc"] == 1 and dropped["grounding"] == 0.0
    # (.30*1 + .25*0 + .15*0) / .70 = 3/7
    assert dropped["composite"] == pytest.approx(0.30 / 0.70)


def test_invalid_items_count_in_precision_and_schema():
    g = [T("BERT", "developed_by", "Google"), {"broken": True}]
    p = [T("BERT", "developed_by", "Google"), T("GPT-2", "created_by", "OpenAI", w=True), "junk"]
    r = M.score_entry(PROMPT, g, p)
    assert r["n_gold"] == 1  # only valid gold counts
    assert r["n_pred"] == 3 and r["n_valid_pred"] == 1
    assert r["schema"] == pytest.approx(1 / 3)
    assert r["entity_p"] == pytest.approx(1 / 3) and r["entity_r"] == 1.0
    # No hallucination is possible for invalid items: grounding 1 - 0/3 = 1.
    assert r["grounding"] == 1.0


def test_empty_gold():
    for metric in M.METRICS:
        both = M.score_entry("x", [], [], metric=metric)
        assert both["composite"] == 1.0
        some = M.score_entry(PROMPT, [], [T("BERT", "developed_by", "Google")], metric=metric)
        assert some["composite"] == 0.0
        assert some["entity_p"] == 0.0 and some["entity_f1"] == 0.0
    # The card scores a correct empty answer entity F1 0; the corrected variant 1.
    assert M.score_entry("x", [], [])["entity_f1"] == 0.0
    corrected = M.score_entry("x", [], [], metric="corrected")
    assert corrected["entity_f1"] == corrected["triplet_f1"] == corrected["entity_p"] == 1.0
    # Invalid gold items do not make gold non-empty.
    assert M.score_entry("x", [{"bad": 1}], [])["composite"] == 1.0


def test_empty_prediction_with_gold():
    r = M.score_entry(PROMPT, [T("BERT", "developed_by", "Google")], [])
    # Item-wise, schema and grounding are 1.0 for an empty list (the card's numbers)...
    assert r["schema"] == 1.0 and r["grounding"] == 1.0
    assert r["entity_f1"] == 0.0 and r["relation_acc"] is None and r["weight"] is None
    # ...but they are undefined in the composite, which is entity F1 alone: 0.
    # (Counting them would give (.30 + .15) / .70 = .64.)
    assert r["composite"] == 0.0
    assert r["n_missed"] == 1 and r["pred_outcomes"] == []


@pytest.mark.parametrize(
    ("gold_w", "pred_w", "delta", "hgr", "corrected"),
    [
        (0.9, 0.95, 0.04999999999999993, 1.0, 1.0),
        (0.9, 0.75, 0.15000000000000002, 0.5, 0.5),
        (0.9, 0.6, 0.30000000000000004, 0.0, 0.0),
        # 0.10 in decimal, a hair above in binary: the card's plain "<= 0.10" fails, the tolerance passes.
        (0.8, 0.7, 0.10000000000000009, 0.5, 1.0),
        (0.5, 0.3, 0.2, 0.5, 0.5),  # exactly the float 0.2: "<= 0.20" holds for both
        (0.5, 0.29, 0.21000000000000002, 0.0, 0.0),
    ],
)
def test_weight_buckets(gold_w, pred_w, delta, hgr, corrected):
    assert abs(gold_w - pred_w) == delta  # the binary value the buckets see
    g, p = [T("BERT", "developed_by", "Google", w=gold_w)], [T("BERT", "developed_by", "Google", w=pred_w)]
    assert M.score_entry(PROMPT, g, p, metric="hgr")["weight"] == hgr
    assert M.score_entry(PROMPT, g, p, metric="corrected")["weight"] == corrected


def test_weight_score_is_a_mean_over_full_matches():
    names = [("BERT", "Google"), ("GPT-2", "OpenAI"), ("T5", "Google Brain")]
    g = [T(s, "developed_by", t, w=0.5) for s, t in names]
    p = [T(s, "developed_by", t, w=w) for (s, t), w in zip(names, (0.55, 0.65, 0.8))]
    # Deltas .05, .15, .30 -> 1, .5, 0 -> mean .5
    assert M.score_entry(PROMPT, g, p)["weight"] == pytest.approx(0.5)


def test_hallucination_rules():
    prompt = "Deep residual learning networks were trained on ImageNet by Microsoft Research."
    g = [T("ResNet", "trained_on", "ImageNet")]
    match = T("ResNet", "trained_on", "ImageNet")

    def hard(pred):
        return M.score_entry(prompt, g, [match, pred])["n_hard_halluc"]

    # Endpoints in the prompt, ontology relation -> grounded.
    assert hard(T("Microsoft Research", "developed_by", "ImageNet")) == 0
    # Relation outside the ontology -> hard, whatever the endpoints.
    assert hard(T("Microsoft Research", "sponsored", "ImageNet")) == 1
    # An endpoint neither a gold title nor in the prompt -> hard.
    assert hard(T("Microsoft Research", "developed_by", "Stanford")) == 1
    # A gold title counts as known although "resnet" is not in the prompt.
    assert hard(T("ResNet", "developed_by", "Microsoft Research")) == 0
    # Token share: {deep, residual, networks} all in the prompt tokens (not a substring).
    assert hard(T("Deep residual networks", "developed_by", "Microsoft Research")) == 0
    # 3 of 5 tokens in the prompt = 60 % -> known; 2 of 4 = 50 % -> not.
    assert hard(T("deep residual learning foo bar", "developed_by", "ImageNet")) == 0
    assert hard(T("deep residual foo bar", "developed_by", "ImageNet")) == 1
    # Grounding: 1 - 1 hard / 2 items.
    r = M.score_entry(prompt, g, [match, T("Microsoft Research", "sponsored", "ImageNet")])
    assert r["grounding"] == pytest.approx(0.5)


def test_corrected_schema_checks_ontology():
    g = [T("BERT", "developed_by", "Google")]
    p = [T("BERT", "developed_by", "Google"), T("GPT-2", "invented_by", "OpenAI", st="person")]
    hgr = M.score_entry(PROMPT, g, p, metric="hgr")
    cor = M.score_entry(PROMPT, g, p, metric="corrected")
    assert hgr["schema"] == 1.0  # shape only
    assert cor["schema"] == pytest.approx(0.5)  # second item fails the ontology
    # Matching is identical.
    assert hgr["pairs"] == cor["pairs"] and hgr["entity_f1"] == cor["entity_f1"]


@pytest.mark.parametrize("status", ["invalid_json", "truncated", "no_json", "empty", "not_a_list"])
def test_corrected_scores_unparseable_output_as_schema_failure(status):
    g = [T("BERT", "developed_by", "Google")]
    hgr = M.score_entry(PROMPT, g, [], metric="hgr", parse_status=status)
    cor = M.score_entry(PROMPT, g, [], metric="corrected", parse_status=status)
    # The card only sees the empty list: schema 1.0, undefined in the composite, which is entity F1 alone (0).
    assert hgr["schema"] == 1.0 and hgr["composite"] == 0.0
    # Corrected: schema 0 and it counts: (.30 * 0 + .25 * 0) / .55 = 0; entity F1 0 either way.
    assert cor["schema"] == 0.0 and cor["composite"] == 0.0 and cor["entity_f1"] == 0.0
    # On a negative (empty gold) the card calls a non-JSON answer a correct empty answer; corrected does not.
    assert M.score_entry("x", [], [], metric="hgr", parse_status=status)["composite"] == 1.0
    neg = M.score_entry("x", [], [], metric="corrected", parse_status=status)
    assert neg["composite"] == 0.0 and neg["schema"] == 0.0 and neg["entity_f1"] == 0.0


def test_corrected_keeps_parsed_empty_answer_perfect():
    for status in ("ok", "repaired", None):
        r = M.score_entry("x", [], [], metric="corrected", parse_status=status)
        assert r["composite"] == 1.0 and r["schema"] == 1.0


def test_evaluate_reads_parse_status_for_corrected_schema():
    g = [T("BERT", "developed_by", "Google")]
    rows = [
        {"prompt": PROMPT, "gold": g, "pred": g, "parse_status": "ok"},
        {"prompt": PROMPT, "gold": g, "pred": [], "parse_status": "invalid_json"},
        {"prompt": PROMPT, "gold_parsed": g, "pred_raw": "Sure! Here are the triplets:"},  # card layout
    ]
    hgr = M.evaluate(rows, metric="hgr", n_resamples=10)
    cor = M.evaluate(rows, metric="corrected", n_resamples=10)
    # hgr: three schema scores of 1.0. corrected: 1, 0, 0 -> mean 1/3.
    assert hgr["macro"]["schema"] == 1.0
    assert cor["macro"]["schema"] == pytest.approx(1 / 3)


def test_corrected_composite_uses_calibration():
    g = [T("BERT", "developed_by", "Google", w=0.9)]
    p = [T("BERT", "developed_by", "Google", w=0.9), T("GPT-2", "created_by", "OpenAI", w=0.4)]
    hgr = M.score_entry(PROMPT, g, p)
    cor = M.score_entry(PROMPT, g, p, metric="corrected")
    # Outcomes: (.9, correct), (.4, wrong). Brier = ((.1)^2 + (.4)^2) / 2 = .085 -> .915.
    assert hgr["calibration"] == cor["calibration"] == pytest.approx(0.915)
    assert hgr["weight"] == cor["weight"] == 1.0
    # P = 1/2, R = 1, F1 = 2/3; grounding 1 (GPT-2, OpenAI in the prompt).
    base = 0.30 + 0.25 * 2 / 3 + 0.20 + 0.15
    assert hgr["composite"] == pytest.approx(base + 0.10 * 1.0)
    assert cor["composite"] == pytest.approx(base + 0.10 * 0.915)


def test_unknown_metric_raises():
    with pytest.raises(ValueError, match="bogus.*hgr.*corrected"):
        M.score_entry("", [], [], metric="bogus")
    with pytest.raises(ValueError, match="bogus"):
        M.evaluate([], metric="bogus")


# --------------------------------------------------------------------------- evaluate


def test_micro_vs_macro():
    names = [("BERT", "Google"), ("GPT-2", "OpenAI"), ("T5", "Google Brain")]
    a = {"prompt": PROMPT, "gold": [T("BERT", "developed_by", "Google")], "pred": [T("BERT", "developed_by", "Google")]}
    b = {"prompt": PROMPT, "gold": [T(s, "developed_by", t) for s, t in names], "pred": [T("GPT-2", "developed_by", "OpenAI")]}
    res = M.evaluate([a, b], n_resamples=200)
    # Entry F1: a = 1; b: P = 1, R = 1/3, F1 = .5. Macro = .75.
    assert res["macro"]["entity_f1"] == pytest.approx(0.75)
    # Micro: TP 2, predicted 2, gold 4 -> P 1, R .5, F1 2/3.
    assert res["micro"]["entity_p"] == 1.0
    assert res["micro"]["entity_r"] == pytest.approx(0.5)
    assert res["micro"]["entity_f1"] == pytest.approx(2 / 3)
    assert res["micro"]["hard_hallucination_rate"] == 0.0
    assert res["n"] == 2 and res["n_bad_rows"] == 0
    assert [e["index"] for e in res["per_entry"]] == [0, 1]
    assert res["macro_n"]["relation_acc"] == 2


def test_evaluate_card_layout_bad_rows_and_calibration():
    item = T("BERT", "developed_by", "Google", w=0.95)
    rows = [
        # Card layout, prediction parsed here from the raw text.
        {"prompt": PROMPT, "gold_parsed": [item], "pred_raw": f"<think>ok</think>```json\n{json.dumps([item])}\n```"},
        # Card layout with pred_parsed.
        {"prompt": PROMPT, "gold_parsed": [item], "pred_parsed": [item]},
        # Parse failure -> empty prediction.
        {"prompt": PROMPT, "gold_parsed": [item], "pred_raw": "sorry, no JSON"},
        # Bad rows: a non-list prediction and a missing gold.
        {"prompt": PROMPT, "gold": [item], "pred": {"not": "a list"}},
        {"prompt": PROMPT, "pred": []},
    ]
    res = M.evaluate(rows, n_resamples=200)
    assert res["n"] == 5 and res["n_bad_rows"] == 2
    assert res["parse_status_counts"] == {"ok": 1, "invalid_json": 1}
    comps = [e["composite"] for e in res["per_entry"]]
    # 1, 1, 0 (empty prediction), 0 (treated as empty prediction), 1 (empty gold and pred)
    assert comps == pytest.approx([1.0, 1.0, 0.0, 0.0, 1.0])
    assert res["macro"]["composite"] == pytest.approx(0.6)
    # relation_acc is defined for the first two entries only.
    assert res["macro_n"]["relation_acc"] == 2
    assert set(res["ci"]) >= {"composite", "entity_f1", "relation_acc", "schema", "weight", "grounding"}
    lo, hi = res["ci"]["composite"]
    assert lo <= 0.6 <= hi
    cal = res["calibration"]
    # Two outcomes, both weight .95 and correct: bin [.9, 1], Brier = .05^2, ECE = .05.
    assert cal["n"] == 2
    assert cal["brier"] == pytest.approx(0.0025) and cal["ece"] == pytest.approx(0.05)
    assert len(cal["bins"]) == 10 and cal["bins"][9]["count"] == 2 and cal["bins"][0]["count"] == 0
    assert cal["bins"][0]["mean_weight"] is None


def test_calibration_summary_by_hand():
    outcomes = [
        {"weight": 0.3, "correct": True},  # bin 3 (0.3 is the bin's lower edge)
        {"weight": 0.3, "correct": False},
        {"weight": 0.9, "correct": True},  # bin 9
        {"weight": 1.0, "correct": False},  # bin 9 (closed upper edge)
    ]
    cal = M.calibration_summary(outcomes)
    assert cal["bins"][3]["count"] == 2 and cal["bins"][9]["count"] == 2
    # ECE = 2/4 * |.3 - .5| + 2/4 * |.95 - .5| = .1 + .225 = .325
    assert cal["ece"] == pytest.approx(0.325)
    # Brier = (.49 + .09 + .01 + 1) / 4 = .3975
    assert cal["brier"] == pytest.approx(0.3975)
    empty = M.calibration_summary([])
    assert empty["ece"] is None and empty["brier"] is None and empty["n"] == 0


def test_evaluate_empty_input():
    res = M.evaluate([], metric="corrected")
    assert res["n"] == 0 and res["macro"]["composite"] is None
    assert math.isnan(res["ci"]["composite"][0])
    assert res["micro"]["entity_f1"] is None and res["calibration"]["ece"] is None


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci():
    vals = [0.1, 0.4, 0.5, 0.9, 0.7, 0.3, 0.8, 0.2]
    lo, hi = M.bootstrap_ci(vals, n_resamples=500, seed=1)
    mean = sum(vals) / len(vals)
    assert lo < mean < hi and 0.0 <= lo and hi <= 1.0
    assert M.bootstrap_ci(vals, n_resamples=500, seed=1) == (lo, hi)  # seeded
    assert M.bootstrap_ci([0.7]) == (0.7, 0.7)
    assert M.bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)
    assert M.bootstrap_ci([0.5, None]) == (0.5, 0.5)  # None skipped
    lo0, hi0 = M.bootstrap_ci([])
    assert math.isnan(lo0) and math.isnan(hi0)


# --------------------------------------------------------------------------- other scorers


def test_strict_spo_f1():
    gold = [
        [("BERT", "developed_by", "Google"), {"subject": "GPT-2", "predicate": "created_by", "object": "OpenAI"}],
        [T("T5", "developed_by", "Google")],
    ]
    pred = [
        # Normalisation makes the first two match; the duplicate counts once.
        [("bert", "Developed_By", "Google Inc."), ("BERT", "developed_by", "Google"), ("GPT-2", "created_by", "Microsoft")],
        {"triples": [{"subject": "T5", "predicate": "developed_by", "object": "Google", "qualifiers": {}}]},
    ]
    r = M.strict_spo_f1(gold, pred)
    # Doc 1: pred set {bert-google, gpt2-microsoft}, 1 TP; doc 2: 1 TP. TP 2, pred 3, gold 3.
    assert (r["tp"], r["n_pred"], r["n_gold"]) == (2, 3, 3)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    assert r["f1"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        M.strict_spo_f1([[]], [])


def _rel(h, ht, r, t, tt):
    return {"head": h, "head_type": ht, "type": r, "tail": t, "tail_type": tt}


def test_rebel_scores_normalised_strict_boundaries_and_unknown():
    gold = [
        [_rel("Paris", "LOC", "capital_of", "France", "LOC"), _rel("Marie Curie", "PER", "born_in", "Warsaw", "LOC")],
        [_rel("Berlin", "LOC", "capital_of", "Germany", "LOC")],
    ]
    pred = [
        [
            _rel("Paris", "LOC", "capital_of", "France", "LOC"),  # right in both modes
            _rel("Paris", "LOC", "capital_of", "France", "LOC"),  # duplicate: counts once
            _rel("Marie Curie", "ORG", "born_in", "Warsaw", "LOC"),  # wrong head type
        ],
        [_rel("Berlin", "LOC", "located_in", "Germany", "LOC")],  # relation not in gold labels
    ]
    strict = M.rebel_scores(gold, pred, mode="strict", semantics="normalised")
    assert strict["semantics"] == "normalised" and strict["n_pred_ignored"] == 0
    # TP 1 (Paris); predictions 3 (Paris, Curie, unknown); gold 3.
    assert (strict["micro"]["tp"], strict["micro"]["n_pred"], strict["micro"]["n_gold"]) == (1, 3, 3)
    assert strict["micro"]["f1"] == pytest.approx(1 / 3)
    assert strict["per_relation"]["unknown"] == {"p": 0.0, "r": 0.0, "f1": 0.0, "tp": 0, "n_pred": 1, "n_gold": 0}
    # Per relation: capital_of P 1/1, R 1/2, F1 2/3; born_in 0. Macro over the gold labels.
    assert strict["per_relation"]["capital_of"]["f1"] == pytest.approx(2 / 3)
    assert strict["macro"]["f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert strict["macro"]["p"] == pytest.approx(0.5)
    bounds = M.rebel_scores(gold, pred, mode="boundaries", semantics="normalised")
    # Entity types ignored: Curie counts. TP 2 of 3 and 3.
    assert bounds["micro"]["tp"] == 2 and bounds["micro"]["f1"] == pytest.approx(2 / 3)
    assert bounds["per_relation"]["born_in"]["f1"] == 1.0
    # An explicit label set including located_in makes it a known (wrong) relation.
    explicit = M.rebel_scores(
        gold, pred, mode="boundaries", relation_types=["capital_of", "born_in", "located_in"], semantics="normalised"
    )
    assert "unknown" not in explicit["per_relation"]
    assert explicit["per_relation"]["located_in"]["n_pred"] == 1
    assert explicit["macro"]["f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    with pytest.raises(ValueError):
        M.rebel_scores(gold, pred, mode="loose")

    # The same data under REBEL's own semantics (the default): the located_in prediction is
    # ignored, not a false positive. Strict: TP 1, predictions 2 (Paris, Curie), gold 3 ->
    # P 1/2, R 1/3, F1 2/5.
    rebel = M.rebel_scores(gold, pred, mode="strict")
    assert rebel["semantics"] == "rebel" and rebel["n_pred_ignored"] == 1 and rebel["n_gold_ignored"] == 0
    assert (rebel["micro"]["tp"], rebel["micro"]["n_pred"], rebel["micro"]["n_gold"]) == (1, 2, 3)
    assert rebel["micro"]["p"] == pytest.approx(0.5) and rebel["micro"]["f1"] == pytest.approx(0.4)
    assert set(rebel["per_relation"]) == {"capital_of", "born_in"}


def test_normalize_rc_label():
    assert M.normalize_rc_label('Answer: "Cause-Effect(e1,e2)"\nBecause ...') == "cause-effect(e1,e2)"
    assert M.normalize_rc_label("  \n  Member  Of \n") == "member of"
    assert M.normalize_rc_label("'OTHER'") == "other"
    assert M.normalize_rc_label(None) == ""


def test_relation_classification_f1():
    gold = ["Cause-Effect", "Other", "Member-Of", "Other", "no_relation", "Part-Whole"]
    pred = ["Answer: cause-effect", "Member-Of", "other", "Other", "none", "Part-Of"]
    r = M.relation_classification_f1(gold, pred)
    # 1: TP. 2: positive on a negative -> FP. 3: negative predicted for a positive -> FN.
    # 4, 5: negatives both sides -> nothing. 6: wrong positive -> FP and FN.
    assert (r["tp"], r["fp"], r["fn"], r["n"]) == (1, 2, 2, 6)
    assert r["precision"] == pytest.approx(1 / 3) and r["recall"] == pytest.approx(1 / 3)
    assert r["f1"] == pytest.approx(1 / 3)
    # Custom negative labels: "Other" becomes positive.
    r2 = M.relation_classification_f1(["Other"], ["other"], negative_labels={"none"})
    assert r2["tp"] == 1 and r2["f1"] == 1.0
    with pytest.raises(ValueError):
        M.relation_classification_f1(["a"], [])


# --------------------------------------------------------------------------- shared public data (when present)

SHARED = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "conll04" / "test.CoNLL04.json").exists(), reason="shared CoNLL04 data absent")
def test_rebel_scores_on_conll04():
    docs = json.loads((SHARED / "conll04" / "test.CoNLL04.json").read_text())
    gold = []
    for d in docs:
        ents = {(s, e): t for s, e, t in d["entities"]}
        span = lambda s, e: " ".join(d["tokens"][s:e])  # noqa: E731
        gold.append([_rel(span(hs, he), ents[(hs, he)], r, span(ts, te), ents[(ts, te)]) for hs, he, ts, te, r in d["relations"]])
    # REBEL's semantics: sentences are sets of exact (head, head type, relation, tail, tail type).
    n_exact = sum(len({(r["head"], r["head_type"], r["type"], r["tail"], r["tail_type"]) for r in doc}) for doc in gold)
    # Normalised: sets of normalised ones (two exact triples of the test split collapse into one).
    n_norm = sum(
        len({(M.normalize_title(r["head"]), r["head_type"].lower(), r["type"].lower(), M.normalize_title(r["tail"]), r["tail_type"].lower()) for r in doc})
        for doc in gold
    )
    for semantics, n_gold in (("rebel", n_exact), ("normalised", n_norm)):
        same = M.rebel_scores(gold, gold, mode="strict", semantics=semantics)
        assert same["micro"]["f1"] == 1.0 and same["micro"]["n_gold"] == n_gold and same["macro"]["f1"] == 1.0
        # Wrong head types: every prediction fails strict mode and passes boundaries mode.
        retyped = [[{**r, "head_type": "Wrong"} for r in doc] for doc in gold]
        assert M.rebel_scores(gold, retyped, mode="strict", semantics=semantics)["micro"]["tp"] == 0
        assert M.rebel_scores(gold, retyped, mode="boundaries", semantics=semantics)["micro"]["f1"] == 1.0
    # Lower-cased heads: a miss for REBEL, a hit after normalisation.
    lowered = [[{**r, "head": r["head"].lower()} for r in doc] for doc in gold]
    rels = ["Kill", "Live_In", "Located_In", "OrgBased_In", "Work_For"]
    # (Only heads already in lower case can still match exactly; boundaries keys are (relation, head, tail).)
    n_lower = sum(len({(r["type"], r["head"], r["tail"]) for r in doc if r["head"] == r["head"].lower()}) for doc in gold)
    assert M.rebel_scores(gold, lowered, "boundaries", rels)["micro"]["tp"] == n_lower
    assert M.rebel_scores(gold, lowered, "boundaries", rels, semantics="normalised")["micro"]["f1"] == 1.0


@pytest.mark.skipif(not (SHARED / "rebel" / "sample.jsonl").exists(), reason="shared REBEL sample absent")
def test_gold_scored_against_itself_on_rebel_sample():
    rows = [json.loads(line) for line in (SHARED / "rebel" / "sample.jsonl").read_text().splitlines()[:150] if line.strip()]
    spo = [[(t["subject"]["surfaceform"], t["predicate"]["surfaceform"], t["object"]["surfaceform"]) for t in r["triples"]] for r in rows]
    assert M.strict_spo_f1(spo, spo)["f1"] == 1.0
    # Keep every document's first triple only: precision 1, recall = kept / all (as sets).
    firsts = [doc[:1] for doc in spo]
    n_all = sum(len({(M.normalize_title(s), M.normalize_type(p), M.normalize_title(o)) for s, p, o in doc}) for doc in spo)
    r = M.strict_spo_f1(spo, firsts)
    assert r["precision"] == 1.0 and r["recall"] == pytest.approx(r["tp"] / n_all)
    # The graph-JSON scorer on the same triples: every gold item is found except self-loops, which
    # the prediction drops and the card keeps in |valid G| (hgr); corrected leaves them out of both.
    entries = [
        {"prompt": row["text"], "gold": [T(s, "part_of", o) for s, _, o in doc], "pred": [T(s, "part_of", o) for s, _, o in doc]}
        for row, doc in zip(rows, spo)
    ]
    res = M.evaluate(entries, n_resamples=100)
    for e in res["per_entry"]:
        if e["n_gold"]:
            tp = e["n_gold"] - e["n_gold_self_loops"]
            assert e["entity_tp"] == tp
            assert e["entity_f1"] == pytest.approx(2 * tp / (e["n_gold"] + e["n_pred"]))
    assert res["micro"]["hard_hallucination_rate"] == 0.0
