"""Where ``hgr`` reproduces the seed card's evaluator to the bit and ``corrected`` departs from it,
and REBEL's own ``re_score`` semantics against the normalised variant of :func:`kgutils.metrics.rebel_scores`.

Each case isolates one difference; every expected number is worked out by hand in the comments from
DESIGN.md ("The Hungarian-matching evaluation", "Other scorers") and REBEL's ``src/score.py``.
"""

from __future__ import annotations

import pytest

from kgutils import metrics as M


def T(s, rel, t, w=0.9, st="entity", tt="entity"):
    """A graph-JSON triplet."""
    return {"source": {"title": s, "type": st}, "relation": {"type": rel, "weight": w}, "target": {"title": t, "type": tt}}


PROMPT = "BERT was developed by Google."
MATCH = T("BERT", "developed_by", "Google")
# "Acme Corporation" and "Acme Corp" both normalise to "acme": a gold self-loop.
LOOP = T("Acme Corporation", "part_of", "Acme Corp")


# --------------------------------------------------------------------------- gold self-loops (difference e)


def test_gold_self_loop_counts_in_recall_under_hgr_only():
    g, p = [MATCH, LOOP], [MATCH]
    hgr = M.score_entry(PROMPT, g, p, metric="hgr")
    # The card keeps the loop: |valid G| = 2, TP 1 -> P 1/1, R 1/2, F1 2/3; the loop is missed.
    assert (hgr["n_gold"], hgr["n_gold_self_loops"], hgr["entity_tp"], hgr["n_missed"]) == (2, 1, 1, 1)
    assert hgr["entity_p"] == 1.0 and hgr["entity_r"] == 0.5 and hgr["entity_f1"] == pytest.approx(2 / 3)
    # .30 * 1 + .25 * 2/3 + .20 * 1 + .10 * 1 + .15 * 1 = 0.91667
    assert hgr["composite"] == pytest.approx(0.30 + 0.25 * 2 / 3 + 0.20 + 0.10 + 0.15)
    cor = M.score_entry(PROMPT, g, p, metric="corrected")
    # Corrected drops it: |valid G| = 1, R 1, F1 1; calibration 1 - (.9 - 1)^2 = .99.
    assert (cor["n_gold"], cor["n_gold_self_loops"], cor["entity_tp"], cor["n_missed"]) == (1, 1, 1, 0)
    assert cor["entity_r"] == 1.0 and cor["entity_f1"] == 1.0
    assert cor["composite"] == pytest.approx(0.30 + 0.25 + 0.20 + 0.10 * 0.99 + 0.15)


def test_gold_self_loop_is_matchable_under_hgr():
    # "acme" -> "acme group" is not a loop. Against the loop "acme" -> "acme": source 1.0, target
    # "acme" vs "acme group" (Jaccard 1/2, at most .5 + .25 = .75 < .80) -> 0, relation 1.0:
    # align .45 + .10 = .55 >= .50 -> a kept pair without an entity match.
    g, p = [LOOP], [T("Acme", "part_of", "Acme Group")]
    hgr = M.score_entry("Acme and the Acme Group.", g, p, metric="hgr")
    assert [(d["gold_idx"], d["pred_idx"]) for d in hgr["pairs"]] == [(0, 0)]
    assert hgr["pairs"][0]["align"] == pytest.approx(0.55)
    assert hgr["entity_tp"] == 0 and hgr["n_unmatched"] == 0 and hgr["n_missed"] == 0 and hgr["n_gold"] == 1
    # Schema 1, entity F1 0, grounding 1 (nothing unmatched); relation and weight undefined:
    # (.30 + .15) / (.30 + .25 + .15) = 9/14.
    assert hgr["composite"] == pytest.approx(9 / 14)
    cor = M.score_entry("Acme and the Acme Group.", g, p, metric="corrected")
    # No valid gold left and a non-empty prediction: composite 0, the prediction unmatched.
    assert cor["n_gold"] == 0 and cor["pairs"] == [] and cor["n_unmatched"] == 1 and cor["composite"] == 0.0


def test_gold_self_loop_titles_are_known_for_grounding_under_hgr():
    # "Acme" -> "Google" (developed_by) against the loop: .45 (source) < .50, not kept; against
    # BERT -> Google: .45 + .10 = .55, but BERT is taken by the exact prediction (1 + .45 > .55 + 0).
    g, p = [MATCH, LOOP], [MATCH, T("Acme", "developed_by", "Google")]
    hgr = M.score_entry(PROMPT, g, p, metric="hgr")
    # hgr: "acme" is a gold title (from the loop), "google" is in the prompt -> grounded.
    assert hgr["n_unmatched"] == 1 and hgr["n_hard_halluc"] == 0 and hgr["grounding"] == 1.0
    # P 1/2, R 1/2 (|valid G| = 2), F1 1/2: .30 + .25 * .5 + .20 + .10 + .15 = .875
    assert hgr["entity_f1"] == pytest.approx(0.5) and hgr["composite"] == pytest.approx(0.875)
    cor = M.score_entry(PROMPT, g, p, metric="corrected")
    # corrected: "acme" is neither a gold title nor in "bert was developed by google" -> hard; grounding 1 - 1/2.
    assert cor["n_hard_halluc"] == 1 and cor["grounding"] == pytest.approx(0.5)
    # P 1/2, R 1, F1 2/3; calibration 1 - ((.9 - 1)^2 + (.9 - 0)^2) / 2 = .59.
    assert cor["calibration"] == pytest.approx(0.59)
    assert cor["composite"] == pytest.approx(0.30 + 0.25 * 2 / 3 + 0.20 + 0.10 * 0.59 + 0.15 * 0.5)


def test_predicted_self_loops_dropped_under_both():
    p = [MATCH, LOOP]
    for metric in M.METRICS:
        r = M.score_entry(PROMPT, [MATCH], p, metric=metric)
        # The predicted loop is dropped before matching: TP 1 of 2 listed items, grounding 1 - 1/2.
        assert r["n_self_loops"] == 1 and r["entity_p"] == 0.5 and r["grounding"] == 0.5 and r["n_gold_self_loops"] == 0


# --------------------------------------------------------------------------- plain-float thresholds (difference f)


@pytest.mark.parametrize(
    ("gold_w", "pred_w", "delta", "hgr", "corrected"),
    [
        # 0.10 in decimal, 0.10000000000000003 in binary: the card's "<= 0.10" fails -> 0.5.
        (0.53, 0.43, 0.10000000000000003, 0.5, 1.0),
        # 0.20 in decimal, 0.20000000000000007 in binary: "<= 0.20" fails too -> 0.
        (0.9, 0.7, 0.20000000000000007, 0.0, 0.5),
        # Representable boundaries agree: 0.5 - 0.3 is the float 0.2 itself (inclusive band) ...
        (0.5, 0.3, 0.2, 0.5, 0.5),
        # ... 0.375 - 0.25 = 0.125 exactly, and 0.25 exactly is past both bands.
        (0.375, 0.25, 0.125, 0.5, 0.5),
        (0.5, 0.25, 0.25, 0.0, 0.0),
    ],
)
def test_weight_bands_compare_plain_floats_under_hgr(gold_w, pred_w, delta, hgr, corrected):
    assert abs(gold_w - pred_w) == delta  # the value the bands see (checked, not assumed)
    assert M._weight_bucket(delta) == M._weight_bucket(delta, "hgr") == hgr
    assert M._weight_bucket(delta, "corrected") == corrected
    g, p = [T("BERT", "developed_by", "Google", w=gold_w)], [T("BERT", "developed_by", "Google", w=pred_w)]
    r_hgr = M.score_entry(PROMPT, g, p, metric="hgr")
    assert r_hgr["weight"] == hgr
    # Everything else is perfect: composite 1 - .10 * (1 - weight).
    assert r_hgr["composite"] == pytest.approx(0.90 + 0.10 * hgr)
    assert M.score_entry(PROMPT, g, p, metric="corrected")["weight"] == corrected


def test_helpers_take_the_metric_name():
    assert M.field_similarity("machine learning", "machine learning x", "corrected") == pytest.approx(41 / 51)
    assert M.relation_similarity("used_for", "used for", metric="corrected") == 1.0
    for fn in (M.field_similarity, M.relation_similarity):
        with pytest.raises(ValueError, match="bogus.*hgr.*corrected"):
            fn("a", "b", "bogus")
    # 3 of 5 tokens is exactly the float 0.6 (correctly rounded division): known under both.
    for metric in M.METRICS:
        assert M._known_endpoint("a b c d e", set(), "x", {"a", "b", "c"}, metric)
        assert not M._known_endpoint("a b c d e", set(), "x", {"a", "b"}, metric)


# --------------------------------------------------------------------------- REBEL's re_score semantics


def R(h, ht, r, t, tt):
    return {"head": h, "head_type": ht, "type": r, "tail": t, "tail_type": tt}


def test_rebel_compares_exact_surface_strings():
    gold = [[R("Acme Corp.", "Org", "OrgBased_In", "Boston", "Loc")]]
    pred = [[R("acme corp", "Org", "OrgBased_In", "Boston", "Loc")]]
    for mode in ("strict", "boundaries"):
        rebel = M.rebel_scores(gold, pred, mode, ["OrgBased_In"], semantics="rebel")
        assert rebel["micro"]["tp"] == 0 and rebel["micro"]["f1"] == 0.0  # "Acme Corp." != "acme corp"
        norm = M.rebel_scores(gold, pred, mode, ["OrgBased_In"], semantics="normalised")
        assert norm["micro"]["tp"] == 1 and norm["micro"]["f1"] == 1.0  # both "acme"
    # Types too: "orgbased_in" is not the listed "OrgBased_In" for REBEL (ignored), is for the normalised variant.
    lower = [[R("Acme Corp.", "Org", "orgbased_in", "Boston", "Loc")]]
    assert M.rebel_scores(gold, lower, "boundaries", ["OrgBased_In"])["n_pred_ignored"] == 1
    assert M.rebel_scores(gold, lower, "boundaries", ["OrgBased_In"], semantics="normalised")["micro"]["tp"] == 1


def test_rebel_ignores_unlisted_predicted_types():
    gold = [[R("Ann", "Peop", "Work_For", "IBM", "Org"), R("Bob", "Peop", "Work_For", "HP", "Org")]]
    right = R("Ann", "Peop", "Work_For", "IBM", "Org")
    wrong = R("Bob", "Peop", "Work_For", "Dell", "Org")
    off_list = R("Ann", "Peop", "Born_In", "Ohio", "Loc")
    base = M.rebel_scores(gold, [[right, wrong]], "strict", ["Work_For"])
    with_off = M.rebel_scores(gold, [[right, wrong, off_list]], "strict", ["Work_For"])
    # REBEL: TP 1, FP 1, FN 1 with or without the off-list prediction: P 1/2, R 1/2, F1 1/2.
    assert base["micro"] == with_off["micro"]
    assert with_off["micro"]["p"] == 0.5 and with_off["micro"]["f1"] == 0.5 and with_off["n_pred_ignored"] == 1
    # Normalised: it is a false positive in the "unknown" bucket: P 1/3, R 1/2, F1 2/5.
    norm = M.rebel_scores(gold, [[right, wrong, off_list]], "strict", ["Work_For"], semantics="normalised")
    assert norm["micro"]["p"] == pytest.approx(1 / 3) and norm["micro"]["f1"] == pytest.approx(0.4)
    assert norm["per_relation"]["unknown"]["n_pred"] == 1 and norm["n_pred_ignored"] == 0
    # Gold items of an unlisted type are ignored under both.
    gold2 = [[*gold[0], R("Cy", "Peop", "Kill", "Di", "Peop")]]
    for semantics in M.REBEL_SEMANTICS:
        res = M.rebel_scores(gold2, [[right, wrong]], "strict", ["Work_For"], semantics=semantics)
        assert res["n_gold_ignored"] == 1 and res["micro"]["n_gold"] == 2


def test_rebel_sentence_sets_and_macro_is_mean_of_f1():
    a1, a2 = R("x1", "P", "A", "y1", "Q"), R("x2", "P", "A", "y2", "Q")
    b = [R(f"u{i}", "P", "B", f"v{i}", "Q") for i in range(4)]
    gold = [[a1], [*b, b[0]]]  # the duplicated gold B item counts once
    pred = [[a1, a1, a2], [b[0]]]  # the duplicated prediction counts once; a2 is not gold
    res = M.rebel_scores(gold, pred, "strict", ["A", "B"])
    # A: P = {a1, a2}, G = {a1}: tp 1, fp 1, fn 0 -> P 1/2, R 1, F1 2/3.
    # B: P = {b0}, G = {b0..b3}: tp 1, fp 0, fn 3 -> P 1, R 1/4, F1 2/5.
    a, bb = res["per_relation"]["A"], res["per_relation"]["B"]
    assert (a["tp"], a["n_pred"], a["n_gold"]) == (1, 2, 1) and a["f1"] == pytest.approx(2 / 3)
    assert (bb["tp"], bb["n_pred"], bb["n_gold"]) == (1, 1, 4) and bb["f1"] == pytest.approx(0.4)
    # Macro F1 = (2/3 + 2/5) / 2 = 8/15, not F1(macro P 3/4, macro R 5/8) = 15/22.
    assert res["macro"]["p"] == pytest.approx(0.75) and res["macro"]["r"] == pytest.approx(0.625)
    assert res["macro"]["f1"] == pytest.approx(8 / 15)
    assert res["macro"]["f1"] != pytest.approx(2 * 0.75 * 0.625 / (0.75 + 0.625))
    # Micro: tp 2, predicted 3, gold 5 -> P 2/3, R 2/5, F1 1/2.
    assert (res["micro"]["tp"], res["micro"]["n_pred"], res["micro"]["n_gold"]) == (2, 3, 5)
    assert res["micro"]["f1"] == pytest.approx(0.5)
    # Sets are per sentence: the same triple in two sentences counts twice.
    assert M.rebel_scores([[a1], [a1]], [[a1], [a1]], "strict", ["A"])["micro"]["tp"] == 2
    # Boundaries ignores the entity types; strict does not.
    retyped = [[R("x1", "Z", "A", "y1", "Q")], [b[0]]]
    assert M.rebel_scores(gold, retyped, "strict", ["A", "B"])["per_relation"]["A"]["tp"] == 0
    assert M.rebel_scores(gold, retyped, "boundaries", ["A", "B"])["per_relation"]["A"]["tp"] == 1


def test_rebel_label_list_details():
    gold = [[R("x", "P", "A", "y", "Q")]]
    pred = [[R("x", "P", "A", "y", "Q")]]
    # REBEL keeps a type named "None" (its line dropping it is commented out): a type with no
    # items has P = R = F1 = 0 and halves the macro F1. A repeated type counts once.
    res = M.rebel_scores(gold, pred, "strict", ["A", "None", "A"])
    assert list(res["per_relation"]) == ["A", "None"]
    assert res["macro"]["f1"] == pytest.approx(0.5) and res["micro"]["f1"] == 1.0
    # No list: the types found in gold.
    assert list(M.rebel_scores(gold, pred, "strict")["per_relation"]) == ["A"]
    # Values are fractions (REBEL prints them x 100).
    assert M.rebel_scores(gold, pred, "boundaries")["micro"]["f1"] == 1.0
    with pytest.raises(ValueError, match="bogus.*rebel.*normalised"):
        M.rebel_scores(gold, pred, semantics="bogus")
