"""Exports of a fine-tuned model beside its adapter: the merged checkpoint and GPTQ 4-/8-bit folders (05).

* :func:`kgutils.train.merge_and_save` writes the merged model (``merge_and_unload``), an ordinary checkpoint.
* :func:`gptq_export` quantises a checkpoint folder with GPTQModel (``gptqmodel``) into a standalone GPTQ folder
  (weights, ``quantize_config.json``, tokenizer and chat template) that ``GPTQModel.load``, ``transformers``
  (with ``gptqmodel`` installed) and vLLM load directly.
* :func:`load_gptq` loads such a folder for :mod:`kgutils.generate`, so every export is scored by the same code.

GPTQ runs on CPU too: gptqmodel 7.6.0 (7.7 needs torch >= 2.14) co-installs with the CPU pins (``make env``
installs it; it pins numpy 2.2.6), and ``GPTQMODEL_CPU_WORKERS`` sets its CPU worker threads (2 on 2 cores).
The quantisation runs in a subprocess (``python -m kgutils.export``): its progress output goes to a log file
instead of the notebook, its memory is returned when it ends, and ``python`` can point at an interpreter of
another environment (e.g. a GPU one) without changing the notebook's.

CPU kernels, measured on 2 cores with Gemma 3 270M (8 prompts, 32 new tokens each): 4-bit ``gptq_torch_fused``
11.8 new tokens/s and 8-bit ``gptq_torch_int8`` 11.6; gptqmodel's own choice on CPU is the generic ``gptq_torch``
kernel, which made 0.18 (``benchmarks/bench_gptq.py``), so :func:`load_gptq` asks for the fast ones first.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .io import resolve

__all__ = ["GPTQ_BITS", "CPU_KERNELS", "folder_size_mb", "gptq_available", "gptq_export", "load_gptq"]

GPTQ_BITS = (2, 3, 4, 8)
# The fastest gptqmodel kernel for each bit width on CPU (tried in this order; gptqmodel's own choice last).
CPU_KERNELS: dict[int, tuple[str, ...]] = {4: ("gptq_torch_fused", "auto"), 8: ("gptq_torch_int8", "auto")}


def folder_size_mb(path: str | Path) -> float:
    """Size on disk of every file below ``path``, in MB (10^6 bytes)."""
    root = resolve(path)
    return round(sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 1e6, 1)


def gptq_available(python: str | None = None) -> tuple[bool, str]:
    """(available, version or why not): whether ``python`` (default: this interpreter) can import gptqmodel."""
    code = "import gptqmodel, sys; sys.stdout.write('\\ngptqmodel==' + gptqmodel.__version__)"
    try:
        out = subprocess.run([python or sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"{python or sys.executable}: {exc}"
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["import failed"])[-1]
        return False, f"gptqmodel cannot be imported ({last}); install it with `pip install gptqmodel==7.6.0`"
    # gptqmodel logs to stdout on import: the version is the marked last line.
    return True, out.stdout.strip().splitlines()[-1].removeprefix("gptqmodel==")


def gptq_export(
    model_dir: str | Path,
    out_dir: str | Path,
    bits: int,
    calibration: list[str],
    *,
    group_size: int = 128,
    batch_size: int = 4,
    cpu_workers: int = 2,
    python: str | None = None,
) -> dict[str, Any]:
    """Quantise the checkpoint in ``model_dir`` with GPTQ and save a standalone folder at ``out_dir``.

    Args:
        model_dir: An ordinary checkpoint folder (e.g. the merged model).
        out_dir: Where the GPTQ folder is written (an existing one is replaced only when it is complete:
            a folder holding ``quantize_config.json`` with the same settings is reused as it is).
        bits: 2, 3, 4 or 8.
        calibration: Calibration texts (in-domain: rendered training prompts with their answers).
        group_size: GPTQ group size (128, gptqmodel's default).
        batch_size: Calibration batch size.
        cpu_workers: ``GPTQMODEL_CPU_WORKERS`` (worker threads on CPU).
        python: The interpreter to run the quantisation with (default: this one).

    Returns:
        ``{"path", "bits", "group_size", "seconds", "size_mb", "log", "reused"}``.

    Raises:
        ValueError: for unsupported bits or no calibration text; FileNotFoundError: for a missing model folder;
        RuntimeError: when the quantisation fails (the message holds the end of its log).
    """
    if bits not in GPTQ_BITS:
        raise ValueError(f"bits must be one of {GPTQ_BITS}, got {bits!r}")
    texts = [t for t in calibration if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError("GPTQ needs calibration texts; none were given")
    src, out = resolve(model_dir), resolve(out_dir)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} is not a checkpoint folder (config.json missing)")
    settings = {"bits": bits, "group_size": group_size, "source": str(src), "n_calibration": len(texts)}
    stamp = out / "kg_triplets_export.json"
    if stamp.is_file() and (out / "quantize_config.json").is_file():
        previous = json.loads(stamp.read_text())
        if previous.get("settings") == settings:
            return {**previous["result"], "reused": True}
    out.parent.mkdir(parents=True, exist_ok=True)
    calib_file = out.parent / f".{out.name}.calibration.json"
    calib_file.write_text(json.dumps(texts, ensure_ascii=False))
    log = out.parent / f"{out.name}.log"
    # The subprocess runs in the export's parent folder (gptqmodel writes a logs/ folder into its working
    # directory), with this checkout importable whatever interpreter runs it.
    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "GPTQMODEL_CPU_WORKERS": str(cpu_workers), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([repo, *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [python or sys.executable, "-m", "kgutils.export", "gptq", str(src), str(out), "--bits", str(bits),
           "--group-size", str(group_size), "--batch-size", str(batch_size), "--calibration", str(calib_file)]
    t0 = time.perf_counter()
    with log.open("w", encoding="utf-8") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(out.parent))
    seconds = round(time.perf_counter() - t0, 1)
    calib_file.unlink(missing_ok=True)
    if proc.returncode != 0 or not (out / "quantize_config.json").is_file():
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-15:])
        raise RuntimeError(f"GPTQ {bits}-bit export of {src} failed (exit {proc.returncode}); log {log}:\n{tail}")
    result = {"path": str(out), "bits": bits, "group_size": group_size, "seconds": seconds,
              "size_mb": folder_size_mb(out), "log": str(log), "reused": False}
    stamp.write_text(json.dumps({"settings": settings, "result": result}, indent=1))
    return result


def load_gptq(path: str | Path, backend: str = "auto", *, quiet: bool = True) -> Any:
    """A GPTQ folder loaded with GPTQModel on this machine's device, as a :class:`kgutils.models.LoadedModel`.

    ``backend="auto"`` tries the fastest CPU kernel for the folder's bit width (:data:`CPU_KERNELS`) and falls
    back to gptqmodel's own choice; on a CUDA GPU gptqmodel chooses. The kernel used is in ``note``.
    """
    import torch
    from gptqmodel import BACKEND, GPTQModel

    from .models import LoadedModel, stop_ids

    folder = resolve(path)
    cfg_file = folder / "quantize_config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{folder} is not a GPTQ folder (quantize_config.json missing)")
    bits = int(json.loads(cfg_file.read_text()).get("bits", 4))
    on_cuda = torch.cuda.is_available()
    tries = ([backend] if backend != "auto" else (["auto"] if on_cuda else list(CPU_KERNELS.get(bits, ("auto",)))))
    errors = []
    t0 = time.perf_counter()
    for name in tries:
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
                model = GPTQModel.load(str(folder), device="cuda" if on_cuda else "cpu", backend=BACKEND(name))
            break
        except Exception as exc:  # noqa: BLE001 - a kernel that cannot serve this folder: try the next one
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    else:
        raise RuntimeError(f"no GPTQ kernel could load {folder}: " + "; ".join(errors))
    hf = model.model.eval()
    tok = model.tokenizer
    tok = getattr(tok, "tokenizer", tok)  # gptqmodel wraps the tokenizer (tokenicer)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    kernels = sorted({type(m).__name__ for m in hf.modules() if "Linear" in type(m).__name__ and type(m).__name__
                      != "Linear"})
    note = f"GPTQ {bits}-bit, kernel {name} ({', '.join(kernels)})"
    if errors:
        note += f"; not usable here: {'; '.join(errors)}"
    return LoadedModel(model=hf, tokenizer=tok, spec=f"gptq-{bits}bit:{folder.name}", kind="gptq",
                       stop_token_ids=stop_ids(tok, hf), note=note, load_seconds=time.perf_counter() - t0)


def _quantize(src: str, out: str, bits: int, group_size: int, batch_size: int, calibration: str) -> None:
    """The subprocess side of :func:`gptq_export`."""
    import shutil

    import torch
    from gptqmodel import GPTQModel, QuantizeConfig

    texts = json.loads(Path(calibration).read_text(encoding="utf-8"))
    tmp = Path(out).with_name(Path(out).name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    # offload_to_disk=False: the layers stay in memory (a small model; on 2 CPU cores this halves the time)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = GPTQModel.load(src, QuantizeConfig(bits=bits, group_size=group_size, offload_to_disk=False), device=device)
    model.quantize(texts, batch_size=batch_size)
    model.save(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kgutils.export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("gptq", help="quantise a checkpoint folder with GPTQ")
    q.add_argument("model_dir")
    q.add_argument("out_dir")
    q.add_argument("--bits", type=int, default=4, choices=GPTQ_BITS)
    q.add_argument("--group-size", type=int, default=128)
    q.add_argument("--batch-size", type=int, default=4)
    q.add_argument("--calibration", required=True, help="JSON file holding a list of calibration texts")
    args = parser.parse_args(argv)
    _quantize(args.model_dir, args.out_dir, args.bits, args.group_size, args.batch_size, args.calibration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
