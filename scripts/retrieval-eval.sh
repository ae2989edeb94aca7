#!/usr/bin/env bash
# Retrieval over text nobody here wrote: Debian's licences (/usr/share/common-licenses), asked
# with the questions of bench/data/licence-questions.jsonl (written in other words than the
# licences use; gold = the licence's file name). Ingests the licences into stores with the BM25
# analyzers to compare (default: english, i.e. Snowball stemming, and words, i.e. none) and
# prints `cocom eval --task retrieval` (recall@k, MRR) for each. Not part of CI.
#
#   scripts/retrieval-eval.sh                       # english vs words, k = 5
#   LANGUAGES="english" K=10 scripts/retrieval-eval.sh
#   MODEL=DIR RETRIEVER=DIR scripts/retrieval-eval.sh  # another checkpoint; dense/hybrid too
#
# Needs a build (build/bin/cocom) and the default model (models/default) unless MODEL is set.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
COCOM=${COCOM:-$ROOT/build/bin/cocom}
LICENSES=${LICENSES:-/usr/share/common-licenses}
QUESTIONS=${QUESTIONS:-$ROOT/bench/data/licence-questions.jsonl}
LANGUAGES=${LANGUAGES:-"english words"}
K=${K:-5}
[[ -x $COCOM ]] || { echo "retrieval-eval: no $COCOM (build first: scripts/setup.sh)" >&2; exit 2; }
[[ -d $LICENSES ]] || { echo "retrieval-eval: no $LICENSES" >&2; exit 2; }

work=$(mktemp -d /tmp/cocom-retrieval-XXXXXX)
trap 'rm -rf "$work"' EXIT
# One file per licence, its name kept as the gold id (symlinks such as GPL -> GPL-3 are read
# as their own file, as a user's directory would be).
mkdir -p "$work/docs"
for f in "$LICENSES"/*; do
  cp -L "$f" "$work/docs/$(basename "$f").txt"
done
model_args=()
[[ -n ${MODEL:-} ]] && model_args+=(--model "$MODEL")
[[ -n ${RETRIEVER:-} ]] && model_args+=(--retriever "$RETRIEVER")
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for lang in $LANGUAGES; do
  db="$work/db-$lang"
  "$COCOM" ingest --db "$db" --language "$lang" "${model_args[@]}" "$work/docs" >&2
  echo "== BM25 language: $lang"
  "$COCOM" eval --task retrieval --db "$db" --data "$QUESTIONS" --k "$K"
done
