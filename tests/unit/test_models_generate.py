"""Model loading through the real from_pretrained paths, and batched generation with resume."""

import json
from pathlib import Path

import pytest

from kgutils import models
from kgutils.generate import predict_file, render_prompt

PASSAGES = [
    {"id": "a", "text": "BERT was developed by Google.", "triplets": []},
    {"id": "b", "text": "Paris is located in France, and the Louvre is located in Paris.", "triplets": []},
    {"id": "c", "text": "Linux was created by Linus Torvalds in 1991.", "triplets": []},
    {"id": "d", "text": "Rust is a programming language.", "triplets": []},
    {"id": "e", "text": "The Danube flows through Vienna.", "triplets": []},
]


@pytest.fixture(scope="module")
def tiny_qwen3():
    return models.load_model("tiny:qwen3", for_family="qwen3")


def test_parse_spec():
    assert models.parse_spec("unsloth/Qwen3-0.6B") == ("hub", "unsloth/Qwen3-0.6B")
    assert models.parse_spec("embedded:gemma-3-270m") == ("embedded", "gemma-3-270m")
    assert models.parse_spec("tiny:llama") == ("tiny", "llama")
    with pytest.raises(ValueError, match="unknown embedded model 'gpt5'"):
        models.parse_spec("embedded:gpt5")
    with pytest.raises(ValueError, match="unknown tiny architecture 'mamba'"):
        models.parse_spec("tiny:mamba")
    with pytest.raises(ValueError, match="non-empty"):
        models.parse_spec("")


def test_tiny_qwen3_is_a_real_qwen3(tiny_qwen3):
    assert type(tiny_qwen3.model).__name__ == "Qwen3ForCausalLM"
    assert tiny_qwen3.tokenizer.padding_side == "left"
    assert tiny_qwen3.stop_token_ids
    assert "tiny randomly initialised" in tiny_qwen3.describe()


@pytest.mark.parametrize("arch, cls", [("llama", "LlamaForCausalLM"), ("gemma3", "Gemma3ForCausalLM")])
def test_tiny_other_architectures(arch, cls):
    lm = models.load_model(f"tiny:{arch}")
    assert type(lm.model).__name__ == cls
    prompt = render_prompt(lm.tokenizer, "Some text.")
    if arch == "gemma3":
        assert prompt.rstrip().endswith("<start_of_turn>model")


def test_local_folder_goes_through_from_pretrained(tiny_qwen3, tmp_path):
    tiny_qwen3.model.save_pretrained(tmp_path / "m")
    tiny_qwen3.tokenizer.save_pretrained(tmp_path / "m")
    lm = models.load_model(str(tmp_path / "m"))
    assert lm.kind == "hub" and type(lm.model).__name__ == "Qwen3ForCausalLM"
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        models.load_model(str(tmp_path / "missing"))


def test_hub_id_offline_fails_clearly():
    with pytest.raises(OSError):
        models.load_model("unsloth/Qwen3-0.6B")


def test_predict_file_writes_rows_and_resumes(tiny_qwen3, tmp_path):
    out = tmp_path / "pred.jsonl"
    s1 = predict_file(tiny_qwen3, PASSAGES, out, batch_size=2, max_new_tokens=8, progress=False)
    assert s1["n"] == 5 and s1["n_generated"] == 5
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b", "c", "d", "e"]
    for r in rows:
        assert set(r) >= {"id", "text", "prompt", "gold_parsed", "pred_raw", "pred_parsed", "parse_status",
                          "pred_repaired", "repair_status", "n_new_tokens", "model"}
        assert r["text"] in r["prompt"] and isinstance(r["pred_parsed"], list)
        assert 1 <= r["n_new_tokens"] <= 8
    assert sum(s1["parse_status"].values()) == 5

    # Rerun: nothing is generated again.
    s2 = predict_file(tiny_qwen3, PASSAGES, out, batch_size=2, max_new_tokens=8, progress=False)
    assert s2["n_generated"] == 0 and s2["n_resumed"] == 5

    # An interrupted run leaves a cut last line and misses rows: only those are generated again.
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])
    s3 = predict_file(tiny_qwen3, PASSAGES, out, batch_size=2, max_new_tokens=8, progress=False)
    assert s3["n_generated"] == 3 and s3["n_resumed"] == 2
    rows3 = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows3] == ["a", "b", "c", "d", "e"]
    # Greedy decoding is deterministic: regenerated rows equal the first run's.
    assert [r["pred_raw"] for r in rows3] == [r["pred_raw"] for r in rows]


def test_predict_file_keeps_unlabelled_passages_apart_from_empty_gold(tiny_qwen3, tmp_path):
    """A passage without labels gets gold null (not []), so 08's calibration never scores it as "gold is empty";
    a passage whose gold is empty keeps []. The scorer refuses the unlabelled one by name."""
    from kgutils.evaluation import load_predictions
    from kgutils.graph import calibration_outcomes, read_predictions

    rows = [{"id": "lab", "text": "BERT was developed by Google.", "triplets": []},
            {"id": "unl", "text": "Rust is a programming language."}]
    out = tmp_path / "p.jsonl"
    predict_file(tiny_qwen3, rows, out, batch_size=2, max_new_tokens=6, progress=False)
    recs = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert recs["lab"]["gold_parsed"] == [] and recs["unl"]["gold_parsed"] is None
    assert [e["gold"] for e in read_predictions(out)] == [[], None]
    assert calibration_outcomes(out).attrs["skipped_without_gold"] == 1
    with pytest.raises(ValueError, match="row 2 has no gold"):
        load_predictions(out)


def test_predict_file_rejects_bad_input(tiny_qwen3, tmp_path):
    with pytest.raises(ValueError, match="passage 'x' has no text"):
        predict_file(tiny_qwen3, [{"id": "x", "text": " "}], tmp_path / "p.jsonl", progress=False)
    with pytest.raises(ValueError, match="not unique"):
        predict_file(tiny_qwen3, [PASSAGES[0], PASSAGES[0]], tmp_path / "p.jsonl", progress=False)


@pytest.mark.slow
def test_embedded_smollm2_loads_and_follows_chat_template():
    lm = models.load_model("embedded:smollm2-135m-instruct", for_family="qwen3")
    assert type(lm.model).__name__ == "LlamaForCausalLM"
    assert 130e6 < lm.n_parameters < 140e6
    assert "stands in for the full profile's qwen3 model" in lm.note
    assert getattr(lm.model, "hf_quantizer", None) is None  # the cached checkpoint is an ordinary one
    prompt = render_prompt(lm.tokenizer, "Paris is located in France.")
    assert "<|im_start|>assistant" in prompt


@pytest.mark.slow
def test_embedded_gemma_270m_loads_with_supplied_template():
    lm = models.load_model("embedded:gemma-3-270m", for_family="gemma3")
    assert type(lm.model).__name__ == "Gemma3ForCausalLM"
    assert 106 in lm.stop_token_ids  # <end_of_turn>
    prompt = render_prompt(lm.tokenizer, "Paris is located in France.")
    assert prompt.startswith("<bos><start_of_turn>user\n") and prompt.endswith("<start_of_turn>model\n")


def test_model_path_of_each_kind(tiny_qwen3, tmp_path):
    assert (Path(models.model_path("tiny:qwen3")) / "config.json").is_file()
    assert models.model_path("org/some-model") == "org/some-model"  # a hub id passes through to from_pretrained
    with pytest.raises(FileNotFoundError, match="config.json"):
        models.model_path(str(tmp_path))


def test_generation_engine_choice_on_this_machine():
    import importlib.util

    import torch

    from kgutils import generate

    with pytest.raises(ValueError, match="engine"):
        generate.choose_engine("tgi")
    if torch.cuda.is_available() and importlib.util.find_spec("vllm"):
        assert generate.choose_engine()[0] == "vllm"
        return
    engine, why = generate.choose_engine()
    assert engine == "hf" and ("no CUDA GPU" in why or "vllm not installed" in why)
    assert generate.choose_engine("hf") == ("hf", "transformers generate, length-sorted batches (requested)")
    # Asking for vLLM where it cannot run is refused by name, before anything is loaded.
    with pytest.raises(RuntimeError, match="vllm"):
        generate.load_vllm("tiny:qwen3")


def test_stop_bias_moves_the_end_of_the_answer(tiny_qwen3):
    from kgutils.generate import generate_texts

    prompts = [render_prompt(tiny_qwen3.tokenizer, p["text"]) for p in PASSAGES[:3]]
    plain = generate_texts(tiny_qwen3, prompts, batch_size=3, max_new_tokens=10, progress=False)
    eager = generate_texts(tiny_qwen3, prompts, batch_size=3, max_new_tokens=10, progress=False, stop_bias=1e4)
    never = generate_texts(tiny_qwen3, prompts, batch_size=3, max_new_tokens=10, progress=False, stop_bias=-1e4)
    # A huge positive bias ends every answer at its first token; a huge negative one never lets it end early.
    assert [g["n_new_tokens"] for g in eager] == [1, 1, 1] and all(g["text"] == "" for g in eager)
    assert [g["n_new_tokens"] for g in never] == [10, 10, 10]
    assert plain == generate_texts(tiny_qwen3, prompts, batch_size=3, max_new_tokens=10, progress=False, stop_bias=0)
