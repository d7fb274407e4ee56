"""kvdump: build the seqkv KV-cache corpus (tiny Llama trainer, BPE, safetensors I/O, KV dumps).

Standard library + torch only.  Entry point: tools/seqkv_corpus.py.
"""
