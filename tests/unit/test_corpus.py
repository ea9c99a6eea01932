"""Tests of ``kgutils.corpus``: chunking, quality rules, language and duplicate filters, loaders and the funnel.

Every input is written here so that the right answer is known without running the code under test: planted
duplicates, paragraphs in other languages, stubs and boilerplate, each with the stage that must remove it.
"""

from __future__ import annotations

import concurrent.futures
import json
import random
import re
from pathlib import Path

import pytest

from kgutils import corpus

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RAW = REPO_ROOT / "data" / "sample" / "raw"
SAMPLE_TEACHER = REPO_ROOT / "data" / "sample" / "teacher"

# --------------------------------------------------------------------------------------------------
# Hand-written passages (original text, encyclopedic English unless the name says otherwise)
# --------------------------------------------------------------------------------------------------

LIGHTHOUSE = (
    "The lighthouse at Kestrel Point was built in 1871 to guard ships against the reefs that lie off the northern "
    "headland. Its tower is made of local granite and rises about thirty metres above the rocks, with a lantern room "
    "that was first lit by oil lamps and later converted to electric light in the early twentieth century. The "
    "keepers lived with their families in two small cottages beside the tower, and supplies were brought in by boat "
    "whenever the weather allowed. After the light was automated in 1989 the cottages were restored by a local "
    "trust, and today they house a small museum about the history of the coast and the people who worked there."
)
# Planted near duplicates: one word changed, and two adjacent words changed.
LIGHTHOUSE_1 = LIGHTHOUSE.replace("local granite", "local sandstone")
LIGHTHOUSE_2 = LIGHTHOUSE.replace("small museum", "little gallery")

BASE = [
    "The printing press with movable metal type was developed in Mainz in the middle of the fifteenth century. "
    "It allowed books to be produced far more quickly than by hand copying, and within a few decades print shops "
    "had opened in most of the large trading cities of Europe. The spread of cheap printed pamphlets changed the "
    "way that news, religious ideas and scientific results reached ordinary readers.",
    "Honeybees live in colonies that can hold tens of thousands of workers, a few hundred drones and a single "
    "queen. The workers build the comb from wax that they secrete from glands on their abdomen, and they store "
    "nectar and pollen in its cells. A forager that finds a good source of food returns to the hive and performs "
    "a waggle dance that tells her sisters the direction and the distance of the flowers.",
    "The island was formed by a series of volcanic eruptions on the floor of the ocean about two million years "
    "ago. Its highest peak is the rim of an old crater that is now filled with a shallow lake. The lower slopes "
    "are covered with terraced fields, and most of the population lives in small fishing villages along the "
    "sheltered southern coast, where the harbours are protected from the winter storms.",
    "The first public railway to carry passengers in steam trains opened in the north of England in 1825. "
    "It was built to move coal from the mines to the river, but the owners soon found that people were willing "
    "to pay for the journey as well. Over the following thirty years a dense network of lines was laid across "
    "the country, and the new timetables forced towns to adopt a single standard time.",
    "Chess is a board game for two players that is thought to have developed in India around the sixth century. "
    "It reached Persia and then the Islamic world, where the pieces were given many of the names that they still "
    "carry in other languages. The modern rules, with the powerful queen and the long move of the bishop, were "
    "settled in southern Europe near the end of the fifteenth century.",
    "The cathedral was begun in the twelfth century and took more than two hundred years to complete, so its "
    "nave and its choir are built in quite different styles. The west front is decorated with hundreds of carved "
    "figures of saints and kings, and the tall windows of the choir still hold much of their original stained "
    "glass. A fire in the roof during the last century led to a long programme of repairs.",
    "Copper was one of the first metals to be worked by people, because it can be found in a pure state and is "
    "soft enough to be hammered into shape without heating. Later smiths learned to smelt it from its ores and "
    "to mix it with tin to make bronze, which is much harder and holds a sharp edge. The metal is still widely "
    "used for electrical wiring because it conducts electricity very well.",
    "Coral reefs are built by colonies of tiny animals that take calcium from the sea water and lay down hard "
    "skeletons beneath their soft bodies. The reefs grow only in warm and clear water where there is enough light "
    "for the algae that live inside the coral and supply it with food. They give shelter to a great number of "
    "fish and other creatures, and they protect many tropical coasts from the force of the waves.",
    "The market town grew up at a crossing of the river where two old roads met, and it was granted the right "
    "to hold a weekly market in the thirteenth century. Its wealth came mainly from the wool trade, and the "
    "merchants paid for the large parish church and the stone bridge that still stand today. The decline of the "
    "trade in later centuries left the centre of the town almost unchanged.",
    "A refracting telescope uses a lens at the front of a long tube to gather light and bring it to a focus. "
    "Early instruments of this kind showed coloured fringes around bright objects, because the glass bends light "
    "of different colours by different amounts. Opticians later reduced the problem by joining two lenses made of "
    "different kinds of glass, and such lenses are still used in small telescopes and in cameras.",
    "The violin has four strings tuned a fifth apart and is played with a bow strung with horse hair. The best "
    "known makers worked in the small Italian city of Cremona during the seventeenth and eighteenth centuries, and "
    "their instruments are still played by leading soloists. The body is made of a spruce top and a maple back, "
    "and its shape has changed very little since that period.",
    "The glacier flows slowly down a steep valley from a large ice field high in the mountains. As it moves it "
    "grinds the rock beneath it into fine powder, which gives the meltwater river at its foot a milky colour. "
    "Over the past century the front of the glacier has retreated by more than two kilometres, and the bare "
    "ground it has left behind is being colonised by mosses, grasses and small shrubs.",
]
# Exact duplicate of BASE[0] up to case and white space.
BASE0_EXACT = BASE[0].replace("The printing press", "THE  Printing   press").replace(" in Mainz", "\nin  Mainz")

GERMAN = (
    "Die Stadt liegt an einem breiten Fluss und wurde im zwölften Jahrhundert als Handelsplatz gegründet. "
    "Ihre Altstadt mit den engen Gassen und den alten Fachwerkhäusern wird heute von vielen Besuchern aus dem "
    "ganzen Land besucht, besonders im Sommer, wenn auf dem Marktplatz zahlreiche Feste stattfinden."
)
FRENCH = (
    "Le village se trouve au pied d'une haute falaise calcaire, au bord d'une rivière qui traverse la vallée "
    "du nord au sud. Son église romane, construite au onzième siècle, conserve des peintures murales remarquables "
    "et attire chaque année de nombreux visiteurs venus de toute la région."
)
STUB = "See also the list of lighthouses."
COOKIES = (
    "We use cookies to give you the best experience on this website. By clicking accept all you agree to the "
    "use of cookies as described in our privacy policy and terms of use. You can sign in to change your settings, "
    "or subscribe to our newsletter to hear about the latest updates from the team."
)
REPEATED_LINES = "\n".join(["Read more about the history of the old town and the people who lived in it."] * 6)
LINK_LIST = (
    "Further reading and links about the history of the railway and the engineers who built it: www.rails.com, "
    "www.steam.org, www.lines.net, www.trains.com, www.depots.org and www.signals.com for more."
)
ENCYCLOPEDIC = BASE[3]


def shingle_jaccard(a: str, b: str, n: int = 5) -> float:
    """True Jaccard similarity of word 5-gram sets (independent of MinHash)."""

    def grams(t: str) -> set[tuple[str, ...]]:
        w = re.findall(r"\w+", t.lower())
        return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}

    ga, gb = grams(a), grams(b)
    return len(ga & gb) / len(ga | gb)


def build(docs, **kw):
    return corpus.build_corpus(docs, workers=1, show_progress=False, **kw)


# --------------------------------------------------------------------------------------------------
# chunk_document
# --------------------------------------------------------------------------------------------------


def test_chunk_splits_paragraphs_on_blank_lines():
    text = ("First paragraph one.\nStill the first.\n\nSecond paragraph.\r\n\r\nThird one.\n   \n\n"
            "  Fourth here.  \n\n\n")
    assert corpus.chunk_document(text) == [
        "First paragraph one.\nStill the first.",
        "Second paragraph.",
        "Third one.",
        "Fourth here.",
    ]


def test_chunk_long_paragraph_split_at_sentence_boundaries():
    # Sentences of 7, 5, 9, 4, 6 and 8 words; with max_words=12 the greedy pieces are known.
    sentences = [
        "Alpha beta gamma delta epsilon zeta eta.",
        "Theta iota kappa lambda mu.",
        "Nu xi omicron pi rho sigma tau upsilon phi.",
        "Chi psi omega one.",
        "Two three four five six seven.",
        "Eight nine ten eleven twelve thirteen fourteen fifteen.",
    ]
    para = " ".join(sentences)
    pieces = corpus.chunk_document("Short intro paragraph.\n\n" + para, max_words=12)
    assert pieces[0] == "Short intro paragraph."
    body = pieces[1:]
    assert body == [
        " ".join(sentences[0:2]),  # 7 + 5 = 12
        " ".join(sentences[2:3]),  # 9 (+4 would be 13)
        " ".join(sentences[3:5]),  # 4 + 6 = 10 (+8 would be 18)
        sentences[5],
    ]
    assert all(len(p.split()) <= 12 for p in body)
    assert all(p.endswith(".") for p in body)
    assert " ".join(body).split() == para.split()


def test_chunk_single_huge_sentence_is_hard_cut():
    words = ["W0"] + [f"w{i}" for i in range(1, 25)]
    huge = " ".join(words)  # 25 words without a sentence boundary
    pieces = corpus.chunk_document("Lead sentence here. " + huge + ". Tail sentence.", max_words=10)
    assert all(1 <= len(p.split()) <= 10 for p in pieces)
    assert " ".join(pieces).split() == ("Lead sentence here. " + huge + ". Tail sentence.").split()
    assert pieces[0] == "Lead sentence here."
    assert pieces[-1] == "Tail sentence."
    assert [len(p.split()) for p in pieces] == [3, 10, 10, 5, 2]


def test_chunk_short_paragraph_kept_whole():
    assert corpus.chunk_document("One two three.", max_words=3) == ["One two three."]


@pytest.mark.parametrize("bad", [0, -5])
def test_chunk_rejects_non_positive_max_words(bad):
    with pytest.raises(ValueError, match="max_words"):
        corpus.chunk_document("Some text.", max_words=bad)


# --------------------------------------------------------------------------------------------------
# quality_problem
# --------------------------------------------------------------------------------------------------

QUALITY_CASES = {
    "stop_words": "Quantum chromodynamics describes strong interactions between quarks, gluons, hadrons; lattice "
    "simulations reproduce measured masses, decay widths, scattering amplitudes, confinement phenomena.",
    "mean_word_len_short": "He is at it so we go on by it if he is to be at an end of it as we do so and so on.",
    "mean_word_len_long": "Internationalisation considerations notwithstanding, telecommunications infrastructure "
    "modernisation necessitates comprehensive interdisciplinary collaboration throughout the organisation and the "
    "administration.",
    "symbol_ratio": "The history of the city and the river is told in the museum #history #city #river #museum "
    "#travel and the visitors like it.",
    "alpha_word_ratio": "The census of the town and the valley gave 1200 , 3400 , 5600 , 7800 , 9100 ; 2300 and 4500 "
    "people in the years that followed.",
    "bullet_line_ratio": "\n".join([
        "- the bridge was built over the river in the north",
        "- the tower of the church was added to the west end",
        "- a market was held in the square on every Tuesday",
        "- the old mill was turned into a school for the town",
    ]),
    "ellipsis_line_ratio": "\n".join([
        "The story of the town begins with the river and the mill...",
        "Then the railway came and the old market was moved to the station...",
        "Later the factory closed and the people left for the city with their families.",
    ]),
    "dup_line_ratio": "\n".join(
        ["Read more about the history of the old town and the people who lived in it."] * 4
        + ["The town has a church and a bridge over the river that was built of stone."]
    ),
    "top_2gram_ratio": "Book cheap castle tours and cheap castle tours with the best cheap castle tours of the cheap "
    "castle tours today and the cheap castle tours guide.",
    "digit_ratio": "The catalogue of the museum lists the items A1234567, B2345678, C3456789, D4567890 and E5678901 "
    "with the codes that were given to them in the old registers.",
    "url_word_ratio": LINK_LIST,
    "boilerplate_hits": COOKIES,
}


@pytest.mark.parametrize("case", sorted(QUALITY_CASES))
def test_quality_rule_triggers(case):
    rule = case.removesuffix("_short").removesuffix("_long")
    problem = corpus.quality_problem(QUALITY_CASES[case])
    assert problem is not None, case
    assert problem.startswith(rule + " ("), problem


def test_quality_dup_5gram_rule_when_top_ngram_rules_relaxed():
    text = ("The old stone bridge over the river was built by the monks, and the old stone bridge over the river "
            "is still used by the farmers of the valley today.")
    relaxed = {"max_top_2gram_ratio": 1.0, "max_top_3gram_ratio": 1.0, "max_top_4gram_ratio": 1.0}
    problem = corpus.quality_problem(text, relaxed)
    assert problem is not None and problem.startswith("dup_5gram_ratio ("), problem


@pytest.mark.parametrize("text", [ENCYCLOPEDIC, LIGHTHOUSE, *BASE[:3]])
def test_quality_passes_normal_encyclopedic_paragraph(text):
    assert corpus.quality_problem(text) is None


def test_quality_unknown_threshold_key_named():
    with pytest.raises(ValueError, match="max_bogus_ratio"):
        corpus.quality_problem(ENCYCLOPEDIC, {"max_bogus_ratio": 0.5})
    with pytest.raises(ValueError, match="min_whatever"):
        build([{"doc_id": "d", "text": ENCYCLOPEDIC}], quality={"min_whatever": 1})


def test_quality_threshold_override_changes_decision():
    assert corpus.quality_problem(COOKIES) is not None
    assert corpus.quality_problem(COOKIES, {"max_boilerplate_hits": 50}) is None
    stopless = QUALITY_CASES["stop_words"]
    assert corpus.quality_problem(stopless, {"min_stop_words": 0}) is None
    # ... and the other way round: a stricter bound rejects the clean paragraph.
    assert corpus.quality_problem(ENCYCLOPEDIC, {"min_stop_words": 9}).startswith("stop_words")
    assert corpus.quality_problem(ENCYCLOPEDIC, {"max_mean_word_len": 3.5}).startswith("mean_word_len")


# --------------------------------------------------------------------------------------------------
# NearDuplicateIndex
# --------------------------------------------------------------------------------------------------


def test_near_duplicate_index_same_text_twice():
    idx = corpus.NearDuplicateIndex()
    assert idx.add("a", LIGHTHOUSE) == (None, 0.0)
    other, sim = idx.add("b", LIGHTHOUSE)
    assert other == "a"
    assert sim == pytest.approx(1.0)


def test_near_duplicate_index_unrelated_and_planted():
    assert shingle_jaccard(LIGHTHOUSE, LIGHTHOUSE_1) > 0.85  # the planted pair really is near
    idx = corpus.NearDuplicateIndex()
    assert idx.add("a", LIGHTHOUSE)[0] is None
    for i, text in enumerate(BASE):
        assert idx.add(f"u{i}", text)[0] is None
    other, sim = idx.add("near", LIGHTHOUSE_1)
    assert other == "a" and 0.8 <= sim < 1.0


def test_near_duplicate_index_deterministic_for_seed():
    def values(index, text):  # the signature, whether returned as a MinHash or as its hash values
        sig = index.signature(text)
        return [int(v) for v in getattr(sig, "hashvalues", sig)]

    a, b = corpus.NearDuplicateIndex(seed=7), corpus.NearDuplicateIndex(seed=7)
    assert values(a, LIGHTHOUSE) == values(b, LIGHTHOUSE)
    assert values(a, BASE[0]) == values(b, BASE[0]) != values(a, LIGHTHOUSE)
    assert values(a, LIGHTHOUSE) != values(corpus.NearDuplicateIndex(seed=8), LIGHTHOUSE)
    texts = [LIGHTHOUSE, *BASE, LIGHTHOUSE_1, LIGHTHOUSE_2, BASE[4]]
    res_a = [a.add(str(i), t) for i, t in enumerate(texts)]
    res_b = [b.add(str(i), t) for i, t in enumerate(texts)]
    assert res_a == res_b


# --------------------------------------------------------------------------------------------------
# build_corpus on a planted synthetic corpus
# --------------------------------------------------------------------------------------------------

SYNTHETIC_DOCS = [
    {"doc_id": "orig", "source": "wikipedia", "title": "Kestrel Point", "text": LIGHTHOUSE + "\n\n" + BASE[0]},
    {"doc_id": "de", "text": GERMAN},
    {"doc_id": "stub", "text": STUB + "\n\n" + BASE[1]},
    {"doc_id": "junk", "text": COOKIES + "\n\n" + REPEATED_LINES + "\n\n" + LINK_LIST},
    {"doc_id": "fr", "text": FRENCH},
    {"doc_id": "exact", "text": BASE0_EXACT},
    {"doc_id": "near1", "text": LIGHTHOUSE_1},
    {"doc_id": "others", "text": "\n\n".join(BASE[2:6])},
    {"doc_id": "near2", "text": BASE[6] + "\n\n" + LIGHTHOUSE_2},
]
EXPECTED_DROPS = {
    "stub#p0": "length",
    "de#p0": "language",
    "fr#p0": "language",
    "junk#p0": "quality",
    "junk#p1": "quality",
    "junk#p2": "quality",
    "exact#p0": "exact_dup",
    "near1#p0": "near_dup",
    "near2#p1": "near_dup",
}
EXPECTED_KEPT = ["orig#p0", "orig#p1", "stub#p1", "others#p0", "others#p1", "others#p2", "others#p3", "near2#p0"]


@pytest.fixture(scope="module")
def synthetic_result():
    return build(SYNTHETIC_DOCS)


def test_planted_inputs_are_what_they_claim():
    assert len(LIGHTHOUSE.split()) >= 40
    assert sum(a != b for a, b in zip(LIGHTHOUSE.split(), LIGHTHOUSE_1.split())) == 1
    assert sum(a != b for a, b in zip(LIGHTHOUSE.split(), LIGHTHOUSE_2.split())) == 2
    assert shingle_jaccard(LIGHTHOUSE, LIGHTHOUSE_2) > 0.85
    assert BASE0_EXACT != BASE[0]
    assert " ".join(BASE0_EXACT.lower().split()) == " ".join(BASE[0].lower().split())


def test_build_corpus_drops_each_planted_passage_at_its_stage(synthetic_result):
    r = synthetic_result
    assert {d["id"]: d["stage"] for d in r.dropped} == EXPECTED_DROPS
    assert [p["id"] for p in r.passages] == EXPECTED_KEPT


def test_build_corpus_reasons_name_the_original(synthetic_result):
    by_id = {d["id"]: d for d in synthetic_result.dropped}
    assert "orig#p0" in by_id["near1#p0"]["reason"]
    assert "orig#p0" in by_id["near2#p1"]["reason"]
    assert "orig#p1" in by_id["exact#p0"]["reason"]
    assert by_id["de#p0"]["reason"].startswith("language de")
    assert by_id["fr#p0"]["reason"].startswith("language fr")
    assert by_id["junk#p0"]["reason"].startswith("boilerplate_hits")
    assert by_id["junk#p1"]["reason"].startswith("dup_line_ratio")
    assert by_id["junk#p2"]["reason"].startswith("url_word_ratio")
    assert by_id["stub#p0"]["reason"].startswith(f"{len(STUB.split())} words")
    for d in synthetic_result.dropped:
        assert d["doc_id"] == d["id"].split("#")[0]


def test_build_corpus_passages_and_ids(synthetic_result):
    texts = {doc["doc_id"]: corpus.chunk_document(doc["text"]) for doc in SYNTHETIC_DOCS}
    for p in synthetic_result.passages:
        doc_id, _, k = p["id"].partition("#p")
        assert p["id"] == f"{p['doc_id']}#p{p['chunk']}"
        assert doc_id == p["doc_id"] and int(k) == p["chunk"]
        assert p["text"] == texts[doc_id][int(k)]
        assert p["n_words"] == len(p["text"].split())
        assert p["lang"] == "en"
    orig = synthetic_result.passages[0]
    assert (orig["source"], orig["title"], orig["text"]) == ("wikipedia", "Kestrel Point", LIGHTHOUSE)


def test_build_corpus_funnel_adds_up(synthetic_result):
    r = synthetic_result
    n_passages = len(EXPECTED_DROPS) + len(EXPECTED_KEPT)
    funnel = {f["stage"]: f for f in r.funnel}
    assert [f["stage"] for f in r.funnel] == ["documents", "passages", *corpus.STAGES]
    assert funnel["documents"]["remaining"] == len(SYNTHETIC_DOCS) == r.n_documents
    assert funnel["passages"]["remaining"] == n_passages
    for stage in corpus.STAGES:
        assert funnel[stage]["removed"] == sum(1 for s in EXPECTED_DROPS.values() if s == stage)
    assert sum(f["removed"] for f in r.funnel) == n_passages - len(r.passages)
    for prev, cur in zip(r.funnel[1:], r.funnel[2:]):
        assert cur["remaining"] == prev["remaining"] - cur["removed"]
    assert r.funnel[-1]["remaining"] == len(r.passages)
    reasons = {(x["stage"], x["rule"]): x["passages"] for x in r.drop_reasons()}
    assert reasons[("near_dup", "MinHash Jaccard")] == 2 and reasons[("language", "other language")] == 2
    assert reasons[("quality", "boilerplate_hits")] == 1 and reasons[("length", "too short")] == 1


def test_build_corpus_keeps_first_occurrence_whatever_the_order():
    docs = [
        {"doc_id": "exact", "text": BASE0_EXACT},
        {"doc_id": "near1", "text": LIGHTHOUSE_1},
        {"doc_id": "orig", "text": LIGHTHOUSE + "\n\n" + BASE[0]},
    ]
    r = build(docs)
    assert [p["id"] for p in r.passages] == ["exact#p0", "near1#p0"]
    by_id = {d["id"]: d for d in r.dropped}
    assert by_id["orig#p0"]["stage"] == "near_dup" and "near1#p0" in by_id["orig#p0"]["reason"]
    assert by_id["orig#p1"]["stage"] == "exact_dup" and "exact#p0" in by_id["orig#p1"]["reason"]


def test_build_corpus_language_settings():
    docs = [{"doc_id": "de", "text": GERMAN}, {"doc_id": "en", "text": ENCYCLOPEDIC}]
    r = build(docs, languages=("DE", "en"), quality={"min_stop_words": 0})
    assert [p["id"] for p in r.passages] == ["de#p0", "en#p0"]
    assert r.passages[0]["lang"] == "de"


# --------------------------------------------------------------------------------------------------
# Parallel analysis gives the same decisions
# --------------------------------------------------------------------------------------------------


def _large_docs(n_passages: int = 2600, seed: int = 0) -> list[dict]:
    """Random mixtures of known sentences, with planted exact and near copies, stubs and foreign paragraphs."""
    rng = random.Random(seed)
    pool = [s for p in [LIGHTHOUSE, *BASE] for s in corpus.split_sentences(p)]
    paras: list[str] = []
    for _ in range(n_passages):
        r = rng.random()
        if paras and r < 0.08:
            paras.append(rng.choice(paras).upper())  # exact duplicate (case)
        elif paras and r < 0.16:
            words = rng.choice(paras).split()
            words[len(words) // 2] = "zebra"
            paras.append(" ".join(words))  # near duplicate
        elif r < 0.18:
            paras.append(STUB)
        elif r < 0.20:
            paras.append(rng.choice([GERMAN, FRENCH]))
        else:
            paras.append(" ".join(rng.sample(pool, 4)))
    return [{"doc_id": f"d{i // 4}", "text": "\n\n".join(paras[i : i + 4])} for i in range(0, len(paras), 4)]


class _RecordingPool(concurrent.futures.ProcessPoolExecutor):
    created: list[int] = []

    def __init__(self, max_workers=None, *args, **kwargs):
        type(self).created.append(max_workers)
        super().__init__(max_workers, *args, **kwargs)


def test_build_corpus_workers_give_same_result(monkeypatch):
    docs = _large_docs()
    one = build(docs)
    assert len(one.passages) + len(one.dropped) >= 2500
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", _RecordingPool)
    _RecordingPool.created.clear()
    two = corpus.build_corpus(docs, workers=2, show_progress=False)
    assert _RecordingPool.created == [2]  # the process pool really ran
    assert [p["id"] for p in two.passages] == [p["id"] for p in one.passages]
    assert [(d["id"], d["stage"], d["reason"]) for d in two.dropped] == [
        (d["id"], d["stage"], d["reason"]) for d in one.dropped
    ]
    assert two.funnel == one.funnel
    # The corpus exercises several stages, not just "keep everything".
    removed = {f["stage"]: f["removed"] for f in one.funnel}
    assert all(removed[s] > 0 for s in ("length", "language", "exact_dup", "near_dup"))
    assert len(one.passages) > 1000


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_load_local_reads_folder_sorted_with_defaults(tmp_path):
    _write_jsonl(tmp_path / "b.jsonl", [{"doc_id": "b1", "text": "B one", "source": "arxiv"}])
    _write_jsonl(tmp_path / "a.jsonl", [{"doc_id": "a1", "text": "A one"}, {"doc_id": "a2", "text": "A two"}])
    (tmp_path / "ignored.txt").write_text("not jsonl")
    docs = corpus.load_local(tmp_path)
    assert [d["doc_id"] for d in docs] == ["a1", "a2", "b1"]
    assert docs[0]["source"] == "local" and docs[0]["title"] == ""
    assert docs[2]["source"] == "arxiv"
    assert [d["doc_id"] for d in corpus.load_local(tmp_path / "b.jsonl")] == ["b1"]


def test_load_local_repeated_doc_id_named(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"doc_id": "dup-7", "text": "x"}])
    _write_jsonl(tmp_path / "b.jsonl", [{"doc_id": "ok", "text": "y"}, {"doc_id": "dup-7", "text": "z"}])
    with pytest.raises(ValueError, match="dup-7"):
        corpus.load_local(tmp_path)


def test_load_local_record_without_text(tmp_path):
    _write_jsonl(tmp_path / "a.jsonl", [{"doc_id": "x", "body": "no text"}])
    with pytest.raises(ValueError, match="doc_id and text"):
        corpus.load_local(tmp_path)


def test_load_local_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        corpus.load_local(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        corpus.load_local(tmp_path)  # exists, but holds no JSONL


def test_load_sources_unknown_spec():
    with pytest.raises(ValueError, match="bogus"):
        corpus.load_sources(["bogus:x"], limit=1)


@pytest.fixture
def wiki_folder(tmp_path):
    import pandas as pd

    folder = tmp_path / "wiki"
    folder.mkdir()
    pd.DataFrame({
        "id": ["12", "34", "56"],
        "title": ["Kestrel Point", "Printing press", "Honeybee"],
        "text": [LIGHTHOUSE, BASE[0], BASE[1]],
    }).to_parquet(folder / "train.parquet")
    return folder


@pytest.fixture
def arxiv_folder(tmp_path):
    folder = tmp_path / "arxiv"
    folder.mkdir()
    rows = [
        {"id": "2101.00001", "title": "A  Study\n  of Gates",
         "abstract": "  We study gates.\n  They are\thard-wrapped.\n", "categories": "cs.LG"},
        {"id": "2101.00002", "title": "Second", "abstract": "Line one\nline two", "categories": None},
        {"id": "2101.00003", "title": "Third", "abstract": "Not read.", "categories": "cs.CL"},
    ]
    _write_jsonl(folder / "train.jsonl", rows)
    return folder


def test_load_wikipedia_local_stand_in(wiki_folder):
    docs = list(corpus.load_wikipedia(limit=2, dataset=str(wiki_folder), snapshot=""))
    assert [d["doc_id"] for d in docs] == ["wiki-en-12", "wiki-en-34"]
    assert {d["source"] for d in docs} == {"wikipedia"}
    assert [d["title"] for d in docs] == ["Kestrel Point", "Printing press"]
    assert docs[0]["text"] == LIGHTHOUSE
    assert len(list(corpus.load_wikipedia("de", limit=5, dataset=str(wiki_folder), snapshot=""))) == 3
    assert next(corpus.load_wikipedia("de", limit=1, dataset=str(wiki_folder), snapshot=""))["doc_id"] == "wiki-de-12"


def test_load_arxiv_local_stand_in(arxiv_folder):
    docs = list(corpus.load_arxiv(limit=2, dataset=str(arxiv_folder)))
    assert [d["doc_id"] for d in docs] == ["arxiv-2101.00001", "arxiv-2101.00002"]
    assert {d["source"] for d in docs} == {"arxiv"}
    assert docs[0]["text"] == "We study gates. They are hard-wrapped."
    assert docs[0]["title"] == "A Study of Gates"
    assert docs[1]["text"] == "Line one line two"
    assert docs[0]["categories"] == "cs.LG" and docs[1]["categories"] == ""


def test_load_sources_combines_local_and_hosted_stand_ins(wiki_folder, arxiv_folder, tmp_path):
    _write_jsonl(tmp_path / "local.jsonl", [{"doc_id": f"l{i}", "text": "t"} for i in range(4)])
    docs = corpus.load_sources(
        [f"local:{tmp_path / 'local.jsonl'}", "wikipedia:fr", "arxiv"], limit=2,
        wikipedia_dataset=str(wiki_folder), wikipedia_snapshot="", arxiv_dataset=str(arxiv_folder),
    )
    assert [d["doc_id"] for d in docs] == ["l0", "l1", "wiki-fr-12", "wiki-fr-34", "arxiv-2101.00001",
                                           "arxiv-2101.00002"]


def test_load_wikipedia_single_local_file(wiki_folder):
    docs = list(corpus.load_wikipedia(limit=2, dataset=str(wiki_folder / "train.parquet"), snapshot=""))
    assert [d["doc_id"] for d in docs] == ["wiki-en-12", "wiki-en-34"]


# --------------------------------------------------------------------------------------------------
# The repository's sample corpus
# --------------------------------------------------------------------------------------------------

# Function words, for an independent guess at a document's language.
_EN_WORDS = frozenset("the of and to in is was that it for on with as by at from are were be this which".split())
_FOREIGN_WORDS = frozenset(
    "der die das und ist im mit den von le la les est une des du et el los las es y del con il di che è della "
    "een het van en de och är som av att og er den på je se na ve jako ja on oli ovat uma um é do da em não".split()
)


def _looks_foreign(text: str) -> bool:
    words = re.findall(r"[^\W\d_]+", text.lower())
    if len(words) < 20:
        return False
    en = sum(w in _EN_WORDS for w in words) / len(words)
    foreign = sum(w in _FOREIGN_WORDS for w in words) / len(words)
    return foreign >= 0.08 and foreign > 2 * en


@pytest.fixture(scope="module")
def sample_result():
    return corpus.build_corpus(corpus.load_local(SAMPLE_RAW), show_progress=False)


def _teacher_texts() -> list[str]:
    return [json.loads(line)["text"] for f in sorted(SAMPLE_TEACHER.glob("*.jsonl"))
            for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_sample_teacher_texts_kept_unless_near_duplicate(sample_result):
    teacher = set(_teacher_texts())
    assert len(teacher) > 100
    kept = {p["text"] for p in sample_result.passages}
    near = {d["text"] for d in sample_result.dropped if d["stage"] == "near_dup"}
    missing = teacher - kept
    assert missing <= near, sorted(missing - near)[:3]
    assert len(missing) <= 0.1 * len(teacher)


def test_sample_every_kept_passage_has_a_teacher_answer(sample_result):
    teacher = set(_teacher_texts())
    unanswered = [p["id"] for p in sample_result.passages if p["text"] not in teacher]
    assert unanswered == []


def test_sample_no_non_english_document_kept(sample_result):
    docs = corpus.load_local(SAMPLE_RAW)
    foreign = {d["doc_id"] for d in docs if _looks_foreign(d["text"])}
    assert len(foreign) >= 10  # the sample holds a dozen or more documents in other languages
    assert [p["id"] for p in sample_result.passages if p["doc_id"] in foreign] == []
    assert _looks_foreign(GERMAN) and _looks_foreign(FRENCH) and not _looks_foreign(LIGHTHOUSE)
