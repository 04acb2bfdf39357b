#!/usr/bin/env python3
"""Strip outputs, execution counts, widget state and editor metadata from the course notebooks.

    python scripts/clean_notebooks.py                 # clean lessons/ solutions/ exercises/ in place
    python scripts/clean_notebooks.py --check         # only report; exit 1 if any notebook is dirty
    python scripts/clean_notebooks.py lessons/01_baseline_gpt.ipynb

Cells marked for nbval output comparison (tag `nbval-check-output` or a `# NBVAL_CHECK_OUTPUT`
comment) keep their outputs: see scripts/nbtools.py for the exact definition of "clean".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nbtools  # noqa: E402  (needs the path above when run as a script)


def clean_file(path: Path, *, check: bool) -> list[str]:
    """Clean one notebook in place (unless `check`); return what was (or would be) fixed."""
    text = path.read_text(encoding="utf-8")
    found = nbtools.check_text(text, str(path))
    if found and not check:
        nbtools.write_text(path, nbtools.canonical_text(nbtools.loads(text, str(path))))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report dirty notebooks, change nothing")
    parser.add_argument(
        "paths", nargs="*", type=Path, help="notebooks or folders (default: lessons solutions exercises)"
    )
    args = parser.parse_args(argv)

    if args.paths:
        paths, missing_ok = args.paths, False
    else:
        paths, missing_ok = [nbtools.REPO_ROOT / d for d in nbtools.NOTEBOOK_DIRS], True
    try:
        notebooks = nbtools.find_notebooks(paths, missing_ok=missing_ok)
    except nbtools.NotebookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    dirty = errors = 0
    for path in notebooks:
        try:
            found = clean_file(path, check=args.check)
        except nbtools.NotebookError as e:
            print(f"error: {e}", file=sys.stderr)
            errors += 1
            continue
        if found:
            dirty += 1
            verb = "dirty" if args.check else "cleaned"
            print(f"{_show(path)}: {verb}: {'; '.join(found)}")

    if errors:
        print(f"{errors} of {len(notebooks)} notebooks could not be read")
        return 1
    if args.check and dirty:
        print(f"{dirty} of {len(notebooks)} notebooks not clean; fix with: python scripts/clean_notebooks.py")
        return 1
    print(f"{len(notebooks)} notebooks clean" + ("" if args.check else f" ({dirty} cleaned now)"))
    return 0


def _show(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(nbtools.REPO_ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
