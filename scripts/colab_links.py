"""Keep every notebook's Colab badge and Colab install cell pointing at the right place.

The badge (in the first markdown cell) must open the notebook's OWN path in the project's public repository
at the release tag, and the first code cell must be the canonical install cell: on Colab it installs the
course package from that repository and tag (Colab's own torch is kept: pip leaves satisfied requirements
alone); anywhere else it does nothing. The repository comes from pyproject.toml's [project.urls] Repository,
the tag from its version ("v" + version).

    python scripts/colab_links.py            # rewrite badges and install cells in place
    python scripts/colab_links.py --check    # exit 1 naming every notebook that is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nbtools  # noqa: E402

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
INSTALL_MARK = "# Colab only:"


def project() -> tuple[str, str]:
    """(owner/name of the public GitHub repository, release tag) from pyproject.toml."""
    meta = tomllib.loads((nbtools.REPO_ROOT / "pyproject.toml").read_text())["project"]
    url = meta["urls"]["Repository"].rstrip("/")
    match = re.fullmatch(r"https://github\.com/([^/]+/[^/]+?)(\.git)?", url)
    if not match:
        raise SystemExit(f"pyproject.toml [project.urls] Repository must be a GitHub URL, got {url!r}")
    return match.group(1), f"v{meta['version']}"


def badge(repo: str, ref: str, relpath: str) -> str:
    url = f"https://colab.research.google.com/github/{repo}/blob/{ref}/{relpath}"
    return f"[![Open In Colab]({BADGE_IMAGE})]({url})"


def install_cell(repo: str, ref: str) -> str:
    return (f"{INSTALL_MARK} install the course package from its repository (a no-op anywhere else)\n"
            "import sys\n"
            "\n"
            "if \"google.colab\" in sys.modules:\n"
            f"    %pip install -q \"minimodels @ git+https://github.com/{repo}@{ref}\"\n")


def fix(nb: dict, relpath: str, repo: str, ref: str) -> list[str]:
    """Rewrite the badge and install cell of `nb` in place; return what was wrong."""
    problems = []
    cells = nb["cells"]
    md = next((c for c in cells if c["cell_type"] == "markdown"), None)
    code = next((c for c in cells if c["cell_type"] == "code"), None)
    want_badge = badge(repo, ref, relpath)
    if md is None or want_badge not in nbtools.source(md):
        problems.append("badge missing or pointing elsewhere")
        if md is not None:
            text = nbtools.source(md)
            if BADGE.search(text):
                text = BADGE.sub(lambda _: want_badge, text, count=1)
            else:
                first, _, rest = text.partition("\n")
                text = f"{first}\n\n{want_badge}\n{rest}"
            md["source"] = text
    want_cell = install_cell(repo, ref)
    if code is None or nbtools.source(code) != want_cell:
        problems.append("first code cell is not the Colab install cell")
        if code is not None and nbtools.source(code).startswith(INSTALL_MARK):
            code["source"] = want_cell
        elif code is not None:
            cells.insert(cells.index(code), {"cell_type": "code", "execution_count": None, "id": "colab-install",
                                             "metadata": {}, "outputs": [], "source": want_cell})
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report, don't write")
    parser.add_argument("paths", nargs="*", default=list(nbtools.NOTEBOOK_DIRS))
    args = parser.parse_args(argv)
    repo, ref = project()
    dirty = 0
    for path in nbtools.find_notebooks(args.paths):
        nb = nbtools.load(path)
        relpath = path.resolve().relative_to(nbtools.REPO_ROOT).as_posix()
        problems = fix(nb, relpath, repo, ref)
        if problems:
            dirty += 1
            if args.check:
                print(f"{relpath}: {'; '.join(problems)} (run python scripts/colab_links.py)")
            else:
                path.write_text(nbtools.dumps(nbtools.clean(nb)), encoding="utf-8")
                print(f"fixed {relpath}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    raise SystemExit(main())
