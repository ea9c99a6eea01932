"""The runner's strict parameter handling (no notebook is executed here)."""

import json
import textwrap

import pytest

from kgutils import runner


def _write_notebook(folder, name, params_src):
    nb = {
        "cells": [
            {"cell_type": "code", "metadata": {}, "source": "import os", "outputs": [], "execution_count": None},
            {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": params_src, "outputs": [],
             "execution_count": None},
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = folder / "notebooks" / f"{name}.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


@pytest.fixture
def fake_repo(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    (tmp_path / "kgutils").mkdir()
    (tmp_path / "params").mkdir()
    monkeypatch.setenv("KG_TRIPLETS_ROOT", str(tmp_path))
    _write_notebook(tmp_path, "01_alpha", textwrap.dedent('''\
        PROFILE: str = "full"  # the profile
        RUN_DIR: str = "x"
        STEPS: int = 10  # training steps
        LR = 5e-5
        NAMES: list = ["a"]
        OUT: str | None = None
        FLAG = True
    '''))
    _write_notebook(tmp_path, "02_beta", 'RUN_DIR: str = "x"\nSTEPS: int = 3\nTAG = "b"\n')
    return tmp_path


def _profile(repo, text):
    (repo / "params" / "cpu.yaml").write_text(textwrap.dedent(text))


def test_read_parameters_types_defaults_and_help(fake_repo):
    ps = runner.read_parameters(fake_repo / "notebooks" / "01_alpha.ipynb")
    assert ps["STEPS"].type == "int" and ps["STEPS"].default == 10 and ps["STEPS"].help == "training steps"
    assert ps["LR"].type == "float"
    assert ps["NAMES"].type == "list"
    assert ps["OUT"].type == "str" and ps["OUT"].optional
    assert ps["FLAG"].type == "bool"


def test_resolution_order_and_runner_keys(fake_repo):
    _profile(fake_repo, """
        common: {STEPS: 5}
        notebooks:
          02_beta: {STEPS: 7}
    """)
    books = runner.select_notebooks(None)
    res = runner.resolve_all("cpu", books, {"LR": 1}, run_id="r1")
    assert res["01_alpha"]["STEPS"] == 5
    assert res["02_beta"]["STEPS"] == 7
    assert res["01_alpha"]["LR"] == 1  # an int is a valid float
    assert res["01_alpha"]["PROFILE"] == "cpu"
    assert res["02_beta"]["RUN_DIR"] == "data/runs/02_beta/r1"
    assert "LR" not in res["02_beta"]


@pytest.mark.parametrize(
    "profile_text, overrides, message",
    [
        ("notebooks:\n  01_alpha: {STEPZ: 1}\n", {}, "01_alpha has no parameter STEPZ"),
        ("common: {NOPE: 1}\n", {}, "common parameter NOPE"),
        ("notebooks:\n  09_gamma: {STEPS: 1}\n", {}, "unknown notebook '09_gamma'"),
        ("notebooks:\n  01_alpha: {STEPS: '10'}\n", {}, "parameter STEPS must be int"),
        ("notebooks:\n  01_alpha: {STEPS: 2.5}\n", {}, "parameter STEPS must be int"),
        ("notebooks:\n  01_alpha: {FLAG: 1}\n", {}, "parameter FLAG must be bool"),
        ("notebooks:\n  01_alpha: {STEPS: true}\n", {}, "parameter STEPS must be int"),
        ("notebooks:\n  01_alpha: {NAMES: a}\n", {}, "parameter NAMES must be list"),
        ("notebooks:\n  01_alpha: {STEPS: null}\n", {}, "parameter STEPS must be int, got None"),
        ("extra: 1\n", {}, "unknown top-level keys"),
        ("{}\n", {"MISSING": 1}, "--set MISSING"),
        ("{}\n", {"RUN_DIR": "elsewhere"}, "set by the runner"),
        ("{}\n", {"PROFILE": "full"}, "set by the runner"),
        ("common: {PROFILE: full}\n", {}, "PROFILE is set by the runner"),
        ("notebooks:\n  01_alpha: {RUN_DIR: x}\n", {}, "RUN_DIR is set by the runner"),
    ],
)
def test_bad_parameters_are_errors_naming_the_key(fake_repo, profile_text, overrides, message):
    _profile(fake_repo, profile_text)
    with pytest.raises(runner.ParameterError, match=message.replace("(", r"\(")):
        runner.resolve_all("cpu", runner.select_notebooks(None), overrides)


def test_optional_parameter_accepts_none_and_str(fake_repo):
    _profile(fake_repo, "notebooks:\n  01_alpha: {OUT: null}\n")
    runner.resolve_all("cpu", runner.select_notebooks(None))
    _profile(fake_repo, "notebooks:\n  01_alpha: {OUT: here}\n")
    assert runner.resolve_all("cpu", runner.select_notebooks(None))["01_alpha"]["OUT"] == "here"


def test_select_and_missing_profile(fake_repo):
    assert [p.stem for p in runner.select_notebooks(["02"])] == ["02_beta"]
    assert [p.stem for p in runner.select_notebooks(["02_beta", "01"])] == ["01_alpha", "02_beta"]
    with pytest.raises(runner.ParameterError, match="no notebook matches '07'"):
        runner.select_notebooks(["07"])
    with pytest.raises(runner.ParameterError, match="no parameter file for profile 'smoke'"):
        runner.load_profile("smoke")


def test_parse_overrides_yaml_values():
    assert runner.parse_overrides(["A=3", "B=[x, y]", "C=0.5", "D=true", "E=hello"]) == {
        "A": 3, "B": ["x", "y"], "C": 0.5, "D": True, "E": "hello"
    }
    with pytest.raises(runner.ParameterError, match="KEY=VALUE"):
        runner.parse_overrides(["novalue"])


def test_parameters_cell_must_be_plain_literals(fake_repo):
    path = _write_notebook(fake_repo, "03_bad", "X = compute()\n")
    with pytest.raises(runner.ParameterError, match="default of X is not a literal"):
        runner.read_parameters(path)


def test_real_profiles_validate_against_real_notebooks(monkeypatch):
    """Every shipped profile resolves cleanly against the shipped notebooks."""
    monkeypatch.delenv("KG_TRIPLETS_ROOT", raising=False)
    books = runner.select_notebooks(None)
    assert books, "no notebooks found"
    for profile in runner.PROFILES:
        resolved = runner.resolve_all(profile, books, run_id="t")
        assert set(resolved) == {b.stem for b in books}


def test_latest_paths_resolve_and_pin_to_the_last_run(tmp_path, monkeypatch):
    from kgutils import io

    monkeypatch.setenv("KG_TRIPLETS_ROOT", str(tmp_path))
    stage = tmp_path / "data" / "runs" / "01_corpus"
    (stage / "run-a" / "corpus").mkdir(parents=True)
    (stage / "run-b" / "corpus").mkdir(parents=True)
    (stage / "LATEST").write_text("run-b\n")
    assert io.resolve("data/runs/01_corpus/latest/corpus") == stage / "run-b" / "corpus"
    pinned = runner.pin_latest({"CORPUS": "data/runs/01_corpus/latest/corpus", "N": 3,
                                "FILES": ["data/runs/01_corpus/latest/x.jsonl", "other.jsonl"]}, tmp_path)
    assert pinned == {"CORPUS": "data/runs/01_corpus/run-b/corpus", "N": 3,
                      "FILES": ["data/runs/01_corpus/run-b/x.jsonl", "other.jsonl"]}
    # A stage that never ran is an error naming it, before any notebook starts.
    with pytest.raises(runner.ParameterError, match="02_teacher_labels"):
        runner.pin_latest({"X": "data/runs/02_teacher_labels/latest/splits/test.jsonl"}, tmp_path)
