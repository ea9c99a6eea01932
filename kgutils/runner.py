"""Run the study's notebooks in order with papermill, strictly parameterised.

``python -m kgutils run --profile cpu [--only 06 ...] [--set KEY=VALUE ...]``

For each notebook the runner

1. reads the notebook's ``parameters`` cell (names, types from annotations or default literals, defaults);
2. resolves parameters: notebook defaults (the ``full`` profile) <- ``params/<profile>.yaml`` ``common`` keys
   the notebook declares <- its ``notebooks: <name>:`` section <- ``--set`` overrides <- ``RUN_DIR``;
3. rejects an unknown key or a wrong type with an error naming the key, before anything runs;
4. executes the notebook with papermill from the repository root and writes the executed copy, the resolved
   ``params.yaml`` (the notebook adds ``params.json`` and ``metrics.json``) under
   ``data/runs/<NN_name>/<run>/``, and records the run in ``data/runs/<NN_name>/LATEST``.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from .io import LATEST, repo_root, resolve

PROFILES = ("smoke", "cpu", "full")
_NB_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+$")
_RUNNER_KEYS = ("RUN_DIR", "PROFILE")  # set by the runner; an override would be silently replaced


def default_run_id(profile: str) -> str:
    """``<profile>-<UTC time>``: the run folder name when none is given."""
    return f"{profile}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


class ParameterError(ValueError):
    """A profile or override names an unknown parameter or gives a value of the wrong type."""


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "int", "float", "str", "bool", "list", "dict", "any"
    default: Any
    optional: bool
    help: str


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def list_notebooks() -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted(p for p in notebooks_dir().glob("*.ipynb") if _NB_NAME.match(p.stem))


def select_notebooks(only: list[str] | None) -> list[Path]:
    """Notebooks matching ``only`` (``06`` or ``06_eval_hungarian``), in study order."""
    books = list_notebooks()
    if not only:
        return books
    chosen = []
    for key in only:
        hits = [p for p in books if p.stem == key or p.stem.split("_", 1)[0] == key]
        if not hits:
            names = ", ".join(p.stem for p in books)
            raise ParameterError(f"no notebook matches {key!r}; the notebooks are: {names}")
        chosen.extend(hits)
    return [p for p in books if p in chosen]


def _annotation_type(node: ast.expr | None) -> tuple[str | None, bool]:
    """Map an annotation to (type, optional). ``str | None`` and ``Optional[str]`` are optional."""
    if node is None:
        return None, False
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, lopt = _annotation_type(node.left)
        right, ropt = _annotation_type(node.right)
        is_none = lambda n: isinstance(n, ast.Constant) and n.value is None  # noqa: E731
        if is_none(node.right):
            return left, True
        if is_none(node.left):
            return right, True
        return "any", lopt or ropt
    if isinstance(node, ast.Subscript):
        base = node.value.id if isinstance(node.value, ast.Name) else None
        if base == "Optional":
            inner, _ = _annotation_type(node.slice)
            return inner, True
        if base in ("list", "List", "tuple"):
            return "list", False
        if base in ("dict", "Dict"):
            return "dict", False
        return "any", False
    if isinstance(node, ast.Name):
        mapping = {"int": "int", "float": "float", "str": "str", "bool": "bool", "list": "list", "dict": "dict"}
        return mapping.get(node.id, "any"), False
    return "any", False


def _literal_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    for t in (int, float, str, list, dict):
        if isinstance(value, t):
            return t.__name__
    if isinstance(value, tuple):
        return "list"
    return "any"


def read_parameters(notebook: str | Path) -> dict[str, Param]:
    """Parameters declared in a notebook's ``parameters`` cell.

    Raises:
        ParameterError: when the notebook has no (or several) ``parameters`` cells, or the cell holds
            something other than plain assignments of literals.
    """
    path = Path(notebook)
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{path.name}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    source = "".join(cells[0]["source"]) if isinstance(cells[0]["source"], list) else cells[0]["source"]
    lines = source.splitlines()
    params: dict[str, Param] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, value_node, ann = node.target.id, node.value, node.annotation
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, value_node, ann = node.targets[0].id, node.value, None
        else:
            raise ParameterError(f"{path.name}: parameters cell line {node.lineno} is not a plain assignment")
        try:
            default = ast.literal_eval(value_node)
        except ValueError:
            raise ParameterError(f"{path.name}: default of {name} is not a literal") from None
        typ, optional = _annotation_type(ann)
        if typ is None:
            typ = _literal_type(default)
        line = lines[node.lineno - 1]
        help_text = line.split("#", 1)[1].strip() if "#" in line else ""
        params[name] = Param(name, typ, default, optional or default is None, help_text)
    return params


def check_value(notebook: str, name: str, value: Any, param: Param) -> None:
    """Raise :class:`ParameterError` naming the key when ``value`` does not fit ``param``'s type."""
    if value is None:
        if param.optional or param.type == "any":
            return
        raise ParameterError(f"{notebook}: parameter {name} must be {param.type}, got None")
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "list": isinstance(value, (list, tuple)),
        "dict": isinstance(value, dict),
        "any": True,
    }[param.type]
    if not ok:
        raise ParameterError(
            f"{notebook}: parameter {name} must be {param.type}, got {type(value).__name__} ({value!r})"
        )


def load_profile(profile: str) -> dict[str, Any]:
    """Read ``params/<profile>.yaml`` and check its shape."""
    path = repo_root() / "params" / f"{profile}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (repo_root() / "params").glob("*.yaml"))
        raise ParameterError(f"no parameter file for profile {profile!r} ({path}); known profiles: {known}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ParameterError(f"{path}: expected a mapping at the top level")
    unknown = set(data) - {"common", "notebooks"}
    if unknown:
        raise ParameterError(f"{path}: unknown top-level keys {sorted(unknown)} (allowed: common, notebooks)")
    common = data.get("common") or {}
    per_nb = data.get("notebooks") or {}
    if not isinstance(common, dict) or not isinstance(per_nb, dict):
        raise ParameterError(f"{path}: 'common' and 'notebooks' must be mappings")
    return {"common": common, "notebooks": per_nb, "path": path}


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict, values parsed as YAML (so 3 is an int and [a, b] a list)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ParameterError(f"--set expects KEY=VALUE, got {pair!r}")
        key, raw = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def resolve_all(
    profile: str, notebooks: list[Path], overrides: dict[str, Any] | None = None, run_id: str | None = None
) -> dict[str, dict[str, Any]]:
    """Resolve and validate the parameters of every selected notebook before anything runs."""
    prof = load_profile(profile)
    every = {p.stem: read_parameters(p) for p in list_notebooks()}
    declared_anywhere = {k for ps in every.values() for k in ps}
    for section in [prof["common"], *(v or {} for v in prof["notebooks"].values())]:
        for key in section:
            if key in _RUNNER_KEYS:
                raise ParameterError(f"{prof['path'].name}: {key} is set by the runner, not by a profile")
    for key in prof["common"]:
        if key not in declared_anywhere:
            raise ParameterError(f"{prof['path'].name}: common parameter {key} is declared by no notebook")
    for nb_name, values in prof["notebooks"].items():
        if nb_name not in every:
            raise ParameterError(f"{prof['path'].name}: unknown notebook {nb_name!r} (known: {sorted(every)})")
        for key in values or {}:
            if key not in every[nb_name]:
                raise ParameterError(f"{prof['path'].name}: {nb_name} has no parameter {key}")
    overrides = overrides or {}
    selected = {p.stem for p in notebooks}
    for key in overrides:
        if key in _RUNNER_KEYS:
            raise ParameterError(f"--set {key}: set by the runner, not an override")
        if not any(key in every[n] for n in selected):
            raise ParameterError(f"--set {key}: no selected notebook has a parameter {key}")

    run_id = run_id or default_run_id(profile)
    resolved: dict[str, dict[str, Any]] = {}
    for path in notebooks:
        declared = every[path.stem]
        values = {k: p.default for k, p in declared.items()}
        values.update({k: v for k, v in prof["common"].items() if k in declared})
        values.update(prof["notebooks"].get(path.stem) or {})
        values.update({k: v for k, v in overrides.items() if k in declared})
        if "RUN_DIR" in declared:
            values["RUN_DIR"] = f"data/runs/{path.stem}/{run_id}"
        if "PROFILE" in declared:
            values["PROFILE"] = profile
        for key, value in values.items():
            check_value(path.stem, key, value, declared[key])
        resolved[path.stem] = values
    return resolved


def _pin(value: Any, root: Path) -> Any:
    if isinstance(value, list):
        return [_pin(v, root) for v in value]
    if isinstance(value, str) and LATEST in Path(value).parts:  # io.resolve decides whether it is a run path
        try:
            pinned = resolve(value)
        except FileNotFoundError as exc:
            raise ParameterError(str(exc)) from None
        try:
            return str(pinned.relative_to(root))
        except ValueError:
            return str(pinned)
    return value


def pin_latest(params: dict[str, Any], root: Path) -> dict[str, Any]:
    """Replace ``data/runs/<stage>/latest/...`` paths by the run they point to *now*.

    Called just before each notebook runs, so a stage reads the output that the previous stage of the same study
    has just written, and ``params.yaml`` records the exact run it read.
    """
    return {k: _pin(v, root) for k, v in params.items()}


def run(
    profile: str = "cpu",
    only: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    run_id: str | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run the selected notebooks in order; returns one summary dict per notebook."""
    import papermill as pm

    if profile not in PROFILES:
        raise ParameterError(f"unknown profile {profile!r}; choose one of {list(PROFILES)}")
    books = select_notebooks(only)
    if not books:
        raise ParameterError(f"no notebooks found in {notebooks_dir()}")
    run_id = run_id or default_run_id(profile)
    resolved = resolve_all(profile, books, overrides, run_id)
    root = repo_root()
    env_backup = {k: os.environ.get(k) for k in ("KG_TRIPLETS_ROOT", "KG_TRIPLETS_BATCH")}
    os.environ["KG_TRIPLETS_ROOT"] = str(root)  # the kernel inherits it: relative paths resolve against the root
    os.environ["KG_TRIPLETS_BATCH"] = "1"  # text progress bars, streamed to the terminal
    summaries = []
    try:
        for path in books:
            params = pin_latest(resolved[path.stem], root)
            run_dir = root / params.get("RUN_DIR", f"data/runs/{path.stem}/{run_id}")
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
            print(f"\n=== {path.stem} [{profile}] -> {run_dir.relative_to(root)}", flush=True)
            t0 = time.perf_counter()
            status = "ok"
            try:
                pm.execute_notebook(
                    str(path),
                    str(run_dir / path.name),
                    parameters=params,
                    cwd=str(root),
                    kernel_name="python3",
                    # Stream the notebook's own output (progress bars, prints) instead of a cell counter.
                    progress_bar=False,
                    log_output=False,
                    stdout_file=sys.stdout if progress else None,
                    stderr_file=sys.stderr if progress else None,
                    request_save_on_cell_execute=True,
                )
            except pm.PapermillExecutionError as exc:
                status = "failed"
                print(f"{path.stem} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}", file=sys.stderr)
                raise
            finally:
                wall = time.perf_counter() - t0
                (run_dir.parent / "LATEST").write_text(run_dir.name + "\n", encoding="utf-8")
                metrics_path = run_dir / "metrics.json"
                summaries.append(
                    {
                        "notebook": path.stem,
                        "status": status,
                        "wall_seconds": round(wall, 1),
                        "run_dir": str(run_dir.relative_to(root)),
                        "metrics": json.loads(metrics_path.read_text()) if metrics_path.is_file() else None,
                    }
                )
                print(f"=== {path.stem}: {status} in {wall:.1f} s", flush=True)
    finally:
        for key, value in env_backup.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if summaries:
            study = root / "data" / "runs" / f"study-{run_id}.json"
            study.parent.mkdir(parents=True, exist_ok=True)
            study.write_text(json.dumps(summaries, indent=2) + "\n", encoding="utf-8")
    return summaries


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="cpu", choices=PROFILES, help="parameter profile (default: cpu)")
    parser.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (e.g. 01 06)")
    parser.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE", help="override a parameter")
    parser.add_argument("--run-id", help="name of the run folder (default: <profile>-<UTC time>)")
    parser.add_argument("--check", action="store_true", help="only resolve and validate parameters, then print them")
    parser.add_argument("--no-progress", action="store_true", help="do not stream the notebooks' output")


def main_run(args: argparse.Namespace) -> int:
    try:
        overrides = parse_overrides(args.overrides)
        if args.check:
            books = select_notebooks(args.only)
            print(yaml.safe_dump(resolve_all(args.profile, books, overrides, args.run_id), sort_keys=False))
            return 0
        t0 = time.perf_counter()
        summaries = run(args.profile, args.only, overrides, args.run_id, progress=not args.no_progress)
    except ParameterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # papermill's execution error: the executed notebook shows the traceback
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"\nStudy finished in {time.perf_counter() - t0:.1f} s ({args.profile} profile):")
    for s in summaries:
        print(f"  {s['notebook']:<28} {s['status']:<7} {s['wall_seconds']:>8.1f} s  {s['run_dir']}")
    return 0
