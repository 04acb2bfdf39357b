"""Tests for minimodels.data: the offline corpus, its manifest and cache, and the batching helpers.

Only the `built` fixture builds the real corpus (a few seconds), once for this file, with the network blocked.
"""

import hashlib
import importlib
import socket
from contextlib import contextmanager

import pytest
import torch

from minimodels import data as D


@contextmanager
def no_network():
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during a corpus build")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("socket", "create_connection", "getaddrinfo"):
            mp.setattr(socket, name, refuse)
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp, no_network():
        mp.setenv("MINIMODELS_CACHE_DIR", str(root))
        data = D.load_data(256)
    return root, data


@pytest.fixture(scope="module")
def corpus():
    return D.build_corpus()


@pytest.fixture
def in_cache(built, monkeypatch):
    monkeypatch.setenv("MINIMODELS_CACHE_DIR", str(built[0]))
    return built[1]


def test_no_network_guard_works():
    with no_network(), pytest.raises(OSError, match="network"):
        socket.create_connection(("example.com", 80))


def test_split_is_disjoint_and_deterministic(corpus):
    a, b = corpus, D.build_corpus()
    assert a.train_docs == b.train_docs and a.val_docs == b.val_docs
    train_names = {n for n, _ in a.train_docs}
    val_names = {n for n, _ in a.val_docs}
    assert not train_names & val_names
    assert all(D.is_val(n) for n in val_names) and not any(D.is_val(n) for n in train_names)
    assert 0.05 < len(val_names) / (len(val_names) + len(train_names)) < 0.2
    assert a.manifest["val"]["sha256"] == D.sha256_text(D.join_docs(a.val_docs))


def test_manifest_records_source_files(built):
    manifest = built[1].manifest
    sources = manifest["sources"]
    assert manifest["python_version"] == D.platform.python_version()
    assert len(sources) == len({s["path"] for s in sources}) > 100
    for record in (sources[0], sources[-1]):
        raw = (D.stdlib_dir() / record["path"]).read_bytes()
        assert record["bytes"] == len(raw)
        assert record["sha256"] == hashlib.sha256(raw).hexdigest()


def test_manifest_matches_files(built):
    data = built[1]
    m = data.manifest
    assert m["train"]["sha256"] == hashlib.sha256((data.path / "train.txt").read_bytes()).hexdigest()
    assert m["tokenizer"]["sha256"] == hashlib.sha256((data.path / "tokenizer.json").read_bytes()).hexdigest()
    assert m["tokenizer"]["vocab_size"] == data.tokenizer.vocab_size == 256
    assert (m["train"]["tokens"], m["val"]["tokens"]) == (len(data.train), len(data.val))
    assert not [p for p in data.path.iterdir() if p.name.endswith(".tmp")]


def test_tokens_decode_back_to_documents(built, corpus):
    data = built[1]
    assert data.train.dtype == torch.long and data.train.dim() == 1
    eos = data.tokenizer.eos_id
    ends = (data.train == eos).nonzero().flatten().tolist()
    assert len(ends) == len(corpus.train_docs)
    starts = [0] + [e + 1 for e in ends[:-1]]
    for (name, text), s, e in zip(corpus.train_docs, starts, ends):
        assert data.tokenizer.decode(data.train[s:e].tolist()) == text, name


def test_cache_reload_is_identical(built, in_cache):
    again = D.load_data(256)
    assert again.path == in_cache.path
    assert torch.equal(again.train, in_cache.train) and torch.equal(again.val, in_cache.val)
    assert again.tokenizer == in_cache.tokenizer
    assert D.cache_key(again.manifest, 256) != D.cache_key(again.manifest, 512)


def test_broken_cache_is_rebuilt(built, in_cache):
    folder = in_cache.path
    for name, junk in [("tokenizer.json", b"garbage"), ("val.pt", b"not a tensor"), ("manifest.json", b"{")]:
        good = (folder / name).read_bytes()
        (folder / name).write_bytes(junk)
        assert D._load_cached(folder) is None, name
        (folder / name).write_bytes(good)
    assert D._load_cached(folder) is not None
    (folder / "val.pt").unlink()
    again = D.load_data(256)
    assert torch.equal(again.val, in_cache.val) and again.tokenizer == in_cache.tokenizer


def test_cli_prints_summary(built, in_cache, capsys):
    D.main(["--vocab-size", "256"])
    out = capsys.readouterr().out
    assert str(in_cache.path) in out and f"{len(in_cache.train):,} tokens" in out


def test_missing_pydoc_data_is_skipped(monkeypatch):
    real_import = importlib.import_module

    def fake_import(name, *args):
        if name.startswith("pydoc_data"):
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(D.importlib, "import_module", fake_import)
    # skip the slow stdlib parse: only the topics source matters here
    fake_docs = [("stdlib/a.py", "doc a"), ("stdlib/b.py", "doc b")]
    monkeypatch.setattr(D, "stdlib_docs", lambda: (fake_docs, [], []))
    corpus = D.build_corpus()
    names = [n for n, _ in corpus.train_docs + corpus.val_docs]
    assert sorted(names) == ["stdlib/a.py", "stdlib/b.py"]
    assert "pydoc_data" in corpus.manifest["notes"][0]


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIMODELS_CACHE_DIR", str(tmp_path))
    assert D.cache_dir() == tmp_path
    monkeypatch.delenv("MINIMODELS_CACHE_DIR")
    assert D.cache_dir().name == "minimodels"


def test_get_batch_shapes_and_shift():
    ids = torch.arange(100)
    x, y = D.get_batch(ids, 8, 16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.long
    assert torch.equal(y, x + 1)  # with ids = arange, the next token is always id + 1
    assert torch.equal(x - x[:, :1], torch.arange(16).expand(8, 16))  # contiguous windows
    assert int(y.max()) <= 99


def test_get_batch_reproducible_from_generator_state():
    ids = torch.arange(1000)
    gen = torch.Generator().manual_seed(123)
    D.get_batch(ids, 4, 8, generator=gen)
    state = gen.get_state()
    first = D.get_batch(ids, 4, 8, generator=gen)
    gen.set_state(state)
    second = D.get_batch(ids, 4, 8, generator=gen)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    other = D.get_batch(ids, 4, 8, generator=torch.Generator().manual_seed(7))
    assert not torch.equal(first[0], other[0])


def test_eval_batches_are_fixed_and_cover_the_ids():
    ids = torch.arange(500)
    batches = list(D.iter_eval_batches(ids, 4, 10, 3))
    again = list(D.iter_eval_batches(ids, 4, 10, 3))
    assert len(batches) == 3 and all(x.shape == (4, 10) for x, _ in batches)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again))
    assert int(batches[0][0][0, 0]) == 0 and int(batches[-1][1][-1, -1]) == 499


def test_too_short_ids_raise():
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="seq_len \\+ 1 = 11"):
        D.get_batch(torch.arange(10), 2, 10, generator=gen)
    with pytest.raises(ValueError, match="at least"):
        next(D.iter_eval_batches(torch.arange(5), 2, 10, 1))
    x, y = D.get_batch(torch.arange(11), 2, 10, generator=gen)  # exactly seq_len + 1 is enough
    assert torch.equal(x[0], torch.arange(10))
