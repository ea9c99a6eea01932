"""MixTune relation classification (kgutils.mixtune): loaders on real files, mixtures, prompts without leaks."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from kgutils import mixtune
from kgutils.io import repo_root
from kgutils.prompts import RC_SYSTEM

SHARED = repo_root().parent / "shared" / "data"
FIX = repo_root() / "tests" / "fixtures" / "relcls"
needs_shared = pytest.mark.skipif(not (SHARED / "conll04").is_dir(), reason="../shared/data is absent")


def check_shape(rows: list[dict], dataset: str) -> None:
    assert rows
    for r in rows:
        assert tuple(r) == mixtune.ROW_KEYS
        assert r["dataset"] == dataset
        assert r["e1"] and r["e2"] and r["e1"] in r["text"] and r["e2"] in r["text"], r
        assert r["relation"] and r["domain"] in ("general", "literary")


# ------------------------------------------------------------------------------------------- loaders, real files

@needs_shared
def test_semeval_text_file():
    ld = mixtune.read_semeval(SHARED / "semeval2010_task8" / "TRAIN_FILE.TXT")
    check_shape(ld.rows, "semeval")
    assert len(ld.rows) == 8000 and not ld.problems  # the file's 8,000 examples, CRLF line ends included
    labels = Counter(r["relation"] for r in ld.rows)
    assert labels["Other"] == 1410  # the README's count
    assert len(labels) == 19  # nine directed types twice, plus Other
    assert not any("<e1>" in r["text"] or "</e2>" in r["text"] for r in ld.rows)


@needs_shared
def test_unified_json_conll04_and_ade_generate_negatives():
    ld = mixtune.read_unified(SHARED / "conll04" / "train.CoNLL04.json", "conll04")
    check_shape(ld.rows, "conll04")
    labels = Counter(r["relation"] for r in ld.rows)
    assert sum(n for lab, n in labels.items() if lab != "no_relation") == 1283  # every gold relation
    assert labels["no_relation"] == ld.generated_negatives > 0
    assert {r["e1_type"] for r in ld.rows} <= {"Peop", "Loc", "Org", "Other"}
    ade = mixtune.read_unified(SHARED / "ade" / "test.ADE0.json", "ade", negatives_per_sentence=0)
    check_shape(ade.rows, "ade")
    assert {r["relation"] for r in ade.rows} == {"Adverse-Effect"} and ade.generated_negatives == 0


@needs_shared
def test_nyt_triples_with_rel2id():
    ld = mixtune.read_nyt(SHARED / "nyt" / "val_triples.json", rel2id=SHARED / "nyt" / "rel2id.json")
    check_shape(ld.rows, "nyt")
    rels = json.loads((SHARED / "nyt" / "rel2id.json").read_text())[1]
    assert {r["relation"] for r in ld.rows} - {"no_relation"} <= set(rels)
    # Triples whose entity string is not in the sentence are counted, not dropped silently.
    assert set(ld.problems) <= {"triple entity not in the text"}
    assert len(ld.rows) - ld.generated_negatives + sum(ld.problems.values()) <= 8489


@needs_shared
def test_gids_label_spelling_is_unified():
    ld = mixtune.read_gids(SHARED / "gids" / "dev.tsv", relation2id=SHARED / "gids" / "relation2id.txt")
    check_shape(ld.rows, "gids")
    labels = Counter(r["relation"] for r in ld.rows)
    assert len(ld.rows) == 1864 and not ld.problems
    # relation2id.txt says ".../degrees", the TSV ".../degree": one label, accepted by the id list.
    assert labels["/people/person/education./education/education/degree"] == 290
    assert not any(lab.endswith("degrees") for lab in labels)
    assert labels["NA"] == 447
    assert not any("_" in r["e1"] or "###END###" in r["text"] for r in ld.rows)


@needs_shared
def test_redocred_sentence_level_pairs():
    ld = mixtune.read_redocred(SHARED / "re-docred" / "dev_revised.json", relation_names={"P17": "country"})
    check_shape(ld.rows, "redocred")
    labels = Counter(r["relation"] for r in ld.rows)
    assert labels["country"] > 0 and "P17" not in labels
    assert ld.problems["cross-sentence pair"] > 0  # document-level facts a sentence classifier cannot see
    assert {r["e1_type"] for r in ld.rows} <= {"PER", "ORG", "LOC", "TIME", "NUM", "MISC"}


@needs_shared
def test_rebel_jsonl():
    ld = mixtune.read_rebel(SHARED / "rebel" / "sample.jsonl")
    check_shape(ld.rows, "rebel")
    labels = Counter(r["relation"] for r in ld.rows)
    assert labels["country"] > 0 and labels["no_relation"] == ld.generated_negatives
    positives = [r for r in ld.rows if r["relation"] != "no_relation"]
    # Each positive's text is one sentence (or the stretch of sentences holding both entities), not the abstract.
    assert sum(len(r["text"]) for r in positives) / len(positives) < 400


# ------------------------------------------------------------------------------- loaders, published-format fixtures

def test_tacred_inclusive_offsets_and_malformed_record():
    ld = mixtune.read_tacred(FIX / "tacred" / "train.json")
    check_shape(ld.rows, "tacred")
    assert len(ld.rows) == 9 and ld.problems == Counter({"subject or object span outside the sentence": 1})
    raw = {r["id"]: r for r in json.loads((FIX / "tacred" / "train.json").read_text())}
    for row in ld.rows:
        rec = raw[row["id"].removeprefix("tacred-")]
        assert row["e2"] == " ".join(rec["token"][rec["obj_start"]:rec["obj_end"] + 1])  # inclusive end
        assert row["relation"] == rec["relation"] and row["e1_type"] == rec["subj_type"]
    assert Counter(r["relation"] for r in ld.rows)["no_relation"] == 3


def test_biographical_direction_from_p1_and_label_aliases(tmp_path):
    ld = mixtune.read_biographical(FIX / "biographical" / "m2_test.tsv")
    check_shape(ld.rows, "biographical")
    assert ld.problems == Counter({"sentence without both <e1> and <e2> spans": 1})
    labels = {r["relation"] for r in ld.rows}
    assert labels == {"birthdate", "bplace_name", "deathdate", "dplace_name", "occupation", "parent", "child",
                      "sibling", "educatedAt", "Other"}
    # P1 = e2: the person is in <e2>, and becomes e1 of the row.
    lines = (FIX / "biographical" / "m2_test.tsv").read_text().splitlines()
    swapped = [ln.split("\t") for ln in lines[1:] if ln.split("\t")[3] == "e2"]
    assert swapped
    for cols in swapped:
        e2_tag = re.search(r"<e2>(.*?)</e2>", cols[1]).group(1)
        assert any(r["e1"] == e2_tag and r["relation"] == cols[2] for r in ld.rows)
    # Alias spellings map onto the files' own; an unknown label is counted.
    alias = tmp_path / "alias.tsv"
    alias.write_text(lines[0] + "\n" + "x1\t<e1>Ann Roe</e1> was born in <e2>Leeds</e2>\tbirthplace\te1\te2\tC\t1\t\n"
                     + "x2\t<e1>Ann Roe</e1> met <e2>Bob</e2>\tfriend\te1\te2\tC\t1\t\n")
    got = mixtune.read_biographical(alias)
    assert [r["relation"] for r in got.rows] == ["bplace_name"] and got.problems["unknown relation label"] == 1


def test_pairs_records_file_and_hub_loader_agree():
    by_file = mixtune.read_pairs(FIX / "pg_fiction" / "train.jsonl", "pg_fiction")
    check_shape(by_file.rows, "pg_fiction")
    assert by_file.problems == Counter({"chunk without an entity pair (a no-relation chunk)": 2,
                                        "record without text": 1})
    # datasets.load_dataset("json", data_files=...) stands in for a Hub id: the same converter, the same rows.
    by_hub = mixtune.load_source({"name": "pg_fiction", "format": "pairs", "hub": "json",
                                  "data_files": str(FIX / "pg_fiction" / "train.jsonl"), "split": "train"})
    assert by_hub.rows == by_file.rows and by_hub.problems == by_file.problems
    assert all(r["domain"] == "literary" for r in by_file.rows)


def test_malformed_rows_are_counted_by_reason(tmp_path):
    sem = tmp_path / "s.txt"
    sem.write_text('1\t"The <e1>cup</e1> held <e2>tea</e2>."\nContent-Container(e2,e1)\nComment:\n\n'
                   '2\t"No tags here."\nOther\nComment:\n\n3\t"A <e1>b</e1> c <e2>d</e2>"\n')
    ld = mixtune.read_semeval(sem)
    assert len(ld.rows) == 1 and ld.problems == Counter({"sentence without both <e1> and <e2> tags": 1,
                                                          "block without an id<TAB>sentence line and a label": 1})
    gids = tmp_path / "g.tsv"
    gids.write_text("m1\tm2\tA_B\tC\t/people/person/place_of_birth\tA_B was born in C . ###END###\n"
                    "m1\tm2\tA_B\tC\tNA\n")
    ld = mixtune.read_gids(gids)
    assert ld.rows[0]["e1"] == "A B" and ld.rows[0]["text"] == "A B was born in C ."
    assert ld.problems == Counter({"line with 5 columns, not 6": 1})
    frame = mixtune.problems_frame([ld])
    assert list(frame["count"]) == [1] and frame["example"].iloc[0].startswith("m1")


def test_load_source_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="format"):
        mixtune.load_source({"name": "x", "format": "csv", "path": "a"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['negatives'\]"):
        mixtune.load_source({"name": "x", "format": "unified", "path": str(tmp_path / "a.json"), "negatives": 1})
    with pytest.raises(FileNotFoundError, match="a.json"):
        mixtune.load_source({"name": "x", "format": "unified", "path": str(tmp_path / "a.json")})
    with pytest.raises(ValueError, match="path.*hub"):
        mixtune.load_source({"name": "x", "format": "unified"})


def test_sample_sources_load_as_the_notebook_reads_them():
    splits, loaded = mixtune.load_splits(mixtune.read_sources("params/sources/mixtune_sample.yaml"), progress=False)
    assert {k: len(v) for k, v in splits.items()} == {"train": 400, "val": 80, "test": 160}
    assert not any(ld.problems for ld in loaded)
    assert {r["domain"] for r in splits["test"]} == {"general", "literary"}
    full = mixtune.read_sources("params/sources/mixtune_full.yaml")
    assert [s["name"] for s in full] == list(mixtune.GENERAL) + list(mixtune.LITERARY)


# -------------------------------------------------------------------------------------------------- mixtures

def rows_of(ds: str, domain: str, n: int) -> list[dict]:
    return [{"id": f"{ds}-{i}", "text": f"{ds} sentence {i} with A and B", "e1": "A", "e2": "B", "e1_type": None,
             "e2_type": None, "relation": "r", "dataset": ds, "domain": domain} for i in range(n)]


def test_mixtune_balances_domains_with_caps_and_seed():
    rows = rows_of("g1", "general", 50) + rows_of("g2", "general", 30) + rows_of("lit", "literary", 40)
    mix = mixtune.mixture(rows, "mixtune", seed=1)
    sides = Counter(r["domain"] for r in mix)
    assert sides == Counter({"general": 40, "literary": 40})  # n = min(80, 40) from each side
    assert mix == mixtune.mixture(rows, "mixtune", seed=1) and mix != mixtune.mixture(rows, "mixtune", seed=2)
    capped = mixtune.mixture(rows, "mixtune", per_source_cap={"g1": 5, "g2": 5}, seed=1)
    assert Counter(r["domain"] for r in capped) == Counter({"general": 10, "literary": 10})
    assert len(mixtune.mixture(rows, "gentune", per_source_cap=20)) == 40
    assert {r["domain"] for r in mixtune.mixture(rows, "littune")} == {"literary"}
    with pytest.raises(ValueError, match=r"\['g3'\]"):  # a mistyped key is an error, not an uncapped set
        mixtune.mixture(rows, "mixtune", per_source_cap={"g3": 5})
    with pytest.raises(ValueError, match="both domains"):
        mixtune.mixture(rows_of("g1", "general", 5), "mixtune")


# -------------------------------------------------------------------------------------------------- prompts

@pytest.fixture(scope="module")
def tok():
    from kgutils.models import load_model

    return load_model("tiny:llama").tokenizer


def split_rows_fixture() -> tuple[list[dict], list[dict]]:
    train = [{"id": f"tr{i}", "text": f"Person {i} works at Company {i} in the city.", "e1": f"Person {i}",
              "e2": f"Company {i}", "e1_type": "PER", "e2_type": "ORG", "relation": ["work_for", "no_relation"][i % 2],
              "dataset": "news", "domain": "general"} for i in range(12)]
    test = [{"id": f"te{i}", "text": f"Person {i} works at Company {i} in the city." if i < 3 else
             f"Someone {i} visited Town {i} once.", "e1": f"Person {i}" if i < 3 else f"Someone {i}",
             "e2": f"Company {i}" if i < 3 else f"Town {i}", "e1_type": None, "e2_type": None,
             "relation": "test_only_label" if i == 5 else "live_in", "dataset": "news", "domain": "general"}
            for i in range(6)]
    return train, test


def user_sentences(messages: list[dict]) -> list[str]:
    return [re.search(r"Sentence: (.*)\n", m["content"]).group(1) for m in messages if m["role"] == "user"]


def test_no_test_sentence_or_label_reaches_a_prompt_as_a_demonstration(tok):
    train, test = split_rows_fixture()  # test rows 0-2 repeat train sentences: a leak waiting to happen
    pool = mixtune.DemoPool(train, exclude=test, seed=0)
    assert pool.removed == 3
    labels = mixtune.labels_by_dataset(train)
    recs, _ = mixtune.build_prompts(test, pool, tok, k=5, labels=labels, max_length=2048, for_training=False)
    test_texts = {r["text"] for r in test}
    for rec, row in zip(recs, test):
        demos = user_sentences(rec["messages"])[:-1]
        assert len(demos) == 5 and not set(demos) & test_texts
        assert user_sentences(rec["messages"])[-1] == row["text"]
        # The schema-enumerated list is the train split's: a test-only label never appears in any prompt.
        assert "test_only_label" not in rec["prompt"] and "work_for, no_relation" not in rec["prompt"]
        assert "Allowed labels: no_relation, work_for." in rec["prompt"]
    assert mixtune.demonstration_leaks(recs, test, pool) == 0
    # The check itself can fail: a pool that kept the repeated sentences is caught.
    leaky = mixtune.DemoPool(train, exclude=[], seed=0)
    recs2, _ = mixtune.build_prompts(test, leaky, tok, k=5, labels=labels, max_length=2048, for_training=False)
    assert mixtune.demonstration_leaks(recs2, test, leaky) > 0


def test_training_and_inference_prompts_have_one_shape(tok):
    train, _ = split_rows_fixture()
    pool = mixtune.DemoPool(train, seed=3)
    row = train[4]
    tr, _ = mixtune.build_prompts([row], pool, tok, k=2, labels=None, max_length=2048, for_training=True)
    inf, _ = mixtune.build_prompts([row], pool, tok, k=2, labels=None, max_length=2048, for_training=False)
    assert tr[0]["prompt"] == inf[0]["messages"]
    assert tr[0]["prompt"][0] == {"role": "system", "content": RC_SYSTEM}
    rendered_train = tok.apply_chat_template(tr[0]["prompt"] + tr[0]["completion"], tokenize=False)
    assert rendered_train.startswith(inf[0]["prompt"])  # the training text is the inference prompt + the answer
    assert row["text"] not in user_sentences(tr[0]["prompt"])[:-1]  # never its own sentence as a demonstration


def test_truncation_drops_demonstrations_then_words_never_the_answer(tok):
    long_row = {"id": "long", "text": " ".join(["filler"] * 60) + " Ada Byron met Charles Babbage in London "
                + " ".join(["padding"] * 60), "e1": "Ada Byron", "e2": "Charles Babbage", "e1_type": None,
                "e2_type": None, "relation": "a_rather_long_relation_label_name", "dataset": "news",
                "domain": "general"}
    train, _ = split_rows_fixture()
    pool = mixtune.DemoPool(train, seed=0)
    for max_length in (400, 200, 120):
        recs, stats = mixtune.build_prompts([long_row], pool, tok, k=2, labels=None, max_length=max_length,
                                            for_training=True)
        ids = tok.apply_chat_template(recs[0]["prompt"] + recs[0]["completion"], tokenize=False)
        n = len(tok(ids, add_special_tokens=False)["input_ids"])
        assert n <= max_length
        assert recs[0]["completion"][0]["content"] == long_row["relation"]  # the answer is whole
        query = recs[0]["prompt"][-1]["content"]
        assert "Ada Byron" in query and "Charles Babbage" in query
    assert stats.demos_dropped == 2 and stats.sentences_shortened == 1
    with pytest.raises(ValueError, match="'long'"):
        mixtune.build_prompts([long_row], pool, tok, k=0, labels=None, max_length=60, for_training=True)


# -------------------------------------------------------------------------------------------- label decoding

@pytest.fixture(scope="module")
def tiny_lm():
    from kgutils.models import load_model

    return load_model("tiny:llama")


def test_likelihood_scores_equal_a_full_forward_pass(tiny_lm):
    import torch

    from kgutils.generate import _end_of_answer_id, score_choices

    tok, model = tiny_lm.tokenizer, tiny_lm.model
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"Sentence: case {i}"}], tokenize=False,
                                       add_generation_prompt=True) for i in range(2)]
    choices = [["work_for", "work", "no_relation"], ["located_in", "other"]]
    got = score_choices(tiny_lm, prompts, choices, progress=False)
    end = _end_of_answer_id(tiny_lm)
    assert end == tok.convert_tokens_to_ids("<|im_end|>")
    for p, opts, res in zip(prompts, choices, got):
        for o in opts:
            ids = tok(p, add_special_tokens=False)["input_ids"]
            cont = tok(o, add_special_tokens=False)["input_ids"] + [end]
            with torch.no_grad():
                logp = model(input_ids=torch.tensor([ids + cont])).logits[0].float().log_softmax(-1)
            want = sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(cont))
            assert res["scores"][o] == pytest.approx(want, abs=1e-4)
        assert res["text"] == max(res["scores"], key=res["scores"].get)


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("decode", [False, True])
def test_packed_likelihood_scores_equal_one_pass_per_answer(arch, decode):
    """Answers packed as a prefix tree after prompts that share a long system turn (the shared-prefix path: one
    copy read by every row with the decoding attention, a copy per row without it; none for Gemma 3's sliding
    layers), in batches of several prompts, score as each answer does alone after its prompt."""
    import torch

    from kgutils.generate import _end_of_answer_id, for_inference, score_choices
    from kgutils.models import load_model

    lm = load_model(f"tiny:{arch}")
    if decode:
        lm = for_inference(lm, "fp32")
    tok, model = lm.tokenizer, lm.model
    system = "Label the relation between the two marked entities. " * 3
    prompts = [tok.apply_chat_template([{"role": "system", "content": system},
                                        {"role": "user", "content": "Sentence: " + "word " * (i * 3) + f"case {i}"}],
                                       tokenize=False, add_generation_prompt=True) for i in range(5)]
    prompts[3] = prompts[3].replace("case 3", "word " * 150 + "case 3")  # longer than Gemma's tiny window (128)
    labels = ["located_in", "located_near", "located", "work_for", "work", "no_relation", "org:founded_by",
              "org:founded", "per:title"]
    choices = [labels, labels[:4], labels[3:], ["x"], labels[::-1]]
    end = _end_of_answer_id(lm)
    for batch_size in (1, 3):
        got = score_choices(lm, prompts, choices, batch_size=batch_size, progress=False)
        for p, opts, res in zip(prompts, choices, got):
            ids = tok(p, add_special_tokens=False)["input_ids"]
            assert res["n_scored_tokens"] < sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in opts) + 1
            for o in opts:
                cont = tok(o, add_special_tokens=False)["input_ids"] + [end]
                with torch.no_grad():
                    logp = model(input_ids=torch.tensor([ids + cont])).logits[0].float().log_softmax(-1)
                want = sum(float(logp[len(ids) - 1 + j, t]) for j, t in enumerate(cont))
                assert res["scores"][o] == pytest.approx(want, abs=2e-4), (arch, decode, batch_size, o)
    with pytest.raises(ValueError, match="prompt 1 has no choices"):
        score_choices(lm, prompts[:2], [["x"], []], progress=False)


def test_classify_modes_on_a_random_model(tiny_lm):
    rows = [{"id": f"q{i}", "prompt": tiny_lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": f"Sentence: thing {i}"}], tokenize=False, add_generation_prompt=True),
             "choices": ["cause_effect", "other"] if i % 2 else ["work_for", "no_relation", "live_in"]}
            for i in range(5)]
    out = mixtune.classify(tiny_lm, rows, batch_size=2, max_new_tokens=2, progress=False)  # < a label
    assert set(out) == set(mixtune.RC_MODES)
    for mode in ("constrained", "likelihood"):  # a random model still answers one of its own labels
        assert all(a in r["choices"] for a, r in zip(out[mode]["raw"], rows)), out[mode]["raw"]
    assert len(out["free"]["raw"]) == 5 and all(d["ms_per_example"] > 0 for d in out.values())
    with pytest.raises(ValueError, match="unknown decoding mode"):
        mixtune.classify(tiny_lm, rows, ["beam"])
    with pytest.raises(ValueError, match="'q0' has no label list"):
        mixtune.classify(tiny_lm, [{**rows[0], "choices": None}], ["likelihood"])


def test_relation_classification_report_hand_worked():
    from kgutils.metrics import relation_classification_report

    gold = ["work_for", "Other", "live_in", "no_relation", "work_for", "NA"]
    pred = ["Answer: work_for", "none", "made_up_label", "work_for\nbecause", "", "nan"]
    allowed = [["work_for", "live_in", "no_relation"]] * 6
    rep = relation_classification_report(gold, pred, allowed)
    # TP: row 0. FP: row 2 (fabricated), row 3 (positive on a negative). FN: rows 2, 4.
    assert (rep["tp"], rep["fp"], rep["fn"]) == (1, 2, 2)
    assert rep["f1"] == pytest.approx(2 * (1 / 3) * (1 / 3) / (2 / 3))
    # Accuracy: rows 0, 1 (Other ~ none), 5 (NA ~ nan) are right.
    assert rep["accuracy"] == pytest.approx(3 / 6)
    assert rep["per_class"]["work_for"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert rep["per_class"]["none"]["support"] == 3 and rep["per_class"]["none"]["recall"] == pytest.approx(2 / 3)
    assert rep["schema_valid_rate"] == pytest.approx(5 / 6)  # only the fabricated label is outside the list
    assert rep["malformed_rate"] == pytest.approx(2 / 6)  # the empty answer and the two-line one


def test_shared_demonstrations_per_data_set(tok):
    train, test = split_rows_fixture()
    pool = mixtune.DemoPool(train, exclude=test, seed=0)
    recs, _ = mixtune.build_prompts(test, pool, tok, k=2, labels=None, max_length=2048, for_training=False,
                                    demos="per_dataset")
    assert len({tuple(r["demo_ids"]) for r in recs}) == 1 and len(recs[0]["demo_ids"]) == 2
    assert mixtune.demonstration_leaks(recs, test, pool) == 0
    with pytest.raises(ValueError, match="demos must be one of"):
        mixtune.build_prompts(test, pool, tok, k=2, labels=None, max_length=2048, for_training=False, demos="x")
