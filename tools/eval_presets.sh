#!/bin/sh
# Next-token fidelity of each lossy preset on the committed KV fixture (data/README.md,
# "Next-token fidelity of decoded KV").  Builds nothing: pass the seqkv CLI binary.
#
#   tools/eval_presets.sh /tmp/build-eval/tools/seqkv [WORK_DIR]
#
# For each dump in data/kv: an expected-KV table is fitted on the *other* dump (used by the
# seqkv-* presets only), then compress -> info --json -> decompress -> seqkv_corpus.py evaluate.
# Prints a markdown table: bits/element (info kv_bits_per_element), attention_rel_error (info
# quality; 0 for bit-exact lossless), mean next-token KL(orig || decoded) in nats and top-1
# agreement over $CONTINUE (default 64) continuation positions, continuation NLL both ways.
# WORK_DIR keeps the intermediate files and per-run JSON (default: a temporary directory).
set -eu
SEQKV=${1:?usage: $0 PATH/TO/seqkv [WORK_DIR]}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
CONTINUE=${CONTINUE:-64}
PRESETS=${PRESETS:-"lossless int8 kivi4 turbo3.5 turbo2.5 kivi2 seqkv-step:0.25 seqkv-step:0.5 seqkv-1bit"}
if [ $# -ge 2 ]; then WORK=$2; mkdir -p "$WORK"; else WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT; fi

DUMPS="gpl3 py311-textwrap"
other() { [ "$1" = gpl3 ] && echo py311-textwrap || echo gpl3; }

echo "| dump | preset | bits/element | attention_rel_error | next-token KL (nats) | top-1 agreement | NLL orig → decoded (nats/token) |"
echo "|---|---|---:|---:|---:|---:|---:|"
for d in $DUMPS; do
    in="$ROOT/data/kv/$d.safetensors"
    table="$WORK/table-from-$(other "$d").safetensors"
    [ -f "$table" ] || "$SEQKV" table "$ROOT/data/kv/$(other "$d").safetensors" -o "$table" >/dev/null
    for p in $PRESETS; do
        tag=$(echo "$d-$p" | tr ':' '_')
        case $p in seqkv-*) tab="--table $table" ;; *) tab="" ;; esac
        # shellcheck disable=SC2086
        "$SEQKV" compress "$in" -o "$WORK/$tag.skv" --preset "$p" $tab >/dev/null
        "$SEQKV" info "$WORK/$tag.skv" --json >"$WORK/$tag.info.json"
        # shellcheck disable=SC2086
        "$SEQKV" decompress "$WORK/$tag.skv" -o "$WORK/$tag.back.safetensors" $tab >/dev/null
        "$PY" "$ROOT/tools/seqkv_corpus.py" evaluate --model "$ROOT/data/tiny-llama" --original "$in" \
            --decoded "$WORK/$tag.back.safetensors" --continue "$CONTINUE" --json >"$WORK/$tag.eval.json"
        "$PY" - "$d" "$p" "$WORK/$tag.info.json" "$WORK/$tag.eval.json" <<'EOF'
import json, sys
d, p, info, ev = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3])), json.load(open(sys.argv[4]))
q = info.get("quality") or {}
are = q.get("attention_rel_error", 0.0 if q.get("bit_exact") else float("nan"))
print(f"| {d} | {p} | {info['kv_bits_per_element']:.3f} | {are:.4f} | {ev['kl_mean_nats']:.3g} | "
      f"{ev['top1_agreement']:.3f} | {ev['nll_original_nats']:.3f} → {ev['nll_decoded_nats']:.3f} |")
EOF
    done
done
