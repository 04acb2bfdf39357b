"""Mirror cells (STYLE.md R10): a lesson cell starting `# mirror: minimodels.x.Name` must hold exactly the
package source of that object, so the code a learner reads is the code the tests check."""

import importlib
import inspect
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARK = "# mirror: "


def mirror_cells():
    for nb in sorted(ROOT.glob("lessons/*.ipynb")):
        for i, cell in enumerate(json.loads(nb.read_text())["cells"]):
            src = "".join(cell["source"])
            if cell["cell_type"] == "code" and src.startswith(MARK):
                yield pytest.param(nb, src, id=f"{nb.name}#cell{i}")


def normalise(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines() if line.strip()]


def resolve(dotted: str):
    module, _, name = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):  # a method: minimodels.mha.MultiHeadAttention.forward
        module, _, owner = module.rpartition(".")
        return getattr(getattr(importlib.import_module(module), owner), name)


@pytest.mark.parametrize("nb, src", list(mirror_cells()))
def test_mirror_cell_equals_package_source(nb, src):
    first, _, body = src.partition("\n")
    obj = resolve(first[len(MARK):].strip())
    assert normalise(body) == normalise(inspect.getsource(obj)), (
        f"{nb.name}: the mirror of {first[len(MARK):]} differs from the package; copy the package source "
        f"into the cell again")


def test_normalise_catches_a_one_word_change():
    src = inspect.getsource(resolve("minimodels.mha.causal_attention"))
    assert normalise(src) != normalise(src.replace("fp32", "fp16"))
