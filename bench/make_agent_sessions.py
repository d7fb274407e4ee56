"""Agent-like chat sessions from real text, with the real SmolLM2-135M KV of every session, for the
prefix-store benchmark (layer 1: prefix dedup + near-prefix reuse).

    build/venv/bin/python bench/make_agent_sessions.py [--out /tmp/agent_sessions] [--sessions 96]
        [--seed 1] [--threads 1] [--block 1] [--force]

Runtime: 330 s measured for the default 96 sessions (43752 tokens) on the shared 2-core box next
to a C++ build (one forward of ~455 tokens: 3.4 s on average, max 5.0 s; writing and checking the
dump adds ~0.1 s).  --threads 1 by default: with 2 threads, next to a build
using both cores, the many small attention ops of --block 1 spin in OpenMP and a forward took
45-126 s.  A rerun is cheap (below).  Needs the venv of scripts/setup-models.sh.

Workload (deterministic given --seed; every text is read from files of this machine):
  agents   3 system prompts, chosen with popularity 70/20/10 %: the definitions sections of
           /usr/share/common-licenses/Apache-2.0, MPL-2.0 and GPL-3, cut at whole words to 150, 130
           and 115 tokens.
  tools    "Tools:" and 6 lines {"name", "description": first docstring line, "parameters":
           inspect.signature} of os.path.join, textwrap.wrap, fnmatch.fnmatch, shlex.split,
           statistics.median, heapq.nlargest (28-39 tokens each); in ~20 % of the sessions in a random order.
  date     "Today's date: 2026-11-DD." with DD = 10 + (session // 4) % 20 (same token count); dates
           repeat after 80 sessions (default seed: session 82 is an exact repeat of session 0).
  user     "User: <name>", 6 names of 1-13 tokens, uniform.
  task     "Task:" and a passage of 30-120 tokens (uniform) of a stdlib module docstring
           (/usr/lib/python3.11/<module>.py), starting at a random paragraph, cut at whole words.
  turn 2   ~15 % of the sessions are the second turn of one of the last 8 first-turn sessions not yet
           continued: its exact tokens, then an assistant turn of 16-48 tokens in all (template tokens
           included) whose text is a passage of /usr/share/common-licenses/BSD, Artistic or CC0-1.0.
Sessions use SmolLM2's chat template (ChatML): <|im_start|>system\\n system tools date <|im_end|>\\n
<|im_start|>user\\n user task <|im_end|>\\n [<|im_start|>assistant\\n turn2 <|im_end|>\\n].
--date-first puts the date line before the tools (system date tools): a date change is then a
near-prefix gap followed by the same tools, the case near-prefix reuse codes against the previous
date's KV; by default the date ends the system turn and the user's own lines follow it.
Every piece (template strings, system prompt, each tool line, date, user line, task) is tokenized
on its own and the ids are concatenated, so a BPE merge can never cross a piece boundary: text that
two sessions share has the same ids in both, and the shared token prefix of two sessions is exactly
their shared pieces (for 3 of the first 48 sessions the ids differ from tokenizing the
decoded text in one go).  Each session is one full forward from position 0 (what an engine without
prefix caching computes), written by tools/kvdump/gguf_dump.dump_ids (KV convention: layer.l.k/v
[H_kv, T, D] bf16, tokens, nll; no q, no k_prerope).

Attention block (--block).  GGUFModel.forward computes attention for blocks of `block` query rows,
P @ V over the keys 0..e-1 of the block's end e (e = T for the last block).  With the default
block of dump_ids (512 > T) the sum over keys has length T, and OpenBLAS splits a long inner
dimension into two halves whose size depends on T: row t of two sessions that share t+1 tokens can
differ in float32 in the last bits, and after bf16 rounding ~4.5e-4 of the shared-prefix K/V
elements differ by one bf16 ulp (max |diff| 0.0625), from layer 1 on (measured: sessions of 456 and
478 tokens, rows 228+).  --block 1 (default) gives every query row its own P @ V over keys 0..t,
whose length does not depend on T: the prefix K/V are then bit-identical (float32 difference to
block 512: <= 3e-5, same nll), at ~2.4x the forward time (3.7 s vs 1.5 s for 456 tokens).

Output in --out: session-000.safetensors, ... in arrival order and manifest.json (per session:
file, n_tokens, agent, tools order, date, user, task source, second_turn_of, pieces = token offsets
[start, end) of each piece, tokens_sha256, lcp_prev = longest common token prefix with any earlier
session).  A rerun skips sessions whose file exists and whose manifest entry (and GGUF) is unchanged,
and deletes session files beyond --sessions; --force regenerates all.
Self-check: for second-turn sessions vs their first turn (up to 4) and the 2 first-turn pairs of the
same agent and tool order with the longest shared prefix, K and V of every layer must be
bit-identical over the shared prefix; otherwise the max |difference|, the share of differing
elements and the first layer that differs are reported (exit status 1).
"""
import argparse
import ast
import functools
import hashlib
import importlib
import inspect
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import torch  # noqa: E402

from kvdump.gguf_dump import _tokenizer, dump_ids, resolve_gguf  # noqa: E402
from kvdump.gguf_model import GGUFModel  # noqa: E402
from kvdump.safetensors_io import load_file  # noqa: E402
from kvdump.texts import cut_words  # noqa: E402

LIC = "/usr/share/common-licenses/"
PYLIB = "/usr/lib/python3.11/"
AGENTS = [("Apache-2.0", "1. Definitions.", 150), ("MPL-2.0", "1. Definitions", 130), ("GPL-3", "0. Definitions.", 115)]
POPULARITY = [0.7, 0.2, 0.1]
TOOLS = ["os.path.join", "textwrap.wrap", "fnmatch.fnmatch", "shlex.split", "statistics.median", "heapq.nlargest"]
NAMES = ["Alice", "Bob", "Chen Wei", "Priya Raghunathan", "Bob Oyelaran-Whitfield",
         "María José Fernández-Łukasiewicz"]
TASK_MODULES = ["difflib", "fnmatch", "heapq", "calendar", "base64", "gzip", "shutil", "tempfile", "string",
                "json/__init__", "argparse", "pprint", "sched", "secrets", "statistics"]
TURN2_TEXTS = ["BSD", "Artistic", "CC0-1.0"]
DATE_EVERY, P_REORDER, P_TURN2, TURN2_WINDOW = 4, 0.2, 0.15, 8


# ---------------------------------------------------------------------------------------- texts

def build_pool(tok):
    """Texts: agents' system prompts, tool lines {name: text}, task paragraphs {module: [paragraphs]}."""
    agents = []
    for name, anchor, n in AGENTS:
        t = open(LIC + name, encoding="utf-8").read()
        agents.append(cut_words(tok, t[t.index(anchor):].split(), n) + "\n")
    tools = {}
    for q in TOOLS:
        mod, fn = q.rsplit(".", 1)
        f = getattr(importlib.import_module(mod), fn)
        doc = inspect.getdoc(f).strip().split("\n")[0]
        tools[fn] = json.dumps({"name": fn, "description": doc, "parameters": str(inspect.signature(f))}) + "\n"
    tasks = {}
    for m in TASK_MODULES:
        doc = ast.get_docstring(ast.parse(open(PYLIB + m + ".py", encoding="utf-8").read()))
        paras = [p for p in doc.split("\n\n") if p.strip()]
        # start paragraphs from which at least 30 tokens remain
        tasks[m] = (paras, [i for i in range(len(paras))
                            if len(tok.encode("\n\n".join(paras[i:]), add_special=False)) >= 30])
    turn2 = {n: open(LIC + n, encoding="utf-8").read().split() for n in TURN2_TEXTS}
    return agents, tools, tasks, turn2


def make_workload(tok, n_sessions, seed, date_first=False):
    """Session specs in arrival order: dicts with the manifest fields, 'agent_id' and 'ids'."""
    rng = random.Random(seed)
    agents, tools, tasks, turn2 = build_pool(tok)
    enc = lambda s: tok.encode(s, add_special=False)                            # noqa: E731
    tmpl = lambda s: tok.encode(s, add_special=False, parse_special=True)      # noqa: E731
    sessions, open_first = [], []
    for i in range(n_sessions):
        cands = [j for j in open_first if j >= i - TURN2_WINDOW]
        if cands and rng.random() < P_TURN2:
            j = rng.choice(cands)
            open_first.remove(j)
            s = dict(sessions[j], second_turn_of=j, pieces=dict(sessions[j]["pieces"]))
            head, tail = tmpl("<|im_start|>assistant\n"), tmpl("<|im_end|>\n")
            src = rng.choice(TURN2_TEXTS)
            words = turn2[src]
            w0 = rng.randrange(len(words) - 60)
            n = rng.randint(16, 48) - len(head) - len(tail)
            s["turn2_source"] = f"{LIC}{src} from word {w0}"
            s["ids"] = sessions[j]["ids"] + head + enc(cut_words(tok, words[w0:w0 + 60], n)) + tail
            s["pieces"]["turn2"] = [len(sessions[j]["ids"]), len(s["ids"])]
        else:
            a = rng.choices(range(len(AGENTS)), POPULARITY)[0]
            order = list(tools)
            if rng.random() < P_REORDER:
                rng.shuffle(order)
            date = f"Today's date: 2026-11-{10 + (i // DATE_EVERY) % 20}."
            user = rng.choice(NAMES)
            m = rng.choice(TASK_MODULES)
            paras, starts = tasks[m]
            p0 = rng.choice(starts)
            n_task = rng.randint(30, 120)
            task = cut_words(tok, "\n\n".join(paras[p0:]).split(" "), n_task)
            tools_part = ("tools", enc("Tools:\n") + [t for name in order for t in enc(tools[name])])
            date_part = ("date", enc(date))
            parts = [("system", tmpl("<|im_start|>system\n") + enc(agents[a])),
                     *((date_part, tools_part) if date_first else (tools_part, date_part)),
                     ("user", tmpl("<|im_end|>\n<|im_start|>user\n") + enc(f"User: {user}\n")),
                     ("task", enc("Task:\n") + enc(task) + tmpl("<|im_end|>\n"))]
            ids, pieces = [], {}
            for name, p in parts:
                pieces[name] = [len(ids), len(ids) + len(p)]
                ids += p
            s = {"agent": f"{LIC}{AGENTS[a][0]}", "agent_id": a, "tools": order,
                 "tools_reordered": order != list(tools), "date": date, "user": user,
                 "task_source": f"{PYLIB}{m}.py module docstring from paragraph {p0}, {len(enc(task))} tokens",
                 "second_turn_of": None, "turn2_source": None, "ids": ids, "pieces": pieces}
            open_first.append(i)
        s["file"] = f"session-{i:03d}.safetensors"
        s["n_tokens"] = len(s["ids"])
        s["tokens_sha256"] = hashlib.sha256(json.dumps(s["ids"]).encode()).hexdigest()
        s["lcp_prev"] = max([lcp(s["ids"], o["ids"]) for o in sessions], default=0)
        sessions.append(s)
    return sessions


def lcp(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


# ------------------------------------------------------------------------------------ self-check

def compare_prefix(path_a, path_b, n):
    """Over the first n rows: (identical, max |a - b|, share of differing K/V elements, first
    differing (layer, 'k'|'v') or None)."""
    ta, tb = load_file(path_a)[0], load_file(path_b)[0]
    worst, first, n_diff, n_all = 0.0, None, 0, 0
    layers = sorted({int(k.split(".")[1]) for k in ta if k.startswith("layer.")})
    for l in layers:
        for x in "kv":
            a, b = ta[f"layer.{l}.{x}"][:, :n], tb[f"layer.{l}.{x}"][:, :n]
            n_diff, n_all = n_diff + int((a != b).sum()), n_all + a.numel()
            if not torch.equal(a, b):
                worst = max(worst, float((a.float() - b.float()).abs().max()))
                first = first or (l, x)
    return first is None, worst, n_diff / max(n_all, 1), first


def self_check(sessions, out):
    pairs = [(s["second_turn_of"], i) for i, s in enumerate(sessions) if s["second_turn_of"] is not None][:4]
    firsts = [i for i, s in enumerate(sessions) if s["second_turn_of"] is None]
    same = [(lcp(sessions[i]["ids"], sessions[j]["ids"]), i, j) for k, i in enumerate(firsts) for j in firsts[k + 1:]
            if sessions[i]["agent_id"] == sessions[j]["agent_id"] and sessions[i]["tools"] == sessions[j]["tools"]]
    pairs += [(i, j) for _, i, j in sorted(same, reverse=True)[:2]]
    results, ok = [], True
    for i, j in pairs:
        n = lcp(sessions[i]["ids"], sessions[j]["ids"])
        same_bits, worst, share, first = compare_prefix(os.path.join(out, sessions[i]["file"]),
                                                 os.path.join(out, sessions[j]["file"]), n)
        ok &= same_bits
        results.append({"a": i, "b": j, "shared_tokens": n, "bit_identical": same_bits, "max_abs_diff": worst,
                        "differing_share": share,
                        "first_differing": None if first is None else f"layer {first[0]} {first[1]}"})
        print(f"self-check sessions {i} / {j}: shared prefix {n} tokens, K/V of all layers "
              + ("bit-identical" if same_bits else
                 f"DIFFER: max |diff| {worst:.3g}, {share:.2e} of the elements, first in layer {first[0]} {first[1]}"))
    return ok, results


# ------------------------------------------------------------------------------------------ main

ENTRY_KEYS = ["file", "n_tokens", "agent", "tools", "tools_reordered", "date", "user", "task_source",
              "second_turn_of", "turn2_source", "pieces", "tokens_sha256", "lcp_prev"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/agent_sessions")
    ap.add_argument("--sessions", type=int, default=96)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (see the docstring)")
    ap.add_argument("--block", type=int, default=1,
                    help="attention query block of the forward; 1 = prefix-stable KV (see the docstring)")
    ap.add_argument("--force", action="store_true", help="regenerate every session file")
    ap.add_argument("--date-first", action="store_true",
                    help="the date line right after the system prompt, before the tools (default: after the tools)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t_start = time.time()
    os.makedirs(a.out, exist_ok=True)
    path, package = resolve_gguf("smollm2")
    model = GGUFModel(path)
    tok = _tokenizer(model, path, "python")
    # dump_ids calls model.forward without `block`: bind it here (see "Attention block" above)
    model.forward = functools.partial(GGUFModel.forward, model, block=a.block)
    gsha = model.sha256()
    sessions = make_workload(tok, a.sessions, a.seed, a.date_first)
    mpath = os.path.join(a.out, "manifest.json")
    old = {}
    if os.path.exists(mpath) and not a.force:
        m = json.load(open(mpath))
        if m.get("gguf_sha256") == gsha and m.get("attention_block") == a.block:
            old = {e["file"]: e for e in m["sessions"]}
    made = 0
    for i, s in enumerate(sessions):
        entry = {k: s[k] for k in ENTRY_KEYS}
        out = os.path.join(a.out, s["file"])
        if os.path.exists(out) and old.get(s["file"]) == entry:
            continue
        src = {"source": f"agent session {i} of bench/make_agent_sessions.py --seed {a.seed}",
               "source_path": ",".join([s["agent"], s["task_source"].split(" ")[0]]),
               "attention_block": str(a.block), "session": json.dumps({k: entry[k] for k in ENTRY_KEYS if k != "file"})}
        dump_ids(model, tok, s["ids"], src, out, "bf16", [], [], package, threads=a.threads)
        made += 1
    for f in os.listdir(a.out):   # session files beyond --sessions from an earlier, longer run
        if f.startswith("session-") and f.endswith(".safetensors") and f not in {s["file"] for s in sessions}:
            os.remove(os.path.join(a.out, f))
    ok, checks = self_check(sessions, a.out)
    total = sum(s["n_tokens"] for s in sessions)
    unique = sum(s["n_tokens"] - s["lcp_prev"] for s in sessions)
    summary = {"sessions": len(sessions), "generated": made, "total_tokens": total, "unique_prefix_tokens": unique,
               "second_turns": sum(s["second_turn_of"] is not None for s in sessions),
               "per_agent": [sum(s["agent_id"] == k for s in sessions) for k in range(len(AGENTS))],
               "seconds": round(time.time() - t_start, 1)}
    manifest = {"generator": "bench/make_agent_sessions.py", "seed": a.seed, "model": os.path.basename(path),
                "gguf_sha256": gsha, "attention_block": a.block, "summary": summary, "self_check": checks,
                "sessions": [{k: s[k] for k in ENTRY_KEYS} for s in sessions]}
    with open(mpath, "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
    print(f"\n{summary['sessions']} sessions ({made} generated, {summary['second_turns']} second turns, "
          f"agents {summary['per_agent']}), {total} tokens, {unique} unique prefix tokens "
          f"({total / unique:.2f}x), {summary['seconds']:.0f} s; wrote {mpath}")
    print("self-check " + ("passed: shared prefixes are bit-identical" if ok else "FAILED (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
