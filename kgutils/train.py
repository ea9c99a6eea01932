"""Supervised fine-tuning with LoRA / QLoRA: the one SFT entry point of notebooks 03, 04, 05 and 07.

:func:`train_sft` trains a LoRA adapter with TRL's ``SFTTrainer`` on prompt–completion chat examples, so the loss
covers the assistant's answer only. The backend is chosen at run time and printed:

* ``unsloth``: Unsloth's ``FastLanguageModel`` (its own gradient checkpointing), when a CUDA GPU and the
  ``unsloth`` package (the ``gpu`` extra) are present;
* ``peft``: plain ``transformers`` + ``peft`` otherwise (CPU included), with the model loaded by
  :func:`kgutils.models.load_model` (hub ids, ``embedded:`` and ``tiny:`` models).

Training order: with ``sampling="sequential"`` the examples are seen in file order, which keeps 02's curriculum
(easy → hard); ``"random"`` shuffles; ``"group_by_length"`` batches passages of similar length (less padding).
Checkpoints go to ``<out>/checkpoints``; a rerun resumes from the last one. The adapter, its LoRA config and the
resolved settings are written to ``<out>/adapter``.

Speed on CPU: the LM head scores the answer tokens only (:func:`_answer_only_loss`, the same loss as TRL's, which
sends every position through the head), and ``precision="auto"`` trains under bf16 autocast where the CPU has
native bf16 (:func:`resolve_precision`). ``benchmarks/bench_throughput.py`` measures both.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .formats import to_json
from .io import resolve, write_json
from .models import LoadedModel, choose_gpu_option, load_model, stop_ids
from .prompts import extraction_messages

__all__ = ["LoraSettings", "TrainSettings", "sft_records", "choose_backend", "train_sft", "load_adapter",
           "merge_and_save", "nf4_config", "drop_forward_wrappers", "stage_split",
           "adapter_drift"]

ALL_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SAMPLINGS = ("sequential", "random", "group_by_length")


@dataclass
class LoraSettings:
    """LoRA adapter settings (the seed card's: r 32, alpha 32, dropout 0, bias none, all 7 projections)."""

    r: int = 32
    alpha: int = 32
    dropout: float = 0.0
    bias: str = "none"
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))


@dataclass
class TrainSettings:
    """Optimisation settings (the seed card's: batch 2 × accumulation 4, lr 5e-5, 5 epochs, warm-up 50 steps,
    AdamW 8-bit, max length 2048, seed 42). ``max_steps`` > 0 overrides ``epochs``."""

    epochs: float = 5.0
    max_steps: int = -1
    batch_size: int = 2
    grad_accum: int = 4
    learning_rate: float = 5e-5
    warmup_steps: float = 50  # an integer: steps; a float in [0, 1): a share of all steps (the card's ratio .03)
    weight_decay: float = 0.0
    optim: str = "adamw_8bit"
    max_length: int = 2048
    seed: int = 42
    sampling: str = "sequential"
    logging_steps: int = 10
    eval_steps: int = 0  # 0: evaluate once per epoch
    save_steps: int = 50
    save_total_limit: int | None = 2  # None keeps every checkpoint
    gradient_checkpointing: bool = True
    precision: str = "auto"  # auto | bf16 | fp32 (see resolve_precision)
    loss_impl: str = "auto"  # auto: answer-only LM head on CPU, TRL's fused loss on CUDA; trl: TRL's everywhere
    pad_to_multiple_of: int | None = None  # pad each batch to a multiple of N tokens (None: TRL default, the longest)
    quantization: str = "none"  # none | nf4 (QLoRA: 4-bit NF4 base weights with double quantisation)


PRECISIONS = ("auto", "bf16", "fp32")
QUANTIZATIONS = ("none", "nf4")


def nf4_config(compute: str = "bf16") -> Any:
    """The QLoRA quantisation (the card's): 4-bit NF4 weights, double quantisation, ``compute`` dtype matmuls.

    bitsandbytes ≥ 0.48 runs 4-bit loading, the forward and backward passes on CPU as well as on CUDA.
    """
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if compute == "bf16" else torch.float32)


def resolve_precision(precision: str = "auto") -> tuple[str, str]:
    """(``"bf16"`` or ``"fp32"``, why): the mixed precision training runs in.

    ``auto`` picks bf16 autocast on a CUDA GPU that supports it and on a CPU with native bf16 instructions
    (AVX-512 BF16 or AMX), where it trains the 135M stand-in about 1.5× faster than fp32 on 2 cores; fp32
    otherwise. The LoRA weights and optimizer state stay in fp32 either way.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if torch.cuda.is_available():
        ok, where = torch.cuda.is_bf16_supported(), "this GPU"
    else:
        cpu = getattr(torch, "cpu", None)
        ok = bool(cpu and (getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                           or getattr(cpu, "_is_amx_tile_supported", lambda: False)()))
        where = "this CPU (AVX-512 BF16 / AMX)"
    if precision == "fp32":
        return "fp32", "requested"
    if precision == "bf16":
        if not ok:
            raise RuntimeError(f"precision 'bf16' requested but {where} has no native bf16 support; use fp32")
        return "bf16", "requested"
    return ("bf16", f"native bf16 on {where}") if ok else ("fp32", f"no native bf16 on {where}")


def sft_records(examples: list[dict], system: str | None = None) -> list[dict[str, Any]]:
    """Prompt–completion chat records: the extraction prompt as the user turn, the gold JSON as the answer.

    ``chat_template_kwargs`` turns Qwen3's thinking off (other templates ignore it), as at generation time.
    """
    return [{"prompt": extraction_messages(e["text"], system=system),
             "completion": [{"role": "assistant", "content": to_json(e["triplets"])}],
             "chat_template_kwargs": {"enable_thinking": False}} for e in examples]


def _records(examples: list[dict], system: str | None) -> list[dict[str, Any]]:
    """Examples already in prompt–completion form (``prompt``/``completion`` keys) pass through; 02's
    ``text``/``triplets`` examples become :func:`sft_records`."""
    if examples and "prompt" in examples[0] and "completion" in examples[0]:
        return list(examples)
    return sft_records(examples, system)


def choose_backend(prefer: str = "auto") -> tuple[str, str]:
    """(backend, why): ``unsloth`` with CUDA and the package present, else ``peft``."""
    return choose_gpu_option(prefer, name="backend", fast="unsloth", package="unsloth", fallback="peft",
                             fast_label="Unsloth FastLanguageModel", fallback_label="transformers + peft")


def _optim(name: str, on_cuda: bool) -> str:
    # bitsandbytes' 8-bit AdamW needs CUDA; on CPU the same algorithm in 32-bit state is the honest stand-in.
    if name in ("adamw_8bit", "adamw_bnb_8bit", "paged_adamw_8bit") and not on_cuda:
        return "adamw_torch"
    return name


def _continue_adapter(model: Any, init_adapter: str | Path) -> Any:
    """The saved adapter on ``model``, trainable: a later stage continues its weights instead of a fresh LoRA."""
    from peft import PeftModel

    path = resolve(init_adapter)
    if not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"init_adapter {path} holds no adapter (adapter_config.json missing)")
    model = PeftModel.from_pretrained(model, str(path), is_trainable=True)
    print(f"Continuing the adapter {path} (trainable; its LoRA settings apply)")
    return model


def _load(spec: str, lora: LoraSettings, settings: TrainSettings, backend: str, for_family: str,
          init_adapter: str | Path | None = None) -> tuple[Any, Any]:
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        model, tokenizer = FastLanguageModel.from_pretrained(model_name=spec, max_seq_length=settings.max_length,
                                                             load_in_4bit=settings.quantization == "nf4")
        if init_adapter is not None:
            return _continue_adapter(model, init_adapter), tokenizer
        model = FastLanguageModel.get_peft_model(
            model, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
            target_modules=list(lora.target_modules),
            use_gradient_checkpointing="unsloth" if settings.gradient_checkpointing else False,
            random_state=settings.seed)
        return model, tokenizer
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    extra: dict[str, Any] = {}
    if settings.quantization == "nf4":
        extra["quantization_config"] = nf4_config(resolve_precision(settings.precision)[0])
    lm = load_model(spec, for_family=for_family, **extra)
    print("Base model:", lm.describe())
    model = lm.model
    if settings.quantization == "nf4":
        # QLoRA: norms and head in fp32, inputs that require grad; gradient checkpointing as configured.
        import torch

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=settings.gradient_checkpointing
                                                and torch.cuda.is_available())
    if init_adapter is not None:
        return _continue_adapter(model, init_adapter), lm.tokenizer
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, bias=lora.bias,
                        target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    return model, lm.tokenizer



def _answer_only_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> tuple[Any, int, int]:
    """(loss, scored tokens, top-1 hits): the LM head applied to the answer tokens only.

    TRL's default loss on hardware without Triton projects *every* position through the LM head in fp32 chunks
    (the prompt included, to keep tile shapes fixed for compilers). On CPU that was half of each step for the
    135M stand-in, whose 49k-token vocabulary dwarfs its hidden size. Here the backbone runs as usual and only the
    positions with a label (the answer) go through the head: the same loss (mean token NLL, or the sum over
    ``num_items_in_batch`` under gradient accumulation, as TRL computes it), less work.
    """
    import torch
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = base.get_decoder()
    head = base.get_output_embeddings()
    labels = inputs["labels"]
    kwargs = {k: v for k, v in inputs.items() if k not in ("labels", "completion_mask", "assistant_masks")}
    kwargs["use_cache"] = False
    hidden = backbone(**kwargs).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    mask = target != -100
    logits = head(hidden[mask]).float()
    gold = target[mask]
    nll = F.cross_entropy(logits, gold, reduction="sum")
    denom = num_items_in_batch if num_items_in_batch is not None else mask.sum().clamp(min=1)
    with torch.no_grad():
        hits = int((logits.argmax(-1) == gold).sum())
    return nll / torch.as_tensor(denom, device=nll.device), int(mask.sum()), hits


def _sft_trainer_class(on_cuda: bool, model: Any, loss_impl: str = "auto") -> type:
    """TRL's ``SFTTrainer`` on CUDA; on CPU a subclass whose loss scores the answer tokens only (see
    :func:`_answer_only_loss`) for the plain causal LMs used here (no logit soft-capping or scaling)."""
    from trl import SFTTrainer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = getattr(base.config, "get_text_config", lambda: base.config)()
    special = any(getattr(cfg, k, None) not in (None, 1.0) for k in ("final_logit_softcapping", "logits_scaling"))
    if loss_impl not in ("auto", "trl"):
        raise ValueError(f"loss_impl must be auto or trl, got {loss_impl!r}")
    if loss_impl == "trl" or on_cuda or special or not callable(getattr(base, "get_decoder", None)):
        return SFTTrainer

    class AnswerOnlyHeadSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:  # logits requested (compute_metrics): TRL's path builds them
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            # The backbone is called directly, past the forward accelerate wrapped in autocast: enter it here.
            with self.accelerator.autocast():
                loss, n_tokens, hits = _answer_only_loss(model, inputs, num_items_in_batch)
            self._metrics[mode]["mean_token_accuracy"].append(hits / n_tokens if n_tokens else 0.0)
            if mode == "train":
                self._total_train_tokens += int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else 0
                self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
            return loss

    return AnswerOnlyHeadSFTTrainer


def train_sft(
    model_spec: str,
    train: list[dict],
    val: list[dict] | None,
    out_dir: str | Path,
    lora: LoraSettings | None = None,
    settings: TrainSettings | None = None,
    *,
    for_family: str = "qwen3",
    backend: str = "auto",
    resume: bool = True,
    report_to: str = "none",
    system: str | None = None,
    callbacks: list | None = None,
    init_adapter: str | Path | None = None,
) -> dict[str, Any]:
    """Train a LoRA adapter on ``train`` (dicts with ``text`` and ``triplets``), with eval loss on ``val``.

    Args:
        model_spec: Base model: hub id or folder, ``embedded:NAME`` or ``tiny:ARCH`` (see :mod:`kgutils.models`).
        train / val: Examples in the layout of 02's splits (``text``, ``triplets``), or chat records with
            ``prompt`` and ``completion`` message lists for other tasks (e.g. the CoNLL04 benchmark).
        out_dir: Run folder: ``checkpoints/`` and ``adapter/`` are written inside.
        lora / settings: See :class:`LoraSettings` and :class:`TrainSettings`.
        for_family: The full-profile family the model stands in for (what :func:`load_model` reports).
        backend: ``auto``, ``unsloth`` or ``peft`` (see :func:`choose_backend`).
        resume: Continue from the last checkpoint in ``<out>/checkpoints`` when there is one.
        report_to: ``"wandb"`` to log loss and eval loss to the active W&B run, ``"none"`` otherwise.
        system: Optional system prompt.
        callbacks: Extra ``transformers.TrainerCallback`` objects (e.g. timers).
        init_adapter: A saved adapter folder to continue (continued training, 05's stage 2): it is loaded as
            trainable and trained further, so ``lora`` is ignored (the adapter's own rank and targets apply).

    Returns:
        ``{"backend", "adapter_dir", "train_loss", "eval_loss", "global_step", "seconds", "resumed_from",
        "log_history", "trainer", "model", "tokenizer", "loaded"}``; ``loaded`` is the trained model as a
        :class:`~kgutils.models.LoadedModel` in eval mode, ready for :mod:`kgutils.generate`.
    """
    import torch
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig

    lora, settings = lora or LoraSettings(), settings or TrainSettings()
    if settings.sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {settings.sampling!r}")
    if settings.quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {settings.quantization!r}")
    if not train:
        raise ValueError("no training examples")
    backend, why = choose_backend(backend)
    precision, why_precision = resolve_precision(settings.precision)
    print(f"Training backend: {backend} — {why}; precision {precision} ({why_precision})")
    out = resolve(out_dir)
    ckpt_dir = out / "checkpoints"
    model, tokenizer = _load(model_spec, lora, settings, backend, for_family, init_adapter)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    on_cuda = torch.cuda.is_available()
    eval_ds = Dataset.from_list(_records(val, system)) if val else None
    config = SFTConfig(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        optim=_optim(settings.optim, on_cuda),
        max_length=settings.max_length,
        seed=settings.seed,
        train_sampling_strategy=settings.sampling,
        completion_only_loss=True,
        pad_to_multiple_of=settings.pad_to_multiple_of or "auto",
        logging_steps=settings.logging_steps,
        eval_strategy=("steps" if settings.eval_steps else "epoch") if eval_ds is not None else "no",
        eval_steps=settings.eval_steps or None,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        activation_checkpointing=settings.gradient_checkpointing and backend == "peft" and on_cuda,
        bf16=precision == "bf16",
        report_to=report_to,
        use_cpu=not on_cuda,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    trainer_cls = _sft_trainer_class(on_cuda, model, settings.loss_impl)
    trainer = trainer_cls(model=model, args=config, train_dataset=Dataset.from_list(_records(train, system)),
                         eval_dataset=eval_ds, processing_class=tokenizer, callbacks=callbacks)
    if os.environ.get("KG_TRIPLETS_BATCH"):
        # Under the batch runner the kernel's widget bar would only land in the executed notebook: use text bars,
        # which the runner streams to the terminal.
        from transformers.trainer_callback import ProgressCallback
        from transformers.utils.notebook import NotebookProgressCallback

        if any(isinstance(cb, NotebookProgressCallback) for cb in trainer.callback_handler.callbacks):
            trainer.remove_callback(NotebookProgressCallback)
            trainer.add_callback(ProgressCallback)
    last = get_last_checkpoint(str(ckpt_dir)) if resume and ckpt_dir.is_dir() else None
    t0 = time.perf_counter()
    if last and _finished(last, settings):
        # Resuming from the final checkpoint would still run one more step (the trainer checks its step budget
        # only after a step): a finished run is loaded as it is instead.
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        print(f"Training already finished at {last}: its adapter is loaded, nothing is trained")
        set_peft_model_state_dict(model, load_file(str(Path(last) / "adapter_model.safetensors")))
        state = json.loads((Path(last) / "trainer_state.json").read_text())
        trainer.state.global_step = state["global_step"]
        trainer.state.log_history = state.get("log_history", [])
        losses = [h["train_loss"] for h in trainer.state.log_history if "train_loss" in h]
        result = type("Result", (), {"training_loss": losses[-1] if losses else None})()
    else:
        if last:
            print(f"Resuming from {last}")
        result = trainer.train(resume_from_checkpoint=last)
    seconds = time.perf_counter() - t0
    eval_loss = None
    if eval_ds is not None:
        eval_loss = trainer.evaluate().get("eval_loss")
    # Under mixed precision accelerate wrapped the model's forward in autocast; take the wrapper off so that the
    # returned model computes in its own dtype, exactly like the adapter reloaded from disk.
    trained = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    drop_forward_wrappers(trained)
    adapter_dir = out / "adapter"
    trained.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    write_json(adapter_dir / "kg_triplets_train.json", {
        "base_model": model_spec, "backend": backend, "lora": asdict(lora), "settings": asdict(settings),
        "precision": precision, "quantization": settings.quantization, "n_train": len(train), "n_val": len(val or []),
        "global_step": trainer.state.global_step,
        "init_adapter": str(resolve(init_adapter)) if init_adapter is not None else None,
    })
    loaded = LoadedModel(model=trained.eval(), tokenizer=tokenizer, spec=f"{model_spec} + LoRA",
                         kind="adapter", stop_token_ids=stop_ids(tokenizer, trained))
    return {"backend": backend, "precision": precision, "adapter_dir": adapter_dir, "train_loss": result.training_loss,
            "eval_loss": eval_loss, "global_step": trainer.state.global_step, "seconds": round(seconds, 1),
            "resumed_from": last, "log_history": trainer.state.log_history, "trainer": trainer,
            "model": trained, "tokenizer": tokenizer, "loaded": loaded}


def stage_split(rows: list[dict], first_share: float, seed: int = 42) -> tuple[list[dict], list[dict]]:
    """Two disjoint training sets for continued training: a seeded random ``first_share`` of ``rows`` (stage 1,
    the smaller set) and the rest (stage 2); each keeps the rows' own order (e.g. 02's curriculum).

    Raises:
        ValueError: unless 0 < ``first_share`` < 1 and both sets are non-empty.
    """
    import random

    if not 0 < first_share < 1:
        raise ValueError(f"first_share must be in (0, 1), got {first_share}")
    k = round(len(rows) * first_share)
    if not 0 < k < len(rows):
        raise ValueError(f"a share of {first_share} of {len(rows)} rows leaves one stage empty")
    first = set(random.Random(seed).sample(range(len(rows)), k))
    return [r for i, r in enumerate(rows) if i in first], [r for i, r in enumerate(rows) if i not in first]


def adapter_drift(before: str | Path, after: str | Path) -> dict[str, Any]:
    """How far a continued adapter moved from the one it started from (two saved adapter folders).

    ``cosine`` is the cosine similarity of all LoRA weights flattened into one vector each, ``relative_change``
    ``||after - before|| / ||before||``: how much the later stage changed the adapter it continued (a summary for
    the notebook; the proof that stage 2 starts from stage 1's weights is the unit test, which compares them at
    its first step). ``same_tensors`` says whether both hold the same tensor names and shapes.
    """
    import torch
    from safetensors.torch import load_file

    a = load_file(str(resolve(before) / "adapter_model.safetensors"))
    b = load_file(str(resolve(after) / "adapter_model.safetensors"))
    same = a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    if not same:
        return {"same_tensors": False, "tensors": len(b), "cosine": None, "relative_change": None}
    va = torch.cat([a[k].float().flatten() for k in sorted(a)])
    vb = torch.cat([b[k].float().flatten() for k in sorted(a)])
    return {"same_tensors": True, "tensors": len(a),
            "cosine": round(float(torch.nn.functional.cosine_similarity(va, vb, dim=0)), 6),
            "relative_change": round(float((vb - va).norm() / va.norm().clamp(min=1e-12)), 6)}


def drop_forward_wrappers(model: Any) -> int:
    """Remove instance-level ``forward`` wrappers (accelerate's autocast wrapper of mixed-precision training, which
    ``unwrap_model`` leaves on the inner model), so that every module runs its class's own ``forward``.

    Such a wrapper holds the *original* bound forward in its closure: a deep copy of the model (``for_inference``
    merges the LoRA weights into one) would keep calling the trained, unmerged fp32 model under autocast, and run
    about 3× the matrix products. Returns how many wrappers were removed.
    """
    removed = 0
    for mod in model.modules():
        f = mod.__dict__.get("forward")
        if f is not None and getattr(f, "__func__", None) is not type(mod).forward:
            del mod.__dict__["forward"]
            removed += 1
    return removed


def _finished(checkpoint: str, settings: TrainSettings) -> bool:
    """Whether ``checkpoint`` is the last one of a run with these settings' step budget (its trainer stopped
    there, and it planned the same ``max_steps`` or, for an epoch budget, the same number of epochs)."""
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
        stopped = state["stateful_callbacks"]["TrainerControl"]["args"]["should_training_stop"]
    except (OSError, KeyError, TypeError, ValueError):
        return False
    if not stopped or state.get("global_step", 0) < state.get("max_steps", 0):
        return False
    if settings.max_steps > 0:
        return settings.max_steps == state.get("max_steps")
    return float(settings.epochs) == float(state.get("num_train_epochs", -1))


def load_adapter(base_spec: str, adapter_dir: str | Path, for_family: str = "qwen3") -> LoadedModel:
    """The base model with a saved adapter on top, ready for :mod:`kgutils.generate`."""
    from peft import PeftModel

    lm = load_model(base_spec, for_family=for_family)
    lm.model = PeftModel.from_pretrained(lm.model, str(resolve(adapter_dir)))
    lm.model.eval()
    lm.note = f"{lm.note}; LoRA adapter {adapter_dir}".strip("; ")
    return lm


def merge_and_save(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Merge the LoRA weights into the base model (``merge_and_unload``) and save an ordinary checkpoint."""
    out = resolve(out_dir)
    merged = model.merge_and_unload()
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    (out / "MERGED_FROM_ADAPTER.json").write_text(json.dumps({"note": "LoRA merged with merge_and_unload"}) + "\n")
    return out
