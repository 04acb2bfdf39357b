"""The corpus as token ids: a BPE tokenizer trained on it, a checked cache, and batching helpers.

What: `load_data()` returns `TokenData`: the tokenizer, the train and validation token streams (documents ended
by <eos>), where each document and domain sits in them, and the manifest (sources, sizes, sha256, counts).
The corpus itself (two domains, prose and code, from the standard library) is made in minimodels/corpus.py.
Why: the course runs offline and every learner gets the same tokens (for the same Python version). A build
takes about 15 s of one CPU core, so it is cached; the cache is keyed on the sources' file metadata (a warm
load reads no source), and every cached file is checked against its sha256 on load, so a corrupted file is
rebuilt, never used.
Taught in lessons/01_baseline_gpt.ipynb.

Run `python -m minimodels data` to build the cache and print a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from minimodels.corpus import (  # noqa: F401  (re-exported: lessons and tests use them through data)
    CORPUS_VERSION,
    DOMAINS,
    Corpus,
    Doc,
    build_corpus,
    is_val,
    sha256_bytes,
    sha256_text,
    source_fingerprint,
    stdlib_dir,
)
from minimodels.tokenizer import FILE_FORMAT, BPETokenizer, atomic_write

CACHE_ENV = "MINIMODELS_CACHE_DIR"
# the tokenizer learns its merges from a sample of the training split: all its prose and every 6th code document,
# about 2M characters of each domain, so neither domain's pieces crowd the other's out of the vocabulary
# (validation: 2.55 characters per token on prose, 2.54 on code). Learning from a third of the code instead of
# all of it took 40% of the time (3.7 s vs 9.2 s) and changed its characters per token by 0.4% (2.487 vs 2.496).
TOKENIZER_SAMPLE_EVERY = {"prose": 1, "code": 6}
TOKEN_FILES = {"train": "train.bin", "val": "val.bin"}  # little-endian ids, dtype in the manifest
CHECKSUMS = "SHA256SUMS"  # written last: lists the sha256 of every other file; its presence marks a full build
SPLITS = ("train", "val")


@dataclass(frozen=True)
class DocSpan:
    """Where one document sits in a split's token stream: ids[start:start + tokens], its <eos> included."""

    name: str
    domain: str
    start: int
    tokens: int


@dataclass
class TokenData:
    """A trained tokenizer and the corpus as 1-D long token ids, documents ended by <eos>."""

    tokenizer: BPETokenizer
    train: Tensor  # (N_train,)
    val: Tensor  # (N_val,)
    manifest: dict
    path: Path  # cache folder holding the files below

    def spans(self, split: str) -> list[DocSpan]:
        """Every document of `split` ("train" or "val") in stream order, with its domain and token offsets."""
        return [DocSpan(*row) for row in self.manifest["documents"][split]]

    def domain_ids(self, split: str) -> Tensor:
        """(N,) long: each token's domain as an index into DOMAINS, e.g. to colour tokens by domain."""
        spans = self.spans(split)
        ids = torch.tensor([DOMAINS.index(s.domain) for s in spans], dtype=torch.long)  # (n_docs,)
        return ids.repeat_interleave(torch.tensor([s.tokens for s in spans], dtype=torch.long))  # (N,)

    def by_domain(self, split: str) -> dict[str, Tensor]:
        """{domain: that domain's documents of `split`, in order, as one 1-D token stream}."""
        ids, domain = getattr(self, split), self.domain_ids(split)
        return {name: ids[domain == i] for i, name in enumerate(DOMAINS)}

    @cached_property
    def val_by_domain(self) -> dict[str, Tensor]:
        """Validation tokens per domain: evaluate on each to see which domain a model has learned."""
        return self.by_domain("val")

    @cached_property
    def train_by_domain(self) -> dict[str, Tensor]:
        return self.by_domain("train")


class CacheDirError(OSError):
    """The cache folder cannot be written; the message names it and how to choose another."""


def cache_dir() -> Path:
    """$MINIMODELS_CACHE_DIR if set (`~` and $VARS expanded), else ~/.cache/minimodels."""
    chosen = os.environ.get(CACHE_ENV)
    if not chosen:
        return Path.home() / ".cache" / "minimodels"
    return Path(os.path.expanduser(os.path.expandvars(chosen)))


def check_writable(folder: Path) -> None:
    """Create `folder` and write a scratch file there, or raise CacheDirError saying what to change."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise CacheDirError(
            f"cannot write the data cache in {folder} ({err.strerror or err}): set {CACHE_ENV} to a folder you "
            f"can write, e.g. `export {CACHE_ENV}=/tmp/minimodels-cache` (in a notebook: "
            f"os.environ['{CACHE_ENV}'] = '/tmp/minimodels-cache' before load_data)"
        ) from err


def cache_key(vocab_size: int, root: Path | None = None) -> str:
    """Short hash naming the cache subfolder: changes with Python, corpus version, source files, vocab size
    or the recipe (tokenizer sample, file format), so a cache is never reused for a build it did not come from."""
    fingerprint = source_fingerprint(Path(root) if root is not None else stdlib_dir())
    recipe = json.dumps([TOKENIZER_SAMPLE_EVERY, TOKEN_FILES, FILE_FORMAT], sort_keys=True)
    return sha256_text(f"{fingerprint['sha256']}|{vocab_size}|{recipe}")[:12]


def token_dtype(vocab_size: int) -> str:
    return "<i2" if vocab_size <= 2**15 else "<i4"  # int16 holds every id of a vocabulary up to 32,768


def tokenizer_sample(docs: list[Doc]) -> str:
    """Every TOKENIZER_SAMPLE_EVERY[domain]-th document of each domain, joined: what the merges are learned from."""
    picked = []
    for domain in DOMAINS:
        picked += [d.text for d in docs if d.domain == domain][::TOKENIZER_SAMPLE_EVERY[domain]]
    return "\n\n".join(picked)


def encode_docs(tokenizer: BPETokenizer, docs: list[Doc]) -> tuple[Tensor, list[list]]:
    """Each document's ids followed by <eos>, as one (N,) long tensor, and [name, domain, start, tokens] rows."""
    ids: list[int] = []
    rows = []
    for doc in docs:
        start = len(ids)
        ids.extend(tokenizer.encode(doc.text))
        ids.append(tokenizer.eos_id)
        rows.append([doc.name, doc.domain, start, len(ids) - start])
    return torch.tensor(ids, dtype=torch.long), rows


def _split_tokens(manifest: dict, split: str, ids: Tensor, rows: list[list]) -> None:
    stats = manifest[split]
    stats["tokens"] = len(ids)
    for domain in DOMAINS:
        stats["by_domain"][domain]["tokens"] = sum(r[3] for r in rows if r[1] == domain)


def _build(corpus: Corpus, vocab_size: int, folder: Path, key: str, corpus_s: float) -> TokenData:
    """Train the tokenizer, encode both splits and write them to `folder`; the checksum file goes last."""
    t0 = time.perf_counter()
    sample = tokenizer_sample(corpus.train_docs)
    alphabet = set().union(*(d.text for d in corpus.train_docs))
    tokenizer = BPETokenizer.train(sample, vocab_size, alphabet=alphabet)
    t1 = time.perf_counter()
    manifest = json.loads(json.dumps(corpus.manifest))  # a deep copy we can extend
    streams, documents = {}, {}
    for split in SPLITS:
        docs = corpus.train_docs if split == "train" else corpus.val_docs
        streams[split], documents[split] = encode_docs(tokenizer, docs)
        _split_tokens(manifest, split, streams[split], documents[split])
    t2 = time.perf_counter()
    dtype = token_dtype(tokenizer.vocab_size)
    files = {"tokenizer.json": tokenizer.to_json().encode("ascii")}
    files.update({TOKEN_FILES[s]: streams[s].numpy().astype(dtype).tobytes() for s in SPLITS})
    for name, data in files.items():
        atomic_write(folder / name, data)
    manifest.update(cache_key=key, token_dtype=dtype, documents=documents)
    manifest["tokenizer"] = {"vocab_size": tokenizer.vocab_size, "requested_vocab_size": vocab_size,
                             "sha256": sha256_bytes(files["tokenizer.json"]), "trained_on_chars": len(sample),
                             "unk_in_val": int((streams["val"] == tokenizer.unk_id).sum())}
    manifest["timings_s"] = {"corpus": round(corpus_s, 3), "tokenizer_train": round(t1 - t0, 3),
                             "encode": round(t2 - t1, 3), "save": round(time.perf_counter() - t2, 3)}
    files["manifest.json"] = json.dumps(manifest, indent=1).encode()
    atomic_write(folder / "manifest.json", files["manifest.json"])
    sums = "".join(f"{sha256_bytes(data)}  {name}\n" for name, data in sorted(files.items()))
    atomic_write(folder / CHECKSUMS, sums.encode())
    return TokenData(tokenizer, streams["train"], streams["val"], manifest, folder)


def _read_checked(folder: Path) -> tuple[dict[str, bytes] | None, str | None]:
    """(file name -> bytes, None) if every file matches CHECKSUMS; (None, problem) else; (None, None) if unbuilt."""
    try:
        lines = (folder / CHECKSUMS).read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None, None  # never built, or a build was interrupted: build quietly
    except (OSError, UnicodeDecodeError) as err:
        return None, f"{folder / CHECKSUMS} is unreadable ({err})"
    expected = {}
    for line in lines:  # "<sha256>  <name>", as sha256sum writes it: `sha256sum -c SHA256SUMS` checks a cache
        digest, _, name = line.partition("  ")
        expected[name] = digest
    files = {}
    for name in ("manifest.json", "tokenizer.json", *TOKEN_FILES.values()):
        try:
            files[name] = (folder / name).read_bytes()
        except OSError as err:
            return None, f"{folder / name} is unreadable ({err.strerror or err})"
        if name not in expected or sha256_bytes(files[name]) != expected[name]:
            return None, f"{folder / name} is corrupt (its sha256 does not match {CHECKSUMS})"
    return files, None


def _parse_cached(folder: Path, files: dict[str, bytes], key: str) -> tuple[TokenData | None, str | None]:
    """Parse checksummed files and check they fit together: lengths, ids in range, the cache key."""
    manifest = json.loads(files["manifest.json"])
    if manifest.get("cache_key") != key:
        return None, f"{folder / 'manifest.json'} belongs to another build"
    tokenizer = BPETokenizer.from_json(files["tokenizer.json"].decode("ascii"), source=str(folder))
    streams = {}
    for split in SPLITS:
        raw = np.frombuffer(files[TOKEN_FILES[split]], dtype=manifest["token_dtype"])
        ids = torch.from_numpy(raw.astype(np.int64))  # (N,)
        name = folder / TOKEN_FILES[split]
        if len(ids) != manifest[split]["tokens"]:
            return None, f"{name} has {len(ids):,} tokens, the manifest says {manifest[split]['tokens']:,}"
        if len(ids) and not (0 <= int(ids.min()) and int(ids.max()) < tokenizer.vocab_size):
            return None, (f"{name} holds token ids outside [0, {tokenizer.vocab_size}) "
                          f"(min {int(ids.min())}, max {int(ids.max())})")
        streams[split] = ids
    return TokenData(tokenizer, streams["train"], streams["val"], manifest, folder), None


def _load_cached(folder: Path, key: str) -> tuple[TokenData | None, str | None]:
    """(data, None) for a complete, intact build; else (None, what is wrong), or (None, None) if not built."""
    files, problem = _read_checked(folder)
    if files is None:
        return None, problem
    try:
        return _parse_cached(folder, files, key)
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as err:
        return None, f"{folder} holds files this version cannot read ({type(err).__name__}: {err})"


def load_data(vocab_size: int = 1024, *, rebuild: bool = False, root: str | Path | None = None) -> TokenData:
    """Token ids for the corpus, loaded from the cache (well under a second) or built (seconds) and cached.

    `root` is the folder the sources are read from (default: this Python's standard library; tests pass a
    small tree). A cached file that fails its checksum is reported (which file) and the cache is rebuilt.
    """
    root = Path(root) if root is not None else stdlib_dir()
    key = cache_key(vocab_size, root)
    folder = cache_dir() / f"corpus-{key}"
    if not rebuild:
        data, problem = _load_cached(folder, key)
        if data is not None:
            return data
        if problem:
            warnings.warn(f"data cache: {problem}; rebuilding it", RuntimeWarning, stacklevel=2)
    check_writable(folder.parent)  # before the build, not after
    t0 = time.perf_counter()
    corpus = build_corpus(root)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}-building-", dir=folder.parent))
    building.chmod(0o755)  # mkdtemp makes it owner-only; a cache should be readable like any other folder
    try:
        data = _build(corpus, vocab_size, building, key, time.perf_counter() - t0)
        _publish(building, folder)
    finally:
        shutil.rmtree(building, ignore_errors=True)  # gone already unless the build failed
    data.path = folder
    return data


def _publish(building: Path, folder: Path) -> None:
    """Move a finished build into place in one rename: a reader never sees half a cache, even while another
    process builds the same one (then the first rename wins; both builds hold the same tokens)."""
    shutil.rmtree(folder, ignore_errors=True)  # a corrupt, foreign or unfinished build
    try:
        os.rename(building, folder)
    except OSError:
        if not (folder / CHECKSUMS).is_file():
            raise  # not another process's finished build: a real error


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
    lines = [f"cache: {data.path}", f"python {m['python_version']}, {len(m['sources'])} source files, "
             f"{len(m['skipped_files'])} skipped", *[f"note: {note}" for note in m["notes"]]]
    for split in SPLITS:
        s = m[split]
        per = "; ".join(f"{d} {v['docs']} docs, {v['chars']:,} chars, {v['tokens']:,} tokens"
                        for d, v in s["by_domain"].items())
        lines.append(f"{split}: {s['docs']} docs, {s['chars']:,} chars, {s['tokens']:,} tokens ({per})")
    tok = m["tokenizer"]
    lines.append(f"tokenizer: vocab {tok['vocab_size']}, learned from {tok['trained_on_chars']:,} chars, "
                 f"sha256 {tok['sha256'][:12]}, <unk> in val: {tok['unk_in_val']}")
    built = ", ".join(f"{k} {v:.2f} s" for k, v in m["timings_s"].items())
    size = sum(p.stat().st_size for p in data.path.iterdir() if p.is_file())
    lines.append(f"cold build took: {built}; cache {size / 1e6:.1f} MB; this call took {call_s:.2f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="build (or load) the cached MiniSeek corpus")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--rebuild", action="store_true", help="ignore the cache and build again")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        data = load_data(args.vocab_size, rebuild=args.rebuild)
    except CacheDirError as err:
        sys.exit(f"error: {err}")
    print(summary(data, time.perf_counter() - t0))


if __name__ == "__main__":
    main()
