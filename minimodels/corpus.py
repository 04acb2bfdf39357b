"""The course's two-domain text corpus, read from the Python standard library that every installation carries.

What: documents in two domains, split into train/validation by source file:
- prose: the language reference's help topics (`pydoc_data/topics.py`) and the docstrings of every library file;
- code: the library's Python source files as they are, docstrings and comments included.
Why: the course runs offline and every learner must get the same data (for the same Python version); two domains
give lesson 07's router something to tell apart. Taught in lessons/01_baseline_gpt.ipynb.

Choices, and why:
- Code keeps its docstrings. A code document is the file's text unchanged, so it is real Python as people write
  it (and anyone can compare it with the file). The price is that docstring text is read twice per pass, once in
  each domain; the split is made per source file, so a file's code and its docstrings land on the same side and
  a validation docstring never sits, inside its file's code, in the training split.
- Tests are left out (Lib/test, */tests, idlelib/idle_test), as are third-party packages (site-packages) and the
  generated codec tables of `encodings` (65 files built by gencodec.py: 1.2 MB of near-identical mapping lines).
  Lib/test alone is bigger than the library (17 MB against 11 MB on Python 3.11) and full of deliberately odd
  input: it would raise the alphabet from 223 to 422 characters (single-character ids of a 1,024-token
  vocabulary), more than double the build time and teach test idiom rather than library code. Without the tests
  the training split is 4.4M tokens, so the gpu profile (9.8M tokens) reads it about twice.
- `source_fingerprint` says what a build would read (paths, sizes, modification times) without reading it:
  the data cache is keyed on it, so a warm load does not parse the library again.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import platform
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

# bump when the way documents are chosen, made or tokenized changes, so old caches are not reused
CORPUS_VERSION = 2
DOMAINS = ("prose", "code")  # a token's domain id is its domain's index here
# folders never read: tests, third-party packages, byte code, and the topics (read on their own, as prose)
SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "pydoc_data"})
GENERATED_MARK = "gencodec.py"  # the first lines of a generated codec table name the script that made it
TOPICS_FILE = "pydoc_data/topics.py"
# one source file in VAL_MODULUS goes to validation, picked by a hash of its name (~10%)
VAL_MODULUS = 10
DOC_SEPARATOR = "\n\n"  # joins documents for a text hash (in token space, <eos> separates them)


class Doc(NamedTuple):
    name: str  # e.g. "prose/topics/assert", "prose/json/decoder.py", "code/json/decoder.py"
    domain: str  # one of DOMAINS
    group: str  # what the train/val split hashes: the source file, so its two domains stay on one side
    text: str


@dataclass
class Corpus:
    """Documents split into train and validation, plus the manifest describing their sources."""

    train_docs: list[Doc]
    val_docs: list[Doc]
    manifest: dict = field(default_factory=dict)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8", "surrogatepass"))


def source_paths(root: Path) -> list[str]:
    """Relative posix paths of the library's *.py files outside SKIP_DIRS, sorted: the same list everywhere."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]  # pruned here, so site-packages is never walked
        rel = Path(folder).relative_to(root)
        found += [(rel / f).as_posix() for f in files if f.endswith(".py")]
    return sorted(found)


def source_fingerprint(root: Path) -> dict:
    """What a build of `root` would read, from file metadata only (milliseconds): the data cache's key."""
    entries = []
    for rel in [TOPICS_FILE, *source_paths(root)]:
        try:
            st = (root / rel).stat()
        except OSError:
            continue  # e.g. no pydoc_data: the build notes it
        entries.append([rel, st.st_size, st.st_mtime_ns])
    state = {"python": platform.python_version(), "corpus_version": CORPUS_VERSION, "root": str(root),
             "val_modulus": VAL_MODULUS, "generated_mark": GENERATED_MARK, "files": entries}
    return {"files": len(entries), "sha256": sha256_text(json.dumps(state))}


def is_val(group: str) -> bool:
    """Deterministic split: the same source file always lands on the same side, on every machine."""
    return int(hashlib.sha256(group.encode()).hexdigest(), 16) % VAL_MODULUS == 0


def _definitions(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Classes and functions in a statement list and every block nested in it, in source order.

    Docstrings live only in statement bodies, so expressions are never visited: 5x faster than ast.walk.
    """
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
        for block in ("body", "handlers", "orelse", "finalbody", "cases"):  # in the order they are written
            yield from _definitions(getattr(node, block, []))


def docstrings(source: bytes | str) -> str:
    """The module, class and function docstrings of one file, in source order, separated by blank lines."""
    tree = ast.parse(source)
    found = (ast.get_docstring(n) for n in [tree, *_definitions(tree.body)])
    return "\n\n".join(d for d in found if d)


def _record(rel: str, data: bytes, domains: list[str]) -> dict:
    return {"path": rel, "bytes": len(data), "sha256": sha256_bytes(data), "domains": domains}


def topic_docs(root: Path) -> tuple[list[Doc], list[dict], str | None]:
    """One prose document per language-reference topic, sorted by key; (docs, file records, note if missing)."""
    path = root / TOPICS_FILE
    if not path.is_file():
        return [], [], f"{TOPICS_FILE} not found under {root}: language-reference topics skipped"
    spec = importlib.util.spec_from_file_location("_minimodels_topics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the stdlib's own file: a dict literal of help texts
    docs = [Doc(f"prose/topics/{key}", "prose", f"topics/{key}", module.topics[key]) for key in sorted(module.topics)]
    return docs, [_record(TOPICS_FILE, path.read_bytes(), ["prose"])], None


def _read_source(path: Path) -> tuple[bytes, str, str | None]:
    """(raw bytes, text, reason to skip or None)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data, "", "not UTF-8"
    if GENERATED_MARK in text[:600]:
        return data, "", "generated codec table"
    return data, text, None


def library_docs(root: Path) -> tuple[list[Doc], list[Doc], list[dict], list[dict]]:
    """(prose docstring docs, code docs, file records, skipped files) for every file of `source_paths`."""
    prose, code, records, skipped = [], [], [], []
    for rel in source_paths(root):
        data, text, reason = _read_source(root / rel)
        try:
            doc_text = "" if reason else docstrings(data)
        except (SyntaxError, ValueError):
            reason = "this Python cannot parse it"
        if reason:
            skipped.append({"path": rel, "reason": reason})
            continue
        domains = []
        if doc_text:
            prose.append(Doc(f"prose/{rel}", "prose", rel, doc_text))
            domains.append("prose")
        if text.strip():
            code.append(Doc(f"code/{rel}", "code", rel, text))
            domains.append("code")
        if domains:
            records.append(_record(rel, data, domains))
    return prose, code, records, skipped


def split_stats(docs: list[Doc]) -> dict:
    stats = {"docs": len(docs), "chars": sum(len(d.text) for d in docs),
             "sha256": sha256_text(DOC_SEPARATOR.join(d.text for d in docs)), "by_domain": {}}
    for domain in DOMAINS:
        mine = [d for d in docs if d.domain == domain]
        stats["by_domain"][domain] = {"docs": len(mine), "chars": sum(len(d.text) for d in mine)}
    return stats


def build_corpus(root: Path | None = None) -> Corpus:
    """Read the sources under `root` (default: this Python's standard library) and split them; writes nothing.

    Documents come in a fixed order: prose (topics, then docstrings by path), then code (by path).
    """
    root = Path(root) if root is not None else stdlib_dir()
    topics, topic_files, note = topic_docs(root)
    prose, code, library_files, skipped = library_docs(root)
    docs = topics + prose + code
    train = [d for d in docs if not is_val(d.group)]
    val = [d for d in docs if is_val(d.group)]
    manifest = {
        "corpus_version": CORPUS_VERSION,
        "python_version": platform.python_version(),
        "stdlib_dir": str(root),
        "domains": list(DOMAINS),
        "excluded": {"folders": sorted(SKIP_DIRS), "generated": f"files whose first lines mention {GENERATED_MARK}"},
        "sources": topic_files + library_files,
        "notes": [note] if note else [],
        "skipped_files": skipped,
        "train": split_stats(train),
        "val": split_stats(val),
    }
    return Corpus(train, val, manifest)
