"""Conventions every committed notebook keeps (DESIGN.md, Conventions)."""

import json

import pytest

from kgutils import runner

BOOKS = runner.list_notebooks()


@pytest.mark.parametrize("path", BOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs") and cell.get("execution_count") is None, f"{path.name} has outputs"


@pytest.mark.parametrize("path", BOOKS, ids=lambda p: p.stem)
def test_layout_colab_imports_parameters(path):
    code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    src = lambda c: "".join(c["source"]) if isinstance(c["source"], list) else c["source"]  # noqa: E731
    # First code cell: the Colab set-up, guarded so it does nothing elsewhere.
    assert "colab-setup" in code[0]["metadata"].get("tags", [])
    assert '"google.colab" in sys.modules' in src(code[0])
    # Then the imports, then the one parameters cell.
    import_lines = [line for line in src(code[1]).splitlines() if line.strip()]
    assert import_lines and all(line.startswith(("import ", "from ")) for line in import_lines)
    assert "parameters" in code[2]["metadata"].get("tags", [])
    params = runner.read_parameters(path)
    for p in params.values():
        assert p.name.isupper(), f"{p.name} is not UPPER_CASE"
        assert p.help, f"{path.stem}: parameter {p.name} has no comment"
    assert {"PROFILE", "RUN_DIR", "WANDB_MODE"} <= set(params)
    # The last code cell records metrics.
    assert "tracker.finish(" in src(code[-1])


@pytest.mark.parametrize("path", BOOKS, ids=lambda p: p.stem)
def test_papermill_can_read_every_parameter(path):
    """Papermill's own inspection (used by `papermill --help-notebook`) sees every parameter."""
    import papermill as pm

    assert set(pm.inspect_notebook(str(path))) == set(runner.read_parameters(path))
