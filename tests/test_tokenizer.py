"""Tests for minimodels.tokenizer: round trips, readable merges, determinism, save/load, errors."""

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minimodels.tokenizer import EOS_ID, UNK_ID, BPETokenizer, learn_merges, pretokenize

SAMPLE = (
    "The cat sat on the mat. The dog sat on the log, and the cat saw the dog!\n"
    "    def the_function(x): return x + 42  # the answer\n\n"
    "Numbers like 3.14 and 2024 mix with words; isn't it nice? Yes -- it's fine.\n"
) * 20


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(SAMPLE, 120)


def naive_merges(text: str, vocab_size: int) -> list[tuple[str, str]]:
    """Reference BPE that recounts every pair after each merge; slow but obviously right."""
    words = {tuple(w): c for w, c in Counter(pretokenize(text)).items()}
    vocab = {"<unk>", "<eos>", *text}
    merges = []
    while len(vocab) < vocab_size:
        pairs = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        vocab.add(best[0] + best[1])
        new_words = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if w[i : i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += c
        words = new_words
    return merges


@given(st.text())
def test_pretokenize_covers_every_character(text):
    assert "".join(pretokenize(text)) == text


def test_pretokenize_pieces():
    assert pretokenize("Hello  world,\n\n  x_1 = 42!!") == \
        ["Hello", " ", " world", ",", "\n\n", " ", " x_", "1", " =", " 42", "!!"]


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=sorted(set(SAMPLE)), max_size=300))
def test_round_trip_over_alphabet(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_round_trip_training_text(tok):
    ids = tok.encode(SAMPLE)
    assert tok.decode(ids) == SAMPLE
    assert len(ids) < len(SAMPLE) / 2  # merges really compress


def test_merges_make_readable_tokens(tok):
    assert tok.token_strings(tok.encode(" the cat")) == [" the", " cat"]
    strings = tok.token_strings(range(tok.vocab_size))
    assert strings[:2] == ["<unk>", "<eos>"]
    assert len(set(strings)) == len(strings)  # every token string appears once


def test_vocab_layout(tok):
    assert tok.vocab_size == 120
    assert tok.alphabet == sorted(set(SAMPLE))
    assert tok.encode("a") == [2 + tok.alphabet.index("a")]


@settings(max_examples=30, deadline=None)
@given(st.text(alphabet="ab c\nd", min_size=1, max_size=60), st.integers(0, 12))
def test_incremental_training_matches_naive(text, extra):
    vocab_size = 2 + len(set(text)) + extra
    tok = BPETokenizer.train(text, vocab_size)
    strings = tok.token_strings(range(tok.vocab_size))
    assert [(strings[a], strings[b]) for a, b in tok.merges] == naive_merges(text, vocab_size)


def test_tie_break_is_lexicographic():
    # pairs ab, bc, cd all occur once: the smallest pair of strings wins
    merges = learn_merges({"abcd": 1}, list("abcd"), 7)
    assert merges[0] == (2, 3)  # ("a", "b"); ids 2.. are the sorted alphabet


def test_training_is_deterministic():
    a, b = BPETokenizer.train(SAMPLE, 100), BPETokenizer.train(SAMPLE, 100)
    assert a == b and a.to_json() == b.to_json()


def test_save_load(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded == tok
    assert loaded.encode(SAMPLE) == tok.encode(SAMPLE)
    assert json.loads(path.read_text())["format"] == "minimodels-bpe-v1"
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temp files left behind


def test_unknown_characters_become_unk(tok):
    ids = tok.encode("the 🐍 cat")
    assert UNK_ID in ids
    assert tok.decode(ids) == "the <unk> cat"


def test_specials_never_come_from_text(tok):
    assert EOS_ID not in tok.encode("<eos>")
    assert tok.decode([EOS_ID]) == "<eos>"


def test_vocab_too_small_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 5"):
        BPETokenizer.train("abc", 4)


def test_other_errors(tok, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        BPETokenizer.train("", 10)
    with pytest.raises(ValueError, match="token ids"):
        tok.decode([tok.vocab_size])
    with pytest.raises(ValueError, match="token ids"):
        tok.token_strings([-1])
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a minimodels-bpe-v1"):
        BPETokenizer.load(bad)


def test_extra_alphabet_keeps_rare_characters_out_of_unk():
    # the corpus learns merges from a sample but passes the full text's characters, so none becomes <unk>
    tok = BPETokenizer.train("abab abab", 12, alphabet={"é", "z"})
    assert tok.alphabet == [" ", "a", "b", "z", "é"]
    assert UNK_ID not in tok.encode("zé ab") and tok.decode(tok.encode("zé ab")) == "zé ab"
    assert BPETokenizer.train("abab abab", 12).encode("z") == [UNK_ID]
    plain = BPETokenizer.train("abab abab", 12 - 2)

    def merged(t):
        return [t.decode([a]) + t.decode([b]) for a, b in t.merges]

    assert merged(tok) == merged(plain)  # the merges come from the text only


def test_from_json_round_trip_and_rejects_other_json(tok):
    assert BPETokenizer.from_json(tok.to_json()) == tok
    for text in ("[1, 2]", '{"format": "minimodels-bpe-v1", "specials": ["<eos>", "<unk>"]}'):
        with pytest.raises(ValueError, match="cache/x is not a minimodels-bpe-v1"):
            BPETokenizer.from_json(text, source="cache/x")


def test_stops_early_when_nothing_left_to_merge():
    tok = BPETokenizer.train("ab", 50)
    assert tok.vocab_size == 5  # <unk>, <eos>, a, b, ab
