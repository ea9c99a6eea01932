"""Weights & Biases and local metric recording, in one place.

Mode resolution (``mode="auto"``, the default of every notebook):

* ``KG_TRIPLETS_TRACKING=off`` or ``WANDB_MODE=disabled`` (the tests set these) -> disabled;
* ``WANDB_API_KEY`` in the environment -> online;
* otherwise -> offline (runs are written under the run folder and can be synced later with ``wandb sync``).

Secrets come from the environment only: :func:`scrub` drops any config key that looks like a credential
before it is printed, written or sent to W&B.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from .io import resolve, write_json

# Credential-like names (HF_TOKEN, OPENAI_API_KEY, ...) but not counts such as MAX_NEW_TOKENS.
_SECRET = re.compile(r"(api[_-]?key|secret|password|passwd|credential|(^|_)token$|^auth)", re.IGNORECASE)
# Values that look like a key whatever the parameter is called.
_SECRET_VALUE = re.compile(r"^(sk-|hf_|ghp_|xox[bp]-)[A-Za-z0-9_\-]{16,}$")
# Parameter names that merely *name* the variable holding a secret are safe to keep.
_SAFE_SUFFIX = ("_ENV", "_ENV_VAR", "_VAR")


def scrub(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` without keys that look like credentials (recursively)."""
    clean: dict[str, Any] = {}
    for key, value in config.items():
        k = str(key)
        if _SECRET.search(k) and not k.upper().endswith(_SAFE_SUFFIX):
            continue
        if isinstance(value, str) and _SECRET_VALUE.match(value.strip()):
            continue
        clean[k] = scrub(value) if isinstance(value, dict) else value
    return clean


def resolve_mode(mode: str = "auto") -> str:
    """The W&B mode to use: ``online``, ``offline`` or ``disabled``."""
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"WANDB_MODE parameter must be auto, online, offline or disabled, got {mode!r}")
    if os.environ.get("KG_TRIPLETS_TRACKING", "").lower() in ("off", "0", "false", "disabled"):
        return "disabled"
    if os.environ.get("WANDB_MODE", "").lower() == "disabled":
        return "disabled"
    if mode != "auto":
        return mode
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


class Tracker:
    """A W&B run (or nothing, when disabled) bound to a run folder."""

    def __init__(self, run_dir: str | Path, run: Any = None, mode: str = "disabled") -> None:
        self.run_dir = resolve(run_dir)
        self.run = run
        self.mode = mode

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        """Log scalars (or W&B media) to the run, if any."""
        if self.run is not None:
            self.run.log(data, step=step)

    def log_table(self, key: str, frame: Any) -> None:
        """Log a pandas DataFrame as a W&B table, if tracking is on."""
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(dataframe=frame)})

    def log_image(self, key: str, path: str | Path) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Image(str(path))})

    def finish(self, metrics: dict[str, Any] | None = None) -> Path:
        """Write ``metrics.json`` in the run folder, copy metrics into the W&B summary and close the run."""
        metrics = metrics or {}
        path = write_json(self.run_dir / "metrics.json", metrics)
        if self.run is not None:
            for k, v in _flatten(metrics).items():
                if isinstance(v, (int, float, str, bool)) or v is None:
                    self.run.summary[k] = v
            self.run.finish()
            self.run = None
        return path


def init_run(
    run_dir: str | Path,
    config: dict[str, Any],
    *,
    project: str = "kg-triplets",
    name: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    mode: str = "auto",
    tags: list[str] | None = None,
) -> Tracker:
    """Start tracking a notebook run.

    The resolved parameters (scrubbed of secrets) are printed, written to ``params.json`` in the run folder
    and passed to ``wandb.init(config=...)``.
    """
    run_dir = resolve(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    clean = scrub(config)
    write_json(run_dir / "params.json", clean)
    width = max((len(k) for k in clean), default=0)
    print("Resolved parameters:")
    for k, v in clean.items():
        print(f"  {k:<{width}} = {v!r}")
    wmode = resolve_mode(mode)
    run = None
    if wmode != "disabled":
        import wandb

        run = wandb.init(
            project=project,
            name=name or run_dir.name,
            group=group,
            job_type=job_type,
            dir=str(run_dir),
            config=clean,
            mode=wmode,
            tags=tags,
            reinit="finish_previous",
        )
    print(f"W&B tracking: {wmode}" + (f" (run files in {run_dir / 'wandb'})" if wmode == "offline" else ""))
    return Tracker(run_dir, run, wmode)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "/"))
        else:
            flat[key] = v
    return flat
