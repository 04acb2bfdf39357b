"""Tests for minimodels.data and minimodels.corpus: the two-domain corpus, its manifest, the checked cache,
and the batching helpers.

Most tests build a small synthetic source tree (milliseconds) in a temporary cache; `real` loads the course's
own standard-library corpus from the cache the lessons use (building it if that cache is cold). Every build and
load runs with the network blocked.
"""

import hashlib
import platform
import socket
import textwrap
from contextlib import contextmanager

import pytest
import torch

from minimodels import corpus as C
from minimodels import data as D

SMALL_VOCAB = 200


@contextmanager
def no_network():
    def refuse(*args, **kwargs):
        raise OSError("network access attempted during a corpus build")

    with pytest.MonkeyPatch.context() as mp:
        for name in ("socket", "create_connection", "getaddrinfo"):
            mp.setattr(socket, name, refuse)
        yield


def module_source(i: int) -> str:
    return textwrap.dedent(f'''\
        """Module {i}: helpers that count things."""

        import os  # a comment stays in the code


        class Counter{i}:
            """Counts up from {i}."""

            def step(self, n):
                """Add n to the count."""
                return n + {i}
        ''')


def write_tree(root, with_topics=True):
    """A small stand-in for the standard library: 40 modules plus every kind of file the corpus skips."""
    for i in range(40):
        (root / f"mod{i:02d}.py").write_text(module_source(i))
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")  # empty: no document
    (root / "pkg" / "core.py").write_text('"""The package core."""\nVALUE = 1\n')
    for skipped in ("test", "pkg/tests", "site-packages/thirdparty", "__pycache__"):
        (root / skipped).mkdir(parents=True)
        (root / skipped / "test_x.py").write_text('"""must not be read"""\n')
    (root / "cp9999.py").write_text('""" Python Character Mapping Codec generated from gencodec.py."""\nX = 1\n')
    (root / "latin.py").write_bytes(b'"""caf\xe9"""\n')  # not UTF-8
    (root / "broken.py").write_text("def f(:\n")  # this Python cannot parse it
    if with_topics:
        (root / "pydoc_data").mkdir()
        topics = {"assert": "The assert statement checks a condition.", "if": "The if statement chooses."}
        (root / "pydoc_data" / "topics.py").write_text(f"topics = {topics!r}\n")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("stdlib"))


@pytest.fixture(scope="module")
def small(tree, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp, no_network():
        mp.setenv("MINIMODELS_CACHE_DIR", str(cache))
        data = D.load_data(SMALL_VOCAB, root=tree)
    return cache, data


@pytest.fixture
def small_cache(small, monkeypatch):
    """The small build's cache, in a fresh test: env set, build_corpus counted."""
    monkeypatch.setenv("MINIMODELS_CACHE_DIR", str(small[0]))
    return small[1]


@pytest.fixture(scope="module")
def real():
    """The course's own corpus, from the cache the lessons use: `course.py test` builds it in an earlier step,
    so this is a warm load there; run alone on a cold cache it builds it (about 15 s of one core)."""
    with pytest.MonkeyPatch.context() as mp, no_network():
        data = D.load_data(1024)
        mp.setattr(D, "build_corpus", None)  # a warm load must not read the sources again
        warm = D.load_data(1024)
    return data, warm


def test_no_network_guard_works():
    with no_network(), pytest.raises(OSError, match="network"):
        socket.create_connection(("example.com", 80))


def test_source_selection_skips_tests_and_third_party(tree):
    paths = C.source_paths(tree)
    assert paths == sorted(paths)
    assert "mod00.py" in paths and "pkg/core.py" in paths
    assert not [p for p in paths if "test" in p or "site-packages" in p or "pycache" in p]


def test_documents_have_domains_and_files_stay_on_one_side(tree):
    corpus = C.build_corpus(tree)
    docs = corpus.train_docs + corpus.val_docs
    assert {d.domain for d in docs} == set(C.DOMAINS)
    code = {d.group: d for d in docs if d.domain == "code"}
    assert code["mod07.py"].text == (tree / "mod07.py").read_text()  # code is the file, docstrings kept
    prose = {d.group: d for d in docs if d.domain == "prose"}
    assert prose["mod07.py"].text == "Module 7: helpers that count things.\n\nCounts up from 7.\n\nAdd n to the count."
    assert prose["topics/assert"].name == "prose/topics/assert"
    for split, want in ((corpus.train_docs, False), (corpus.val_docs, True)):
        assert all(C.is_val(d.group) == want for d in split)
    val_groups = {d.group for d in corpus.val_docs}
    assert {d.domain for d in corpus.val_docs} == set(C.DOMAINS)  # validation holds both domains
    assert not val_groups & {d.group for d in corpus.train_docs}  # a file's code and docstrings: same side
    assert [d.domain for d in docs[:2]] == ["prose", "prose"] and docs[-1].domain == "code"


def test_skipped_files_say_why(tree):
    manifest = C.build_corpus(tree).manifest
    reasons = {s["path"]: s["reason"] for s in manifest["skipped_files"]}
    assert reasons == {"broken.py": "this Python cannot parse it", "cp9999.py": "generated codec table",
                       "latin.py": "not UTF-8"}
    assert {s["path"] for s in manifest["sources"]} >= {"pydoc_data/topics.py", "mod00.py", "pkg/core.py"}
    assert "pkg/__init__.py" not in {s["path"] for s in manifest["sources"]}  # empty: nothing went in


def test_split_is_deterministic(tree):
    a, b = C.build_corpus(tree), C.build_corpus(tree)
    assert a.train_docs == b.train_docs and a.val_docs == b.val_docs and a.manifest == b.manifest


def test_docstrings_in_source_order():
    source = textwrap.dedent('''\
        """module"""
        try:
            def a():
                """a"""
        except ImportError:
            def b():
                """b"""
        else:
            class C:
                """c"""
                async def d(self):
                    """d"""
        finally:
            if True:
                def e():
                    """e"""
        x = lambda: "not a docstring"
        ''')
    assert C.docstrings(source).split("\n\n") == ["module", "a", "b", "c", "d", "e"]


def test_missing_topics_are_noted(tmp_path):
    corpus = C.build_corpus(write_tree(tmp_path, with_topics=False))
    assert "topics" in corpus.manifest["notes"][0]
    assert not [d for d in corpus.train_docs + corpus.val_docs if d.group.startswith("topics/")]


def test_manifest_records_files_and_documents(small, tree):
    data = small[1]
    m = data.manifest
    for record in m["sources"]:
        raw = (tree / record["path"]).read_bytes()
        assert record["bytes"] == len(raw) and record["sha256"] == hashlib.sha256(raw).hexdigest()
    assert {tuple(r["domains"]) for r in m["sources"]} == {("prose",), ("prose", "code")}
    for split in D.SPLITS:
        spans = data.spans(split)
        ids = getattr(data, split)
        assert spans[0].start == 0 and spans[-1].start + spans[-1].tokens == len(ids) == m[split]["tokens"]
        assert all(a.start + a.tokens == b.start for a, b in zip(spans, spans[1:]))  # spans tile the stream
        assert sum(v["tokens"] for v in m[split]["by_domain"].values()) == len(ids)
    sums = (data.path / D.CHECKSUMS).read_text()
    for name in ("manifest.json", "tokenizer.json", "train.bin", "val.bin"):
        assert f"{hashlib.sha256((data.path / name).read_bytes()).hexdigest()}  {name}" in sums
    assert not [p for p in data.path.iterdir() if p.name.endswith(".tmp")]


def test_tokens_decode_back_to_documents(small, tree):
    data = small[1]
    corpus = C.build_corpus(tree)
    for split, docs in (("train", corpus.train_docs), ("val", corpus.val_docs)):
        ids = getattr(data, split)
        assert ids.dtype == torch.long and ids.dim() == 1
        for doc, span in zip(docs, data.spans(split), strict=True):
            assert (span.name, span.domain) == (doc.name, doc.domain)
            piece = ids[span.start:span.start + span.tokens].tolist()
            assert piece[-1] == data.tokenizer.eos_id and data.tokenizer.decode(piece[:-1]) == doc.text


def test_val_by_domain(small):
    data = small[1]
    domain = data.domain_ids("val")
    assert domain.shape == data.val.shape
    for i, name in enumerate(D.DOMAINS):
        expected = torch.cat([data.val[s.start:s.start + s.tokens] for s in data.spans("val") if s.domain == name])
        assert torch.equal(data.val_by_domain[name], expected)
        assert int((domain == i).sum()) == len(expected) == data.manifest["val"]["by_domain"][name]["tokens"]
    assert len(data.train_by_domain["code"]) + len(data.train_by_domain["prose"]) == len(data.train)


def test_tokenizer_sample_takes_all_prose_and_every_sixth_code_document():
    docs = [C.Doc(f"{dom}/{i}", dom, str(i), f"{dom}{i}") for dom in ("code", "prose") for i in range(7)]
    assert D.tokenizer_sample(docs).split("\n\n") == [f"prose{i}" for i in range(7)] + ["code0", "code6"]


def test_warm_load_reads_no_source(small_cache, tree, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a warm load parsed the sources")

    monkeypatch.setattr(D, "build_corpus", refuse)
    monkeypatch.setattr(C, "docstrings", refuse)
    again = D.load_data(SMALL_VOCAB, root=tree)
    assert again.path == small_cache.path and torch.equal(again.train, small_cache.train)
    assert again.tokenizer == small_cache.tokenizer and without_timings(again) == without_timings(small_cache)


def test_cache_key_follows_sources_and_vocab(tmp_path):
    root = write_tree(tmp_path)
    key = D.cache_key(SMALL_VOCAB, root)
    assert D.cache_key(SMALL_VOCAB, root) == key and D.cache_key(300, root) != key
    (root / "mod03.py").write_text(module_source(3) + "# edited\n")
    assert D.cache_key(SMALL_VOCAB, root) != key
    (root / "test" / "test_x.py").write_text("# tests do not go in, so they do not change the key\n")
    edited = D.cache_key(SMALL_VOCAB, root)
    assert D.cache_key(SMALL_VOCAB, root) == edited


def without_timings(data):
    return {k: v for k, v in data.manifest.items() if k != "timings_s"}


def flip_bit(path, offset, bit):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 1 << bit
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("name", ["train.bin", "val.bin", "tokenizer.json", "manifest.json"])
def test_flipped_bit_is_reported_and_rebuilt(small_cache, tree, name):
    path = small_cache.path / name
    good = path.read_bytes()
    flip_bit(path, 1 if name.endswith(".bin") else len(good) // 2, 0)  # a high byte: id + 256
    with pytest.warns(RuntimeWarning, match=f"{name} is corrupt"):
        again = D.load_data(SMALL_VOCAB, root=tree)
    if name != "manifest.json":  # the manifest records the rebuild's own timings
        assert path.read_bytes() == good
    assert without_timings(again) == without_timings(small_cache)
    assert torch.equal(again.train, small_cache.train) and torch.equal(again.val, small_cache.val)


def test_ids_out_of_range_are_rejected_even_with_matching_checksums(small_cache, tree):
    folder = small_cache.path
    flip_bit(folder / "train.bin", 1, 0)  # a consistent forgery: the checksum file is updated too
    new_sum = hashlib.sha256((folder / "train.bin").read_bytes()).hexdigest()
    lines = [f"{new_sum}  train.bin" if line.endswith("  train.bin") else line
             for line in (folder / D.CHECKSUMS).read_text().splitlines()]
    (folder / D.CHECKSUMS).write_text("\n".join(lines) + "\n")
    with pytest.warns(RuntimeWarning, match=f"train.bin holds token ids outside \\[0, {SMALL_VOCAB}\\)"):
        again = D.load_data(SMALL_VOCAB, root=tree)
    assert int(again.train.max()) < SMALL_VOCAB and torch.equal(again.train, small_cache.train)


def test_unfinished_build_is_rebuilt_quietly(small_cache, tree, recwarn):
    (small_cache.path / D.CHECKSUMS).unlink()  # what an interrupted build leaves
    again = D.load_data(SMALL_VOCAB, root=tree)
    assert not [w for w in recwarn if "data cache" in str(w.message)]
    assert torch.equal(again.val, small_cache.val) and (small_cache.path / D.CHECKSUMS).is_file()


def test_failed_build_leaves_nothing_behind(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMODELS_CACHE_DIR", str(tmp_path))

    def crash(*args):
        raise KeyboardInterrupt  # e.g. Ctrl-C halfway through the build

    monkeypatch.setattr(D, "_build", crash)
    with pytest.raises(KeyboardInterrupt):
        D.load_data(SMALL_VOCAB, root=tree)
    assert list(tmp_path.iterdir()) == []


def test_a_finished_build_is_published_whole(small_cache, tree, tmp_path, monkeypatch):
    monkeypatch.setenv("MINIMODELS_CACHE_DIR", str(tmp_path))
    data = D.load_data(SMALL_VOCAB, root=tree)
    assert [p.name for p in tmp_path.iterdir()] == [data.path.name]  # no scratch folder left
    assert sorted(p.name for p in data.path.iterdir()) == sorted(
        [D.CHECKSUMS, "manifest.json", "tokenizer.json", "train.bin", "val.bin"])
    assert torch.equal(data.train, small_cache.train)
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "train.bin").write_bytes(b"old")
    D._publish(data.path, stale)  # a finished build replaces a broken one whole
    assert (stale / "train.bin").read_bytes() != b"old" and (stale / D.CHECKSUMS).is_file()
    with pytest.raises(OSError):
        D._publish(tmp_path / "missing", tmp_path / "never-built")


def test_cache_dir_expands_user_and_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MINIMODELS_CACHE_DIR", "~/mm-cache")
    assert D.cache_dir() == tmp_path / "mm-cache"
    monkeypatch.setenv("MM_TEST_ROOT", str(tmp_path / "x"))
    monkeypatch.setenv("MINIMODELS_CACHE_DIR", "$MM_TEST_ROOT/cache")
    assert D.cache_dir() == tmp_path / "x" / "cache"
    monkeypatch.delenv("MINIMODELS_CACHE_DIR")
    assert D.cache_dir() == tmp_path / ".cache" / "minimodels"


def test_unwritable_cache_dir_is_named_before_the_build(monkeypatch, tmp_path, tree, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MINIMODELS_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(D, "build_corpus", lambda *a: pytest.fail("the build started before the check"))
    with pytest.raises(D.CacheDirError, match=f"cannot write the data cache in {blocker / 'cache'}.*"
                                             "set MINIMODELS_CACHE_DIR"):
        D.load_data(SMALL_VOCAB, root=tree)
    monkeypatch.setattr(D, "stdlib_dir", lambda: tree)
    with pytest.raises(SystemExit, match="error: cannot write the data cache"):
        D.main(["--vocab-size", str(SMALL_VOCAB)])


def test_cli_prints_summary_with_domains(small_cache, tree, monkeypatch, capsys):
    monkeypatch.setattr(D, "stdlib_dir", lambda: tree)
    D.main(["--vocab-size", str(SMALL_VOCAB)])
    out = capsys.readouterr().out
    val_code = small_cache.manifest["val"]["by_domain"]["code"]["tokens"]
    assert str(small_cache.path) in out and f"{len(small_cache.train):,} tokens" in out
    assert f"code {small_cache.manifest['val']['by_domain']['code']['docs']} docs" in out
    assert f"{val_code:,} tokens" in out and "prose" in out


def test_real_corpus(real):
    data, warm = real
    m = data.manifest
    assert m["python_version"] == platform.python_version()
    assert data.tokenizer.vocab_size == 1024
    assert len(data.train) > 4_000_000  # the gpu profile's 9.8M tokens are about two passes
    for split in D.SPLITS:
        assert all(m[split]["by_domain"][d]["tokens"] > 50_000 for d in D.DOMAINS)
    assert all(len(data.val_by_domain[d]) > 50_000 for d in D.DOMAINS)
    paths = [s["path"] for s in m["sources"]]
    assert len(paths) > 500 and not [p for p in paths if "/test/" in p or p.startswith("test/")]
    first_code = next(s for s in data.spans("train") if s.domain == "code")
    text = (D.stdlib_dir() / first_code.name.removeprefix("code/")).read_text()
    ids = data.train[first_code.start:first_code.start + first_code.tokens - 1].tolist()
    assert data.tokenizer.decode(ids) == text
    assert warm.path == data.path and torch.equal(warm.train, data.train) and warm.manifest == m


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
