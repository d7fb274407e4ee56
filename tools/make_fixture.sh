#!/bin/sh
# Regenerate the committed KV fixture: data/tiny-llama (model + tokenizer) and data/kv (dumps).
# Needs Debian 12 with python3 (its /usr/lib/python3.11 sources are the training text) and
# python3-torch; run from anywhere.  About 10-15 minutes on 2 cores.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-/usr/bin/python3}

mkdir -p data/tiny-llama
if ! $PY tools/seqkv_corpus.py train --out data/tiny-llama --steps 500 --seed 1234 --threads 2 \
        --batch 4 --seq-len 512 --lr 3e-3 > data/tiny-llama/train_stdout.txt 2>&1; then
    cat data/tiny-llama/train_stdout.txt; exit 1
fi
cat data/tiny-llama/train_stdout.txt

$PY tools/seqkv_corpus.py dump --model data/tiny-llama --out-dir data/kv --tokens 512 --dtype bf16 \
    --name py311-textwrap --name gpl3 \
    /usr/lib/python3.11/textwrap.py /usr/share/common-licenses/GPL-3

$PY tools/seqkv_corpus.py selfcheck --model data/tiny-llama data/kv/*.safetensors
$PY -m unittest tools/kvdump/test_kvdump.py
du -b data/tiny-llama/* data/kv/* | sort -k2
du -sb data
