"""Tokenizers of GGUF files in pure Python, reimplementing llama.cpp's (llama-vocab.cpp, unicode.cpp of
the llama.cpp that llama-cpp-python 0.3.36 vendors), plus a wrapper around llama.cpp's own.

  gpt2 (BPE, byte-level; SmolLM2): special-token partition, then the pre-tokenizer of
       tokenizer.ggml.pre (supported: "smollm" and the others sharing its two regexes:
       "\\p{N}" -- every number code point alone -- then the GPT-2 split
       's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+ as llama.cpp's
       hand-written unicode_regex_split_custom_gpt2 implements it), GPT-2 byte-to-unicode mapping,
       then merges by rank (ties: leftmost first), byte tokens for pieces not in the vocabulary.
  llama (SentencePiece-style; Gemma 3): special-token partition, spaces -> U+2581 (no space prefix
       when tokenizer.ggml.add_space_prefix is false), bigram merges of the highest score (ties:
       leftmost), resegmentation, <0xXX> byte fallback.

Special-token partition (tokenizer_st_partition): tokens of type CONTROL (3), USER_DEFINED (4) and
UNKNOWN (2), longest text first, are cut out of the text as single tokens; with parse_special=False
only USER_DEFINED ones are.  BOS is prepended when tokenizer.ggml.add_bos_token is true and
add_special is requested (SmolLM2: false, Gemma 3: true).

Character classes come from Python's unicodedata (Unicode 14.0 in Python 3.11; llama.cpp's tables
are newer): letters = categories L*, numbers = N*, whitespace = llama.cpp's explicit list.  Code
points assigned after Unicode 14 may split differently; tests compare with llama.cpp on the texts
the corpus uses.
"""
import heapq
import unicodedata

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp unicode-data.cpp unicode_set_whitespace
WHITESPACE = frozenset([0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680] + list(range(0x2000, 0x200B))
                       + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000])
# Pre-tokenizers whose regex list equals smollm's in llama.cpp (LLAMA_VOCAB_PRE_TYPE_SMOLLM etc.).
DIGIT_THEN_GPT2 = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b")

_LETTER, _NUMBER, _SPACE, _OTHER = 1, 2, 4, 8


def _cls(ch, _cache={}):
    c = _cache.get(ch)
    if c is None:
        cp = ord(ch)
        cat = unicodedata.category(ch)
        c = _SPACE if cp in WHITESPACE else 0
        if cat[0] == "L":
            c |= _LETTER
        elif cat[0] == "N":
            c |= _NUMBER
        elif not c:
            c = _OTHER
        _cache[ch] = c
    return c


def split_digits(text):
    """llama.cpp's "\\p{N}" regex split: each number code point is a piece; runs between them too."""
    out, start = [], 0
    for i, ch in enumerate(text):
        if _cls(ch) & _NUMBER:
            if i > start:
                out.append(text[start:i])
            out.append(ch)
            start = i + 1
    if start < len(text):
        out.append(text[start:])
    return out


def split_gpt2(text):
    """unicode_regex_split_custom_gpt2 on one piece (code points), returning the words."""
    n = len(text)
    cls = [_cls(ch) for ch in text]
    flags = lambda p: cls[p] if p < n else 0  # noqa: E731  (0 = out of range)
    words = []
    pos = prev = 0
    while pos < n:
        ch = text[pos]
        if ch == "'" and pos + 1 < n:
            nx = text[pos + 1]
            if nx in "stmd":
                words.append(text[prev:pos + 2]); pos = prev = pos + 2
                continue
            if pos + 2 < n and text[pos + 1:pos + 3] in ("re", "ve", "ll"):
                words.append(text[prev:pos + 3]); pos = prev = pos + 3
                continue
        f2 = flags(pos + 1) if ch == " " else cls[pos]
        if f2 & _LETTER:
            pos += ch == " "
            while flags(pos) & _LETTER:
                pos += 1
            words.append(text[prev:pos]); prev = pos
            continue
        if f2 & _NUMBER:
            pos += ch == " "
            while flags(pos) & _NUMBER:
                pos += 1
            words.append(text[prev:pos]); prev = pos
            continue
        if not (f2 & (_SPACE | _LETTER | _NUMBER)) and f2:
            pos += ch == " "
            while True:
                f = flags(pos)
                if (f & (_SPACE | _LETTER | _NUMBER)) or not f:
                    break
                pos += 1
            words.append(text[prev:pos]); prev = pos
            continue
        nws = 0
        while flags(pos + nws) & _SPACE:
            nws += 1
        if nws > 1 and pos + nws < n:          # \s+(?!\S)
            pos += nws - 1
            words.append(text[prev:pos]); prev = pos
            continue
        if nws > 0:                            # \s+
            pos += nws
            words.append(text[prev:pos]); prev = pos
            continue
        pos += 1                               # no match: a single code point
        words.append(text[prev:pos]); prev = pos
    return [w for w in words if w]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class GGUFTokenizer:
    """Pure-Python tokenizer built from a GGUF file's tokenizer.* metadata."""

    def __init__(self, fields, source=""):
        get = lambda k, d=None: fields[k].contents() if k in fields else d  # noqa: E731
        self.model = get("tokenizer.ggml.model")
        self.pre = get("tokenizer.ggml.pre", "default")
        self.tokens = get("tokenizer.ggml.tokens")
        self.types = get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(self.tokens)
        self.add_bos = bool(get("tokenizer.ggml.add_bos_token", self.model == "llama"))
        self.add_eos = bool(get("tokenizer.ggml.add_eos_token", False))
        self.add_space_prefix = bool(get("tokenizer.ggml.add_space_prefix", self.model == "llama"))
        self.bos_id = get("tokenizer.ggml.bos_token_id")
        self.eos_id = get("tokenizer.ggml.eos_token_id")
        self.chat_template = get("tokenizer.chat_template")
        self.token_to_id = {}
        for i, t in enumerate(self.tokens):
            self.token_to_id.setdefault(t, i)
        self.name = f"gguf:{self.model}/{self.pre} ({source})" if source else f"gguf:{self.model}/{self.pre}"
        special = [i for i, t in enumerate(self.types) if t in (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN)]
        special.sort(key=lambda i: -len(self.tokens[i].encode("utf-8")))  # llama.cpp: by byte length
        self.special = special
        if self.model == "gpt2":
            if self.pre not in DIGIT_THEN_GPT2:
                raise ValueError(f"pure-Python BPE pre-tokenizer {self.pre!r} not implemented "
                                 f"(implemented: {DIGIT_THEN_GPT2}); use the llama.cpp tokenizer")
            merges = get("tokenizer.ggml.merges")
            self.ranks = {}
            for r, m in enumerate(merges):
                a, b = m.split(" ", 1)
                self.ranks.setdefault((a, b), r)
            self.byte_enc = bytes_to_unicode()
            self.byte_dec = {v: k for k, v in self.byte_enc.items()}
            self._cache = {}
        elif self.model == "llama":
            self.scores = get("tokenizer.ggml.scores")
            self.byte_token = {}
            for b in range(256):
                t = self.token_to_id.get(f"<0x{b:02X}>")
                if t is not None:
                    self.byte_token[b] = t
        else:
            raise ValueError(f"tokenizer model {self.model!r} not implemented in pure Python")

    @classmethod
    def from_gguf(cls, path):
        from .gguf_model import read_gguf
        import os
        return cls(read_gguf(path).fields, os.path.basename(path))

    # -- partition ------------------------------------------------------------------------------

    def _partition(self, text, parse_special):
        frags = [text]  # str = raw text, int = token id
        for tid in self.special:
            if not parse_special and self.types[tid] != TOKEN_USER_DEFINED:
                continue
            st = self.tokens[tid]
            if not st:
                continue
            out = []
            for f in frags:
                if isinstance(f, int) or st not in f:
                    out.append(f)
                    continue
                parts = f.split(st)
                for j, p in enumerate(parts):
                    if j:
                        out.append(tid)
                    if p:
                        out.append(p)
            frags = out
        return frags

    def encode(self, text, add_special=True, parse_special=False):
        ids = []
        frags = self._partition(text, parse_special) if text else []
        if self.model == "gpt2":
            if add_special and self.add_bos:
                ids.append(self.bos_id)
            for f in frags:
                if isinstance(f, int):
                    ids.append(f)
                else:
                    for piece in split_digits(f):
                        for w in split_gpt2(piece):
                            ids.extend(self._bpe_word(w))
        else:
            prev_special = True
            if add_special and self.add_bos:
                ids.append(self.bos_id)
            for f in frags:
                if isinstance(f, int):
                    ids.append(f)
                    prev_special = True
                    continue
                t = (" " if self.add_space_prefix and prev_special else "") + f
                ids.extend(self._spm(t.replace(" ", "\u2581")))
                prev_special = False
        if add_special and self.add_eos:
            ids.append(self.eos_id)
        return ids

    # -- BPE ------------------------------------------------------------------------------------

    def _bpe_word(self, word):
        r = self._cache.get(word)
        if r is not None:
            return r
        syms = [self.byte_enc[b] for b in word.encode("utf-8")]
        ranks = self.ranks
        while len(syms) > 1:
            best, bi = None, -1
            for i in range(len(syms) - 1):
                rk = ranks.get((syms[i], syms[i + 1]))
                if rk is not None and (best is None or rk < best):
                    best, bi = rk, i
            if best is None:
                break
            a, b = syms[bi], syms[bi + 1]
            out, i = [], 0
            while i < len(syms):  # merge every occurrence left to right (same result as the queue)
                if i < len(syms) - 1 and syms[i] == a and syms[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            syms = out
        ids = []
        for s in syms:
            t = self.token_to_id.get(s)
            if t is not None:
                ids.append(t)
            else:
                ids.extend(self.token_to_id[ch] for ch in s if ch in self.token_to_id)
        self._cache[word] = ids
        return ids

    # -- SPM ------------------------------------------------------------------------------------

    def _spm(self, text):
        n = len(text)
        if n == 0:
            return []
        sym_text = list(text)            # each symbol's text ("" once merged away)
        nxt = list(range(1, n)) + [-1]
        prv = list(range(-1, n - 1))
        heap = []
        t2i, scores = self.token_to_id, self.scores

        def add(l, r):
            if l == -1 or r == -1:
                return
            s = sym_text[l] + sym_text[r]
            tid = t2i.get(s)
            if tid is None:
                return
            heapq.heappush(heap, (-scores[tid], l, r, len(s)))

        for i in range(1, n):
            add(i - 1, i)
        while heap:
            _, l, r, size = heapq.heappop(heap)
            if not sym_text[l] or not sym_text[r] or len(sym_text[l]) + len(sym_text[r]) != size:
                continue
            sym_text[l] += sym_text[r]
            sym_text[r] = ""
            nxt[l] = nxt[r]
            if nxt[r] >= 0:
                prv[nxt[r]] = l
            add(prv[l], l)
            add(l, nxt[l])
        # Every merged symbol is a vocabulary token (a bigram is queued only if it is one), so
        # llama.cpp's resegment() reduces to: the symbol's token, else its bytes as <0xXX> tokens.
        out = []
        i = 0
        while i != -1:
            s = sym_text[i]
            if s:
                tid = t2i.get(s)
                if tid is not None:
                    out.append(tid)
                else:
                    out.extend(self.byte_token[b] for b in s.encode("utf-8"))
            i = nxt[i]
        return out

    # -- decode ---------------------------------------------------------------------------------

    def decode_bytes(self, ids):
        out = bytearray()
        for i in ids:
            t = self.tokens[i]
            ty = self.types[i]
            if self.model == "gpt2":
                if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN):
                    out += t.encode("utf-8")
                else:
                    out += bytes(self.byte_dec[ch] for ch in t)
            else:
                if ty == TOKEN_BYTE:
                    out.append(int(t[3:5], 16))
                else:
                    out += t.replace("\u2581", " ").encode("utf-8")
        return bytes(out)

    def decode(self, ids):
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


class LlamaCppTokenizer:
    """llama.cpp's own tokenizer (llama_cpp.Llama(vocab_only=True)), same encode() signature."""

    def __init__(self, path):
        import llama_cpp
        import os
        self._llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        self.name = f"llama.cpp {llama_cpp.__version__} ({os.path.basename(path)})"

    def encode(self, text, add_special=True, parse_special=False):
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)

    def decode_bytes(self, ids):
        return self._llm.detokenize(ids, special=True)


def have_llama_cpp():
    try:
        import llama_cpp  # noqa: F401
        return True
    except Exception:
        return False


def load_tokenizer(path, which="auto"):
    """which: 'python' (pure), 'llama.cpp', or 'auto' (pure Python; llama.cpp is used by the tests
    and `crosscheck` to show the two agree)."""
    if which == "llama.cpp":
        return LlamaCppTokenizer(path)
    return GGUFTokenizer.from_gguf(path)
