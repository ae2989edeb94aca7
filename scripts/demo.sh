#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine: set-up (packages + build), a random-weight COCOM
# checkpoint made with `cocom model init`, the bundled sample documents (examples/docs)
# ingested into a store, and one question answered with `cocom ask`.
#   scripts/demo.sh                        # the sample question
#   scripts/demo.sh "What is COCOM?"       # your own question
# Environment: BUILD_DIR (default build), DEMO_DIR (default $BUILD_DIR/demo), and whatever
# scripts/setup.sh reads. Re-running is quick: the model is kept, unchanged documents are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

export BUILD_DIR=${BUILD_DIR:-build}
DEMO_DIR=${DEMO_DIR:-$BUILD_DIR/demo}
QUESTION=${1:-"How does the knowledge store keep passages and their embeddings?"}

scripts/setup.sh
cocom=$BUILD_DIR/bin/cocom
mkdir -p "$DEMO_DIR"
model=$DEMO_DIR/random-cocom
store=$DEMO_DIR/store

say() { printf '\n== %s\n' "$*"; }

# A small COCOM checkpoint in the published layout with RANDOM weights (no trained default
# model exists yet): a Mistral-shaped decoder (4 layers, width 256), compression rate 16 (128
# tokens -> 8 context embeddings per passage), and the fixtures' sentencepiece tokenizer.
if [[ ! -f $model/config.json ]]; then
  say "generating a random-weight COCOM checkpoint in $model"
  spec=$DEMO_DIR/random-cocom.json
  cat >"$spec" <<JSON
{
  "compr_rate": 16, "sep": true, "lora": true, "lora_r": 16, "compr_linear_type": "concat",
  "generation_top_k": 5,
  "decoder": {
    "vocab_size": 1000, "hidden_size": 256, "intermediate_size": 688,
    "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 1000000.0,
    "tie_word_embeddings": false, "bos_token_id": 1, "eos_token_id": 2
  },
  "decoder_tokenizer": "$root/tests/data/fixtures/cocom/base_decoder"
}
JSON
  "$cocom" model init --arch cocom --config "$spec" --out "$model" --seed 5 --dtype fp32
fi

say "ingesting examples/docs into $store"
"$cocom" ingest --db "$store" --model "$model" examples/docs

say "asking (the model has random weights: expect gibberish, but real sources): $QUESTION"
"$cocom" ask --db "$store" --max-new-tokens 32 "$QUESTION"

cat <<NOTE

== NOTE: the model above has RANDOM weights (made by \`cocom model init\`), so the answer
   text is meaningless. The retrieval is real: the numbered sources are the stored passages
   of examples/docs that best match the question (BM25), and the answer was decoded from
   their stored context embeddings. A trained default model comes with a later issue; until
   then, ingest with \`--model\` pointing at a published COCOM checkpoint (README, Models).

   Try more:  $cocom console --db $store
              $cocom search --db $store "compression rate"
NOTE
