#!/usr/bin/env bash
# Trains a tokenizer on text that is already on this machine, for random-weight checkpoints
# (`cocom model init --shape ...`) when no real tokenizer is at hand. The text: copyright
# files and changelogs under /usr/share/doc, /usr/share/common-licenses, and the package
# descriptions apt knows about (`apt-cache dumpavail`). Needs Debian's `sentencepiece`
# package (spm_train, spm_export_vocab), which scripts/setup.sh installs.
#
#   scripts/train-tokenizer.sh --vocab-size 32000 --out DIR [--format spm|wordpiece]
#                              [--corpus-mb 60] [--seed-text FILE]
#
# --format spm (default): DIR/tokenizer.model, a Llama-style sentencepiece BPE model (<unk> 0,
#   <s> 1, </s> 2, byte fallback, digits split, no normalisation) with exactly the requested
#   number of pieces, plus tokenizer_config.json and special_tokens_map.json.
# --format wordpiece: DIR/vocab.txt for a BERT tokenizer: [PAD] [UNK] [CLS] [SEP] [MASK], then the
#   trained pieces (a word-initial piece as is, a continuation piece as ##piece), the requested
#   number of lines in all.
# The tokenizer is only as good as this text (English licence prose and package blurbs); it is
# meant for speed measurements with random weights, not for real answers.
set -euo pipefail

vocab=32000
out=""
format=spm
corpus_mb=60
seed_text=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --vocab-size) vocab="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --format) format="$2"; shift 2 ;;
    --corpus-mb) corpus_mb="$2"; shift 2 ;;
    --seed-text) seed_text="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "train-tokenizer.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ -n "$out" ]] || { echo "train-tokenizer.sh: --out DIR is required" >&2; exit 2; }
[[ "$vocab" =~ ^[0-9]+$ && "$vocab" -ge 300 ]] || {
  echo "train-tokenizer.sh: --vocab-size must be a number >= 300 (got $vocab)" >&2; exit 2; }
[[ "$format" == spm || "$format" == wordpiece ]] || {
  echo "train-tokenizer.sh: --format must be spm or wordpiece" >&2; exit 2; }
command -v spm_train >/dev/null || {
  echo "train-tokenizer.sh: spm_train not found; install Debian's 'sentencepiece' package (scripts/setup.sh does)" >&2
  exit 1; }

mkdir -p "$out"
work=$(mktemp -d "${TMPDIR:-/tmp}/cocom-tok.XXXXXX")
trap 'rm -rf "$work"' EXIT
corpus="$work/corpus.txt"
limit=$((corpus_mb * 1024 * 1024))

{
  [[ -n "$seed_text" ]] && cat "$seed_text"
  cat /usr/share/common-licenses/* 2>/dev/null || true
  apt-cache dumpavail 2>/dev/null | sed -n 's/^Description: //p; s/^ \([^.].*\)$/\1/p' || true
  find /usr/share/doc -type f \( -name copyright -o -name 'changelog*' -o -name 'NEWS*' \
    -o -name 'README*' \) 2>/dev/null | sort | while read -r f; do
    case "$f" in
      *.gz) zcat -f "$f" 2>/dev/null || true ;;
      *) cat "$f" 2>/dev/null || true ;;
    esac
  done
} | tr -d '\000' | head -c "$limit" > "$corpus" || true

bytes=$(wc -c < "$corpus")
lines=$(wc -l < "$corpus")
echo "train-tokenizer.sh: corpus of $((bytes / 1024 / 1024)) MiB, $lines lines from /usr/share/doc, common-licenses and apt descriptions" >&2
[[ "$bytes" -gt 100000 ]] || { echo "train-tokenizer.sh: found too little text on this machine" >&2; exit 1; }

if [[ "$format" == spm ]]; then
  spm_vocab=$vocab
else
  # WordPiece gets 5 special lines; the sentencepiece specials and bytes are dropped below.
  spm_vocab=$((vocab - 5 + 3 + 256))
fi

spm_train --input="$corpus" --model_prefix="$work/tok" --vocab_size="$spm_vocab" \
  --model_type=bpe --character_coverage=0.9995 --byte_fallback=true --split_digits=true \
  --normalization_rule_name=identity --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 \
  --input_sentence_size=3000000 --shuffle_input_sentence=true --max_sentence_length=8192 \
  --num_threads="$(nproc)" --minloglevel=2 >"$work/spm.log" 2>&1 || {
    tail -20 "$work/spm.log" >&2
    echo "train-tokenizer.sh: spm_train failed (a vocabulary this large may need more text: --corpus-mb)" >&2
    exit 1; }

if [[ "$format" == spm ]]; then
  cp "$work/tok.model" "$out/tokenizer.model"
  cat > "$out/tokenizer_config.json" <<'EOF'
{
  "add_bos_token": true,
  "add_eos_token": false,
  "bos_token": "<s>",
  "eos_token": "</s>",
  "unk_token": "<unk>",
  "pad_token": null,
  "legacy": true,
  "padding_side": "left",
  "tokenizer_class": "LlamaTokenizer"
}
EOF
  cat > "$out/special_tokens_map.json" <<'EOF'
{"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
EOF
  echo "train-tokenizer.sh: wrote $out/tokenizer.model ($vocab pieces)" >&2
else
  spm_export_vocab --model="$work/tok.model" --output="$work/tok.vocab"
  {
    printf '[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n'
    cut -f1 "$work/tok.vocab" | grep -v -E '^(<unk>|<s>|</s>|<0x[0-9A-F]{2}>)$' |
      sed -e 's/^\xe2\x96\x81\(..*\)$/\1/' -e 't' -e 's/^\xe2\x96\x81$//' -e 't' -e 's/^/##/' |
      grep -v -E '^$|^##$' | awk '!seen[$0]++'
  } | head -n "$vocab" > "$out/vocab.txt"
  n=$(wc -l < "$out/vocab.txt")
  if [[ "$n" -ne "$vocab" ]]; then
    # Pad with unused entries so the vocabulary has exactly the requested size.
    for ((i = n; i < vocab; ++i)); do echo "[unused$i]"; done >> "$out/vocab.txt"
  fi
  cat > "$out/tokenizer_config.json" <<'EOF'
{"do_lower_case": false, "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
EOF
  echo "train-tokenizer.sh: wrote $out/vocab.txt ($vocab entries)" >&2
fi
