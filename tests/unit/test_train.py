"""LoRA SFT on a tiny random Qwen3: answer-only loss, curriculum order, checkpoints and resume, adapter reload."""

import json

import pytest
import torch

from kgutils import train
from kgutils.formats import parse_output
from kgutils.generate import generate_texts, render_prompt
from kgutils.io import read_jsonl
from kgutils.models import load_model

ROWS = read_jsonl("data/sample/test.jsonl")[:10]
SETTINGS = dict(batch_size=2, grad_accum=1, learning_rate=2e-3, warmup_steps=0, save_steps=2, logging_steps=1,
                max_length=1024, eval_steps=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    lora = train.LoraSettings(r=8, alpha=16)
    first = train.train_sft("tiny:qwen3", ROWS[:8], ROWS[8:], out, lora,
                            train.TrainSettings(max_steps=2, **SETTINGS))
    second = train.train_sft("tiny:qwen3", ROWS[:8], ROWS[8:], out, lora,
                             train.TrainSettings(max_steps=4, **SETTINGS))
    return out, first, second


def test_sft_records_hold_the_gold_json_as_the_answer():
    rec = train.sft_records(ROWS[:1])[0]
    assert rec["prompt"][-1]["role"] == "user" and ROWS[0]["text"] in rec["prompt"][-1]["content"]
    assert rec["completion"][0]["role"] == "assistant"
    assert parse_output(rec["completion"][0]["content"]).items == ROWS[0]["triplets"]
    assert rec["chat_template_kwargs"] == {"enable_thinking": False}


def test_backend_on_cpu_is_peft_and_unsloth_is_refused():
    if torch.cuda.is_available():
        pytest.skip("CPU-only check")
    assert train.choose_backend()[0] == "peft"
    with pytest.raises(RuntimeError, match="CUDA"):
        train.choose_backend("unsloth")
    with pytest.raises(ValueError):
        train.choose_backend("tpu")


def test_loss_covers_the_answer_only_in_file_order(trained):
    _, first, _ = trained
    trainer = first["trainer"]
    loader = trainer.get_train_dataloader()
    assert type(loader.sampler).__name__ == "SequentialSampler"  # curriculum order kept
    batch = next(iter(loader))
    tok = first["tokenizer"]
    for i, row in enumerate(ROWS[:2]):
        labels = batch["labels"][i]
        answer = tok.decode(labels[labels != -100])
        # Only the answer is scored (plus the end-of-turn token), and it is the first file rows' gold JSON.
        assert parse_output(answer).items == row["triplets"]
        assert row["text"][:40] not in answer
        assert (labels != -100).sum() < (batch["attention_mask"][i] == 1).sum() / 2


def test_answer_only_head_loss_equals_the_usual_loss(trained):
    """On CPU the LM head sees the answer tokens only; the loss must be the ordinary causal-LM loss."""
    _, first, _ = trained
    trainer = first["trainer"]
    if torch.cuda.is_available():
        pytest.skip("the CPU loss path")
    assert type(trainer).__name__ == "AnswerOnlyHeadSFTTrainer"
    batch = next(iter(trainer.get_train_dataloader()))
    model = first["model"].eval()
    with torch.no_grad():
        ours, n_tokens, hits = train._answer_only_loss(model, dict(batch))
        usual = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      labels=batch["labels"]).loss
        summed, _, _ = train._answer_only_loss(model, dict(batch), num_items_in_batch=4 * n_tokens)
    assert n_tokens == int((batch["labels"][:, 1:] != -100).sum()) > 0
    assert 0 <= hits <= n_tokens
    assert torch.allclose(ours, usual, rtol=1e-5, atol=1e-6)
    # Under gradient accumulation the sum is divided by the tokens of all micro-batches, as TRL does.
    assert torch.allclose(summed, usual / 4, rtol=1e-5, atol=1e-6)


def test_precision_choice():
    assert train.resolve_precision("fp32")[0] == "fp32"
    assert train.resolve_precision("auto")[0] in ("bf16", "fp32")
    with pytest.raises(ValueError, match="precision"):
        train.resolve_precision("fp8")


def test_checkpoints_and_resume(trained):
    out, first, second = trained
    assert first["global_step"] == 2 and first["resumed_from"] is None
    assert second["resumed_from"].endswith("checkpoint-2") and second["global_step"] == 4
    losses = [h["loss"] for h in second["log_history"] if "loss" in h]
    assert len(losses) == 4 and all(x == x for x in losses)  # steps 1-2 restored from the checkpoint's state
    assert second["eval_loss"] is not None
    cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and set(cfg["target_modules"]) == set(train.ALL_PROJECTIONS)
    meta = json.loads((out / "adapter" / "kg_triplets_train.json").read_text())
    assert meta["global_step"] == 4 and meta["settings"]["max_steps"] == 4


def _logits(model, tok, text):
    ids = tok(render_prompt(tok, text), return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_reloaded_adapter_matches_the_trained_model(trained, tmp_path):
    out, _, second = trained
    model, tok = second["model"].eval(), second["tokenizer"]
    reloaded = train.load_adapter("tiny:qwen3", out / "adapter")
    base = load_model("tiny:qwen3")
    text = ROWS[0]["text"]
    trained_logits = _logits(model, tok, text)
    assert torch.allclose(trained_logits, _logits(reloaded.model, reloaded.tokenizer, text), atol=1e-5)
    assert not torch.allclose(trained_logits, _logits(base.model, base.tokenizer, text), atol=1e-4)  # it learnt
    live = second["loaded"]
    assert live.stop_token_ids == reloaded.stop_token_ids
    prompts = [render_prompt(tok, r["text"]) for r in ROWS[:2]]
    a = generate_texts(live, prompts, batch_size=2, max_new_tokens=12, progress=False)
    b = generate_texts(reloaded, prompts, batch_size=2, max_new_tokens=12, progress=False)
    assert [x["text"] for x in a] == [x["text"] for x in b]
    merged_dir = train.merge_and_save(reloaded.model, reloaded.tokenizer, tmp_path / "merged")
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert torch.allclose(trained_logits, _logits(merged, tok, text), atol=1e-4)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="sampling"):
        train.train_sft("tiny:qwen3", ROWS[:2], None, "/tmp/unused", settings=train.TrainSettings(sampling="sorted"))
    with pytest.raises(ValueError, match="no training examples"):
        train.train_sft("tiny:qwen3", [], None, "/tmp/unused")


def _qlora_pair():
    """A tiny Llama in NF4 with LoRA, and the same LoRA on a plain model holding the dequantized NF4 weights."""
    from peft import LoraConfig, get_peft_model

    from kgutils.generate import dequantized_copy

    q = load_model("tiny:llama", quantization_config=train.nf4_config("fp32")).model
    plain = dequantized_copy(q)
    cfg = dict(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(train.ALL_PROJECTIONS), task_type="CAUSAL_LM")
    q, plain = get_peft_model(q, LoraConfig(**cfg)), get_peft_model(plain, LoraConfig(**cfg))
    gen = torch.Generator().manual_seed(0)
    lora_q = {n: p for n, p in q.named_parameters() if "lora_" in n}
    lora_p = {n: p for n, p in plain.named_parameters() if "lora_" in n}
    assert lora_q.keys() == lora_p.keys() and lora_q
    with torch.no_grad():
        for n, p in lora_q.items():  # B is zero at init, which would hide A's gradient: give both random values
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            lora_p[n].copy_(p)
    return q, plain, lora_q, lora_p


def test_qlora_gradients_match_the_dequantized_model():
    """QLoRA on CPU (bitsandbytes NF4 + double quantisation): the LoRA gradients through the 4-bit layers equal
    those of the same LoRA on a model holding the dequantized weights."""
    import bitsandbytes as bnb

    q, plain, lora_q, lora_p = _qlora_pair()
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in q.modules())
    assert q.get_base_model().config.quantization_config.bnb_4bit_use_double_quant
    ids = torch.randint(0, 500, (2, 16), generator=torch.Generator().manual_seed(1))
    for model in (q, plain):
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
    for n, p in lora_q.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
        torch.testing.assert_close(p.grad, lora_p[n].grad, rtol=2e-2, atol=1e-4, msg=n)


def test_dequantized_copy_computes_what_the_4bit_model_computes():
    """for_inference on a QLoRA model: NF4 weights dequantized (CPU repacking undone) and LoRA merged."""
    from kgutils.generate import for_inference
    from kgutils.models import LoadedModel

    q, _, _, _ = _qlora_pair()
    q.eval()
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = q(input_ids=ids).logits  # on CPU this first inference call repacks the 4-bit weights
        lm = LoadedModel(model=q, tokenizer=None, spec="tiny:llama", kind="tiny", stop_token_ids=[0])
        fast = for_inference(lm, "fp32")
        got = fast.model(input_ids=ids).logits
    assert "NF4 weights dequantized, LoRA merged" in fast.note
    assert not any("Linear4bit" in type(m).__name__ for m in fast.model.modules())
    assert (got - want).abs().max() < 0.02 * want.abs().max()  # the 4-bit kernel computes in bf16 on CPU


def test_nf4_training_runs_through_train_sft(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": f"Sentence: s{i}"}],
             "completion": [{"role": "assistant", "content": "work_for"}]} for i in range(4)]
    fit = train.train_sft("tiny:llama", rows, None, tmp_path, train.LoraSettings(r=4, alpha=8),
                          train.TrainSettings(max_steps=2, batch_size=2, grad_accum=1, save_steps=10,
                                              quantization="nf4", warmup_steps=0.03, optim="paged_adamw_8bit"),
                          for_family="llama")
    assert fit["global_step"] == 2
    assert json.loads((fit["adapter_dir"] / "kg_triplets_train.json").read_text())["quantization"] == "nf4"
    with pytest.raises(ValueError, match="quantization"):
        train.train_sft("tiny:llama", rows, None, tmp_path, settings=train.TrainSettings(quantization="int3"))


def test_rerun_of_a_finished_run_trains_nothing_more(tmp_path):
    """Resuming from the final checkpoint would run one step past the budget in the trainer; a finished run is
    loaded instead, with the same weights. A larger budget still resumes."""
    rows = [{"prompt": [{"role": "user", "content": f"Sentence: s{i}"}],
             "completion": [{"role": "assistant", "content": "work_for"}]} for i in range(8)]
    lora = train.LoraSettings(r=4, alpha=8)

    def run(steps):
        return train.train_sft("tiny:llama", rows, None, tmp_path, lora,
                               train.TrainSettings(max_steps=steps, batch_size=2, grad_accum=1, save_steps=1,
                                                   sampling="random"), for_family="llama")

    def lora_b(fit):
        return {n: p.detach().clone() for n, p in fit["model"].named_parameters() if "lora_B" in n}

    first = run(2)
    again = run(2)
    assert again["global_step"] == 2 and again["resumed_from"].endswith("checkpoint-2")
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    a, b = lora_b(first), lora_b(again)
    assert a and all(torch.equal(a[n], b[n]) for n in a)
    more = run(3)
    assert more["global_step"] == 3 and more["resumed_from"].endswith("checkpoint-2")


def test_trained_model_runs_its_own_forward_after_mixed_precision(trained):
    """accelerate wraps the forward in autocast for bf16 training, and unwrap_model leaves that wrapper on the inner
    model, holding the original bound forward: a merged copy (for_inference) then kept calling the unmerged trained
    model (3× the matrix products). The returned model carries no such wrapper, and its merged copy computes what
    the adapter reloaded from disk computes."""
    from kgutils.generate import for_inference

    out, _, second = trained
    model = second["model"]
    for mod in model.modules():
        f = mod.__dict__.get("forward")
        assert f is None or f.__func__ is type(mod).forward, type(mod).__name__
    fast = for_inference(second["loaded"], "fp32")
    again = for_inference(train.load_adapter("tiny:qwen3", second["adapter_dir"]), "fp32")
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(fast.model(input_ids=ids).logits, again.model(input_ids=ids).logits)
    # The guard in for_inference: a model that still carries a wrapper is copied and cleaned, never merged as is.
    import types

    wrapped = for_inference(second["loaded"], "fp32").model
    wrapped.forward = types.MethodType(lambda self, *a, **k: (_ for _ in ()).throw(RuntimeError("wrapper")), wrapped)
    from kgutils.models import LoadedModel

    copy_with_wrapper = for_inference(LoadedModel(model=wrapped, tokenizer=None, spec="x", kind="tiny",
                                                  stop_token_ids=[0]), "fp32")
    with torch.no_grad():
        torch.testing.assert_close(copy_with_wrapper.model(input_ids=ids).logits, again.model(input_ids=ids).logits)


def test_stage_two_starts_from_the_stage_one_adapter(tmp_path):
    """Continued training (05): stage 2 loads the stage-1 adapter as trainable; at its first step its LoRA weights
    are exactly stage 1's saved ones (a fresh adapter would have lora_B = 0 and a new random lora_A), and training
    then changes them. adapter_drift sees the continuation; a fresh adapter on the same data is far away."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    rows = [{"prompt": [{"role": "user", "content": f"Passage {i}: Ada wrote notes."}],
             "completion": [{"role": "assistant", "content": '{"triples":[]}'}]} for i in range(8)]
    settings = train.TrainSettings(max_steps=3, batch_size=2, grad_accum=1, learning_rate=1e-2, warmup_steps=0,
                                   save_steps=10)
    lora = train.LoraSettings(r=4, alpha=8)
    first = train.train_sft("tiny:gemma3", rows[:4], None, tmp_path / "s1", lora, settings, for_family="gemma3")

    class Snapshot(TrainerCallback):
        start: dict = {}

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            Snapshot.start = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}

    second = train.train_sft("tiny:gemma3", rows[4:], None, tmp_path / "s2", train.LoraSettings(r=16, alpha=4),
                             settings, for_family="gemma3", init_adapter=first["adapter_dir"], callbacks=[Snapshot()])
    saved = load_file(str(first["adapter_dir"] / "adapter_model.safetensors"))
    assert len(Snapshot.start) == len(saved) > 0
    for name, value in Snapshot.start.items():
        key = name.replace(".default", "")
        assert torch.equal(value, saved[key]), name  # stage 2 began at stage 1's weights
    assert any(not torch.equal(p, Snapshot.start[n]) for n, p in second["model"].named_parameters() if n in
               Snapshot.start)  # and trained them
    assert all(p.requires_grad for n, p in second["model"].named_parameters() if "lora_" in n)
    assert json.loads((second["adapter_dir"] / "adapter_config.json").read_text())["r"] == 4  # stage 1's rank kept
    meta = json.loads((second["adapter_dir"] / "kg_triplets_train.json").read_text())
    assert meta["init_adapter"] == str(first["adapter_dir"])
    drift = train.adapter_drift(first["adapter_dir"], second["adapter_dir"])
    fresh = train.train_sft("tiny:gemma3", rows[4:], None, tmp_path / "fresh", lora,
                            train.TrainSettings(**{**settings.__dict__, "seed": 7}), for_family="gemma3")
    apart = train.adapter_drift(first["adapter_dir"], fresh["adapter_dir"])
    assert drift["same_tensors"] and drift["cosine"] > apart["cosine"] + 0.3
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        train.train_sft("tiny:gemma3", rows, None, tmp_path / "bad", lora, settings, for_family="gemma3",
                        init_adapter=tmp_path)


def test_stage_split_is_disjoint_seeded_and_keeps_order():
    rows = [{"id": i} for i in range(20)]
    a, b = train.stage_split(rows, 0.3, seed=1)
    assert len(a) == 6 and len(b) == 14
    assert sorted(r["id"] for r in a + b) == list(range(20))
    assert [r["id"] for r in a] == sorted(r["id"] for r in a)  # file (curriculum) order kept
    assert train.stage_split(rows, 0.3, seed=1) == (a, b) and train.stage_split(rows, 0.3, seed=2) != (a, b)
    for bad in (0, 1.0, 0.01):
        with pytest.raises(ValueError):
            train.stage_split(rows, bad)
