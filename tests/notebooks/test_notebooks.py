"""Every notebook, end to end through papermill, on the smoke profile."""

import json
from pathlib import Path

import nbformat
import pytest
import yaml

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
    keys = sorted(k for k in metrics["runs"] if k.endswith("/card/hgr"))
    assert keys == ["base constrained/card/hgr", "base unconstrained/card/hgr"]
    assert all(metrics["runs"][k]["n"] == 6 for k in keys)
    # Constrained decoding with the guard: every answer is valid JSON by construction, even from a random model.
    assert metrics["runs"]["base constrained/card/hgr"]["parse_failure_rate"] == 0
    assert metrics["generation"]["base constrained"]["decoding"]["constrained"] is True
    assert metrics["constrained_effect"]["hgr"]["fine_tuning_gain"] is None  # 06 alone has no fine-tuned run
    for fig in ("06_axis_scores", "06_relation_confusion", "06_weight_reliability", "06_parse_status"):
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 1000
    assert (run_dir / "per_entry.csv").read_text().count("\n") == 7


@pytest.mark.notebooks
def test_eval_notebook_scores_given_predictions_without_labels():
    """06 with PREDICTIONS (and no LABELS): scores the files instead of generating, names runs by file."""
    first = (runner.repo_root() / "data" / "runs" / "06_eval_hungarian" / "pytest-smoke"
             / "predictions_base_unconstrained.jsonl")
    if not first.is_file():
        pytest.skip("06 smoke run not present (run with the notebooks tests)")
    summaries = runner.run("smoke", only=["06"], run_id="pytest-smoke-given", progress=False,
                           overrides={"PREDICTIONS": [str(first)], "METRICS": ["hgr"]})
    assert [s["status"] for s in summaries] == ["ok"]
    metrics = summaries[0]["metrics"]
    assert metrics["generation"] is None
    assert set(metrics["runs"]) == {"predictions_base_unconstrained/card/hgr", "predictions_base_unconstrained/robust/hgr"}


def test_sft_notebook_smoke_outputs():
    """03 on smoke: base and fine-tuned, each decoded freely and constrained, side by side in metrics.json."""
    run_dir = runner.repo_root() / "data" / "runs" / "03_sft_qwen3" / "pytest-smoke"
    if not (run_dir / "metrics.json").is_file():
        pytest.skip("03 smoke run not present (run with the notebooks tests)")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    labels = ["base unconstrained", "base constrained", "fine-tuned unconstrained", "fine-tuned constrained"]
    assert list(metrics["generation"]) == labels
    for label in labels:
        gen = metrics["generation"][label]
        assert gen["decoding"]["constrained"] is label.endswith(" constrained")
        assert sum(gen["stop_reasons"].values()) == gen["n"] == 4
        assert (run_dir / Path(gen["path"]).name).is_file()
        for metric in ("hgr", "corrected"):
            assert f"{label}/card/{metric}" in metrics["runs"]
    for label in ("base constrained", "fine-tuned constrained"):
        assert metrics["runs"][f"{label}/card/hgr"]["parse_failure_rate"] == 0
    assert metrics["constrained_effect"]["hgr"]["composites"]["fine-tuned constrained"] is not None


def test_data_pipeline_smoke_outputs():
    """01 -> 02 -> 06 on smoke: 02 read 01's corpus, 06 scored 02's test split, and nothing leaked."""
    runs = runner.repo_root() / "data" / "runs"
    labels_dir = runs / "02_teacher_labels" / "pytest-smoke"
    if not (labels_dir / "metrics.json").is_file():
        pytest.skip("02 smoke run not present (run with the notebooks tests)")
    corpus_metrics = json.loads((runs / "01_corpus" / "pytest-smoke" / "metrics.json").read_text())
    assert corpus_metrics["kept"] > 200
    assert all(corpus_metrics["removed"][stage] > 0 for stage in ("language", "quality", "exact_dup", "near_dup"))
    params = yaml.safe_load((labels_dir / "params.yaml").read_text())
    assert params["CORPUS"] == "data/runs/01_corpus/pytest-smoke/corpus"  # the runner pinned "latest"
    metrics = json.loads((labels_dir / "metrics.json").read_text())
    assert metrics["leakage"] == 0 and metrics["split"]["leakage_test_train_val"] == 0
    assert metrics["teacher"]["failed"] == 0 and metrics["teacher"]["requests"] == 0  # recorded teacher
    splits = {s: [json.loads(line) for line in (labels_dir / "splits" / f"{s}.jsonl").open()]
              for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == metrics["sizes"]
    assert 0.12 <= sum(e["hard_negative"] for e in splits["train"]) / len(splits["train"]) <= 0.18
    eval_params = runs / "06_eval_hungarian" / "pytest-smoke" / "params.yaml"
    if eval_params.is_file():
        assert yaml.safe_load(eval_params.read_text())["TEST_FILE"] == (
            "data/runs/02_teacher_labels/pytest-smoke/splits/test.jsonl")


def test_mixtune_notebook_smoke_outputs():
    """04 on smoke: QLoRA through kgutils.train, three label decodings scored side by side, no leaked demos."""
    run_dir = runner.repo_root() / "data" / "runs" / "04_qlora_llama_mixtune" / "pytest-smoke"
    if not (run_dir / "metrics.json").is_file():
        pytest.skip("04 smoke run not present (run with the notebooks tests)")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["demonstration_leaks"] == 0
    modes = {k.split("/")[0] for k in metrics["scores"]}
    assert modes == {"base constrained", "fine-tuned free", "fine-tuned constrained", "fine-tuned likelihood"}
    for key, s in metrics["scores"].items():
        if not key.startswith("fine-tuned free"):
            assert s["schema_valid"] == 1.0, key  # constrained and likelihood answers are allowed labels
    assert metrics["training"]["global_step"] == 2
    adapter = json.loads((run_dir / "adapter" / "kg_triplets_train.json").read_text())
    assert adapter["quantization"] == "nf4"
    for fig in ("04_f1_by_dataset", "04_per_class_f1", "04_loss"):
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 1000


def test_gemma_notebook_smoke_outputs():
    """05 on smoke: base, stage 1 and stage 2 (continuing stage 1's adapter) scored side by side; merged and GPTQ
    4-/8-bit exports produced for real and scored on the same passages by the same scorer."""
    run_dir = runner.repo_root() / "data" / "runs" / "05_gemma_continue" / "pytest-smoke"
    if not (run_dir / "metrics.json").is_file():
        pytest.skip("05 smoke run not present (run with the notebooks tests)")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    labels = [f"{m} {d}" for m in ("base", "stage1", "stage2") for d in ("unconstrained", "constrained")]
    assert list(metrics["generation"]) == labels
    for label in labels:
        assert metrics["scores"][label]["f1"] is not None
        if label.endswith(" constrained"):  # valid SPO JSON by construction, even from a random model
            assert metrics["scores"][label]["parse_failure_rate"] == 0, label
    assert metrics["training"]["stage1"]["global_step"] == metrics["training"]["stage2"]["global_step"] == 2
    stage2 = json.loads((run_dir / "stage2" / "adapter" / "kg_triplets_train.json").read_text())
    assert stage2["init_adapter"] == str(run_dir / "stage1" / "adapter")
    assert metrics["continuation"]["same_tensors"] is True
    for label, bits in (("gptq4", 4), ("gptq8", 8)):
        e = metrics["exports"][label]
        assert e["bits"] == bits and e["size_mb"] > 0 and "kernel" in e
        assert json.loads((run_dir / f"gptq-{bits}bit" / "quantize_config.json").read_text())["bits"] == bits
        assert metrics["scores"][f"{label} constrained (export subset)"]["f1"] is not None
    assert (run_dir / "merged" / "config.json").is_file()
    for fig in ("05_loss", "05_models", "05_exports"):
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 1000


def test_ablation_notebook_smoke_outputs():
    """07 on smoke: two fine-tuned cells (k = 0 and 3) scored by the one scorer, demonstrations from train only,
    a findings table with F4a tested on them, and the figures."""
    run_dir = runner.repo_root() / "data" / "runs" / "07_ablations_cot_icl" / "pytest-smoke"
    if not (run_dir / "metrics.json").is_file():
        pytest.skip("07 smoke run not present (run with the notebooks tests)")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["cells"] == ["qwen3 ft nl@0", "qwen3 ft nl@3"]
    assert metrics["leaks"] == 0 and metrics["training"]["nl"]["global_step"] == 2
    for cell in metrics["cells"]:
        assert metrics["scores"][cell]["n"] == 4 and metrics["scores"][cell]["hgr"] is not None
    f4a = [r for r in metrics["findings"]["hgr"] if r["finding"] == "F4a" and r["scope"] == "pooled"]
    assert f4a and f4a[0]["n"] == 4 and f4a[0]["verdict"] in ("supported", "refuted", "inconclusive")
    untested = {r["finding"] for r in metrics["findings"]["hgr"] if r["verdict"] == "not tested"}
    assert {"F1", "F2", "F3a", "F3b"} <= untested
    for fig in ("07_grid_hgr", "07_grid_corrected", "07_shots", "07_findings", "07_loss"):
        assert (run_dir / "figures" / f"{fig}.png").stat().st_size > 1000


def test_graph_notebook_smoke_outputs():
    """08 on smoke: 03's tiny model over held-out passages, the graph ingested twice with nothing changed, the
    Neo4j files written and the figures drawn."""
    run_dir = runner.repo_root() / "data" / "runs" / "08_graph_ingest" / "pytest-smoke"
    if not (run_dir / "metrics.json").is_file():
        pytest.skip("08 smoke run not present (run with the notebooks tests)")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["generation"]["n"] == 6
    ingest = metrics["ingest"]
    assert ingest["idempotent"] is True and ingest["counts_first"] == ingest["counts_second"]
    report = metrics["graph"]
    assert report["passages"] == 6
    assert report["triplets_in"] == report["kept"] + sum(report["dropped"].values())  # nothing lost silently
    assert ingest["counts_first"]["edges"] == report["edges"]
    header = (run_dir / "neo4j" / "nodes.csv").read_text().splitlines()[0]
    assert header == "key:ID(Entity),title,type,:LABEL"
    assert (run_dir / "neo4j" / "load.cypher").read_text().splitlines()[1].startswith("CREATE CONSTRAINT")
    assert (run_dir / "figures" / "08_degrees.png").stat().st_size > 1000
