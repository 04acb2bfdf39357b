"""Committed notebooks are clean, and scripts/clean_notebooks.py makes dirty ones clean."""

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import clean_notebooks  # noqa: E402
import nbtools  # noqa: E402

COMMITTED = nbtools.find_notebooks(ROOT / d for d in nbtools.NOTEBOOK_DIRS)


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(ROOT)) for p in COMMITTED])
def test_committed_notebook_is_clean(path):
    found = nbtools.check_text(path.read_text(encoding="utf-8"), str(path))
    assert found == [], (
        f"{path.relative_to(ROOT)}: {'; '.join(found)} (run python scripts/clean_notebooks.py)"
    )


def dirty_notebook() -> dict:
    """What JupyterLab saves after a run, plus the usual editor and widget debris."""
    code = new_code_cell("x = 1\nx", execution_count=4, metadata={"collapsed": False, "scrolled": True})
    code.outputs = [new_output("execute_result", data={"text/plain": "1"}, execution_count=4)]
    tagged = new_code_cell(
        "print('hi')", execution_count=5, metadata={"tags": ["nbval-skip"], "ExecuteTime": {}}
    )
    tagged.outputs = [new_output("stream", name="stdout", text="hi\n")]
    pinned = new_code_cell("print(2 + 2)", execution_count=9, metadata={"tags": ["nbval-check-output"]})
    pinned.outputs = [new_output("stream", name="stdout", text="4\n")]
    prose = new_markdown_cell("# Title", metadata={"jp-MarkdownHeadingCollapsed": True})
    nb = new_notebook(cells=[prose, code, tagged, pinned])
    nb.metadata = {
        "kernelspec": {"display_name": "miniseek", "language": "python", "name": "conda-env-miniseek-py"},
        "language_info": {"name": "python", "version": "3.11.7", "mimetype": "text/x-python"},
        "widgets": {"application/vnd.jupyter.widget-state+json": {"state": {"abc": {}}, "version_major": 2}},
        "toc": {"nav_menu": {}},
    }
    return json.loads(nbformat.writes(nb))


def test_problems_name_everything_that_is_dirty():
    found = "; ".join(nbtools.problems(dirty_notebook()))
    for expected in [
        "outputs in cells 2, 3",
        "execution counts in cells 2, 3, 4",  # cell 4 keeps its output, but its count is normalised to 1
        "cell metadata ExecuteTime, collapsed, jp-MarkdownHeadingCollapsed, scrolled in cells 1, 2, 3",
        "widget state in metadata.widgets",
        "notebook metadata toc",
        "kernelspec 'conda-env-miniseek-py' is not the standard python3 one",
        "language_info holds more than the language name",
    ]:
        assert expected in found


def test_clean_strips_outputs_and_metadata_but_keeps_content():
    dirty = dirty_notebook()
    clean = nbtools.clean(dirty)
    assert dirty["metadata"]["widgets"]  # the input is not modified
    assert clean["metadata"] == {"kernelspec": nbtools.KERNELSPEC, "language_info": {"name": "python"}}
    prose, code, tagged, pinned = clean["cells"]
    assert [nbtools.source(c) for c in clean["cells"]] == [
        "# Title",
        "x = 1\nx",
        "print('hi')",
        "print(2 + 2)",
    ]
    assert [c["id"] for c in clean["cells"]] == [c["id"] for c in dirty["cells"]]
    assert prose["metadata"] == {} and code["metadata"] == {}
    assert tagged["metadata"] == {"tags": ["nbval-skip"]}
    assert code["outputs"] == tagged["outputs"] == []
    assert code["execution_count"] is None and tagged["execution_count"] is None
    # a cell pinned for nbval's output comparison keeps its output and gets a count, or nbval would skip it
    assert "".join(pinned["outputs"][0]["text"]) == "4\n" and pinned["execution_count"] == 1
    assert nbtools.problems(clean) == []
    text = nbtools.dumps(clean)
    assert nbtools.check_text(text) == []
    assert nbtools.canonical_text(nbtools.loads(text)) == text  # idempotent


def test_canonical_text_is_what_jupyter_writes(tmp_path):
    nb = nbformat.from_dict(nbtools.clean(dirty_notebook()))
    nb.cells.append(new_markdown_cell("unicode stays readable: µs, ✅", id="uni"))
    nbformat.write(nb, tmp_path / "lab.ipynb")  # the writer JupyterLab's server uses
    saved = (tmp_path / "lab.ipynb").read_text(encoding="utf-8")
    assert nbtools.canonical_text(nbtools.loads(saved)) == saved
    assert "✅" in saved and saved.endswith("}\n")


def test_missing_and_duplicate_ids_are_repaired_deterministically():
    cells = [new_code_cell("a"), new_code_cell("b"), new_code_cell("c"), new_code_cell("d")]
    nb = json.loads(nbformat.writes(new_notebook(cells=cells)))
    del nb["cells"][0]["id"]
    nb["cells"][2]["id"] = nb["cells"][1]["id"]
    nb["cells"][3]["id"] = "not valid!"
    assert "missing, invalid or duplicate cell ids in cells 1, 3, 4" in nbtools.problems(nb)
    first, second = nbtools.clean(nb), nbtools.clean(nb)
    assert first == second
    ids = [c["id"] for c in first["cells"]]
    assert len(set(ids)) == 4 and ids[1] == nb["cells"][1]["id"]
    assert "missing, invalid or duplicate" not in "; ".join(nbtools.problems(first))


def test_formatting_alone_is_reported():
    clean = nbtools.clean(dirty_notebook())
    assert nbtools.check_text(json.dumps(clean, indent=2)) == [
        "JSON formatting differs from nbformat's (indent 1, sorted keys, final newline)"
    ]


def test_command_line_check_then_clean(tmp_path, capsys):
    dirty_path, clean_path = tmp_path / "lessons" / "01_dirty.ipynb", tmp_path / "lessons" / "02_clean.ipynb"
    dirty = dirty_notebook()
    nbtools.write_text(dirty_path, nbformat.writes(nbformat.from_dict(dirty)))
    nbtools.write_text(clean_path, nbtools.canonical_text(dirty))
    before = dirty_path.read_bytes()

    assert clean_notebooks.main(["--check", str(tmp_path / "lessons")]) == 1
    out = capsys.readouterr().out
    assert "01_dirty.ipynb: dirty: outputs in cells 2, 3" in out and "02_clean" not in out
    assert dirty_path.read_bytes() == before  # --check changes nothing

    clean_mtime = clean_path.stat().st_mtime_ns
    assert clean_notebooks.main([str(tmp_path / "lessons")]) == 0
    assert "01_dirty.ipynb: cleaned" in capsys.readouterr().out
    assert clean_path.stat().st_mtime_ns == clean_mtime  # clean files are not rewritten
    assert clean_notebooks.main(["--check", str(tmp_path / "lessons")]) == 0
    assert dirty_path.read_text(encoding="utf-8") == clean_path.read_text(encoding="utf-8")


def test_command_line_rejects_broken_json_and_missing_paths(tmp_path, capsys):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    assert clean_notebooks.main(["--check", str(broken)]) == 1
    assert "not valid JSON" in capsys.readouterr().err
    assert clean_notebooks.main(["--check", str(tmp_path / "nope")]) == 2


def test_checkpoint_folders_are_ignored(tmp_path):
    nbtools.write_text(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.ipynb", "{}")
    nbtools.write_text(tmp_path / "sub" / "b.ipynb", "{}")
    assert nbtools.find_notebooks([tmp_path]) == [tmp_path / "sub" / "b.ipynb"]
