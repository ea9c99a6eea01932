"""kgutils.graph: canonical entities, ontology rules, calibration, the ladybug store, the Neo4j export and the CLI.

Hand-built predictions only (no models). Each test states the value it expects, so a wrong rule fails it.
"""

import csv
import hashlib
import json
import re

import numpy as np
import pandas as pd
import pytest

from kgutils import graph as G
from kgutils.__main__ import main
from kgutils.metrics import normalize_title
from kgutils.ontology import RELATIONS


def T(s, r, t, w=0.9, st="entity", tt="entity"):
    return {"source": {"title": s, "type": st}, "relation": {"type": r, "weight": w}, "target": {"title": t, "type": tt}}


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def row(pid, preds, gold=None, text=None, model="m"):
    return {"id": pid, "text": text or f"passage {pid}", "model": model, "gold_parsed": gold or [],
            "pred_raw": json.dumps(preds), "pred_parsed": preds, "pred_repaired": preds,
            "parse_status": "ok", "repair_status": "ok"}


ROWS = [
    row("p1", [T("Acme Corp", "developed_by", "Transformer model", 0.8), T("A", "contrasts_with", "B", 0.5),
               T("Transformer model", "used_for", "translation", 0.7, tt="concept")]),
    row("p2", [T("ACME Corporation", "developed_by", "Transformer models", 0.5), T("B", "contrasts_with", "A", 0.6),
               T("GPT-3", "predecessor_of", "GPT-4", 1.0)]),
]


def edge(graph, s, rel, t):
    reg = {r.title: r.id for r in graph.nodes.itertuples()}
    m = graph.edges[(graph.edges.source == reg[s]) & (graph.edges.relation == rel) & (graph.edges.target == reg[t])]
    assert len(m) == 1, (s, rel, t, graph.edges)
    return m.iloc[0]


def snapshot(store):
    g = store.to_graph()
    e = g.edges.drop(columns=["evidence"]).assign(passages=lambda d: d.passages.map(tuple))
    n = g.nodes.assign(aliases=lambda d: d.aliases.map(tuple))
    return store.counts(), e, n, g.mentioned_in.assign(forms=lambda d: d.forms.map(tuple))


# ----------------------------------------------------------------------------------------- entity registry
def test_alias_merges_are_recorded_with_evidence_and_ids_are_stable():
    reg = G.EntityRegistry()
    acme = reg.add("Acme Corp")
    assert acme == "e:" + hashlib.sha1(b"acme").hexdigest()[:12]  # from the normalised title: stable everywhere
    assert reg.add("ACME Corporation") == acme  # company suffix and case: the same normalised title
    tm = reg.add("Transformer model")
    assert reg.add("Transformer models") == tm  # plural: rapidfuzz token_sort_ratio 97.1
    assert reg.add("GPT-3") != reg.add("GPT-4")  # numbers differ: never merged by similarity
    assert reg.add("protein kinase a") != reg.add("protein kinase c")  # 93.75, but "a" and "c" are other words
    merges = reg.merges_frame().set_index("alias")
    assert merges.loc["ACME Corporation", "method"] == "normalised"
    assert merges.loc["ACME Corporation", "canonical"] == "Acme Corp" and merges.loc["ACME Corporation", "score"] == 100
    assert merges.loc["Transformer models", "method"] == "fuzzy"
    assert merges.loc["Transformer models", "score"] == pytest.approx(97.142857, abs=1e-4)
    assert merges.loc["Transformer models", "entity"] == tm
    assert set(merges.index) == {"ACME Corporation", "Transformer models"}
    assert reg.entity(acme)["aliases"] == ["ACME Corporation", "Acme Corp"]  # every raw surface form
    assert reg.entity(acme)["title"] == "Acme Corp"  # the first form stays canonical
    # The threshold is a parameter: off, the plural is its own entity.
    strict = G.EntityRegistry(fuzzy_threshold=None)
    assert strict.add("Transformer model") != strict.add("Transformer models")


def test_embedding_merges_join_synonyms_but_not_two_stored_entities():
    vectors = {"car": [1, 0, 0], "automobile": [0.99, 0.05, 0], "boat": [0, 1, 0], "ship": [0, 0.98, 0.1],
               "engine 2": [0, 0, 1], "engine 3": [0, 0, 1]}

    def embedder(texts):
        return np.array([vectors[t] for t in texts], dtype=float)

    reg = G.EntityRegistry(embedder=embedder, embedding_threshold=0.95)
    reg.seed("e:boat", "boat", "boat", "entity", ["boat"])
    reg.seed("e:ship", "ship", "ship", "entity", ["ship"])  # both already in the database: left apart
    for t in ("car", "automobile", "engine 2", "engine 3"):
        reg.add(t)
    assert reg.merge_embeddings() == 1
    assert reg.resolve("automobile") == reg.resolve("car") == G.entity_id("car")
    assert reg.resolve("boat") != reg.resolve("ship")
    assert reg.resolve("engine 2") != reg.resolve("engine 3")  # identical vectors, different numbers
    m = reg.merges_frame().iloc[-1]
    assert (m.alias, m.canonical, m.method) == ("automobile", "car", "embedding") and m.score > 0.95


# ----------------------------------------------------------------------------------------- ontology rules
def test_symmetric_relation_stored_once_directed_ones_twice(tmp_path):
    entries = [{"id": "p1", "pred": [T("A", "contrasts_with", "B", 0.5), T("B", "contrasts_with", "A", 0.6),
                                      T("A", "part_of", "B", 0.5), T("B", "part_of", "A", 0.5)]}]
    g = G.build_graph(entries)
    sym = g.edges[g.edges.relation == "contrasts_with"]
    assert len(sym) == 1 and sym.iloc[0].mentions == 2
    assert sym.iloc[0].source < sym.iloc[0].target  # endpoints ordered by id
    assert sym.iloc[0].calibrated == 0.6  # one passage: its best mention, not a noisy-OR of both
    assert len(g.edges[g.edges.relation == "part_of"]) == 2  # directed: both directions are different facts
    with G.GraphStore(tmp_path / "g.lbdb") as store:
        store.bulk_upsert(g)
        assert store.counts()["by_relation"] == {"contrasts_with": 1, "part_of": 2}


def test_self_loops_are_dropped_and_counted():
    entries = [{"id": "p1", "pred": [T("Acme Corp", "part_of", "ACME Inc."),  # same normalised title
                                      T("Transformer model", "extends", "transformer models"),  # fuzzy alias
                                      T("Acme", "part_of", "Google")]}]
    g = G.build_graph(entries)
    assert g.report["dropped"]["self_loop"] == 2
    assert g.report["kept"] == 1 and len(g.edges) == 1
    assert set(g.dropped.reason) == {"self_loop"} and len(g.dropped) == 2


def test_malformed_items_are_counted_by_reason_never_dropped_silently():
    pred = [
        "junk", None, {"source": "A", "relation": "part_of", "target": "B"},  # 2 not_an_object, 1 malformed_node
        {"source": {"title": "A", "type": "entity"}, "target": {"title": "B", "type": "entity"}},  # no relation
        T("A", "invents", "B"),  # unknown_relation
        T("A", "part_of", "B", True), T("A", "part_of", "B", 1.5), T("A", "part_of", "B", float("nan")),
        T("A", "part_of", "B", st="person"),  # unknown_entity_type
        T("  ", "part_of", "B"), T("A", "part_of", '""'),  # empty_title (after normalisation)
        T("A", "Part Of", "B", 0.4),  # kept: case and spaces fold onto part_of
    ]
    g = G.build_graph([{"id": "p1", "pred": pred}])
    assert g.report["dropped"] == {"not_an_object": 2, "malformed_node": 1, "malformed_relation": 1,
                                   "unknown_relation": 1, "invalid_weight": 3, "unknown_entity_type": 1,
                                   "empty_title": 2, "self_loop": 0}
    assert g.report["triplets_in"] == len(pred) == g.report["kept"] + sum(g.report["dropped"].values())
    assert len(g.dropped) == 11 and g.edges.relation.tolist() == ["part_of"]


def test_noisy_or_over_passages_hand_worked():
    assert G.noisy_or([0.5, 0.5]) == 0.75
    assert G.noisy_or([0.2, 0.5, 0.0]) == pytest.approx(1 - 0.8 * 0.5)
    assert G.noisy_or([]) == 0.0
    with pytest.raises(ValueError):
        G.noisy_or([1.2])
    two_passages = [{"id": "p1", "pred": [T("A", "part_of", "B", 0.5)]}, {"id": "p2", "pred": [T("A", "part_of", "B", 0.5)]}]
    e = G.build_graph(two_passages).edges.iloc[0]
    assert (e.calibrated, e.weight, e.mentions, e.passages) == (0.75, 0.5, 2, ["p1", "p2"])
    one_passage = [{"id": "p1", "pred": [T("A", "part_of", "B", 0.5), T("A", "part_of", "B", 0.5)]}]
    e = G.build_graph(one_passage).edges.iloc[0]
    assert (e.calibrated, e.mentions) == (0.5, 2)  # a repeated answer is not a second witness
    # A calibrator maps each mention first: constant 0.2 per mention -> 1 - 0.8^2.
    e = G.build_graph(two_passages, calibrator=G.Calibrator("constant", {"value": 0.2})).edges.iloc[0]
    assert e.calibrated == pytest.approx(0.36) and e.weight == 0.5


# ----------------------------------------------------------------------------------------- calibration
def miscalibrated(n, seed):
    rng = np.random.default_rng(seed)
    w = rng.uniform(0, 1, n)
    return w, rng.uniform(0, 1, n) < w**3  # over-confident: true rate w^3


def test_isotonic_calibrator_reduces_ece_and_round_trips(tmp_path):
    w_fit, y_fit = miscalibrated(2000, 0)
    w_test, y_test = miscalibrated(2000, 1)
    cal = G.fit_calibrator(w_fit, y_fit, "isotonic")
    rep = G.calibration_report(w_test, y_test, cal, n_resamples=200, seed=0)
    assert rep["before"]["ece"] > 0.2  # E|w - w^3| = 0.25
    assert rep["after"]["ece"] < 0.05 and rep["after"]["brier"] < rep["before"]["brier"]
    lo, hi = rep["ci"]["ece_change"]
    assert lo <= hi < 0
    assert rep["ci"]["ece_before"][0] <= rep["before"]["ece"] <= rep["ci"]["ece_before"][1]
    assert len(rep["before"]["bins"]) == len(rep["after"]["bins"]) == 10
    from sklearn.isotonic import IsotonicRegression

    sk = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(w_fit, y_fit)
    probe = np.linspace(-0.1, 1.1, 301).clip(0, 1)
    np.testing.assert_allclose(cal.predict(probe), sk.predict(probe), atol=1e-12)
    path = cal.save(tmp_path / "cal.json")
    loaded = G.Calibrator.load(path)
    assert np.array_equal(loaded.predict(probe), cal.predict(probe)) and loaded.method == "isotonic"
    assert "pickle" not in path.read_text() and json.loads(path.read_text())["method"] == "isotonic"


def test_platt_calibrator_and_degenerate_inputs(tmp_path):
    w, y = miscalibrated(2000, 2)
    platt = G.fit_calibrator(w, y, "platt")
    assert platt.params["a"] > 0  # a higher weight still means a likelier triplet
    assert G.calibration_report(w, y, platt, n_resamples=0)["after"]["ece"] < 0.1
    loaded = G.Calibrator.load(platt.save(tmp_path / "platt.json"))
    assert np.array_equal(loaded.predict(w), platt.predict(w))
    with pytest.raises(ValueError, match="at least 2"):
        G.fit_calibrator([0.5], [True])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        G.fit_calibrator([0.5, 1.5], [True, False])
    with pytest.raises(ValueError, match="unknown calibration method"):
        G.fit_calibrator([0.1, 0.9], [False, True], "beta")
    none_right = G.fit_calibrator([0.9, 0.8, 0.95], [False, False, False])
    assert none_right.method == "constant" and none_right.predict([0.99])[0] == pytest.approx(1 / 5)
    (tmp_path / "bad.json").write_text('{"method": "isotonic"}')
    with pytest.raises(ValueError, match="not a calibrator"):
        G.Calibrator.load(tmp_path / "bad.json")


def test_crossfit_keeps_each_passage_out_of_its_own_fold():
    rng = np.random.default_rng(3)
    groups = [f"p{i // 4}" for i in range(200)]  # 50 passages, 4 predictions each
    w = rng.uniform(0, 1, 200)
    y = rng.uniform(0, 1, 200) < w
    folds = G.crossfit_folds(groups, k=5, seed=0)
    for g in set(groups):
        assert len({f for f, gg in zip(folds, groups) if gg == g}) == 1  # a passage lies in one fold
    assert sorted(set(folds.tolist())) == [0, 1, 2, 3, 4]
    oof = G.crossfit_calibrated(w, y, groups, k=5, seed=0)
    for f in range(5):
        held = folds == f
        expected = G.fit_calibrator(w[~held], y[~held]).predict(w[held])
        np.testing.assert_array_equal(oof[held], expected)
    assert not np.allclose(oof, G.fit_calibrator(w, y).predict(w))  # in-sample fit would differ
    with pytest.raises(ValueError, match="2 groups"):
        G.crossfit_folds(["p1", "p1"], k=5)


def test_calibration_outcomes_and_calibrated_mentions(tmp_path):
    gold = [T("BERT", "developed_by", "Google", 0.9)]
    rows = [row("p1", [T("BERT", "developed_by", "Google", 0.9), T("BERT", "part_of", "Paris", 0.7)], gold=gold),
            row("p2", [T("BERT", "developed_by", "Google", 0.4)])]  # no gold: no outcomes
    rows[1].pop("gold_parsed")
    path = write_rows(tmp_path / "pred.jsonl", rows)
    out = G.calibration_outcomes(path)
    assert out[["id", "pred_idx", "weight", "correct"]].values.tolist() == [["p1", 0, 0.9, True],
                                                                           ["p1", 1, 0.7, False]]
    assert out.attrs["skipped_without_gold"] == 1
    assert out.key.tolist() == [G.mention_key("m", "p1", 0), G.mention_key("m", "p1", 1)]
    lookup = {out.key[0]: 0.99}  # a map by mention key; the others keep their raw weight and are counted
    g = G.build_graph(G.read_predictions(path), calibrator=lookup)
    assert g.report["uncalibrated"] == 2
    e = edge(g, "BERT", "developed_by", "Google")
    assert e.calibrated == pytest.approx(1 - 0.01 * 0.6)


# ----------------------------------------------------------------------------------------- the database
@pytest.mark.parametrize("write", ["bulk", "rows"])
def test_ingesting_twice_changes_nothing(tmp_path, write):
    path = write_rows(tmp_path / "pred.jsonl", ROWS)
    db = tmp_path / "g.lbdb"
    first = G.ingest(path, db, write=write)
    with G.GraphStore(db) as store:
        before = snapshot(store)
    second = G.ingest(path, db, write=write)
    with G.GraphStore(db) as store:
        after = snapshot(store)
    assert (first["nodes"], first["edges"]) == (second["nodes"], second["edges"]) == (7, 4)
    assert second["write"]["edges_existing"] == 4
    assert before[0] == after[0]
    pd.testing.assert_frame_equal(before[1], after[1])  # weights, calibrated, mentions, passages: not doubled
    pd.testing.assert_frame_equal(before[2], after[2])
    pd.testing.assert_frame_equal(before[3], after[3])
    e = before[1].set_index(["source_title", "relation", "target_title"])
    dev = e.loc[("Acme Corp", "developed_by", "Transformer model")]
    assert (dev.weight, dev.calibrated, dev.mentions) == (0.8, pytest.approx(1 - 0.2 * 0.5), 2)


def test_incremental_ingest_continues_entities_and_evidence(tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [row("p1", [T("Acme Corp", "developed_by", "Transformer model", 0.5)])])
    b = write_rows(tmp_path / "b.jsonl", [row("p2", [T("ACME Corporation", "developed_by", "Transformer models", 0.5)])])
    db = tmp_path / "g.lbdb"
    G.ingest(a, db)
    report = G.ingest(b, db)  # a new process would do the same: the registry is seeded from the database
    assert (report["nodes"], report["edges"]) == (2, 1)
    with G.GraphStore(db) as store:
        e = store.to_graph().edges.iloc[0]
        assert (e.mentions, e.calibrated, e.passages) == (2, 0.75, ["p1", "p2"])
        nodes = store.nodes_frame().set_index("title")
        assert sorted(nodes.loc["Transformer model", "aliases"]) == ["Transformer model", "Transformer models"]
        assert store.find_entity("ACME Corporation") == G.entity_id("acme")
    # A graph built without the database's registry still only adds aliases (united in the MERGE itself).
    c = write_rows(tmp_path / "c.jsonl", [row("p3", [T("Acme Corp.", "developed_by", "Transformer model", 0.5)])])
    d = write_rows(tmp_path / "d.jsonl", [row("p3", [T("ACME corp", "developed_by", "Transformer model", 0.5)],
                                              model="m2")])  # another model, same passage
    for write in ("rows", "bulk"):
        with G.GraphStore(db) as store:
            store.upsert(G.build_graph(G.read_predictions(c)), write)
            store.upsert(G.build_graph(G.read_predictions(d)), write)
            acme = store.nodes_frame().set_index("id").loc[G.entity_id("acme")]
            assert list(acme.aliases) == ["ACME Corporation", "ACME corp", "Acme Corp", "Acme Corp."]
            assert acme.title == "Acme Corp"
            g = store.to_graph()
            assert len(g.edges) == 1 and g.edges.iloc[0].mentions == 4 and g.edges.iloc[0].calibrated == 0.875
            forms = g.mentioned_in.set_index(["entity", "passage"]).forms
            assert list(forms.loc[(G.entity_id("acme"), "p3")]) == ["ACME corp", "Acme Corp."]


def test_cypher_in_model_output_is_data_not_code(tmp_path):
    evil_title = 'x"}) DETACH DELETE n //'
    evil_title2 = "'}) MATCH (n) DETACH DELETE n; //"
    rows = [row("p1", [T(evil_title, "used_for", "Y", 0.7), T("Y", "part_of]->() DELETE", "Z"),
                       T(evil_title2, "part_of", "Z", 0.6), T("Z", "`part_of` {weight: 1}]->(b) //", "Y")])]
    path = write_rows(tmp_path / "pred.jsonl", rows)
    for write in ("bulk", "rows"):
        db = tmp_path / f"{write}.lbdb"
        report = G.ingest(path, db, write=write)
        assert report["dropped"]["unknown_relation"] == 2
        assert report["edges"] == 2 and report["nodes"] == 4
        with G.GraphStore(db) as store:
            titles = set(store.nodes_frame().title)
            assert {evil_title, evil_title2} <= titles  # stored verbatim, as data
            assert store.find_entity(evil_title) == G.entity_id(normalize_title(evil_title))
            tables = set(store.query("CALL show_tables() RETURN name").name)
            assert tables == {*RELATIONS, "Entity", "Passage", "MENTIONED_IN"}  # no table dropped or added
            assert store.counts()["by_relation"] == {"part_of": 1, "used_for": 1}
    with pytest.raises(ValueError, match="not an ontology relation"):
        G.relation_label("part_of]->() DELETE")


def test_bulk_and_row_writes_agree_and_copy_only_on_an_empty_database(tmp_path):
    g = G.build_graph(G.read_predictions(write_rows(tmp_path / "pred.jsonl", ROWS)))
    snaps = []
    for write in ("bulk", "rows"):
        with G.GraphStore(tmp_path / f"{write}.lbdb") as store:
            result = store.upsert(g, write)
            assert result["mode"] == ("copy" if write == "bulk" else "rows")
            snaps.append(snapshot(store))
    assert snaps[0][0] == snaps[1][0]
    for a, b in zip(snaps[0][1:], snaps[1][1:]):
        pd.testing.assert_frame_equal(a, b)
    with G.GraphStore(tmp_path / "bulk.lbdb") as store:
        with pytest.raises(ValueError, match="empty database"):
            store.bulk_upsert(g, copy=True)
        assert store.bulk_upsert(g)["mode"] == "merge"
        assert store.counts() == snaps[0][0]


def test_store_queries(tmp_path):
    with G.GraphStore(tmp_path / "g.lbdb") as store:
        store.bulk_upsert(G.build_graph(G.read_predictions(write_rows(tmp_path / "p.jsonl", ROWS))))
        top = store.top_entities(2)
        assert top.iloc[0].title == "Transformer model" and top.iloc[0].degree == 2
        one = store.neighbourhood("acme", hops=1)
        assert set(zip(one.source_title, one.relation, one.target_title)) == {
            ("Acme Corp", "developed_by", "Transformer model")}
        two = store.neighbourhood("ACME Corporation", hops=2)
        assert set(two.relation) == {"developed_by", "used_for"} and two.hop.tolist() == [1, 2]
        above = store.edges_above(0.75)
        assert above.calibrated.min() >= 0.75 and above.calibrated.is_monotonic_decreasing
        assert set(above.relation) == {"predecessor_of", "contrasts_with", "developed_by"}
        with pytest.raises(KeyError):
            store.neighbourhood("nobody")
        assert store.degrees().degree.sum() == 2 * store.counts()["edges"]


# ----------------------------------------------------------------------------------------- Neo4j export
def test_neo4j_export_follows_the_import_format(tmp_path):
    odd = ['Smith, "The Great" & Co', "line\nbreak", "back\\slash 'quote'", "tab\there"]
    rows = [row("p1", [T(odd[0], "developed_by", odd[1], 0.5), T(odd[2], "contrasts_with", odd[3], 0.25)]),
            row("p2", [T(odd[0], "developed_by", odd[1], 0.5)])]
    g = G.build_graph(G.read_predictions(write_rows(tmp_path / "p.jsonl", rows)))
    paths = G.export_neo4j(g, tmp_path / "neo4j")
    with paths["nodes"].open(newline="", encoding="utf-8") as fh:
        nodes = list(csv.reader(fh))
    with paths["relationships"].open(newline="", encoding="utf-8") as fh:
        rels = list(csv.reader(fh))
    assert nodes[0] == ["key:ID(Entity)", "title", "type", ":LABEL"]
    assert rels[0] == [":START_ID(Entity)", ":END_ID(Entity)", "weight:double", "calibrated:double", "passages",
                       ":TYPE"]
    keys = {r[0]: r[1] for r in nodes[1:]}
    assert sorted(keys.values()) == sorted(odd)  # quotes, commas, line breaks survive the CSV round trip
    assert all(r[2] in ("entity", "concept") and r[3] == "Entity" for r in nodes[1:])
    assert len(rels) == 3
    for s, t, w, c, passages, typ in rels[1:]:
        assert s in keys and t in keys and typ in RELATIONS
        assert 0 <= float(w) <= 1 and 0 <= float(c) <= 1
        assert set(passages.split(";")) <= {"p1", "p2"}
    text = paths["cypher"].read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("//")]
    assert lines[0] == "CREATE CONSTRAINT entity_key IF NOT EXISTS FOR (e:Entity) REQUIRE e.key IS UNIQUE;"
    assert len(lines) == 1 + 4 + 2 and all(ln.endswith(";") for ln in lines)  # one statement a line
    literal = re.compile(r"'((?:[^'\\]|\\.)*)'")
    unescape = {"n": "\n", "t": "\t", "r": "\r", "'": "'", "\\": "\\", '"': '"', "b": "\b", "f": "\f"}
    decoded = set()
    for ln in lines[1:5]:
        assert ln.startswith("MERGE (e:Entity {key: ")
        decoded.add(re.sub(r"\\(.)", lambda m: unescape[m.group(1)], literal.findall(ln)[1]))
    assert decoded == set(odd)
    for ln in lines[5:]:
        assert re.search(r"MERGE \(a\)-\[r:(\w+)\]->\(b\)", ln).group(1) in RELATIONS
    assert G.cypher_string("a'b\\c\nd") == "'a\\'b\\\\c\\nd'"
    assert {r[4] for r in rels[1:]} == {"p1;p2", "p1"}
    # A passage id holding the array delimiter would split into two: refused, another delimiter accepted.
    g.edges.at[0, "passages"] = ["p;1"]
    with pytest.raises(ValueError, match="delimiter"):
        G.export_neo4j(g, tmp_path / "neo4j")
    G.export_neo4j(g, tmp_path / "neo4j", array_delimiter="|")


# ----------------------------------------------------------------------------------------- CLI
def test_cli_calibrate_and_ingest_end_to_end(tmp_path, capsys):
    gold = [T("BERT", "developed_by", "Google", 0.9)]
    val = write_rows(tmp_path / "val.jsonl", [
        row(f"v{i}", [T("BERT", "developed_by", "Google", 0.9), T("BERT", "part_of", f"X{i}", 0.8)], gold=gold)
        for i in range(6)])
    test = write_rows(tmp_path / "test.jsonl", ROWS)
    cal = tmp_path / "cal.json"
    assert main(["calibrate", str(val), "--out", str(cal), "--bootstrap", "20", "--folds", "3"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 12 and printed["n_correct"] == 6 and cal.is_file()
    db, neo = tmp_path / "g.lbdb", tmp_path / "neo4j"
    args = ["ingest", str(test), "--db", str(db), "--calibrator", str(cal), "--neo4j-out", str(neo), "--no-progress"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["passages"] == 2 and first["triplets_in"] == 6 and first["calibration"] == "isotonic"
    assert (first["nodes"], first["edges"]) == (7, 4) and first["merged"]["duplicates"] == 2
    assert first["merged"]["aliases"] == {"normalised": 1, "fuzzy": 1, "embedding": 0}
    assert set(first["dropped"]) == set(G.DROP_REASONS)
    assert (neo / "nodes.csv").is_file() and (neo / "load.cypher").is_file()
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert (second["nodes"], second["edges"]) == (first["nodes"], first["edges"])
    assert main(["ingest", str(tmp_path / "missing.jsonl"), "--db", str(db)]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main(["ingest", str(test), "--db", str(db), "--calibrator", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope.json" in err
