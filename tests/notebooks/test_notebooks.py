"""Every notebook, end to end through papermill, on the smoke profile."""

import json

import nbformat
import pytest

from kgutils import runner

NOTEBOOKS = [p.stem for p in runner.list_notebooks()]


def test_notebooks_exist():
    assert "06_eval_hungarian" in NOTEBOOKS


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_smoke(name):
    summaries = runner.run("smoke", only=[name], run_id="pytest-smoke", progress=False)
    assert [s["status"] for s in summaries] == ["ok"]
    run_dir = runner.repo_root() / summaries[0]["run_dir"]
    executed = nbformat.read(run_dir / f"{name}.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics, "the notebook recorded no metrics"
    params = json.loads((run_dir / "params.json").read_text())
    assert params["PROFILE"] == "smoke"
    # Every declared parameter is recorded (none silently dropped by the secret scrubber).
    declared = runner.read_parameters(runner.notebooks_dir() / f"{name}.ipynb")
    assert set(params) == set(declared)


def test_eval_notebook_smoke_outputs():
    """06 on smoke: scores, per-entry table and figures exist in the run folder (after the run above)."""
    run_dir = runner.repo_root() / "data" / "runs" / "06_eval_hungarian" / "pytest-smoke"
    if not (run_dir / "metrics.json").is_file():
        pytest.skip("06 smoke run not present (run with the notebooks tests)")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (key,) = [k for k in metrics["runs"] if k.endswith("/card/hgr")]
    assert metrics["runs"][key]["n"] == 6
    for fig in ("06_axis_scores", "06_relation_confusion", "06_weight_reliability", "06_parse_status"):
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 1000
    assert (run_dir / "per_entry.csv").read_text().count("\n") == 7


@pytest.mark.notebooks
def test_eval_notebook_scores_given_predictions_without_labels():
    """06 with PREDICTIONS (and no LABELS): scores the files instead of generating, names runs by file."""
    first = runner.repo_root() / "data" / "runs" / "06_eval_hungarian" / "pytest-smoke" / "predictions_base.jsonl"
    if not first.is_file():
        pytest.skip("06 smoke run not present (run with the notebooks tests)")
    summaries = runner.run("smoke", only=["06"], run_id="pytest-smoke-given", progress=False,
                           overrides={"PREDICTIONS": [str(first)], "METRICS": ["hgr"]})
    assert [s["status"] for s in summaries] == ["ok"]
    metrics = summaries[0]["metrics"]
    assert metrics["generation"] is None
    assert set(metrics["runs"]) == {"predictions_base/card/hgr", "predictions_base/robust/hgr"}
