"""The Gemma track (05): SPO documents with passage qualifiers, their parser, scores, prompts, schema and exports."""

from __future__ import annotations

import json
import math

import pytest

from kgutils import export
from kgutils.formats import parse_spo_output, spo_document, spo_qualifiers
from kgutils.metrics import spo_f1_ci, spo_report, strict_spo_f1
from kgutils.ontology import spo_decoding_schema
from kgutils.prompts import SPO_INSTRUCTIONS, spo_messages, spo_records, spo_user

PASSAGE = ("Guernica is a large oil painting by Pablo Picasso, finished in June 1937 in Paris. "
           "It measures 3.49 metres by 7.76 metres. The Museo Reina Sofía in Madrid has shown it since 1992.")


def G(s, rel, t):
    return {"source": {"title": s, "type": "entity"}, "relation": {"type": rel, "weight": 0.9},
            "target": {"title": t, "type": "entity"}}


def S(s, p, o, **q):
    return {"subject": s, "predicate": p, "object": o, "qualifiers": q}


# ------------------------------------------------------------------------------------------- qualifiers


def test_qualifiers_come_from_the_evidence_sentence_only():
    assert spo_qualifiers(PASSAGE, "Guernica", "Pablo Picasso") == {"date": "June 1937"}
    assert spo_qualifiers(PASSAGE, "Museo Reina Sofía", "Madrid") == {"date": "1992"}
    # Subject and object never share a sentence: nothing is attached, nothing invented.
    assert spo_qualifiers(PASSAGE, "Pablo Picasso", "Madrid") == {}
    assert spo_qualifiers(PASSAGE, "Guernica", "") == {}


def test_two_candidates_of_a_kind_leave_the_qualifier_out():
    text = "It measures 3.49 metres by 7.76 metres, says the museum of Guernica."
    assert spo_qualifiers(text, "It", "Guernica") == {}  # two quantities: which one is unclear
    text = "Acme moved from Oslo in 1990 to Rome in 2001."
    assert "date" not in spo_qualifiers(text, "Acme", "Rome")


def test_quantities_are_not_dates_and_names_are_masked():
    text = "The GPT-3 model released in 2020 has 175 billion parameters according to OpenAI."
    assert spo_qualifiers(text, "GPT-3", "OpenAI") == {"date": "2020", "quantity": "175 billion"}
    text = "Windows 2000 was developed by Microsoft."
    assert spo_qualifiers(text, "Windows 2000", "Microsoft") == {}  # the year inside the name is not a date
    text = "Acme has 1,800 employees in Lyon."
    assert spo_qualifiers(text, "Acme", "Lyon") == {"quantity": "1,800 employees"}


def test_spo_document_writes_predicates_as_words_in_schema_order():
    doc = spo_document([G("Guernica", "created_by", "Pablo Picasso"), G("Museo Reina Sofía", "located_in", "Madrid")],
                       PASSAGE)
    assert doc == {"triples": [S("Guernica", "created by", "Pablo Picasso", date="June 1937"),
                               S("Museo Reina Sofía", "located in", "Madrid", date="1992")]}
    assert list(doc["triples"][0]) == ["subject", "predicate", "object", "qualifiers"]
    assert spo_document([G("A", "part_of", "B")]) == {"triples": [S("A", "part of", "B")]}  # no text: no qualifiers


# ------------------------------------------------------------------------------------------------ parser


@pytest.mark.parametrize("raw, status, n, invalid", [
    ('{"triples":[{"subject":"A","predicate":"p","object":"B","qualifiers":{}}]}', "ok", 1, 0),
    ('{"triples":[]}', "ok", 0, 0),
    ('Sure!\n```json\n{"triples":[{"subject":"A","predicate":"p","object":"B","qualifiers":{}}]}\n```', "ok", 1, 0),
    ('[{"subject":"A","predicate":"p","object":"B","qualifiers":{}}]', "repaired", 1, 0),
    ('{"subject":"A","predicate":"p","object":"B"}', "repaired", 1, 0),
    ('{"triples":[{"subject":"A","predicate":"p","object":"B","qualifiers":{"date":1937}}]}', "repaired", 1, 0),
    ('{"triples":[{"subject":"A","predicate":"p","object":"B","qualifiers":{}},{"subject":"","predicate":"p"}]}',
     "bad_items", 1, 1),
    ("", "empty", 0, 0),
    ("<think>hmm</think>", "empty", 0, 0),
    ("no facts here", "no_json", 0, 0),
    ('{"triples":[{"subject":"A"', "invalid_json", 0, 0),
    ('{"answer": "none"}', "not_a_document", 0, 0),
])
def test_parse_spo_output_statuses(raw, status, n, invalid):
    got = parse_spo_output(raw)
    assert (got["status"], len(got["doc"]["triples"]), got["n_invalid"]) == (status, n, invalid)
    assert set(got["doc"]) == {"triples"}


def test_parse_spo_output_keeps_values_and_stringifies_numbers():
    got = parse_spo_output('{"triples":[{"subject":" A ","predicate":"p","object":"B","qualifiers":{"date":1937,'
                           '"x":null}}]}')
    assert got["doc"]["triples"] == [S("A", "p", "B", date="1937")]


# ------------------------------------------------------------------------------------------------ scores


def test_spo_report_hand_worked():
    gold = [{"triples": [S("Guernica", "created by", "Pablo Picasso", date="June 1937"),
                         S("Museo Reina Sofía", "located in", "Madrid", date="1992"),
                         S("A", "part of", "B")]},
            {"triples": []}]
    pred = [{"triples": [S("guernica", "Created By", "Pablo Picasso.", date="june  1937"),  # match, qualifier ok
                         S("Guernica", "created by", "Pablo Picasso"),  # duplicate of the first
                         S("Museo Reina Sofía", "located in", "Madrid", date="1991"),  # match, wrong date
                         S("Museo Reina Sofía", "opened in", "1992")]},  # flattened: the date became the object
            {"triples": [S("X", "y", "Z")]}]
    r = spo_report(gold, pred)
    # Sets per document: {guernica, museo located, museo opened} and {x}: tp 2, 4 predicted, 3 gold.
    assert (r["tp"], r["n_pred"], r["n_gold"]) == (2, 4, 3)
    assert r["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert r == {**r, **strict_spo_f1(gold, pred)}  # the published F1 is unchanged
    assert r["n_pred_triples"] == 5 and r["duplicate_rate"] == pytest.approx(1 / 5)
    assert r["qualifier_coverage"] == pytest.approx(1 / 2)  # two gold qualifiers on matched triples, one right
    assert r["qualifier_recall"] == pytest.approx(1 / 2)
    assert r["qualifier_precision"] == pytest.approx(1 / 2)  # "june 1937" right, "1991" wrong
    assert r["flattened_rate"] == pytest.approx(1 / 4)  # of 4 distinct predicted triples
    assert spo_report([{"triples": []}], [{"triples": []}])["duplicate_rate"] is None


def test_spo_f1_ci_brackets_the_estimate_and_is_seeded():
    gold = [{"triples": [S("a", "p", str(i))]} for i in range(30)]
    pred = [{"triples": [S("a", "p", str(i) if i % 3 else "x")]} for i in range(30)]
    f1 = strict_spo_f1(gold, pred)["f1"]
    lo, hi = spo_f1_ci(gold, pred, n_resamples=500, seed=3)
    assert lo <= f1 <= hi and hi - lo > 0.05
    assert spo_f1_ci(gold, pred, n_resamples=500, seed=3) == (lo, hi)
    assert all(math.isnan(v) for v in spo_f1_ci([], []))
    with pytest.raises(ValueError):
        spo_f1_ci(gold, pred[:-1])


# ------------------------------------------------------------------------------------- prompts and schema


def test_prompts_name_the_title_and_n_and_vary_when_asked():
    user = spo_user(PASSAGE, "Guernica", 5)
    assert user.startswith("Extract up to 5 factual (subject, predicate, object) triples") and "Title: Guernica" in user
    assert spo_messages(PASSAGE, "Guernica", 5)[0]["role"] == "system"
    rows = [{"text": PASSAGE, "title": "Guernica", "spo": {"triples": []}}] * 40
    fixed = {r["prompt"][-1]["content"] for r in spo_records(rows, 5, vary=False)}
    varied = {r["prompt"][-1]["content"] for r in spo_records(rows, 5, vary=True, seed=1)}
    assert len(fixed) == 1 and len(varied) == len(SPO_INSTRUCTIONS)
    assert spo_records(rows[:1], 5)[0]["completion"][0]["content"] == '{"triples":[]}'
    with pytest.raises(ValueError):
        spo_user(PASSAGE, "t", 0)


def test_spo_schema_accepts_documents_and_rejects_invented_keys():
    xgr = pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    from kgutils import decoding
    from kgutils.models import tiny_checkpoint

    tok = AutoTokenizer.from_pretrained(tiny_checkpoint("gemma3"))
    schema = spo_decoding_schema(max_items=2, qualifier_keys=("date", "quantity"))
    compiled = decoding.compile_grammar(tok, schema, stop_token_ids=[tok.eos_token_id])

    def accepts(doc) -> bool:
        m = xgr.GrammarMatcher(compiled)
        return m.accept_string(json.dumps(doc, separators=(",", ":"), ensure_ascii=False)) and m.is_completed()

    assert accepts({"triples": []})
    assert accepts({"triples": [S("Guernica", "painted by", "Pablo Picasso", date="1937"), S("A", "p", "B")]})
    assert accepts(spo_document([G("Guernica", "created_by", "Pablo Picasso")], PASSAGE))  # training answers fit
    assert not accepts({"triples": [S("A", "p", "B")] * 3})  # maxItems
    assert not accepts({"triples": [S("A", "p", "B", colour="red")]})  # a qualifier key outside the list
    assert not accepts({"triples": [S("", "p", "B")]})  # empty subject
    assert not accepts({"triples": [{"subject": "A", "predicate": "p", "object": "B"}]})  # qualifiers required
    with pytest.raises(ValueError):
        spo_decoding_schema(qualifier_keys=("date", "date"))


# ------------------------------------------------------------------------------------------------ exports


def test_gptq_export_names_bad_input(tmp_path):
    with pytest.raises(ValueError, match="bits"):
        export.gptq_export(tmp_path, tmp_path / "q", 5, ["text"])
    with pytest.raises(ValueError, match="calibration"):
        export.gptq_export(tmp_path, tmp_path / "q", 4, ["  "])
    with pytest.raises(FileNotFoundError, match="config.json"):
        export.gptq_export(tmp_path, tmp_path / "q", 4, ["text"])
    with pytest.raises(FileNotFoundError, match="quantize_config.json"):
        export.load_gptq(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.bin").write_bytes(b"x" * 2_000_000)
    assert export.folder_size_mb(tmp_path) == 2.0


# ------------------------------------------------------------------------------ paired statistics (07)


def test_paired_difference_hand_worked():
    from kgutils.metrics import paired_difference

    a = [0.2, 0.4, 0.5, 0.1, None, 0.3, 0.6, 0.2, 0.4, 0.5, 0.3, 0.2]
    b = [0.5, 0.6, 0.7, 0.4, 0.9, 0.5, 0.9, 0.4, 0.6, 0.8, 0.6, 0.4]
    r = paired_difference(a, b, n_resamples=500, seed=1)
    assert r["n"] == 11 and r["n_dropped"] == 1  # the None pair is dropped, and counted
    assert r["effect"] == pytest.approx(sum(y - x for x, y in zip(a, b) if x is not None) / 11)
    assert r["ci"][0] <= r["effect"] <= r["ci"][1] and r["ci"][0] > 0
    assert r["p_wilcoxon"] < 0.01 and r["p_permutation"] < 0.01  # every pair moved up
    same = paired_difference([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])
    assert same["effect"] == 0 and same["p_wilcoxon"] == same["p_permutation"] == 1.0
    mixed = paired_difference([0.1, 0.9, 0.1, 0.9], [0.9, 0.1, 0.9, 0.1], n_resamples=200)
    assert mixed["effect"] == 0 and mixed["p_permutation"] > 0.5
    assert paired_difference([], [])["effect"] is None
    with pytest.raises(ValueError, match="length"):
        paired_difference([0.1], [0.1, 0.2])
