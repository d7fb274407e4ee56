"""Texts of the real-model KV corpus: prose, source code and multi-turn chat, built only from files
every Debian 12 machine with python3 has (packages base-files and libpython3.11-minimal/-stdlib).

  prose  /usr/share/common-licenses/GPL-3, LGPL-3, Apache-2.0 (base-files), joined by a blank line
  code   /usr/lib/python3.11/textwrap.py, fractions.py, heapq.py, shlex.py, joined by a blank line
  chat   a multi-turn conversation rendered with the model's chat template
         (tokenizer.chat_template, jinja2 like Hugging Face: trim_blocks, lstrip_blocks), made from
         the same four modules: for each top-level function / class method with a docstring, in
         file order, the user asks what it does, the assistant answers with the docstring
         (inspect.cleandoc), the user asks for the code and the assistant answers with its source
         in a ```python block.  No system message: the template adds its default one.

The prose and code files are the ones the tiny fixture model held out (tools/kvdump/corpus.py), so
the first tokens of "prose"/"code" are also the tiny fixture's dumps' texts (GPL-3, textwrap.py).
Pretrained models have very likely seen all of these texts (licences, CPython sources).
A dump of N tokens takes the first N tokens of the whole tokenized text.
"""
import ast
import hashlib
import inspect
import os

LICENSES = "/usr/share/common-licenses"
STDLIB = "/usr/lib/python3.11"

SOURCES = {
    "prose": [os.path.join(LICENSES, n) for n in ("GPL-3", "LGPL-3", "Apache-2.0")],
    "code": [os.path.join(STDLIB, n) for n in ("textwrap.py", "fractions.py", "heapq.py", "shlex.py")],
    "chat": [os.path.join(STDLIB, n) for n in ("textwrap.py", "fractions.py", "heapq.py", "shlex.py")],
}
KINDS = tuple(SOURCES)
SEPARATOR = "\n\n"


def read(path):
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def sha256_text(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def joined(paths):
    return SEPARATOR.join(read(p).rstrip("\n") for p in paths) + "\n"


def chat_messages(paths):
    """The conversation (list of {role, content}) built from the modules' docstrings and code."""
    msgs = []
    for path in paths:
        src = read(path)
        lines = src.splitlines(keepends=True)
        mod = os.path.basename(path)[:-3]
        tree = ast.parse(src)
        items = []
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                items.append((node.name, node))
            elif isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        items.append((f"{node.name}.{sub.name}", sub))
        for name, node in items:
            doc = ast.get_docstring(node)
            if not doc:
                continue
            start = node.lineno - 1 - len(node.decorator_list)
            code = inspect.cleandoc("".join(lines[start:node.end_lineno]))
            msgs.append({"role": "user", "content": f"What does `{name}` in Python's `{mod}` module do?"})
            msgs.append({"role": "assistant", "content": inspect.cleandoc(doc)})
            msgs.append({"role": "user", "content": "Show me its source code."})
            msgs.append({"role": "assistant", "content": f"Here it is:\n\n```python\n{code}\n```"})
    return msgs


def render_chat(template, messages, bos_token="", eos_token=""):
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as e:
        raise SystemExit(f"chat texts need jinja2 (in build/venv via scripts/setup-models.sh): {e}")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(messages=messages, add_generation_prompt=False,
                                            bos_token=bos_token, eos_token=eos_token)


def source_sha256(kind):
    """sha256 of each source file of a kind, space-separated (as in a dump's source_sha256)."""
    return " ".join(hashlib.sha256(read(p).encode("utf-8")).hexdigest() for p in SOURCES[kind])


def build(kind, chat_template=None, bos_token="", eos_token=""):
    """(text, description dict) of a corpus kind.  chat needs the model's chat template."""
    paths = SOURCES[kind]
    if kind == "chat":
        if not chat_template:
            raise ValueError("this model has no tokenizer.chat_template: no chat texts")
        msgs = chat_messages(paths)
        text = render_chat(chat_template, msgs, bos_token, eos_token)
        how = (f"chat template of the model over {len(msgs)} messages built from the docstrings and "
               "source of " + ", ".join(os.path.basename(p) for p in paths) + " (tools/kvdump/texts.py)")
    else:
        text = joined(paths)
        how = "files joined by a blank line (tools/kvdump/texts.py)"
    return text, {"kind": kind, "source": "+".join(os.path.basename(p) for p in paths),
                  "source_paths": " ".join(paths),
                  "source_sha256": source_sha256(kind),
                  "text_sha256": sha256_text(text), "text_construction": how}


def cut_words(tok, words, n):
    """The longest prefix of `words` (joined by spaces) that `tok` encodes in at most n tokens."""
    lo, hi = 1, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tok.encode(" ".join(words[:mid]), add_special=False)) <= n:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])
