"""A small byte-pair-encoding (BPE) tokenizer whose tokens are readable pieces of text.

What: GPT-2-style BPE over *characters* (not bytes): text is cut into pre-tokens by a regex (words with their
leading space, numbers, punctuation runs, whitespace runs), then the most frequent adjacent pair of symbols is
merged again and again until the vocabulary is full.
Why: a vocabulary is easier to teach when every token prints as a piece of text such as " the" or "ing".
Working on characters keeps tokens readable; the price is that characters unseen in training become `<unk>`.
Taught in lessons/01_baseline_gpt.ipynb.

Vocabulary layout: id 0 is `<unk>`, id 1 is `<eos>` (separates documents), then the training text's characters
in sorted order, then one id per new token string in the order the merges made it.
Special ids are never produced from text: `encode("<eos>")` spells the five characters out.
"""

from __future__ import annotations

import heapq
import json
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

UNK, EOS = "<unk>", "<eos>"
SPECIALS = (UNK, EOS)  # their position in this tuple is their id
UNK_ID, EOS_ID = 0, 1

# contractions, words (letters and "_", so python names like __init__ stay whole) with one leading space,
# numbers, punctuation runs, newline runs, then other whitespace. the (?!\S) branch leaves the last space of
# a run for the word after it, as GPT-2 does. every character matches some branch, so pieces rejoin exactly.
PRETOKEN_PATTERN = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)\b| ?[^\W\d]+| ?\d+| ?[^\w\s]+|\n+|[^\S\n]+(?!\S)|[^\S\n]+"
)
FILE_FORMAT = "minimodels-bpe-v1"


def pretokenize(text: str) -> list[str]:
    """Cut text into the pieces that BPE merges never cross; "".join(result) == text."""
    return PRETOKEN_PATTERN.findall(text)


def merge_pair(symbols: list[int], a: int, b: int, new_id: int) -> list[int]:
    """Replace every non-overlapping (a, b) in symbols, left to right, by new_id."""
    out, i, n = [], 0, len(symbols)
    while i < n:
        if i + 1 < n and symbols[i] == a and symbols[i + 1] == b:
            out.append(new_id)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def _add_merge(strings: list[str], string_id: dict[str, int], pair: tuple[int, int]) -> int:
    # "a"+"bc" and "ab"+"c" both spell "abc": reuse its id so every token string appears once
    merged = strings[pair[0]] + strings[pair[1]]
    if merged not in string_id:
        string_id[merged] = len(strings)
        strings.append(merged)
    return string_id[merged]


def _pair_counts_of(symbols: list[int]) -> Counter:
    return Counter(zip(symbols, symbols[1:]))


def learn_merges(word_counts: dict[str, int], alphabet: list[str], vocab_size: int) -> list[tuple[int, int]]:
    """Classic BPE over unique words weighted by their counts; returns the merges as (left id, right id).

    Pair counts are updated incrementally: only words containing the merged pair are touched, found through a
    pair -> word ids index. Ties go to the highest count, then the lexicographically smallest pair of strings.
    """
    strings = list(SPECIALS) + alphabet
    string_id = {s: i for i, s in enumerate(strings) if i >= len(SPECIALS)}
    words = [[string_id[ch] for ch in w] for w in word_counts]
    counts = list(word_counts.values())
    pair_count: Counter = Counter()
    where: dict[tuple[int, int], set[int]] = {}
    for wid, symbols in enumerate(words):
        for pair, k in _pair_counts_of(symbols).items():
            pair_count[pair] += k * counts[wid]
            where.setdefault(pair, set()).add(wid)

    def heap_item(pair: tuple[int, int]) -> tuple:
        # heapq is a min-heap: negate the count, and strings sort ties lexicographically
        return (-pair_count[pair], strings[pair[0]], strings[pair[1]], pair)

    heap = [heap_item(p) for p in pair_count]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while len(strings) < vocab_size and heap:
        neg, _, _, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue  # stale entry: the count changed after it was pushed
        new_id = _add_merge(strings, string_id, pair)
        merges.append(pair)
        changed = set()
        for wid in where.pop(pair):
            old = words[wid]
            new = merge_pair(old, pair[0], pair[1], new_id)
            words[wid] = new
            old_pairs, new_pairs = _pair_counts_of(old), _pair_counts_of(new)
            for p, k in old_pairs.items():
                pair_count[p] -= k * counts[wid]
                if p not in new_pairs and p != pair:
                    where[p].discard(wid)
            for p, k in new_pairs.items():
                pair_count[p] += k * counts[wid]
                where.setdefault(p, set()).add(wid)
            changed.update(old_pairs)
            changed.update(new_pairs)
        del pair_count[pair]
        for p in changed - {pair}:
            if pair_count[p] > 0:
                heapq.heappush(heap, heap_item(p))
    return merges


class BPETokenizer:
    """Character-level BPE with readable tokens; build it with `BPETokenizer.train(text, vocab_size)`.

    encode: str -> list[int]; decode: list[int] -> str; decode(encode(s)) == s if s has only seen characters.
    """

    def __init__(self, alphabet: list[str], merges: list[tuple[int, int]]):
        self.alphabet = list(alphabet)
        self.merges = [tuple(m) for m in merges]
        self._strings = list(SPECIALS) + self.alphabet
        self._char_id = {ch: i + len(SPECIALS) for i, ch in enumerate(self.alphabet)}
        string_id = dict(self._char_id)
        # rank of a merge = the order it was learned; encode applies the lowest rank first, as training did
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, pair in enumerate(self.merges):
            self._ranks[pair] = (rank, _add_merge(self._strings, string_id, pair))
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(cls, text: str, vocab_size: int, *, alphabet: Iterable[str] = ()) -> BPETokenizer:
        """Merge pairs until the vocabulary has vocab_size tokens.

        The alphabet is the text's characters plus any in `alphabet`: the corpus learns its merges from a sample
        of the training text but passes every character of the full text, so none of them becomes <unk>.
        """
        if not text:
            raise ValueError("cannot train a tokenizer on empty text")
        alphabet = sorted(set(text).union(*alphabet))
        smallest = len(SPECIALS) + len(alphabet)
        if vocab_size < smallest:
            raise ValueError(
                f"vocab_size={vocab_size} is too small: the text has {len(alphabet)} distinct characters, "
                f"plus {len(SPECIALS)} special tokens, so vocab_size must be at least {smallest}"
            )
        word_counts = Counter(pretokenize(text))
        merges = learn_merges(dict(sorted(word_counts.items())), alphabet, vocab_size)
        return cls(alphabet, merges)

    @property
    def vocab_size(self) -> int:
        # can be below the requested size when the text runs out of pairs to merge
        return len(self._strings)

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def unk_id(self) -> int:
        return UNK_ID

    def _encode_piece(self, piece: str) -> list[int]:
        ids = self._cache.get(piece)
        if ids is not None:
            return ids
        # unseen characters become <unk>; they then never merge, since no merge involves id 0
        ids = [self._char_id.get(ch, UNK_ID) for ch in piece]
        while len(ids) > 1:
            ranked = [self._ranks[p] for p in zip(ids, ids[1:]) if p in self._ranks]
            if not ranked:
                break
            rank, new_id = min(ranked)
            a, b = self.merges[rank]
            ids = merge_pair(ids, a, b, new_id)
        self._cache[piece] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Text -> token ids. Characters not seen in training map to <unk> (id 0) and are lost."""
        ids: list[int] = []
        for piece in pretokenize(text):
            ids.extend(self._encode_piece(piece))
        return ids

    def token_strings(self, ids: Iterable[int]) -> list[str]:
        """The readable piece of text behind each id, e.g. [" the", "ing"]; specials show as <unk> / <eos>."""
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids must be in [0, {self.vocab_size}); got {bad[:10]}")
        return [self._strings[i] for i in ids]

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text; <unk> and <eos> decode to their names."""
        return "".join(self.token_strings(ids))

    def __eq__(self, other: object) -> bool:
        same = isinstance(other, BPETokenizer) and self.alphabet == other.alphabet
        return same and self.merges == other.merges

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size}, alphabet={len(self.alphabet)} chars)"

    def to_json(self) -> str:
        state = {"format": FILE_FORMAT, "specials": list(SPECIALS), "alphabet": self.alphabet,
                 "merges": [list(m) for m in self.merges]}
        return json.dumps(state, ensure_ascii=True, indent=0)

    def save(self, path: str | os.PathLike) -> None:
        """Write JSON atomically, so a reader never sees half a file."""
        atomic_write(Path(path), self.to_json().encode("ascii"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> BPETokenizer:
        return cls.from_json(Path(path).read_text(encoding="ascii"), source=str(path))

    @classmethod
    def from_json(cls, text: str, *, source: str = "the text") -> BPETokenizer:
        """The tokenizer that `to_json` wrote; ValueError if `text` is not one."""
        state = json.loads(text)
        if not isinstance(state, dict) or state.get("format") != FILE_FORMAT or state.get("specials") != list(SPECIALS):
            raise ValueError(f"{source} is not a {FILE_FORMAT} tokenizer file")
        return cls(state["alphabet"], state["merges"])


def atomic_write(path: Path, data: bytes) -> None:
    """Write a temp file in the same folder, then os.replace: two processes writing one file are safe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes owner-only files; a cache should be readable like any other
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
