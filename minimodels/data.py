"""An offline text corpus built from what every Python installation carries, plus batching helpers.

What: documents from (1) Python's language-reference help text (`pydoc_data.topics`) and (2) the docstrings
of the standard library's top-level modules, split into train/validation by document, tokenized with our BPE
and cached as token id tensors next to a manifest (file hashes, sizes, counts) that says exactly what went in.
Why: the course must run without a network or a data download, and every learner must get the same data
(for the same Python version), so results are comparable and reproducible.
Taught in lessons/01_baseline_gpt.ipynb.

Run `python -m minimodels data` to build the cache and print a summary.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib
import io
import json
import os
import pickle
import platform
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from minimodels.tokenizer import BPETokenizer, atomic_write

# bump when the way documents are made or tokenized changes, so old caches are not reused
CORPUS_VERSION = 1
# joins the training documents into the one string the tokenizer learns from (in token space, <eos> separates)
DOC_SEPARATOR = "\n\n"
# one document in VAL_MODULUS goes to validation, picked by a hash of its name (~10%)
VAL_MODULUS = 10
Doc = tuple[str, str]  # (name, text)


@dataclass
class Corpus:
    """Documents split into train and validation, plus the manifest describing their sources."""

    train_docs: list[Doc]
    val_docs: list[Doc]
    manifest: dict = field(default_factory=dict)


@dataclass
class TokenData:
    """A trained tokenizer and the corpus as 1-D long token ids, documents ended by <eos>."""

    tokenizer: BPETokenizer
    train: Tensor  # (N_train,)
    val: Tensor  # (N_val,)
    manifest: dict
    path: Path  # cache folder holding the files below


def cache_dir() -> Path:
    """$MINIMODELS_CACHE_DIR if set, else ~/.cache/minimodels."""
    return Path(os.environ.get("MINIMODELS_CACHE_DIR") or Path.home() / ".cache" / "minimodels")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    return sha256_bytes(text.encode("utf-8", "surrogatepass"))


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _file_record(path: Path, root: Path) -> dict:
    data = path.read_bytes()
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:  # e.g. pydoc_data installed outside the stdlib folder
        rel = str(path)
    return {"path": rel, "bytes": len(data), "sha256": sha256_bytes(data)}


def topic_docs() -> tuple[list[Doc], list[dict], str | None]:
    """One document per language-reference topic, sorted by key; (docs, file records, note if missing)."""
    try:
        topics = importlib.import_module("pydoc_data.topics")
    except ImportError:
        return [], [], "pydoc_data is not installed: language-reference topics skipped"
    docs = [(f"topics/{key}", topics.topics[key]) for key in sorted(topics.topics)]
    return docs, [_file_record(Path(topics.__file__), stdlib_dir())], None


def module_docstrings(source: bytes) -> str:
    """The module, class and function docstrings of one file, in source order, separated by blank lines."""
    tree = ast.parse(source)
    kinds = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, kinds)]
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))  # ast.walk is breadth-first; read them top to bottom
    docs = (ast.get_docstring(n) for n in nodes)
    return "\n\n".join(d for d in docs if d)


def stdlib_docs() -> tuple[list[Doc], list[dict], list[str]]:
    """One document per top-level stdlib *.py file (sorted by name); (docs, file records, skipped names)."""
    root = stdlib_dir()
    docs, records, skipped = [], [], []
    for path in sorted(root.glob("*.py")):
        try:
            text = module_docstrings(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            skipped.append(path.name)  # a file this Python cannot parse or read
            continue
        if text:
            docs.append((f"stdlib/{path.name}", text))
            records.append(_file_record(path, root))
    return docs, records, skipped


def is_val(name: str) -> bool:
    """Deterministic split: the same document always lands on the same side, on every machine."""
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % VAL_MODULUS == 0


def join_docs(docs: list[Doc]) -> str:
    return DOC_SEPARATOR.join(text for _, text in docs)


def split_stats(docs: list[Doc]) -> dict:
    return {"docs": len(docs), "chars": sum(len(t) for _, t in docs), "sha256": sha256_text(join_docs(docs))}


def build_corpus() -> Corpus:
    """Read both sources and split them; pure (writes nothing) and takes about a second."""
    topics, topic_files, note = topic_docs()
    modules, module_files, skipped = stdlib_docs()
    docs = topics + modules
    train = [d for d in docs if not is_val(d[0])]
    val = [d for d in docs if is_val(d[0])]
    manifest = {
        "corpus_version": CORPUS_VERSION,
        "python_version": platform.python_version(),
        "stdlib_dir": str(stdlib_dir()),
        "sources": topic_files + module_files,
        "notes": [note] if note else [],
        "skipped_files": skipped,
        "train": split_stats(train),
        "val": split_stats(val),
        "val_doc_names": [name for name, _ in val],
    }
    return Corpus(train, val, manifest)


def encode_docs(tokenizer: BPETokenizer, docs: list[Doc]) -> Tensor:
    """Encode each document and end it with <eos>, so the model sees where documents stop."""
    ids: list[int] = []
    for _, text in docs:
        ids.extend(tokenizer.encode(text))
        ids.append(tokenizer.eos_id)
    return torch.tensor(ids, dtype=torch.long)  # (N,)


def cache_key(manifest: dict, vocab_size: int) -> str:
    """Short hash naming the cache subfolder: changes with Python version, corpus text or vocab size."""
    parts = [manifest["python_version"], str(CORPUS_VERSION), manifest["train"]["sha256"],
             manifest["val"]["sha256"], str(vocab_size)]
    return sha256_text("|".join(parts))[:12]


def _save_tensor(path: Path, ids: Tensor) -> None:
    buffer = io.BytesIO()
    torch.save(ids.to(torch.int32), buffer)  # int32 halves the file; ids are far below 2**31
    atomic_write(path, buffer.getvalue())


def _load_cached(folder: Path) -> TokenData | None:
    """Load a finished build, or None if any piece is missing or does not match the manifest."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        tok_bytes = (folder / "tokenizer.json").read_bytes()
        if sha256_bytes(tok_bytes) != manifest["tokenizer"]["sha256"]:
            return None
        train = torch.load(folder / "train.pt", weights_only=True).long()
        val = torch.load(folder / "val.pt", weights_only=True).long()
        if (len(train), len(val)) != (manifest["train"]["tokens"], manifest["val"]["tokens"]):
            return None
        return TokenData(BPETokenizer.load(folder / "tokenizer.json"), train, val, manifest, folder)
    except (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError):
        return None  # a missing, partial or foreign file: build again


def _build(corpus: Corpus, vocab_size: int, folder: Path, corpus_s: float) -> TokenData:
    t0 = time.perf_counter()
    train_text, val_text = join_docs(corpus.train_docs), join_docs(corpus.val_docs)
    tokenizer = BPETokenizer.train(train_text, vocab_size)
    t1 = time.perf_counter()
    train, val = encode_docs(tokenizer, corpus.train_docs), encode_docs(tokenizer, corpus.val_docs)
    t2 = time.perf_counter()
    atomic_write(folder / "train.txt", train_text.encode("utf-8", "surrogatepass"))
    atomic_write(folder / "val.txt", val_text.encode("utf-8", "surrogatepass"))
    tokenizer.save(folder / "tokenizer.json")
    _save_tensor(folder / "train.pt", train)
    _save_tensor(folder / "val.pt", val)
    manifest = json.loads(json.dumps(corpus.manifest))  # a deep copy we can extend
    manifest["train"]["tokens"], manifest["val"]["tokens"] = len(train), len(val)
    tok_sha = sha256_bytes((folder / "tokenizer.json").read_bytes())
    manifest["tokenizer"] = {"vocab_size": tokenizer.vocab_size, "requested_vocab_size": vocab_size,
                             "sha256": tok_sha, "unk_in_val": int((val == tokenizer.unk_id).sum())}
    total_s = corpus_s + time.perf_counter() - t0
    manifest["timings_s"] = {"corpus": round(corpus_s, 3), "tokenizer_train": round(t1 - t0, 3),
                             "encode": round(t2 - t1, 3), "total": round(total_s, 3)}
    # the manifest goes last: its presence marks a complete build
    atomic_write(folder / "manifest.json", json.dumps(manifest, indent=1).encode())
    return TokenData(tokenizer, train, val, manifest, folder)


def load_data(vocab_size: int = 1024, *, rebuild: bool = False) -> TokenData:
    """Token ids for the corpus, loaded from the cache or built (a few seconds) and cached."""
    t0 = time.perf_counter()
    corpus = build_corpus()
    corpus_s = time.perf_counter() - t0
    folder = cache_dir() / f"corpus-{cache_key(corpus.manifest, vocab_size)}"
    data = None if rebuild else _load_cached(folder)
    return data if data is not None else _build(corpus, vocab_size, folder, corpus_s)


def _check_length(ids: Tensor, seq_len: int) -> None:
    if ids.dim() != 1 or len(ids) < seq_len + 1:
        raise ValueError(
            f"need a 1-D tensor of at least seq_len + 1 = {seq_len + 1} token ids to make (x, y) pairs, "
            f"got shape {tuple(ids.shape)}"
        )


def _windows(ids: Tensor, offsets: Tensor, seq_len: int, device: str | torch.device) -> tuple[Tensor, Tensor]:
    idx = offsets[:, None] + torch.arange(seq_len + 1)  # (B, T+1)
    chunk = ids[idx].long()  # (B, T+1)
    x, y = chunk[:, :-1], chunk[:, 1:]  # (B, T) each; y[t] is the token after x[t]
    return x.to(device), y.to(device)


def get_batch(ids: Tensor, batch_size: int, seq_len: int, *, generator: torch.Generator,
              device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """Random windows (x, y), each (B, T) long, with y = x shifted left by one.

    Offsets come only from `generator` (a CPU generator): restoring its state resumes training exactly.
    """
    _check_length(ids, seq_len)
    offsets = torch.randint(0, len(ids) - seq_len, (batch_size,), generator=generator)  # (B,)
    return _windows(ids, offsets, seq_len, device)


def iter_eval_batches(ids: Tensor, batch_size: int, seq_len: int, n_batches: int, *,
                      device: str | torch.device = "cpu") -> Iterator[tuple[Tensor, Tensor]]:
    """n_batches of (x, y) at fixed, evenly spaced offsets: no randomness, every eval sees the same tokens."""
    _check_length(ids, seq_len)
    last = len(ids) - seq_len - 1
    offsets = torch.linspace(0, last, batch_size * n_batches, dtype=torch.float64).long()  # (n_batches * B,)
    for chunk in offsets.split(batch_size):
        yield _windows(ids, chunk, seq_len, device)


def summary(data: TokenData, call_s: float) -> str:
    m = data.manifest
    lines = [f"cache: {data.path}", f"python {m['python_version']}, {len(m['sources'])} source files",
             *[f"note: {note}" for note in m["notes"]]]
    for split in ("train", "val"):
        s = m[split]
        lines.append(f"{split}: {s['docs']} docs, {s['chars']:,} chars, {s['tokens']:,} tokens")
    lines.append(f"tokenizer: vocab {m['tokenizer']['vocab_size']}, sha256 {m['tokenizer']['sha256'][:12]}")
    built = ", ".join(f"{k} {v:.2f} s" for k, v in m["timings_s"].items())
    lines.append(f"cold build took: {built}; this call took {call_s:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="build (or load) the cached MiniSeek corpus")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--rebuild", action="store_true", help="ignore the cache and build again")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    data = load_data(args.vocab_size, rebuild=args.rebuild)
    print(summary(data, time.perf_counter() - t0))


if __name__ == "__main__":
    main()
