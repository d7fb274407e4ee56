"""kvdump: build the seqkv KV-cache corpus (tiny Llama trainer, BPE, safetensors I/O, KV dumps).

Standard library + torch for the tiny model; the GGUF path (gguf_model, gguf_tokenizer,
gguf_dump, crosscheck, texts, llama_state) also needs numpy and the pip packages of
scripts/setup-models.sh (gguf; jinja2 for chat texts; llama-cpp-python for crosscheck).
Entry point: tools/seqkv_corpus.py.
"""
