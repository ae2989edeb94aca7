#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine: set-up (packages + build), a knowledge base of
# "package cards" derived on this machine from apt's package index (scripts/make-default-data.py;
# the held-out packages, which the default model never saw in training), ingested with the
# project's default model (models/default), and questions answered with `cocom ask`.
#   scripts/demo.sh                          # two sample questions about held-out packages
#   scripts/demo.sh "Who maintains zstd?"    # your own question (asked after the samples)
# Environment: BUILD_DIR (default build), DEMO_DIR (default $BUILD_DIR/demo), and whatever
# scripts/setup.sh reads. Re-running is quick: unchanged documents are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

export BUILD_DIR=${BUILD_DIR:-build}
DEMO_DIR=${DEMO_DIR:-$BUILD_DIR/demo}

scripts/setup.sh
cocom=$BUILD_DIR/bin/cocom
mkdir -p "$DEMO_DIR"
data=$DEMO_DIR/data
store=$DEMO_DIR/store

say() { printf '\n== %s\n' "$*"; }

[[ -f models/default/config.json ]] || {
  echo "demo.sh: models/default is missing (scripts/train-default.sh makes it)" >&2; exit 1; }

if [[ ! -f $data/qa-heldout.jsonl ]]; then
  say "deriving package cards from apt's package index into $data"
  python3 scripts/make-default-data.py --out "$data"
fi

say "ingesting $data/docs into $store with the default model (models/default)"
"$cocom" ingest --db "$store" "$data/docs"

ask() {
  say "asking: $1"
  "$cocom" ask --db "$store" --k 5 --max-new-tokens 24 "$1"
}

# Two questions whose answers are in the ingested cards, with the answer the card gives.
python3 - "$data/qa-heldout.jsonl" > "$DEMO_DIR/questions.tsv" <<'PY'
import json, sys
wanted = ("Who maintains", "Which section")
picked = {}
for line in open(sys.argv[1]):
    q = json.loads(line)
    for w in wanted:
        if q.get("in_docs") and q["question"].startswith(w) and w not in picked:
            picked[w] = q
for w in wanted:
    if w in picked:
        print(picked[w]["question"] + "\t" + picked[w]["answers"][0])
PY
while IFS=$'\t' read -r question expected; do
  ask "$question"
  echo "(the card says: $expected)"
done < "$DEMO_DIR/questions.tsv"

if [[ $# -gt 0 ]]; then ask "$1"; fi

cat <<NOTE

== NOTE: the default model is tiny (5M parameters, trained in about 1.5 hours on 2 CPU cores;
   models/default/README.md has its held-out scores). It only knows the shape of Debian
   package cards, and its answers are often wrong; the retrieval and the numbered sources are
   real. For real answers ingest with \`--model\` pointing at a published COCOM checkpoint
   (README, Models).

   Try more:  $cocom console --db $store
              $cocom search --db $store "python3"
NOTE
