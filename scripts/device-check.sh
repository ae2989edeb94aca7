#!/usr/bin/env bash
# Device check for the trainer and the runtime on a machine with a CUDA-enabled libtorch.
#
#   scripts/device-check.sh /path/to/cocom [DEVICE] [STEPS]
#
# DEVICE defaults to cuda (cuda:N works too), STEPS to 20. Independent of how cocom was built:
# it only runs the given binary, on the tiny fixture checkpoint tests/data/fixtures/cocom
# (decoder-compressor with LoRA r 4, context length 32) and on small jsonl files it writes itself
# into a temporary directory (kept when KEEP=1; its path is printed).
#
# What it runs, each step printed with its command and the loss lines:
#   1. pretrain, STEPS steps, LoRA r 4, held-out evaluation every STEPS/2 steps, fp32 on DEVICE;
#   2. the same with --bf16 (autocast);
#   3. both: the loss must go down (mean of the last 3 logged losses < 0.9 x the first 3);
#      bf16's first loss within 5% of fp32's;
#   4. resume the fp32 run's mid checkpoint (saved as CPU tensors) on cpu and on DEVICE;
#   5. a short QA fine-tune on DEVICE with --bf16;
#   6. `cocom generate` with the fixture on DEVICE and on cpu: the greedy answers must equal the
#      golden answers computed with Hugging Face transformers (needs python3 to write the
#      questions from golden.json; skipped without it); then with the trained model;
#   7. `cocom ingest` + `cocom ask` on DEVICE with the trained model (bm25 retrieval).
# Exit status 0 when every check passed; a summary is printed at the end.
set -uo pipefail

if [[ $# -lt 1 || ! -x "$1" ]]; then
  echo "usage: $0 /path/to/cocom [DEVICE (cuda)] [STEPS (20)]" >&2
  exit 2
fi
BIN=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
DEVICE=${2:-cuda}
STEPS=${3:-20}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FIX=$ROOT/tests/data/fixtures/cocom
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cocom-device-check.XXXXXX")
if [[ "${KEEP:-0}" == 1 ]]; then
  echo "work directory (kept): $WORK"
else
  trap 'rm -rf "$WORK"' EXIT
fi
HALF=$(((STEPS + 1) / 2))
FAILED=()
PASSED=()

pass() { PASSED+=("$1"); echo "PASS: $1"; }
failc() { FAILED+=("$1"); echo "FAIL: $1"; }

# run NAME CMD...: prints the command, runs it with output to $WORK/NAME.log (and the terminal).
run() {
  local name=$1
  shift
  echo
  echo "== $name: $*"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$WORK/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "-- $name: exit $rc, $((SECONDS - t0)) s"
  if [[ $rc -eq 0 ]]; then pass "$name runs"; else failc "$name runs (exit $rc)"; fi
  return "$rc"
}

# losses LOG: the numbers of the "step N/M | loss X" lines, one per line.
losses() { sed -n 's/.*step [0-9]*\/[0-9]* | loss \([0-9.eE+-]*\).*/\1/p' "$1"; }

# decreasing NAME LOG: the mean of the last 3 losses < 0.9 x the mean of the first 3.
decreasing() {
  local l
  l=$(losses "$2" | tr '\n' ' ')
  echo "$1 losses: $l"
  if awk -v s="$l" 'BEGIN { n = split(s, a, " "); if (n < 6) exit 1;
       f = (a[1] + a[2] + a[3]) / 3; e = (a[n] + a[n-1] + a[n-2]) / 3;
       printf "first-3 mean %.4f, last-3 mean %.4f\n", f, e; exit !(e < 0.9 * f) }'; then
    pass "$1 loss decreases"
  else
    failc "$1 loss decreases"
  fi
}

# ---- data (written here; project text) ----------------------------------------------------
cat >"$WORK/passages.jsonl" <<'EOF'
{"text": "The Eiffel Tower is in Paris, the capital of France."}
{"text": "Water boils at one hundred degrees at sea level."}
{"text": "The cat sat on the mat and looked at the door."}
{"text": "Mount Everest is the highest mountain above sea level."}
{"text": "A free software license lets users run, study, share and change the program."}
{"text": "The compiler turns source code into machine code that the processor runs."}
{"text": "Rivers carry water from the mountains down to the sea."}
{"text": "A library lends books to the people who live in the town."}
EOF
head -n 4 "$WORK/passages.jsonl" >"$WORK/held-out.jsonl"
cat >"$WORK/qa.jsonl" <<'EOF'
{"question": "Where is the Eiffel Tower?", "answers": ["Paris"], "contexts": ["The Eiffel Tower is in Paris, the capital of France.", "Water boils at one hundred degrees at sea level."]}
{"question": "When does water boil?", "answers": ["at 100 degrees"], "contexts": ["Water boils at one hundred degrees at sea level.", "The cat sat on the mat and looked at the door."]}
{"question": "What is the highest mountain?", "answers": ["Everest"], "contexts": ["Mount Everest is the highest mountain above sea level.", "The Eiffel Tower is in Paris, the capital of France."]}
{"question": "What does a compiler do?", "answers": ["turns source code into machine code"], "contexts": ["The compiler turns source code into machine code that the processor runs.", "Rivers carry water from the mountains down to the sea."]}
EOF

COMMON=(--model "$FIX" --data "$WORK/passages.jsonl" --eval-data "$WORK/held-out.jsonl"
  --eval-every "$HALF" --eval-examples 4 --lora-r 4 --max-steps "$STEPS" --batch-size 4
  --context-max-length 32 --lr 5e-3 --warmup-ratio 0 --seed 7 --save-every "$HALF")

echo "cocom: $BIN"
echo "device: $DEVICE, steps: $STEPS"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv

# ---- 1-3: pretrain fp32 and bf16 ----------------------------------------------------------
run pretrain-fp32 "$BIN" --device "$DEVICE" train pretrain "${COMMON[@]}" --out "$WORK/fp32" &&
  decreasing pretrain-fp32 "$WORK/pretrain-fp32.log"
run pretrain-bf16 "$BIN" --device "$DEVICE" train pretrain "${COMMON[@]}" --bf16 \
  --out "$WORK/bf16" && decreasing pretrain-bf16 "$WORK/pretrain-bf16.log"
for v in fp32 bf16; do
  [[ -f "$WORK/$v/eval-log.jsonl" ]] && echo "eval-log ($v):" && cat "$WORK/$v/eval-log.jsonl"
  if grep -q "on $DEVICE" "$WORK/pretrain-$v.log" 2>/dev/null; then
    pass "pretrain-$v ran on $DEVICE"
  else
    failc "pretrain-$v ran on $DEVICE (no 'on $DEVICE' in the start line)"
  fi
done
f32=$(losses "$WORK/pretrain-fp32.log" | head -n 1)
b16=$(losses "$WORK/pretrain-bf16.log" | head -n 1)
if [[ -n "$f32" && -n "$b16" ]]; then
  echo "first loss: fp32 $f32, bf16 $b16"
  if awk -v a="$f32" -v b="$b16" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 0.05 * a) }'; then
    pass "bf16 first loss within 5% of fp32"
  else
    failc "bf16 first loss within 5% of fp32"
  fi
fi

# ---- 4: resume the mid checkpoint on cpu and on the device --------------------------------
CK=$WORK/fp32/checkpoints/step-$HALF
if [[ -d "$CK" ]]; then
  run resume-cpu "$BIN" --device cpu --threads 0 train pretrain --resume "$CK" --out "$WORK/resumed-cpu"
  run resume-device "$BIN" --device "$DEVICE" train pretrain --resume "$CK" --out "$WORK/resumed-dev"
  # The resumed device run should finish with the straight run's loss (same device, same data).
  a=$(losses "$WORK/pretrain-fp32.log" | tail -n 1)
  b=$(losses "$WORK/resume-device.log" | tail -n 1)
  c=$(losses "$WORK/resume-cpu.log" | tail -n 1)
  echo "last loss: straight $a, resumed on $DEVICE $b, resumed on cpu $c"
  # Bit-identical on the CPU; on CUDA, atomics in some backward kernels may move the last digits.
  if [[ -n "$a" && -n "$b" ]] &&
    awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= 1e-3 * a) }'; then
    pass "resume on $DEVICE reproduces the last loss"
  else
    failc "resume on $DEVICE reproduces the last loss ($a vs $b)"
  fi
else
  failc "checkpoint $CK exists"
fi

# ---- 5: fine-tune --------------------------------------------------------------------------
if run finetune-bf16 "$BIN" --device "$DEVICE" train finetune --model "$WORK/fp32" \
  --data "$WORK/qa.jsonl" --eval-data "$WORK/qa.jsonl" --eval-examples 4 --k 2 --lora-r 4 \
  --max-steps 4 --batch-size 2 --context-max-length 32 --bf16 --out "$WORK/ft"; then
  if grep -q "eval step 4/4 | qa-loss" "$WORK/finetune-bf16.log"; then
    pass "finetune evaluates"
  else
    failc "finetune evaluates"
  fi
fi

# ---- 6: generation on the device -----------------------------------------------------------
PY=$(command -v python3 || true)
if [[ -n "$PY" ]] && "$PY" - "$FIX/golden.json" "$WORK" <<'EOF'
import json, sys
g = json.load(open(sys.argv[1]))
with open(sys.argv[2] + "/golden-qa.jsonl", "w") as o:
    for q, c in zip(g["questions"], g["contexts"]):
        o.write(json.dumps({"question": q, "contexts": c}) + "\n")
with open(sys.argv[2] + "/golden-answers.txt", "w") as o:
    for a in g["decoded"]:
        o.write(json.dumps(a) + "\n")
EOF
then
  for d in "$DEVICE" cpu; do
    run "generate-golden-$d" "$BIN" --device "$d" generate --model "$FIX" \
      --in "$WORK/golden-qa.jsonl" --out "$WORK/golden-$d.jsonl" --batch-size 2 \
      --max-new-tokens 8 --context-max-length 32
    if [[ -f "$WORK/golden-$d.jsonl" ]]; then
      if "$PY" - "$WORK/golden-$d.jsonl" "$WORK/golden-answers.txt" <<'EOF'
import json, sys
got = [json.loads(l)["answer"] for l in open(sys.argv[1]) if l.strip()]
want = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
print("answers:", got, "golden:", want)
sys.exit(0 if got == want else 1)
EOF
      then
        pass "generate on $d equals the golden answers"
      else
        failc "generate on $d equals the golden answers"
      fi
    fi
  done
else
  echo "(python3 not found: the golden generation check is skipped)"
fi
run generate-trained "$BIN" --device "$DEVICE" generate --model "$WORK/fp32" \
  --in "$WORK/qa.jsonl" --batch-size 2 --max-new-tokens 8 --context-max-length 32

# ---- 7: ingest + ask on the device ---------------------------------------------------------
mkdir -p "$WORK/docs"
sed -n 's/{"text": "\(.*\)"}/\1/p' "$WORK/passages.jsonl" >"$WORK/docs/facts.txt"
run ingest "$BIN" --device "$DEVICE" ingest --db "$WORK/db" --model "$WORK/fp32" "$WORK/docs" &&
  run ask "$BIN" --device "$DEVICE" ask --db "$WORK/db" --k 2 --max-new-tokens 8 \
    "Where is the Eiffel Tower?"

echo
echo "== summary: ${#PASSED[@]} passed, ${#FAILED[@]} failed (device $DEVICE)"
for f in ${FAILED[@]+"${FAILED[@]}"}; do echo "FAILED: $f"; done
[[ ${#FAILED[@]} -eq 0 ]]
