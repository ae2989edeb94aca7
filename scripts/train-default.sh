#!/usr/bin/env bash
# Trains the engine's default model (models/default) from scratch on a 2-core machine, from text
# that a stock Debian machine already has: apt's package index becomes short "package cards"
# (scripts/make-default-data.py), a sentencepiece vocabulary is trained on them
# (scripts/train-tokenizer.sh), and a tiny Mistral-architecture COCOM model (decoder used as
# its own compressor, compression rate 4) is pre-trained (auto-encoding + text continuation)
# and fine-tuned on questions about the cards. Then it is evaluated with `cocom eval` and
# copied, with its evaluation, to the output directory.
#
#   scripts/train-default.sh [--out models/default] [--work DIR] [--quick]
#
# --out DIR    where the finished model goes (default models/default; replaced at the end only)
# --work DIR   data, checkpoints and logs (default build/train-default); a run that stops can be
#              continued by running the script again: finished stages are skipped and a stage
#              that has checkpoints resumes from the latest one
# --quick      a few steps of each stage (checks the recipe end to end in minutes)
# Environment: BUILD_DIR (default build), COCOM_THREADS (default: all cores).
set -euo pipefail
cd "$(dirname "$0")/.."

out=models/default
work=""
quick=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --work) work="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "train-default.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
BUILD_DIR=${BUILD_DIR:-build}
work=${work:-$BUILD_DIR/train-default}
cocom=$BUILD_DIR/bin/cocom
[[ -x $cocom ]] || { echo "train-default.sh: $cocom not found; run scripts/setup.sh first" >&2; exit 1; }
threads=()
[[ -n ${COCOM_THREADS:-} ]] && threads=(--threads "$COCOM_THREADS")

# The recipe. Steps are optimizer steps; on this project's 2-core VM a pre-training step of 16
# passages takes about 1.3 s and a fine-tuning step of 8 questions (5 passages each) about 2.5 s:
# about 45 + 42 minutes, plus a few minutes of data, vocabulary and evaluation.
vocab=4096
pre_steps=2000 pre_batch=16 pre_lr=2e-3
fine_steps=1000 fine_batch=8 fine_lr=1e-3
eval_every=500
eval_n=300
if ((quick)); then
  pre_steps=6 fine_steps=4 eval_every=3 eval_n=8
fi

mkdir -p "$work"
log=$work/train.log
start=$(date +%s)
stage() { printf '\n== [%s, %d s] %s\n' "$(date +%H:%M:%S)" $(($(date +%s) - start)) "$*" | tee -a "$log" >&2; }

data=$work/data
if [[ ! -f $data/qa-heldout.jsonl ]]; then
  stage "deriving training data from apt's package index"
  python3 scripts/make-default-data.py --out "$data.tmp" 2>&1 | tee -a "$log" >&2
  rm -rf "$data" && mv "$data.tmp" "$data"
fi

tok=$work/tokenizer
if [[ ! -f $tok/tokenizer.model ]]; then
  stage "training a $vocab-piece sentencepiece vocabulary"
  python3 -c 'import json,sys
for line in open(sys.argv[1]): print(json.loads(line)["text"])' "$data/passages-train.jsonl" \
    > "$work/cards.txt"
  scripts/train-tokenizer.sh --vocab-size "$vocab" --out "$tok.tmp" --corpus-mb 40 \
    --seed-text "$work/cards.txt" 2>&1 | tee -a "$log" >&2
  rm -rf "$tok" && mv "$tok.tmp" "$tok"
fi

init=$work/init
if [[ ! -f $init/config.json ]]; then
  stage "initialising the model"
  cat > "$work/spec.json" <<JSON
{
  "compr_rate": 4, "sep": true, "lora": false, "compr_linear_type": "concat",
  "generation_top_k": 5,
  "decoder": {
    "vocab_size": $vocab, "hidden_size": 256, "intermediate_size": 768,
    "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2
  },
  "decoder_tokenizer": "$(cd "$tok" && pwd)"
}
JSON
  "$cocom" model init --arch cocom --config "$work/spec.json" --out "$init" --seed 1 \
    --dtype fp32 2>&1 | tee -a "$log" >&2
fi

# Runs one training stage, or resumes it from its latest checkpoint.
train_stage() {
  local task=$1 dir=$2
  shift 2
  if [[ -f $dir/config.json ]]; then return; fi
  local last
  last=$(ls -d "$dir"/checkpoints/step-* 2>/dev/null | sort -t- -k2 -n | tail -1 || true)
  if [[ -n $last ]]; then
    stage "$task: resuming from $last"
    "$cocom" "${threads[@]}" train "$task" --resume "$last" 2>&1 | tee -a "$log" >&2
  else
    "$cocom" "${threads[@]}" train "$task" "$@" --out "$dir" 2>&1 | tee -a "$log" >&2
  fi
}

stage "pre-training: $pre_steps steps of $pre_batch passages (auto-encoding + text continuation)"
train_stage pretrain "$work/pretrained" --model "$init" --data "$data/passages-train.jsonl" \
  --lora-r 0 --tc-ratio 0.5 --lr "$pre_lr" --warmup-ratio 0.03 --max-steps "$pre_steps" \
  --batch-size "$pre_batch" --context-max-length 128 --seed 1 --log-every 20 \
  --save-every "$eval_every" --eval-data "$data/passages-heldout.jsonl" \
  --eval-every "$eval_every" --eval-examples 64

stage "fine-tuning: $fine_steps steps of $fine_batch questions, 5 passages each"
train_stage finetune "$work/finetuned" --model "$work/pretrained" \
  --data "$data/qa-train.jsonl" --k 5 --max-answer-tokens 32 --lora-r 0 --lr "$fine_lr" \
  --warmup-ratio 0.03 --max-steps "$fine_steps" --batch-size "$fine_batch" \
  --context-max-length 128 --seed 2 --log-every 20 --save-every "$eval_every" \
  --eval-data "$data/qa-heldout.jsonl" --eval-every "$eval_every" --eval-examples 64

model=$work/finetuned
stage "evaluating on held-out packages"
ev=$work/eval
mkdir -p "$ev"
"$cocom" "${threads[@]}" eval --task reconstruction --model "$work/pretrained" \
  --data "$data/passages-heldout.jsonl" --limit "$eval_n" --json > "$ev/reconstruction-pretrained.json"
"$cocom" "${threads[@]}" eval --task reconstruction --model "$model" \
  --data "$data/passages-heldout.jsonl" --limit "$eval_n" --json > "$ev/reconstruction.json"
"$cocom" "${threads[@]}" eval --task qa --model "$model" --data "$data/qa-heldout.jsonl" \
  --limit "$eval_n" --baselines closed-book,uncompressed --json > "$ev/qa-contexts.json"
rm -rf "$ev/store"
"$cocom" "${threads[@]}" ingest --db "$ev/store" --model "$model" "$data/docs" 2>&1 | tail -1 >&2
python3 -c 'import json,sys
with open(sys.argv[2], "w") as f:
    for line in open(sys.argv[1]):
        if json.loads(line).get("in_docs"): f.write(line)' "$data/qa-heldout.jsonl" "$ev/qa-docs.jsonl"
"$cocom" "${threads[@]}" eval --task qa --model "$model" --db "$ev/store" --k 5 \
  --data "$ev/qa-docs.jsonl" --limit "$eval_n" --baselines closed-book --json > "$ev/qa-retrieval.json"

stage "copying the model to $out"
rm -rf "$out.tmp"
cp -r "$model" "$out.tmp"
rm -rf "$out.tmp/checkpoints"
mkdir -p "$out.tmp/eval"
cp "$ev"/*.json "$out.tmp/eval/"
cp "$work/spec.json" "$out.tmp/eval/spec.json"
mv "$out.tmp/eval-log.jsonl" "$out.tmp/eval/finetune-eval-log.jsonl" 2>/dev/null || true
cp "$work/pretrained/eval-log.jsonl" "$out.tmp/eval/pretrain-eval-log.jsonl" 2>/dev/null || true
python3 scripts/default-model-card.py "$out.tmp" "$(($(date +%s) - start))" > "$out.tmp/README.md"
rm -rf "$out" && mv "$out.tmp" "$out"
du -sh "$out" >&2
stage "done"
