"""07's grid: the cells a plan runs, paired comparisons over the same passages, verdicts, the findings table,
demonstrations from train only, and one cell end to end through the generator."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kgutils.evaluation import (
    AblationCell,
    ablation_findings,
    ablation_plan,
    ablation_scores,
    paired_cells,
)
from kgutils.prompts import ablation_records, prompt_format
from kgutils.train import sft_records


def T(s, rel, t, w=0.9):
    return {"source": {"title": s, "type": "entity"}, "relation": {"type": rel, "weight": w},
            "target": {"title": t, "type": "entity"}}


def test_prompt_format_names():
    assert prompt_format("nl") == ("nl", False) and prompt_format("code+r") == ("code", True)
    for bad in ("yaml", "nl+x", "code+r+r", ""):
        with pytest.raises(ValueError, match="unknown prompt format"):
            prompt_format(bad)


def test_ablation_records_nl_is_03s_training_and_code_differs():
    rows = [{"text": "Ada Lovelace worked with Charles Babbage in London.", "triplets": [T("Ada Lovelace", "located_in",
                                                                                         "London")]}]
    assert ablation_records(rows, "nl", False) == sft_records(rows)  # the cell that reuses 03's adapter
    code = ablation_records(rows, "code", True)[0]
    assert code["completion"][0]["content"].startswith("triplets = [\n    # evidence: Ada Lovelace worked")
    assert code["prompt"][-1]["content"].startswith("from dataclasses import dataclass")


def test_focused_plan_keeps_every_finding_testable():
    cells = ablation_plan("focused", ["small", "large"], ["nl", "nl+r", "code", "code+r"], [0, 1, 3, 5],
                          ["nl", "code", "nl+r"], square_shots=[0, 3], size_shots=[3], references=["ft-03"])
    names = [c.name for c in cells]
    assert len(names) == len(set(names)) == 8 + 2 + 6 + 2 + 2 + 1
    assert "small base code+r@3" in names and "small base code+r@1" not in names  # square at 0 and 3 only
    assert {c.k for c in cells if c.tuning == "ft" and c.prompt == "nl"} == {0, 1, 3, 5}  # F4 fine-tuned
    assert not any(c.prompt == "code+r" for c in cells if c.tuning == "ft")  # not a fine-tuned format here
    assert [c.name for c in cells if c.model == "large"] == ["large base nl@3"]  # F5
    assert [c.name for c in cells if c.tuning == "ft-03"] == ["small ft-03 nl@0", "small ft-03 nl@3"]


def test_full_plan_is_the_whole_grid():
    cells = ablation_plan("full", ["a", "b"], ["nl", "nl+r", "code", "code+r"], [0, 1, 3, 5],
                          ["nl", "nl+r", "code", "code+r"])
    assert len(cells) == 2 * 16 + 16
    assert {c.tuning for c in cells if c.model == "b"} == {"base"}
    with pytest.raises(ValueError, match="unknown plan"):
        ablation_plan("some", ["a"], ["nl"], [0], [])
    with pytest.raises(ValueError, match="unknown prompt format"):
        ablation_plan("full", ["a"], ["json"], [0], [])


def _frame(scores: dict[AblationCell, list[float]]) -> pd.DataFrame:
    rows = []
    for cell, values in scores.items():
        for i, v in enumerate(values):
            rows.append({"cell": cell.name, "model": cell.model, "tuning": cell.tuning, "style": cell.style,
                         "rationale": cell.rationale, "k": cell.k, "prompt": cell.prompt, "id": f"p{i}", "hgr": v})
    return pd.DataFrame(rows)


def test_paired_cells_match_on_the_other_factors_and_average_per_passage():
    c = lambda style, r, k, tuning="ft": AblationCell("m", tuning, style, r, k)  # noqa: E731
    frame = _frame({c("nl", False, 0): [0.1, 0.2], c("code", False, 0): [0.3, 0.2],
                    c("nl", False, 3): [0.5, 0.5], c("code", False, 3): [0.5, 0.9],
                    c("code", True, 3): [1.0, 1.0],  # no nl+r partner: never paired
                    c("nl", False, 0, "base"): [0.0, 0.0]})  # another tuning: left out by `where`
    got = paired_cells(frame, "style", "nl", "code", {"tuning": "ft"})
    assert got["ids"] == ["p0", "p1"]
    assert got["a"] == pytest.approx([(0.1 + 0.5) / 2, (0.2 + 0.5) / 2])
    assert got["b"] == pytest.approx([(0.3 + 0.5) / 2, (0.2 + 0.9) / 2])
    assert len(got["pairs"]) == 2
    assert paired_cells(frame, "style", "nl", "code", {"tuning": "ft", "k": 5})["ids"] == []


def test_findings_verdicts_follow_the_effects():
    rng = np.random.default_rng(0)
    n = 40
    base = rng.uniform(0.2, 0.4, n)
    cell = lambda tuning, style, r, k: AblationCell("small", tuning, style, r, k)  # noqa: E731
    scores = {
        # fine-tuned: code == nl up to tiny noise (F1 supported); rationale costs 0.2 (F2 supported)
        cell("ft", "nl", False, 0): base, cell("ft", "code", False, 0): base + rng.normal(0, 0.005, n),
        cell("ft", "nl", True, 0): base - 0.2,
        # base: code better by 0.3 (F3a supported); rationale worse (F3b refuted)
        cell("base", "nl", False, 0): base - 0.1, cell("base", "code", False, 0): base + 0.2,
        cell("base", "nl", True, 0): base - 0.15,
        # k: 0 -> 3 gains 0.3 (F4a supported) and 3 -> 5 gains 0.3 again (F4b refuted)
        cell("base", "nl", False, 3): base + 0.2, cell("base", "nl", False, 5): base + 0.5,
    }
    frame = _frame(scores)
    table = ablation_findings(frame, "hgr", margin=0.05, alpha=0.05, n_resamples=500, seed=1)
    pooled = table[table["scope"] == "pooled"].set_index("finding")
    assert pooled.loc["F1", "verdict"] == "supported"
    assert pooled.loc["F2", "verdict"] == "supported" and pooled.loc["F2", "effect"] == pytest.approx(-0.2)
    assert pooled.loc["F3a", "verdict"] == "supported" and pooled.loc["F3a", "effect"] == pytest.approx(0.3)
    assert pooled.loc["F3b", "verdict"] == "refuted"
    assert pooled.loc["F4a", "verdict"] == "supported"
    assert pooled.loc["F4b", "verdict"] == "refuted"
    assert pooled.loc["F4a", "p_wilcoxon"] < 0.001 and pooled.loc["F4a", "ci_lo"] > 0.25
    assert "F5" not in pooled.index  # one model: size is not tested
    # a second model, better on the one cell both ran: F5 supported
    frame2 = pd.concat([frame, _frame({AblationCell("large", "base", "nl", False, 3): base + 0.4})])
    f5 = ablation_findings(frame2, "hgr", n_resamples=200, seed=1, models=["small", "large"])
    assert f5[f5["finding"] == "F5"]["verdict"].tolist() == ["supported"]


def test_findings_with_noise_only_are_inconclusive_not_supported():
    rng = np.random.default_rng(3)
    n = 12
    frame = _frame({AblationCell("m", "base", "nl", False, 0): rng.uniform(0, 1, n),
                    AblationCell("m", "base", "code", False, 0): rng.uniform(0, 1, n)})
    table = ablation_findings(frame, "hgr", n_resamples=500, seed=0)
    assert table.set_index("finding").loc["F3a", "verdict"] == "inconclusive"
    assert table.set_index("finding").loc["F1", "verdict"] == "not tested"


def test_demonstrations_come_from_train_only(tmp_path):
    """A train passage that repeats a test passage is never a demonstration, and every cell's prompts are
    checked by demonstration_leaks."""
    from kgutils.generate import demo_pool
    from kgutils.mixtune import demonstration_leaks

    test = [{"id": f"t{i}", "text": f"Test passage {i} about Paris.", "triplets": []} for i in range(3)]
    train = [{"id": f"a{i}", "text": f"Train passage {i}.", "triplets": [T(f"X{i}", "part_of", "Y")]}
             for i in range(6)]
    train += [{"id": "dup", "text": test[0]["text"], "triplets": [T("P", "part_of", "Q")]},  # leaked copy
              {"id": "neg", "text": "No triplet here.", "triplets": []},
              {"id": "long", "text": "Long. " * 200, "triplets": [T("L", "part_of", "M")]}]
    pool = demo_pool(train, test, max_chars=300, seed=0)
    ids = {r["id"] for r in pool.by_ds["passages"]}
    assert ids == {f"a{i}" for i in range(6)} and pool.removed == 1
    picks = [pool.pick({**r, "dataset": "passages"}, 5, shared=True) for r in test]
    assert all(len(p) == 5 for p in picks) and picks[0] == picks[1]  # shared: one prefix for every passage
    assert demonstration_leaks([{"demo_ids": [d["id"] for d in p]} for p in picks], test, pool) == 0
    assert demonstration_leaks([{"demo_ids": ["dup"]}], test, pool) == 1
    with pytest.raises(ValueError, match="no train passage"):
        demo_pool([train[-2]], test)


def test_one_cell_end_to_end(tmp_path):
    """A cell through the one generator and the one scorer: demonstrations recorded, scores per passage."""
    from kgutils.generate import demo_pool, predict_ablation_cell
    from kgutils.models import load_model

    lm = load_model("tiny:qwen3")
    text = "Guernica is a painting by Pablo Picasso. It hangs in Madrid."
    rows = [{"id": f"r{i}", "text": text, "triplets": [T("Guernica", "created_by", "Pablo Picasso")]}
            for i in range(2)]
    pool = demo_pool([{"id": "d1", "text": "Berlin is in Germany.", "triplets": [T("Berlin", "located_in", "Germany")]}],
                     rows)
    cell = AblationCell("tiny", "base", "code", True, 1)
    out = predict_ablation_cell(lm, cell, rows, pool, tmp_path / "c.jsonl", batch_size=2, max_new_tokens=6,
                                rationale_tokens=4, progress=False)
    assert out["demo_ids"] == {"r0": ["d1"], "r1": ["d1"]}
    zero = predict_ablation_cell(lm, AblationCell("tiny", "base", "code", True, 0), rows, pool, tmp_path / "z.jsonl",
                                 batch_size=2, max_new_tokens=6, progress=False)
    assert zero["demo_ids"] == {"r0": [], "r1": []}
    n_prompt = [[json.loads(x)["n_prompt_tokens"] for x in (tmp_path / f).read_text().splitlines()]
                for f in ("c.jsonl", "z.jsonl")]
    assert all(a > b + 20 for a, b in zip(*n_prompt))  # the demonstration's turns are in the k = 1 prompt
    budgets = [[(r["stop_reason"], r["n_new_tokens"]) for r in map(json.loads, (tmp_path / f).read_text().splitlines())]
               for f in ("c.jsonl", "z.jsonl")]
    assert all(n <= 10 and (s != "budget" or n == 10) for s, n in budgets[0])  # rationale: 6 + 4 tokens
    assert all(n <= 6 and (s != "budget" or n == 6) for s, n in budgets[1])  # no extra budget given
    per_entry, summary = ablation_scores({cell: out["path"]}, n_resamples=50)
    assert list(per_entry["id"]) == ["r0", "r1"] and set(per_entry["prompt"]) == {"code+r"}
    assert summary.loc[0, "n"] == 2 and summary.loc[0, "cell"] == "tiny base code+r@1"


CALL_A = 'Triplet(Entity("Guernica", "entity"), "created_by", Entity("Pablo Picasso", "entity"), 0.9)'
CALL_B = 'Triplet(Entity("Guernica", "entity"), "located_in", Entity("Madrid", "entity"), 0.8)'


def test_code_guard_stops_a_repeated_call_and_closes_the_list():
    from kgutils.decoding import CallGuard, guard_text
    from kgutils.prompts import parse_ablation_answer

    looping = f"triplets = [\n    # evidence: a, b \"c\"\n    {CALL_A},\n    {CALL_B},\n    {CALL_A.replace('Pablo Picasso', 'pablo  picasso')},\n    {CALL_B}"
    g = CallGuard()
    # fed token by token, the guard fires at the end of the third call (a repeat after normalisation)
    fired = next(i for i in range(len(looping) + 1) if g.feed(looping[:i]))
    assert looping[:fired].endswith("picasso\", \"entity\"), 0.9)")
    kept, removed = g.close(looping[:fired], "repeat")
    assert parse_ablation_answer(kept, "code") == (parse_ablation_answer(f"[{CALL_A}, {CALL_B}]", "code")[0], "ok")
    assert kept.endswith("\n]") and removed.lstrip(",\n ").startswith("Triplet(") and g.n_items == 2
    # at the budget, an open call is dropped and the list closed
    cut = guard_text(f"triplets = [\n    {CALL_A},\n    Triplet(Entity(\"Gu", "budget", kind="code")
    assert cut["text"] == f"triplets = [\n    {CALL_A},\n]" and cut["guard_removed"].strip() == 'Triplet(Entity("Gu'
    # an answer the model ended itself is kept as it is; the json guard would not see these items at all
    assert guard_text(looping, "eos", kind="code")["stop_reason"] == "repeat"
    assert guard_text(f"[{CALL_A}]", "eos", kind="code") == {"text": f"[{CALL_A}]", "stop_reason": "eos",
                                                              "guard_removed": ""}
    with pytest.raises(ValueError, match="unknown guard"):
        guard_text("x", "eos", kind="yaml")


def test_code_calls_reads_keywords_and_rejects_other_shapes():
    from kgutils.formats import code_calls

    kw = ('Triplet(source=Entity(title="A", type="entity"), relation="part_of", '
          'target=Entity("B", "concept"), weight=0.5)')
    calls = code_calls(f"{kw}, Triplet(1, 2), Triplet(__import__('os').system('x'), 'a', 'b', 1), Triplet(open")
    assert [c[2] is not None for c in calls] == [True, False, False]  # the last call never closes
    assert calls[0][2] == {"source": {"title": "A", "type": "entity"}, "relation": {"type": "part_of", "weight": 0.5},
                           "target": {"title": "B", "type": "concept"}}
