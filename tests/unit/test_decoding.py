"""The loop and budget guard and the decoding grammar (kgutils.decoding, kgutils.ontology.decoding_schema)."""

from __future__ import annotations

import json

import pytest

from kgutils import decoding
from kgutils.decoding import AnswerGuard, guard_text, item_key
from kgutils.metrics import parse_card_output
from kgutils.ontology import RELATIONS, decoding_schema


def item(src: str, rel: str, tgt: str, w: float = 0.9) -> str:
    return json.dumps({"source": {"title": src, "type": "entity"}, "relation": {"type": rel, "weight": w},
                       "target": {"title": tgt, "type": "entity"}}, separators=(",", ":"))


A = item("BERT", "developed_by", "Google")
B = item("BERT", "based_on", "Transformer")


def feed_chars(guard: AnswerGuard, text: str) -> int | None:
    """Feed the text one character at a time (as decoding does); the index at which the guard stops, if it does."""
    for i in range(1, len(text) + 1):
        if guard.feed(text[:i]):
            return i
    return None


def test_repeat_stops_at_the_completed_duplicate_and_closes_the_array():
    text = "[" + A + "," + B + "," + item("bert", "developed_by", "Google Inc.", 0.5) + "," + A
    g = AnswerGuard()
    stop = feed_chars(g, text)
    # The third item (a normalised repeat of the first: case, company suffix and weight differ) completes here.
    assert stop == len("[" + A + "," + B + "," + item("bert", "developed_by", "Google Inc.", 0.5))
    kept, removed = g.close(text[:stop], "repeat")
    assert kept == "[" + A + "," + B + "]"
    assert json.loads(kept) == [json.loads(A), json.loads(B)]
    assert removed == "," + item("bert", "developed_by", "Google Inc.", 0.5)
    assert g.n_items == 2


def test_budget_inside_an_item_ends_at_the_last_complete_item():
    text = "[" + A + "," + B + ',{"source":{"title":"Goo'
    out = guard_text(text, "budget")
    assert out == {"text": "[" + A + "," + B + "]", "stop_reason": "budget",
                   "guard_removed": ',{"source":{"title":"Goo'}
    assert parse_card_output(out["text"])[1] == "ok"


def test_budget_before_any_complete_item_gives_an_empty_list():
    out = guard_text('[{"source":{"title":"BE', "budget")
    assert out["text"] == "[]" and out["stop_reason"] == "budget"


def test_eos_answers_and_answers_without_a_list_are_kept_as_written():
    assert guard_text("[" + A + "]", "eos") == {"text": "[" + A + "]", "stop_reason": "eos", "guard_removed": ""}
    prose = "Here are the triplets: BERT was developed by Google"
    assert guard_text(prose, "budget")["text"] == prose
    # A closed list followed by prose that ran out of budget: the list is complete, nothing is cut.
    closed = "[" + A + "] I hope this helps, and here is more text"
    assert guard_text(closed, "budget")["text"] == closed


def test_a_repeat_in_a_finished_text_is_found_whatever_ended_it():
    out = guard_text("[" + A + "," + A + "]", "eos")
    assert out["stop_reason"] == "repeat" and out["text"] == "[" + A + "]"


def test_strings_holding_brackets_and_escapes_do_not_confuse_the_scanner():
    tricky = item('A "quoted" [name] {x}', "part_of", "B\\\\C ]}")
    out = guard_text("[" + tricky + "," + B + ',{"sou', "budget")
    assert json.loads(out["text"]) == [json.loads(tricky), json.loads(B)]


def test_spo_wrapper_is_closed_with_its_own_brackets():
    t1 = '{"subject":"Marie Curie","predicate":"won","object":"Nobel Prize","qualifiers":{"year":"1903"}}'
    t2 = '{"subject":"marie curie","predicate":"Won","object":"Nobel prize","qualifiers":{}}'
    out = guard_text('{"triples":[' + t1 + "," + t2, "budget")
    assert out["stop_reason"] == "repeat"
    assert json.loads(out["text"]) == {"triples": [json.loads(t1)]}
    assert guard_text('{"triples":[', "budget")["text"] == '{"triples":[]}'


def test_partial_multibyte_character_is_not_scanned_yet():
    g = AnswerGuard()
    assert not g.feed('[{"source":{"title":"Caf\ufffd')
    assert not g.feed('[{"source":{"title":"Café"')
    with pytest.raises(ValueError, match="changed"):
        g.feed('[{"target"')


def test_item_keys():
    assert item_key(json.loads(A)) == item_key(json.loads(item("bert ", "Developed_By", "GOOGLE LLC", 0.1)))
    assert item_key(json.loads(A)) != item_key(json.loads(item("Google", "developed_by", "BERT")))
    assert guard_text("[1,2,1]", "eos")["text"] == "[1,2]"
    with pytest.raises(ValueError, match="stop reason"):
        AnswerGuard().close("[]", "tired")


def test_decoding_schema_is_the_ontology():
    s = decoding_schema(max_items=5)
    assert s["maxItems"] == 5 and s["type"] == "array"
    props = s["items"]["properties"]
    assert props["relation"]["properties"]["type"]["enum"] == list(RELATIONS)
    assert props["source"] == props["target"] == {"$ref": "#/$defs/node"}  # one rule for both endpoints
    assert s["$defs"]["node"]["properties"]["type"]["enum"] == ["entity", "concept"]
    assert props["relation"]["properties"]["weight"] == {"type": "number", "minimum": 0, "maximum": 1}
    assert list(props) == ["source", "relation", "target"]
    with pytest.raises(ValueError):
        decoding_schema(max_items=0)


def test_schema_text_rejects_bad_schemas():
    with pytest.raises(ValueError, match="not valid JSON"):
        decoding.schema_text("{nope")
    with pytest.raises(ValueError, match="JSON object"):
        decoding.schema_text("[1]")


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from kgutils.models import tiny_checkpoint

    return AutoTokenizer.from_pretrained(tiny_checkpoint("llama"))


def test_grammar_accepts_ontology_answers_only(tokenizer):
    import xgrammar as xgr

    eos = tokenizer.eos_token_id
    compiled = decoding.compile_grammar(tokenizer, decoding_schema(max_items=2), stop_token_ids=[eos])
    assert decoding.compile_grammar(tokenizer, decoding_schema(max_items=2), stop_token_ids=[eos]) is compiled

    def accepts(s: str) -> bool:
        m = xgr.GrammarMatcher(compiled)
        return m.accept_string(s) and m.is_completed()

    assert accepts("[]") and accepts("[" + A + "]") and accepts("[" + A + "," + B + "]")
    assert not accepts("[" + A + "," + B + "," + A + "]")  # maxItems
    assert not accepts("[" + item("BERT", "made_by", "Google") + "]")  # not an ontology relation
    assert not accepts("[" + item("BERT", "developed_by", "Google", 1.5) + "]")  # weight outside [0, 1]
    assert not accepts("[" + item("", "developed_by", "Google") + "]")  # empty title
    assert not accepts("[ " + A + "]")  # compact: no white space between tokens
    bad = json.loads(A)
    bad["source"]["type"] = "person"
    assert not accepts("[" + json.dumps(bad, separators=(",", ":")) + "]")


# ------------------------------------------------------------------------------ the hf engine's decoding loop


@pytest.fixture(scope="module")
def tiny_llama():
    from kgutils.models import load_model

    return load_model("tiny:llama")


def _reference_generate(lm, prompts, batch_size, max_new_tokens):
    """transformers' own generate on left-padded batches in the same order: what the loop must reproduce."""
    import torch

    tok = lm.tokenizer
    ids = tok(prompts, add_special_tokens=False)["input_ids"]
    order = sorted(range(len(prompts)), key=lambda i: len(ids[i]), reverse=True)
    texts = [None] * len(prompts)
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        enc = tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
        with torch.inference_mode():
            out = lm.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                    eos_token_id=lm.stop_token_ids, pad_token_id=tok.pad_token_id)
        for row, i in enumerate(idx):
            new = out[row, enc["input_ids"].shape[1]:].tolist()
            n = next((k + 1 for k, t in enumerate(new) if t in lm.stop_token_ids), len(new))
            texts[i] = tok.decode(new[:n], skip_special_tokens=True)
    return texts


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
def test_loop_reproduces_transformers_generate(arch, tiny_llama):
    from kgutils.generate import generate_texts, render_prompt
    from kgutils.models import load_model

    lm = tiny_llama if arch == "llama" else load_model(f"tiny:{arch}")
    passages = ["Marie Curie won the Nobel Prize in 1903.", "BERT was developed by Google.",
                "The Danube flows through Vienna and Budapest, two capitals of central Europe.", "Short one."]
    prompts = [render_prompt(lm.tokenizer, p) for p in passages]
    ref = _reference_generate(lm, prompts, 3, 20)
    for kw in ({"evict": False, "share_prefix": False}, {"evict": True, "share_prefix": True}):
        gens = generate_texts(lm, prompts, batch_size=3, max_new_tokens=20, progress=False, guard=False, **kw)
        assert [g["text"] for g in gens] == ref, kw
        assert all(g["stop_reason"] in ("eos", "budget") and g["guard_removed"] == "" for g in gens)


def test_long_answers_with_rows_leaving_and_joining_equal_generate(tiny_llama):
    """Long answers (150 new tokens) from short prompts, with rows leaving and joining the batch: the answers
    still equal transformers' generate."""
    from kgutils.generate import generate_texts

    prompts = ["Hello", "One two three", "A much longer opening line with several more tokens in it", "Short"]
    ref = _reference_generate(tiny_llama, prompts, 3, 150)
    gens = generate_texts(tiny_llama, prompts, batch_size=3, max_new_tokens=150, progress=False, guard=False)
    assert [g["text"] for g in gens] == ref
    assert max(g["n_new_tokens"] for g in gens) > 130


class _Scripted:
    """A real tiny model whose next token is forced to follow a script (to drive the loop into repeats)."""

    def __init__(self, lm, script):
        import torch

        self.inner, self.script, self.calls, self._torch = lm.model, script, 0, torch
        self.config = lm.model.config

    def parameters(self):
        return self.inner.parameters()

    def __call__(self, **kwargs):
        out = self.inner(**kwargs)
        k = min(self.calls, len(self.script) - 1)
        self.calls += 1
        logits = self._torch.full_like(out.logits, -1e9)
        logits[..., self.script[k]] = 0.0
        out.logits = logits
        return out


def _scripted(lm, text):
    from kgutils.models import LoadedModel

    script = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    return LoadedModel(model=_Scripted(lm, script), tokenizer=lm.tokenizer, spec="scripted", kind="tiny",
                       stop_token_ids=lm.stop_token_ids), script


def test_loop_stops_a_repeating_row_at_once_and_closes_it(tiny_llama):
    from kgutils.generate import generate_texts

    looping = "[" + A + "," + B + "," + A + "," + A + "," + A + "," + A
    lm, script = _scripted(tiny_llama, looping)
    (gen,) = generate_texts(lm, ["Passage: BERT."], max_new_tokens=300, progress=False)
    assert gen["stop_reason"] == "repeat" and gen["text"] == "[" + A + "," + B + "]"
    # The row stopped right after the repeated item: no token was spent on the rest of the loop.
    n_until_repeat = len(lm.tokenizer("[" + A + "," + B + "," + A, add_special_tokens=False)["input_ids"])
    assert gen["n_new_tokens"] <= n_until_repeat + 1 < len(script)
    assert gen["guard_removed"].startswith("," + A[:10])


def test_loop_closes_an_answer_cut_by_the_budget(tiny_llama):
    from kgutils.generate import generate_texts

    text = "[" + A + "," + B + ',{"source":{"title":"Google DeepMind","type":"entity"}'
    lm, script = _scripted(tiny_llama, text)
    (gen,) = generate_texts(lm, ["Passage: BERT."], max_new_tokens=len(script) - 3, progress=False)
    assert gen["stop_reason"] == "budget" and gen["n_new_tokens"] == len(script) - 3
    assert json.loads(gen["text"]) == [json.loads(A), json.loads(B)]
    (raw,) = generate_texts(_scripted(tiny_llama, text)[0], ["Passage: BERT."], max_new_tokens=len(script) - 3, progress=False, guard=False)
    assert raw["stop_reason"] == "budget" and raw["text"].startswith("[" + A + "," + B + ',{"source"')


def test_constrained_loop_gives_schema_valid_json_from_a_random_model(tiny_llama):
    from kgutils.generate import generate_texts, render_prompt
    from kgutils.ontology import validate_triplet

    prompts = [render_prompt(tiny_llama.tokenizer, p) for p in ("BERT was developed by Google.", "Nothing here.")]
    free = generate_texts(tiny_llama, prompts, max_new_tokens=60, progress=False, guard=False)
    assert all(parse_card_output(g["text"])[1] != "ok" for g in free)  # a random model writes no JSON by itself
    gens = generate_texts(tiny_llama, prompts, max_new_tokens=60, progress=False,
                          schema=decoding_schema(max_items=3))
    for g in gens:
        items, status = parse_card_output(g["text"])
        assert status == "ok", g
        assert all(validate_triplet(it)[1] is None for it in items)


def test_bad_generation_settings_fail_clearly(tiny_llama):
    from kgutils.generate import decoding_modes, generate_texts

    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_texts(tiny_llama, ["x"], max_new_tokens=0)
    with pytest.raises(ValueError, match="not valid JSON"):
        generate_texts(tiny_llama, ["x"], schema="{oops")
    with pytest.raises(ValueError, match="CONSTRAINED"):
        decoding_modes(["yes"])
    with pytest.raises(ValueError, match="CONSTRAINED"):
        decoding_modes([True, True])
    assert [m for m, _ in decoding_modes([False, True])] == ["unconstrained", "constrained"]
    assert decoding_modes(True, max_items=4)[0][1]["maxItems"] == 4


class _StopsEvery:
    """A real tiny model that ends a row's answer whenever its position is a multiple of ``k`` (decoding steps
    only), so rows of different prompt lengths finish at different steps and the batch refills."""

    def __init__(self, lm, k):
        self.inner, self.k, self.eos = lm.model, k, lm.stop_token_ids[0]
        self.config = lm.model.config

    def parameters(self):
        return self.inner.parameters()

    def __call__(self, **kwargs):
        out = self.inner(**kwargs)
        if kwargs["input_ids"].shape[1] == 1:
            hit = (kwargs["position_ids"][:, -1] % self.k) == 0
            out.logits[hit, -1, :] = -1e9
            out.logits[hit, -1, self.eos] = 0.0
        return out


def test_refilled_batches_give_the_same_answers(tiny_llama):
    from kgutils.generate import _generate_hf, render_prompt
    from kgutils.models import LoadedModel

    passages = [f"Passage {i}: " + "word " * (3 * i) + "BERT was developed by Google." for i in range(9)]
    lm = LoadedModel(model=_StopsEvery(tiny_llama, 11), tokenizer=tiny_llama.tokenizer, spec="stops-every",
                     kind="tiny", stop_token_ids=tiny_llama.stop_token_ids)
    prompts = [render_prompt(lm.tokenizer, p) for p in passages]
    kw = dict(batch_size=4, max_new_tokens=25, desc="", progress=False, sort_by_length=True, stop_bias=0.0,
              schema=None, guard=False, share_prefix=True)
    refilled = _generate_hf(lm, prompts, refill=True, **kw)
    static = _generate_hf(lm, prompts, refill=False, **kw)
    lengths = [g["n_new_tokens"] for g in refilled]
    assert len(set(lengths)) > 3 and "eos" in {g["stop_reason"] for g in refilled}  # rows end at different steps
    assert [g["text"] for g in refilled] == [g["text"] for g in static]
    assert lengths == [g["n_new_tokens"] for g in static]


def test_for_inference_keeps_the_answers_in_fp32_and_leaves_the_model_alone(tiny_llama):
    import torch

    from kgutils.generate import DECODE_ATTENTION, for_inference, generate_texts, render_prompt

    prompts = [render_prompt(tiny_llama.tokenizer, p) for p in ("BERT was developed by Google.", "A short one.")]
    fast = for_inference(tiny_llama, precision="fp32")
    assert fast.model is not tiny_llama.model and fast.model.config._attn_implementation == DECODE_ATTENTION
    assert tiny_llama.model.config._attn_implementation == "sdpa"
    assert next(fast.model.parameters()).dtype == torch.float32
    a = generate_texts(tiny_llama, prompts, max_new_tokens=30, progress=False, guard=False)
    b = generate_texts(fast, prompts, max_new_tokens=30, progress=False, guard=False)
    assert [g["text"] for g in a] == [g["text"] for g in b]
    with torch.inference_mode():  # the grouped-head decoding attention computes what SDPA computes
        ids = tiny_llama.tokenizer(prompts[:1], return_tensors="pt")["input_ids"]
        out_ref = tiny_llama.model(input_ids=ids, use_cache=True)
        out_fast = fast.model(input_ids=ids, use_cache=True)
        nxt = out_ref.logits[:, -1:].argmax(-1)
        step_ref = tiny_llama.model(input_ids=nxt, past_key_values=out_ref.past_key_values).logits
        step_fast = fast.model(input_ids=nxt, past_key_values=out_fast.past_key_values).logits
    assert torch.allclose(step_ref, step_fast, atol=1e-5)
    with pytest.raises(ValueError, match="precision"):
        for_inference(tiny_llama, precision="fp8")


# ------------------------------------------------------------------------- titles grounded in the passage


PASSAGE = ('A support vector machine (SVM) separates two classes. Vapnik\'s soft-margin SVMs came from AT&T Bell '
           'Labs, and k-means++ and Sagittarius A* are other names; see "Learning representations".')


@pytest.mark.parametrize("title,ok", [
    ("support vector machine", True), ("Support vector machine", True),  # first letter in either case
    ("SVM", True), ("SVMs", True), ("soft-margin SVM", True),  # before a plural s
    ("Vapnik", True), ("AT&T Bell Labs", True), ("k-means++", True), ("Sagittarius A*", True),
    ("Learning representations", True),
    ("support vector machines", False),  # not in the passage
    ("support vec", False), ("Vapni", False),  # ends inside a word
    ("upport vector machine", False),  # starts inside a word
    ("supervised learning model", False), ("Google", False),
    ("support vector machine ", False),  # ends after a space
    ('see "Learning', False),  # a title holds no double quote
])
def test_title_pattern_draws_titles_from_the_passage(title, ok):
    import re

    from kgutils.ontology import title_pattern

    assert bool(re.fullmatch("(?:" + title_pattern(PASSAGE) + ")", title)) is ok


def test_title_pattern_bounds_the_length_and_needs_a_word():
    import re

    from kgutils.ontology import title_pattern

    pattern = "(?:" + title_pattern(PASSAGE, max_length=10) + ")"
    assert re.fullmatch(pattern, "support") and not re.fullmatch(pattern, "support vector")
    with pytest.raises(ValueError, match="no word"):
        title_pattern(" ... ")
    with pytest.raises(ValueError, match="max_length"):
        title_pattern(PASSAGE, max_length=0)


def test_grounded_grammar_accepts_titles_from_its_own_passage_only(tokenizer):
    import xgrammar as xgr

    from kgutils.ontology import ground_titles

    eos = tokenizer.eos_token_id
    grounded = decoding_schema(max_items=2, passage=PASSAGE)
    assert grounded == ground_titles(decoding_schema(max_items=2), PASSAGE)
    compiled = decoding.compile_grammar(tokenizer, grounded, stop_token_ids=[eos])
    other = decoding.compile_grammar(tokenizer, decoding_schema(max_items=2, passage="Google built BERT."),
                                     stop_token_ids=[eos])

    def accepts(grammar, s: str) -> bool:
        m = xgr.GrammarMatcher(grammar)
        return m.accept_string(s) and m.is_completed()

    svm = "[" + item("SVM", "developed_by", "Vapnik") + "]"
    assert accepts(compiled, svm) and accepts(compiled, "[]")
    assert accepts(compiled, "[" + item("soft-margin SVMs", "part_of", "AT&T Bell Labs") + "]")
    assert not accepts(compiled, "[" + A + "]")  # BERT and Google are not in this passage
    assert not accepts(compiled, "[" + item("SVM", "developed_by", "Vladimir Vapnik") + "]")
    assert not accepts(compiled, "[" + item("SVM", "developed_as", "Vapnik") + "]")  # the ontology still holds
    assert accepts(other, "[" + A + "]") and not accepts(other, svm)


def test_ground_titles_needs_a_title_to_ground():
    from kgutils.ontology import ground_titles, spo_decoding_schema

    with pytest.raises(ValueError, match="no string 'title'"):
        ground_titles(spo_decoding_schema(), PASSAGE)


# --------------------------------------------------------------------------------------- self-loops dropped


LOOP = item("SVM", "contrasts_with", "svm")  # the same entity after normalisation


@pytest.mark.parametrize("answer,stop,kept", [
    ("[" + A + "," + LOOP + "," + B + "]", "eos", [A, B]),  # inside the list
    ("[" + LOOP + "," + A + "]", "eos", [A]),  # first
    ("[" + A + "," + LOOP + "]", "eos", [A]),  # last
    ("[" + LOOP + "]", "eos", []),  # alone
    ("[" + LOOP + "," + A + "," + LOOP + "," + B[:30], "budget", [A]),  # and cut by the budget
])
def test_guard_drops_self_loop_items_and_reports_them(answer, stop, kept):
    out = guard_text(answer, stop)
    assert json.loads(out["text"]) == [json.loads(k) for k in kept]
    assert out["stop_reason"] == stop
    assert out["guard_removed"].count('"contrasts_with"') == answer.count(LOOP)


def test_self_loops_are_not_new_items_and_can_be_kept():
    g = AnswerGuard()
    g.feed("[" + LOOP + "," + A + "," + LOOP)
    assert g.n_items == 1 and len(g.dropped) == 2 and not g.repeated
    keep = AnswerGuard(drop_self_loops=False)
    assert keep.feed("[" + LOOP + "," + A + "]") is False and keep.n_items == 2
    assert keep.close("[" + LOOP + "," + A + "]", "eos") == ("[" + LOOP + "," + A + "]", "")
    # SPO triples (05's open-relation format) are not graph items: the guard leaves them alone
    spo = '{"triples":[{"subject":"X","predicate":"is","object":"x","qualifiers":{}}]}'
    assert guard_text(spo, "eos")["text"] == spo


def test_code_guard_drops_self_loop_calls():
    from kgutils.formats import code_calls

    loop = 'Triplet(Entity("SVM", "entity"), "contrasts_with", Entity("svm", "entity"), 0.9)'
    good = 'Triplet(Entity("SVM", "entity"), "developed_by", Entity("Vapnik", "entity"), 0.9)'
    out = guard_text("triplets = [\n    " + loop + ",\n    " + good + ",\n]", "eos", kind="code")
    assert [it for *_, it in code_calls(out["text"])] == [it for *_, it in code_calls(good)]
    assert out["guard_removed"] == loop


# ------------------------------------------------------------------------------ one schema per prompt


def test_per_prompt_schemas_ground_each_answer_in_its_own_passage(tiny_llama):
    from kgutils.generate import generate_texts, render_prompt
    from kgutils.metrics import normalize_title

    passages = ["BERT was developed by Google in 2018.", PASSAGE]
    prompts = [render_prompt(tiny_llama.tokenizer, p) for p in passages]
    schemas = [{**decoding_schema(max_items=3, passage=p), "minItems": 1} for p in passages]  # name something
    free = generate_texts(tiny_llama, prompts, max_new_tokens=160, progress=False, schema=schemas, guard=False)
    guarded = generate_texts(tiny_llama, prompts, max_new_tokens=160, progress=False, schema=schemas)
    seen = 0
    for g, passage in zip(free, passages):
        items, status = parse_card_output(g["text"])
        assert status == "ok", g
        for it in items:
            for end in ("source", "target"):
                title = it[end]["title"]
                seen += 1
                assert title[1:] in passage and title[0].lower() in passage.lower(), (title, passage)
    assert seen, "the random model named no entity at all"
    for g in guarded:  # (this random model names one entity twice: the guard takes those self-loops out)
        for it in parse_card_output(g["text"])[0]:
            assert normalize_title(it["source"]["title"]) != normalize_title(it["target"]["title"])


def test_per_prompt_schemas_are_checked(tiny_llama):
    from kgutils.generate import generate_texts

    with pytest.raises(ValueError, match="2 schemas for 1 prompts"):
        generate_texts(tiny_llama, ["x"], schema=[decoding_schema(), decoding_schema()], progress=False)
    with pytest.raises(ValueError, match="all be given"):
        generate_texts(tiny_llama, ["x", "y"], schema=[decoding_schema(), None], progress=False)


# --------------------------------------------------------------------- the shared prefix read from one copy


def test_shared_prefix_attention_equals_attention_over_the_whole_context():
    import torch

    from kgutils.generate import _prefix_attention

    torch.manual_seed(0)
    b, heads, kv_heads, dim, p_len, s_len = 3, 6, 2, 8, 11, 5
    for q_len in (1, 3):
        query = torch.randn(b, heads, q_len, dim)
        pk, pv = torch.randn(kv_heads, p_len, dim), torch.randn(kv_heads, p_len, dim)
        key, value = torch.randn(b, kv_heads, s_len, dim), torch.randn(b, kv_heads, s_len, dim)
        own = torch.ones(b, s_len, dtype=torch.bool)
        own[0, :2] = False  # left padding of the first row
        causal = torch.ones(q_len, s_len, dtype=torch.bool).tril(s_len - q_len)
        mask = own[:, None, None, :] & causal[None, None]  # [b, 1, q, S]
        got = _prefix_attention(query, key, value, mask, (pk, pv), None)
        full_k = torch.cat([pk.expand(b, -1, -1, -1), key], dim=2).repeat_interleave(heads // kv_heads, dim=1)
        full_v = torch.cat([pv.expand(b, -1, -1, -1), value], dim=2).repeat_interleave(heads // kv_heads, dim=1)
        full_mask = torch.cat([torch.ones(b, 1, q_len, p_len, dtype=torch.bool), mask], dim=-1)
        want = torch.nn.functional.scaled_dot_product_attention(query, full_k, full_v, attn_mask=full_mask)
        assert torch.allclose(got, want.transpose(1, 2), atol=1e-5), q_len
        if q_len > 1:  # no mask: causal among the new tokens
            unmasked = _prefix_attention(query, key, value, None, (pk, pv), None)
            causal_only = torch.cat([torch.ones(q_len, p_len, dtype=torch.bool), causal], dim=-1)
            want = torch.nn.functional.scaled_dot_product_attention(query, full_k, full_v, attn_mask=causal_only)
            assert torch.allclose(unmasked, want.transpose(1, 2), atol=1e-5)


def test_decoding_with_the_shared_prefix_read_once_gives_the_same_answers(tiny_llama):
    from kgutils.generate import (
        PREFIX_ATTRIBUTE,
        _generate_hf,
        _prefix_cache,
        _SharedPrefix,
        for_inference,
        render_prompt,
    )

    lm = for_inference(tiny_llama, "fp32")
    passages = ["BERT was developed by Google.", "Nothing here at all, really.", "GPT-2 extends GPT.",
                "The Transformer is based on attention, and BERT on the Transformer.", "x"]
    prompts = [render_prompt(lm.tokenizer, p) for p in passages]
    n_prefix, cache = _prefix_cache(lm.model, lm.tokenizer(prompts, add_special_tokens=False)["input_ids"], True)
    assert n_prefix >= 8 and _SharedPrefix.of(lm.model, cache) is not None  # the path compared below is taken
    runs = [_generate_hf(lm, prompts, batch_size=2, max_new_tokens=24, desc="", progress=False,
                         sort_by_length=True, stop_bias=0.0, schema=None, guard=False, share_prefix=share)
            for share in (True, False)]
    assert [r["text"] for r in runs[0]] == [r["text"] for r in runs[1]]
    assert not any(hasattr(m, PREFIX_ATTRIBUTE) for m in lm.model.modules())  # nothing left behind


def test_for_inference_unfreezes_a_copy_of_frozen_weights_and_leaves_the_model_passed_in_as_it_was(tiny_llama):
    """PEFT freezes the base weights; on CPU, bf16 linear layers run ×2.4 slower on frozen weights, so the copy
    for inference carries none, while the trainer's model keeps its flags and the answers do not change."""
    import copy

    from peft import LoraConfig, get_peft_model

    from kgutils.generate import for_inference, generate_texts, render_prompt
    from kgutils.models import LoadedModel

    peft_model = get_peft_model(copy.deepcopy(tiny_llama.model), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    frozen_before = {n for n, p in peft_model.named_parameters() if not p.requires_grad}
    assert frozen_before  # PEFT froze the base weights
    lm = LoadedModel(model=peft_model, tokenizer=tiny_llama.tokenizer, spec=tiny_llama.spec, kind=tiny_llama.kind,
                     stop_token_ids=list(tiny_llama.stop_token_ids), note="", load_seconds=0.0)
    inf = for_inference(lm, "fp32")
    assert all(p.requires_grad for p in inf.model.parameters())
    assert "weights unfrozen" in inf.note
    assert {n for n, p in peft_model.named_parameters() if not p.requires_grad} == frozen_before
    prompts = [render_prompt(lm.tokenizer, p) for p in ("BERT was developed by Google.", "Short one.")]
    frozen_copy = copy.deepcopy(inf.model).requires_grad_(False)
    as_frozen = LoadedModel(model=frozen_copy, tokenizer=lm.tokenizer, spec=lm.spec, kind=lm.kind,
                            stop_token_ids=list(lm.stop_token_ids), note="", load_seconds=0.0)
    got = generate_texts(inf, prompts, batch_size=2, max_new_tokens=12, progress=False, guard=False)
    want = generate_texts(as_frozen, prompts, batch_size=2, max_new_tokens=12, progress=False, guard=False)
    assert [g["text"] for g in got] == [w["text"] for w in want]
