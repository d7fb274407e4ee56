"""Byte-level BPE tokenizer, trained here (GPT-2 style).

Pre-tokenization splits text into words with a GPT-2-like regex (Python `re` has no \\p{L}, so
letters are [^\\W\\d_] and digits \\d).  Merges are learned over the *unique* words weighted by
their counts; ties are broken by the smallest (left id, right id) so training is deterministic.
Ids 0..255 are raw bytes, 256.. are merges in order, then special tokens.
"""
import collections
import json
import re

PATTERN = r"""'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
EOT = "<|endoftext|>"


def count_words(texts, pattern=PATTERN):
    rx = re.compile(pattern)
    counts = collections.Counter()
    for t in texts:
        counts.update(rx.findall(t))
    return counts


def train_bpe(texts, vocab_size, specials=(EOT,), pattern=PATTERN):
    """Learn vocab_size - 256 - len(specials) merges; returns list of (left_id, right_id)."""
    n_merges = vocab_size - 256 - len(specials)
    counts = count_words(texts, pattern)
    words = [list(w.encode("utf-8")) for w in sorted(counts)]
    freqs = [counts[w] for w in sorted(counts)]
    pair_count = collections.defaultdict(int)
    where = collections.defaultdict(set)
    for i, (w, f) in enumerate(zip(words, freqs)):
        for p in zip(w, w[1:]):
            pair_count[p] += f
            where[p].add(i)
    merges = []
    for m in range(n_merges):
        if not pair_count:
            break
        best = max(pair_count.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))[0]
        new_id = 256 + m
        merges.append(best)
        for i in sorted(where.pop(best, ())):
            w, f = words[i], freqs[i]
            for p in zip(w, w[1:]):
                pair_count[p] -= f
                if pair_count[p] <= 0:
                    del pair_count[p]
            out, j = [], 0
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == best:
                    out.append(new_id)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:]):
                pair_count[p] += f
                where[p].add(i)
    return merges


class Tokenizer:
    def __init__(self, merges, specials=(EOT,), pattern=PATTERN, name="seqkv-bpe"):
        self.merges = [tuple(m) for m in merges]
        self.ranks = {p: r for r, p in enumerate(self.merges)}
        self.pattern = pattern
        self.rx = re.compile(pattern)
        self.name = name
        self.vocab = [bytes([b]) for b in range(256)]
        for a, b in self.merges:
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.specials = {s: len(self.vocab) + i for i, s in enumerate(specials)}
        self.vocab_size = len(self.vocab) + len(self.specials)
        self._cache = {}

    def _encode_word(self, word):
        ids = self._cache.get(word)
        if ids is not None:
            return ids
        w = list(word.encode("utf-8"))
        while len(w) > 1:
            best = min(zip(w, w[1:]), key=lambda p: self.ranks.get(p, 1 << 30))
            r = self.ranks.get(best)
            if r is None:
                break
            new_id, out, j = 256 + r, [], 0
            while j < len(w):
                if j + 1 < len(w) and (w[j], w[j + 1]) == best:
                    out.append(new_id)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            w = out
        self._cache[word] = w
        return w

    def encode(self, text):
        ids = []
        for word in self.rx.findall(text):
            ids.extend(self._encode_word(word))
        return ids

    def decode_bytes(self, ids):
        inv = {v: k.encode("utf-8") for k, v in self.specials.items()}
        return b"".join(self.vocab[i] if i < len(self.vocab) else inv[i] for i in ids)

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def to_json(self, extra=None):
        d = {"type": "byte-level-bpe", "name": self.name, "pattern": self.pattern,
             "vocab_size": self.vocab_size,
             "byte_ids": "ids 0..255 are raw bytes; id 256+r is merges[r]; then special_tokens",
             "merges": [list(m) for m in self.merges],
             "special_tokens": self.specials,
             "vocab_hex": [v.hex() for v in self.vocab]}
        if extra:
            d.update(extra)
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, s):
        d = json.loads(s)
        specials = sorted(d["special_tokens"], key=lambda k: d["special_tokens"][k])
        return cls(d["merges"], specials, d["pattern"], d["name"])
