"""Shared notebook helpers for scripts/clean_notebooks.py and scripts/make_exercises.py.

One definition of a *clean* notebook and one writer, so that "clean" and "generated" mean
byte-identical files and `--check` can compare bytes:

- no outputs and no execution counts, except in cells marked for nbval output comparison
  (tag `nbval-check-output` or a `# NBVAL_CHECK_OUTPUT` comment): those keep their outputs,
  with the execution count set to 1, because nbval skips cells whose count is empty;
- cell metadata keeps only `tags`; every cell has a valid, unique `id` (nbformat 4.5);
- notebook metadata is only the standard python3 kernelspec and `language_info.name`
  (no widget state, no per-user kernel names, no editor settings);
- written as JupyterLab writes it: nbformat's JSON (indent 1, sorted keys, non-ASCII kept)
  plus a trailing newline, so saving from JupyterLab after a clean changes nothing but content.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

import nbformat

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIRS = ("lessons", "solutions", "exercises")

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
LANGUAGE_INFO = {"name": "python"}
CELL_METADATA_KEPT = ("tags",)
CHECK_OUTPUT_TAG = "nbval-check-output"
CHECK_OUTPUT_COMMENT = "NBVAL_CHECK_OUTPUT"
_CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


class NotebookError(ValueError):
    """A notebook the scripts refuse to process; the message names the file (and cell)."""


# ---------------------------------------------------------------- reading


def loads(text: str, name: str = "<notebook>") -> dict:
    """Parse notebook JSON into a plain dict (no nbformat upgrades, no random ids)."""
    try:
        nb = json.loads(text)
    except json.JSONDecodeError as e:
        raise NotebookError(f"{name}: not valid JSON ({e})") from None
    if not isinstance(nb, dict) or nb.get("nbformat") != 4 or not isinstance(nb.get("cells"), list):
        raise NotebookError(f"{name}: not an nbformat 4 notebook")
    return nb


def load(path: Path) -> dict:
    return loads(Path(path).read_text(encoding="utf-8"), name=str(path))


def source(cell: dict) -> str:
    """A cell's source as one string (files store it as a list of lines)."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def tags(cell: dict) -> list[str]:
    found = cell.get("metadata", {}).get("tags", [])
    return list(found) if isinstance(found, list) else []


def keeps_outputs(cell: dict) -> bool:
    """True for code cells whose stored outputs nbval compares (the check-output marker)."""
    if cell.get("cell_type") != "code":
        return False
    if CHECK_OUTPUT_TAG in tags(cell):
        return True
    for line in source(cell).splitlines():
        line = line.strip()
        if line.startswith("#") and line.lstrip("#").strip() == CHECK_OUTPUT_COMMENT:
            return True
    return False


def find_notebooks(paths: Iterable[Path | str], *, missing_ok: bool = True) -> list[Path]:
    """Every .ipynb under `paths` (files or folders), skipping hidden folders such as .ipynb_checkpoints."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(
                nb
                for nb in sorted(p.rglob("*.ipynb"))
                if not any(part.startswith(".") for part in nb.relative_to(p).parts)
            )
        elif not missing_ok:
            raise NotebookError(f"{p}: no such file or folder")
    return found


# ---------------------------------------------------------------- cleaning


def _new_cell_id(seed: str, taken: set[str]) -> str:
    # deterministic (unlike nbformat's random ids), so regenerating a notebook gives the same bytes
    for n in range(1000):
        cid = hashlib.sha1(f"{seed}:{n}".encode()).hexdigest()[:8]
        if cid not in taken:
            return cid
    raise AssertionError("unreachable: 1000 id collisions")


def _clean_cell_metadata(meta: dict) -> dict:
    return {key: copy.deepcopy(meta[key]) for key in CELL_METADATA_KEPT if meta.get(key)}


def _clean_output(output: dict) -> dict:
    output = copy.deepcopy(output)
    if output.get("output_type") == "execute_result":
        output["execution_count"] = 1
    return output


def clean(nb: dict) -> dict:
    """Return a clean copy of notebook `nb` (a dict as read from JSON); `nb` itself is not modified."""
    cells = []
    taken: set[str] = set()
    for index, cell in enumerate(nb["cells"]):
        kind = cell.get("cell_type")
        text = source(cell)
        meta = _clean_cell_metadata(cell.get("metadata") or {})
        new = {"cell_type": kind, "metadata": meta, "source": text}
        cid = cell.get("id")
        if not isinstance(cid, str) or not _CELL_ID.match(cid) or cid in taken:
            cid = _new_cell_id(f"{index}:{kind}:{text}", taken)
        taken.add(cid)
        new["id"] = cid
        if kind == "code":
            outputs = cell.get("outputs") or []
            if outputs and keeps_outputs(cell):
                new["outputs"] = [_clean_output(o) for o in outputs]
                new["execution_count"] = 1
            else:
                new["outputs"] = []
                new["execution_count"] = None
        elif cell.get("attachments"):
            new["attachments"] = copy.deepcopy(cell["attachments"])
        cells.append(new)
    return {
        "cells": cells,
        "metadata": {"kernelspec": dict(KERNELSPEC), "language_info": dict(LANGUAGE_INFO)},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def dumps(nb: dict) -> str:
    """The canonical text of a notebook: nbformat's writer (validates) plus a trailing newline."""
    text = nbformat.writes(nbformat.from_dict(copy.deepcopy(nb)), version=4)
    return text if text.endswith("\n") else text + "\n"


def canonical_text(nb: dict) -> str:
    return dumps(clean(nb))


# ---------------------------------------------------------------- checking


def _cells(numbers: list[int]) -> str:
    return ("cell " if len(numbers) == 1 else "cells ") + ", ".join(map(str, numbers))


def problems(nb: dict) -> list[str]:
    """What makes `nb` unclean, in words (empty list: clean apart from possibly JSON formatting)."""
    found: list[str] = []
    if nb.get("nbformat_minor") != 5:
        found.append(f"nbformat_minor is {nb.get('nbformat_minor')} (4.5 is needed for cell ids)")
    outputs, counts, metadata, ids = [], [], [], []
    stray_keys: set[str] = set()
    seen_ids: set[str] = set()
    for number, cell in enumerate(nb["cells"], start=1):
        kept = keeps_outputs(cell) and bool(cell.get("outputs"))
        if cell.get("outputs") and not kept:
            outputs.append(number)
        if cell.get("cell_type") == "code":
            count = cell.get("execution_count")
            if (count is not None and not kept) or (kept and count != 1):
                counts.append(number)
        meta = cell.get("metadata") or {}
        if meta != _clean_cell_metadata(meta):
            metadata.append(number)
            stray_keys.update(key for key in meta if key not in CELL_METADATA_KEPT or not meta[key])
        cid = cell.get("id")
        if not isinstance(cid, str) or not _CELL_ID.match(cid) or cid in seen_ids:
            ids.append(number)
        else:
            seen_ids.add(cid)
    if outputs:
        found.append(f"outputs in {_cells(outputs)}")
    if counts:
        found.append(f"execution counts in {_cells(counts)}")
    if metadata:
        found.append(f"cell metadata {', '.join(sorted(stray_keys))} in {_cells(metadata)}")
    if ids:
        found.append(f"missing, invalid or duplicate cell ids in {_cells(ids)}")
    meta = nb.get("metadata") or {}
    if "widgets" in meta:
        found.append("widget state in metadata.widgets")
    extra = sorted(set(meta) - {"kernelspec", "language_info", "widgets"})
    if extra:
        found.append(f"notebook metadata {', '.join(extra)}")
    if "kernelspec" not in meta:
        found.append("no kernelspec")
    elif meta["kernelspec"] != KERNELSPEC:
        spec = meta["kernelspec"]
        name = spec.get("name") if isinstance(spec, dict) else spec
        found.append(f"kernelspec {name!r} is not the standard python3 one")
    if meta.get("language_info") != LANGUAGE_INFO:
        found.append("language_info holds more than the language name")
    return found


def check_text(text: str, name: str = "<notebook>") -> list[str]:
    """Problems of the notebook stored as `text`, including non-canonical JSON formatting."""
    nb = loads(text, name)
    found = problems(nb)
    if not found and text.replace("\r\n", "\n") != canonical_text(nb):  # e.g. indentation or key order
        found.append("JSON formatting differs from nbformat's (indent 1, sorted keys, final newline)")
    return found


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")


def same_text(path: Path, text: str) -> bool:
    """True if `path` exists and holds `text` (line endings ignored, for Windows checkouts)."""
    try:
        return path.read_text(encoding="utf-8").replace("\r\n", "\n") == text
    except FileNotFoundError:
        return False
