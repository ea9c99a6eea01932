"""Small, strict file helpers shared by the notebooks: repository paths and JSONL."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def repo_root() -> Path:
    """The repository root: ``KG_TRIPLETS_ROOT`` if set, else the nearest folder above the cwd with a pyproject.toml.

    Notebooks run from ``notebooks/`` in JupyterLab and from the root under the runner; resolving
    relative paths against the root makes both work with the same parameters.
    """
    env = os.environ.get("KG_TRIPLETS_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "kgutils").is_dir():
            return folder
    # Installed without a checkout (e.g. pip install from git): fall back to the package's parent.
    pkg_parent = Path(__file__).resolve().parent.parent
    if (pkg_parent / "pyproject.toml").is_file():
        return pkg_parent
    return here


LATEST = "latest"


def resolve(path: str | os.PathLike[str]) -> Path:
    """Resolve ``path`` against the repository root unless it is absolute.

    A ``latest`` folder name right below ``data/runs/<stage>/`` stands for that stage's most recent run (the
    name recorded in ``data/runs/<stage>/LATEST``): ``data/runs/01_corpus/latest/corpus`` is the corpus of the
    last 01 run. This is how each notebook finds the previous stage's output by default.

    Raises:
        FileNotFoundError: for a ``latest`` path of a stage that has never run.
    """
    p = Path(path).expanduser()
    p = p if p.is_absolute() else repo_root() / p
    parts = p.parts
    for i in range(2, len(parts)):
        if parts[i] == LATEST and parts[i - 2] == "runs":
            stage_dir = Path(*parts[:i])
            marker = stage_dir / "LATEST"
            if not marker.is_file():
                raise FileNotFoundError(
                    f"{path}: no run of {stage_dir.name} yet ({marker} is missing); run that notebook first, "
                    f"e.g. `python -m kgutils run --only {stage_dir.name[:2]}`")
            return Path(*parts[:i], marker.read_text(encoding="utf-8").strip(), *parts[i + 1 :])
    return p


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a JSONL file into a list of dicts.

    Raises:
        FileNotFoundError: naming the resolved path when it does not exist.
        ValueError: naming the file and line number of a malformed line.
    """
    p = resolve(path)
    if not p.is_file():
        raise FileNotFoundError(f"JSONL file not found: {p}")
    rows: list[dict[str, Any]] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            rows.append(obj)
    return rows


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows as JSONL (UTF-8, one object a line), creating parent folders. Returns the path."""
    p = resolve(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(p)  # atomic: a crash never leaves a half-written predictions file behind
    return p


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write pretty JSON, creating parent folders."""
    p = resolve(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(obj), indent=2, ensure_ascii=False, default=_json_default, allow_nan=False)
    p.write_text(text + "\n", encoding="utf-8")
    return p


def _finite(obj: Any) -> Any:
    """Replace NaN/inf floats by None (strict JSON has no NaN; undefined scores are null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # numpy scalar
        return _finite(obj.item())
    return obj


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def progress(*args: Any, **kwargs: Any) -> Any:
    """A tqdm progress bar: a widget in JupyterLab, plain text under the batch runner.

    The runner sets ``KG_TRIPLETS_BATCH=1`` so that the bars of a papermill run reach the terminal
    (a widget would only land in the executed notebook).
    """
    if os.environ.get("KG_TRIPLETS_BATCH"):
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm
    return tqdm(*args, **kwargs)
