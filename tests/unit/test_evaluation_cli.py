"""``python -m kgutils evaluate`` on both prediction layouts, end to end in a subprocess."""

import json
import subprocess
import sys

import pytest

from kgutils import evaluation

G = [
    {"source": {"title": "BERT", "type": "entity"}, "relation": {"type": "developed_by", "weight": 0.9},
     "target": {"title": "Google", "type": "entity"}},
    {"source": {"title": "Paris", "type": "entity"}, "relation": {"type": "located_in", "weight": 1.0},
     "target": {"title": "France", "type": "entity"}},
]
PROMPT = "Extract triplets.\n\nPassage:\nBERT was developed by Google. Paris is located in France."


def _run(*args):
    return subprocess.run([sys.executable, "-m", "kgutils", *args], capture_output=True, text=True, timeout=120)


def test_card_layout_perfect_and_empty(tmp_path):
    rows = [
        # Perfect answer (with a company suffix the metric strips): every axis 1.0.
        {"prompt": PROMPT, "gold_raw": json.dumps(G), "gold_parsed": G,
         "pred_raw": "<think>x</think>```json\n" + json.dumps(G) + "\n```",
         "pred_parsed": [dict(G[0], target={"title": "Google LLC", "type": "entity"}), G[1]]},
        # Unparseable answer: the card's parse gives [] -> composite from entity F1 only = 0.
        {"prompt": PROMPT, "gold_raw": json.dumps(G), "gold_parsed": G, "pred_raw": "not json"},
    ]
    f = tmp_path / "card.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.json"
    proc = _run("evaluate", str(f), "--metric", "hgr", "--out", str(out), "--bootstrap", "50")
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    report = json.loads(out.read_text())
    assert len(report["per_entry"]) == 2
    first, second = report["per_entry"]
    assert first["composite"] == pytest.approx(1.0)
    assert second["composite"] == pytest.approx(0.0) and second["parse_status"] == "invalid_json"
    assert printed["macro"]["composite"] == pytest.approx(0.5)
    assert report["summary"]["micro"]["entity_f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert printed["parse_failure_rate"] == pytest.approx(0.5)


def test_repository_layout_and_robust_parser(tmp_path):
    raw = "Here you go: " + json.dumps(G)[:-60]  # prose, then a list cut mid-item
    row = {"id": "x", "prompt": PROMPT, "gold_parsed": G, "pred_raw": raw}
    f = tmp_path / "repo.jsonl"
    f.write_text(json.dumps(row) + "\n")
    card = evaluation.evaluate_file(f, "hgr", parser="card", n_resamples=20)
    robust = evaluation.evaluate_file(f, "hgr", parser="robust", n_resamples=20)
    assert card["per_entry"][0]["n_pred"] == 0
    assert robust["per_entry"][0]["n_pred"] == 1 and robust["per_entry"][0]["entity_tp"] == 1


def test_errors_are_clear(tmp_path):
    proc = _run("evaluate", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 2 and "not found" in proc.stderr and "nope.jsonl" in proc.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "gold_parsed": []}\n{oops\n')
    proc = _run("evaluate", str(bad))
    assert proc.returncode == 2 and "bad.jsonl:2" in proc.stderr
    proc = _run("evaluate", str(bad), "--metric", "f1")
    assert proc.returncode != 0 and "invalid choice" in proc.stderr


def test_schema_command_prints_the_ontology_schema():
    proc = _run("schema")
    schema = json.loads(proc.stdout)
    assert schema["type"] == "array"
    assert "developed_by" in json.dumps(schema)


def test_score_files_checks_its_arguments(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps({"prompt": PROMPT, "gold_parsed": G, "pred_parsed": G}) + "\n")
    with pytest.raises(ValueError, match="2 labels for 1 predictions files"):
        evaluation.score_files([f], ["a", "b"], ["hgr"], ["card"])
    # Files without a label are named by their file name.
    assert {k[0] for k in evaluation.score_files([f, f], ["a"], ["hgr"], ["card"], n_resamples=20)} == {"a", "p"}
    with pytest.raises(ValueError, match="unknown parser 'lenient'"):
        evaluation.score_files([f], ["a"], ["hgr"], ["lenient"])
    results = evaluation.score_files([f], ["a"], ["hgr", "corrected"], ["card", "robust"], n_resamples=20)
    assert list(results) == [("a", "hgr", "card"), ("a", "corrected", "card"), ("a", "hgr", "robust"),
                             ("a", "corrected", "robust")]
    frame = evaluation.summary_frame(results)
    # hgr: a perfect answer scores 1.0. corrected: the weight slot holds 1 - mean((w - 1)^2) over the two
    # correct predictions (weights 0.9 and 1.0) = 0.995, so the composite is 0.9 + 0.1 * 0.995 = 0.9995.
    assert list(frame["composite"]) == pytest.approx([1.0, 0.9995, 1.0, 0.9995])
    record = evaluation.metrics_record(results)
    assert set(record) == {"a/card/hgr", "a/card/corrected", "a/robust/hgr", "a/robust/corrected"}


def test_constrained_effect_hand_worked():
    from kgutils.evaluation import constrained_effect, describe_constrained_effect

    def res(x):
        return {"macro": {"composite": x}}

    results = {("base unconstrained", "hgr", "card"): res(0.10), ("base constrained", "hgr", "card"): res(0.40),
               ("fine-tuned unconstrained", "hgr", "card"): res(0.70), ("fine-tuned constrained", "hgr", "card"): res(0.75),
               ("base unconstrained", "corrected", "card"): res(0.0)}
    e = constrained_effect(results, "hgr", "card")
    assert e["format_gain"] == pytest.approx(0.30) and e["fine_tuning_gain"] == pytest.approx(0.60)
    assert e["format_share"] == pytest.approx(0.5)
    assert "50 %" in describe_constrained_effect(e)
    assert constrained_effect(results, "corrected", "card") is None  # no constrained base run for that metric
    only_base = {k: v for k, v in results.items() if k[0].startswith("base")}
    e = constrained_effect(only_base, "hgr", "card")
    assert e["fine_tuning_gain"] is None and e["format_share"] is None
    assert "fine-tuning" not in describe_constrained_effect(e)
    worse = {**results, ("fine-tuned unconstrained", "hgr", "card"): res(0.05)}
    assert constrained_effect(worse, "hgr", "card")["format_share"] is None  # fine-tuning gained nothing
