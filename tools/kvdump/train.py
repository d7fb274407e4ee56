"""Reproducible offline training of the tiny Llama on Debian's Python 3.11 stdlib sources.

Determinism: fixed seed, torch.manual_seed, a fixed thread count, a torch.Generator for init and
for the batch offsets, fixed step count.  Bit-identical results are expected on the same CPU
type / torch build / thread count; other CPUs may differ in the last bits of fp32 arithmetic.
"""
import json
import math
import os
import platform
import time

import torch
import torch.nn.functional as F

from . import bpe, corpus
from .model import LlamaConfig, TinyLlama, n_params
from .safetensors_io import save_file, load_file

TOKENIZER_NAME = "seqkv-bpe1024-py311stdlib"
MODEL_NAME = "seqkv-tiny-llama"


def save_model(model, out_dir, extra_meta):
    c = model.config
    tensors = {k: v.detach().to(torch.bfloat16) for k, v in model.state_dict().items()}
    meta = {"format": "pt", "model": MODEL_NAME, "architecture": "LlamaForCausalLM",
            "config": json.dumps(c.to_dict(), sort_keys=True), "rope_style": "rotate_half",
            "dtype": "bf16"}
    meta.update({k: str(v) for k, v in c.to_dict().items()})
    meta.update(extra_meta)
    save_file(os.path.join(out_dir, "model.safetensors"), tensors, meta)
    hf_config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                 "vocab_size": c.vocab_size, "hidden_size": c.d_model,
                 "intermediate_size": c.ffn_hidden, "num_hidden_layers": c.n_layers,
                 "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads,
                 "head_dim": c.head_dim, "rope_theta": c.rope_theta, "rms_norm_eps": c.norm_eps,
                 "max_position_embeddings": c.max_seq_len, "tie_word_embeddings": True,
                 "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
                 "torch_dtype": "bfloat16", "seqkv": c.to_dict()}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(hf_config, f, indent=1, sort_keys=True)
        f.write("\n")


def load_model(model_dir):
    """Load (TinyLlama in float32 from the bf16 weights, Tokenizer, metadata)."""
    tensors, meta = load_file(os.path.join(model_dir, "model.safetensors"))
    c = LlamaConfig.from_dict(json.loads(meta["config"]))
    m = TinyLlama(c)
    m.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()})
    m.eval()
    with open(os.path.join(model_dir, "tokenizer.json")) as f:
        tok = bpe.Tokenizer.from_json(f.read())
    return m, tok, meta


@torch.no_grad()
def token_nll(model, ids):
    """Per-token nll in nats [T] for one sequence (entry 0 = 0), plus the per-layer records."""
    x = torch.tensor(ids, dtype=torch.long)[None]
    records = []
    logits = model(x, records)
    nll = torch.zeros(len(ids), dtype=torch.float32)
    nll[1:] = F.cross_entropy(logits[0, :-1], x[0, 1:], reduction="none")
    return nll, records


@torch.no_grad()
def heldout_ppl(model, ids, window):
    """Perplexity over non-overlapping windows (first token of each window is not scored)."""
    tot, n = 0.0, 0
    for s in range(0, len(ids) - 1, window):
        chunk = ids[s:s + window]
        if len(chunk) < 2:
            break
        nll, _ = token_nll(model, chunk)
        tot += float(nll[1:].double().sum())
        n += len(chunk) - 1
    return math.exp(tot / n), n


def lr_at(step, steps, peak, warmup, floor_frac):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return peak * (floor_frac + (1 - floor_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def train(out_dir, steps=500, seed=1234, threads=2, batch=4, seq_len=512, lr=3e-3,
          warmup=30, config=None, log_every=25):
    t_start = time.time()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    os.makedirs(out_dir, exist_ok=True)
    c = config or LlamaConfig(max_seq_len=seq_len)

    files = corpus.training_files()
    texts = [corpus.read_text(p) for p in files]
    t0 = time.time()
    merges = bpe.train_bpe(texts, c.vocab_size)
    tok = bpe.Tokenizer(merges, name=TOKENIZER_NAME)
    assert tok.vocab_size == c.vocab_size
    eot = tok.specials[bpe.EOT]
    stream = []
    for t in texts:
        stream.extend(tok.encode(t))
        stream.append(eot)
    data = torch.tensor(stream, dtype=torch.long)
    t_tok = time.time() - t0
    rows, corpus_sha = corpus.manifest(files)
    print(f"tokenizer: {len(merges)} merges, {t_tok:.1f}s; corpus {len(files)} files, "
          f"{sum(r[1] for r in rows)} bytes, {len(stream)} tokens, sha256 {corpus_sha[:16]}", flush=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        f.write(tok.to_json({"training_corpus_sha256": corpus_sha}))
        f.write("\n")

    gen = torch.Generator().manual_seed(seed)
    model = TinyLlama(c)
    model.init_weights(gen)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95), eps=1e-8)
    print(f"model: {n_params(model)} params, config {c.to_dict()}", flush=True)
    losses = []
    t_train = time.time()
    model.train()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup, 0.1)
        starts = torch.randint(0, len(data) - seq_len - 1, (batch,), generator=gen)
        xb = torch.stack([data[s:s + seq_len + 1] for s in starts.tolist()])
        logits = model(xb[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, c.vocab_size), xb[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % log_every == 0 or step == steps - 1:
            el = time.time() - t_train
            print(f"step {step:5d} loss {loss.item():.4f} lr {opt.param_groups[0]['lr']:.2e} "
                  f"{el:7.1f}s ({el / (step + 1):.2f}s/step)", flush=True)
    train_time = time.time() - t_train
    model.eval()

    save_model(model, out_dir, {"tokenizer": TOKENIZER_NAME, "train_steps": str(steps),
                                "train_seed": str(seed), "train_batch": str(batch),
                                "train_seq_len": str(seq_len), "train_lr": str(lr),
                                "training_corpus_sha256": corpus_sha})
    # Evaluate what was saved: bf16-rounded weights, fp32 arithmetic (same as the dumps).
    saved, _, _ = load_model(out_dir)
    train_tail = sum(losses[-50:]) / len(losses[-50:])
    heldout = {}
    for p in corpus.held_out_files():
        ids = tok.encode(corpus.read_text(p))
        ppl, n = heldout_ppl(saved, ids, seq_len)
        heldout[os.path.basename(p)] = {"tokens_scored": n, "perplexity": ppl,
                                        "nats_per_token": math.log(ppl),
                                        "bits_per_token": math.log2(ppl)}
        print(f"held-out {os.path.basename(p):14s} {n:6d} tokens  ppl {ppl:8.3f}  "
              f"{math.log2(ppl):.3f} bits/token", flush=True)
    total = time.time() - t_start
    print(f"train loss (mean of last 50 steps) {train_tail:.4f} nats "
          f"(ppl {math.exp(train_tail):.2f}); training {train_time:.1f}s, total {total:.1f}s", flush=True)
    log = {"steps": steps, "seed": seed, "threads": threads, "batch": batch, "seq_len": seq_len,
           "lr": lr, "warmup": warmup, "params": n_params(model), "config": c.to_dict(),
           "train_time_s": round(train_time, 1), "total_time_s": round(total, 1),
           "tokenizer_time_s": round(t_tok, 1),
           "train_loss_last50": train_tail, "loss_every_25": losses[::25] + [losses[-1]],
           "heldout": heldout, "training_tokens": len(stream),
           "torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "training_corpus_sha256": corpus_sha,
           "training_corpus": [[os.path.basename(p), n, d[:16]] for p, n, d in rows]}
    with open(os.path.join(out_dir, "train_log.json"), "w") as f:
        json.dump(log, f, indent=1)
        f.write("\n")
    return log
