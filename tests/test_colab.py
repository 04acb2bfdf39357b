"""Colab: every lesson, solution and exercise notebook has a badge that opens its own path at the release tag,
and a first code cell that installs the course package on Colab only (and leaves Colab's torch alone)."""

import sys
import types
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import colab_links  # noqa: E402
import nbtools  # noqa: E402

NOTEBOOKS = nbtools.find_notebooks([ROOT / d for d in nbtools.NOTEBOOK_DIRS])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_badge_and_install_cell(path):
    repo, ref = colab_links.project()
    nb = nbtools.load(path)
    problems = colab_links.fix(nb, path.relative_to(ROOT).as_posix(), repo, ref)
    assert not problems, f"{path.relative_to(ROOT)}: {problems}; run python scripts/colab_links.py"


def run_install_cell(monkeypatch, on_colab: bool) -> list[tuple[str, str]]:
    """Run the canonical install cell as IPython would, recording the magics it calls."""
    calls = []
    shell = types.SimpleNamespace(run_line_magic=lambda name, line: calls.append((name, line)))
    if on_colab:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    code = TransformerManager().transform_cell(colab_links.install_cell(*colab_links.project()))
    exec(compile(code, "<install cell>", "exec"), {"get_ipython": lambda: shell})
    return calls


def test_install_cell_is_a_no_op_outside_colab(monkeypatch):
    assert run_install_cell(monkeypatch, on_colab=False) == []


def test_install_cell_installs_the_tagged_repository_on_colab(monkeypatch):
    repo, ref = colab_links.project()
    calls = run_install_cell(monkeypatch, on_colab=True)
    assert len(calls) == 1 and calls[0][0] == "pip"
    line = calls[0][1]
    assert f"git+https://github.com/{repo}@{ref}" in line
    assert "torch" not in line.replace("minimodels", "")  # Colab's own torch stays


def test_the_badge_points_at_the_notebook_itself():
    assert colab_links.badge("o/r", "v1", "lessons/01_x.ipynb").endswith(
        "(https://colab.research.google.com/github/o/r/blob/v1/lessons/01_x.ipynb)")


def test_fix_repairs_a_wrong_badge_and_a_missing_cell():
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# T\n[![Open In Colab](x)](y)\n"},
                    {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
                     "source": "import torch"}]}
    assert len(colab_links.fix(nb, "lessons/a.ipynb", "o/r", "v1")) == 2
    assert colab_links.fix(nb, "lessons/a.ipynb", "o/r", "v1") == []
    assert nb["cells"][2]["source"] == "import torch"
