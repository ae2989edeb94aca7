#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan, every library instrumented for
# coverage) in build-fuzz/, seeds corpora from tests/data/fixtures into fuzz-corpus/<target>/,
# and runs each target for a bounded time. Not part of CI.
#
#   scripts/fuzz.sh                      # every target that exists, 60 s each
#   scripts/fuzz.sh --seconds 300        # longer runs
#   scripts/fuzz.sh --target fuzz_config # one target
#   scripts/fuzz.sh --jobs 2             # build parallelism (default 2)
#
# Exit status: 0 when no fuzzer crashed, 1 when one did (crash inputs are listed at the end;
# reproduce with `build-fuzz/bin/<target> <crash-file>`), 2 on usage or build errors.
# The corpora grow across runs (fuzz-corpus/ is git-ignored); delete them to start afresh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-fuzz"
CORPUS="$ROOT/fuzz-corpus"
FIXTURES="$ROOT/tests/data/fixtures"
ALL_TARGETS=(fuzz_safetensors fuzz_config fuzz_tokenizer fuzz_documents fuzz_read_paths fuzz_chunker
             fuzz_serve_api fuzz_torch_save fuzz_formats)

seconds=60
jobs=2
targets=()
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="${2:?--seconds needs a value}"; shift 2 ;;
    --seconds=*) seconds="${1#*=}"; shift ;;
    --target) targets+=("${2:?--target needs a value}"); shift 2 ;;
    --target=*) targets+=("${1#*=}"); shift ;;
    --jobs) jobs="${2:?--jobs needs a value}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fuzz.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [[ "$seconds" -eq 0 ]]; then
  echo "fuzz.sh: --seconds must be a positive integer (got '$seconds')" >&2
  exit 2
fi
for t in "${targets[@]}"; do
  case " ${ALL_TARGETS[*]} " in
    *" $t "*) ;;
    *) echo "fuzz.sh: unknown target '$t' (known: ${ALL_TARGETS[*]})" >&2; exit 2 ;;
  esac
done
explicit=${#targets[@]}
if [[ $explicit -eq 0 ]]; then targets=("${ALL_TARGETS[@]}"); fi

# A target "exists" once its source defines the libFuzzer entry point (placeholders do not).
present=()
for t in "${targets[@]}"; do
  if grep -q LLVMFuzzerTestOneInput "$ROOT/fuzz/$t.cpp" 2>/dev/null; then
    present+=("$t")
  elif [[ $explicit -gt 0 ]]; then
    echo "fuzz.sh: fuzz/$t.cpp has no LLVMFuzzerTestOneInput yet" >&2
    exit 2
  else
    echo "fuzz.sh: skipping $t (fuzz/$t.cpp is not written yet)"
  fi
done
if [[ ${#present[@]} -eq 0 ]]; then echo "fuzz.sh: no fuzz target to run" >&2; exit 2; fi

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found" >&2; exit 2; }

# --- build -------------------------------------------------------------------------------------
# -fsanitize=fuzzer-no-link instruments the libraries too (not only the fuzz target sources),
# so that libFuzzer sees coverage inside the parsers. UBSan findings abort instead of printing.
echo "== configuring $BUILD"
mkdir -p "$BUILD"
CC=clang CXX=clang++ cmake -S "$ROOT" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCOCOM_FUZZ=ON -DCOCOM_BUILD_TESTS=OFF -DCOCOM_SANITIZE=ON \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all" \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all" >"$BUILD/configure.log" 2>&1 ||
  { cat "$BUILD/configure.log" >&2; echo "fuzz.sh: cmake configure failed" >&2; exit 2; }
echo "== building ${present[*]}"
if ! cmake --build "$BUILD" --target "${present[@]}" -j "$jobs"; then
  echo "fuzz.sh: build failed" >&2
  exit 2
fi

# --- seed corpora ------------------------------------------------------------------------------
seed_safetensors() {
  local dir="$CORPUS/fuzz_safetensors"
  mkdir -p "$dir"
  local f name
  while IFS= read -r f; do
    name="$(echo "${f#"$FIXTURES"/}" | tr '/' '_')"
    # Small files go in whole; for big ones the header alone (plus a few data bytes) keeps the
    # inputs short enough for fast mutation while still covering the JSON paths.
    if [[ $(stat -c %s "$f") -le 65536 ]]; then
      cp -f "$f" "$dir/$name"
    else
      local n
      n=$(od -An -t u8 -N 8 "$f" | tr -d ' ')
      head -c $((8 + n + 64)) "$f" >"$dir/$name.head"
    fi
  done < <(find "$FIXTURES" -name '*.safetensors' | sort)
  # Valid miniatures of every fixture (same names and dtypes, tiny shapes), so the fuzzer starts
  # from headers that pass every check.
  local py=/usr/bin/python3
  [[ -x $py ]] || py=python3
  "$py" - "$FIXTURES" "$dir" <<'PY' || echo "fuzz.sh: (could not write miniature seeds)"
import json, os, struct, sys
fixtures, out = sys.argv[1], sys.argv[2]
size = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
for root, _, files in os.walk(fixtures):
    for fn in sorted(files):
        if not fn.endswith(".safetensors"):
            continue
        p = os.path.join(root, fn)
        with open(p, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            h = json.loads(f.read(n))
        meta = h.pop("__metadata__", None)
        new, off = {}, 0
        if meta is not None:
            new["__metadata__"] = meta
        for i, (k, v) in enumerate(sorted(h.items())[:12]):
            shape = [2, 1] if i % 3 == 0 else ([] if i % 3 == 1 else [3])
            nb = size[v["dtype"]] * (1 if not shape else shape[0] * (shape[1] if len(shape) > 1 else 1))
            new[k] = {"dtype": v["dtype"], "shape": shape, "data_offsets": [off, off + nb]}
            off += nb
        text = json.dumps(new, separators=(",", ":")).encode()
        text += b" " * ((8 - (8 + len(text)) % 8) % 8)
        rel = os.path.relpath(p, fixtures).replace(os.sep, "_")
        with open(os.path.join(out, "mini_" + rel), "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text + b"\x01" * off)
PY
  cat >"$CORPUS/fuzz_safetensors.dict" <<'DICT'
"\"dtype\""
"\"shape\""
"\"data_offsets\""
"\"__metadata__\""
"\"format\""
"\"pt\""
"\"F64\""
"\"F32\""
"\"F16\""
"\"BF16\""
"\"I64\""
"\"I32\""
"\"I16\""
"\"I8\""
"\"U8\""
"\"BOOL\""
"18446744073709551615"
"9223372036854775807"
"4294967296"
"-1"
"1e300"
"null"
"\xff\xff\xff\xff\xff\xff\xff\xff"
DICT
}

seed_config() {
  local dir="$CORPUS/fuzz_config"
  mkdir -p "$dir"
  local f
  while IFS= read -r f; do
    cp -f "$f" "$dir/$(echo "${f#"$FIXTURES"/}" | tr '/' '_')"
  done < <(find "$FIXTURES" -name '*config.json' | sort)
  cat >"$CORPUS/fuzz_config.dict" <<'DICT'
"\"model_type\""
"\"mistral\""
"\"llama\""
"\"bert\""
"\"architectures\""
"\"vocab_size\""
"\"hidden_size\""
"\"intermediate_size\""
"\"num_hidden_layers\""
"\"num_attention_heads\""
"\"num_key_value_heads\""
"\"head_dim\""
"\"max_position_embeddings\""
"\"rms_norm_eps\""
"\"rope_theta\""
"\"sliding_window\""
"\"rope_scaling\""
"\"eos_token_id\""
"\"type_vocab_size\""
"\"layer_norm_eps\""
"\"hidden_act\""
"\"position_embedding_type\""
"null"
"1e300"
"-1"
"18446744073709551615"
DICT
}

seed_tokenizer() {
  local dir="$CORPUS/fuzz_tokenizer"
  mkdir -p "$dir"
  local f
  while IFS= read -r f; do
    cp -f "$f" "$dir/$(echo "${f#"$FIXTURES"/}" | tr '/' '_')"
  done < <(find "$FIXTURES" \( -name 'tokenizer.model' -o -name 'vocab.txt' -o -name 'tokenizer.json' \
             -o -name 'tokenizer_config.json' -o -name 'special_tokens_map.json' \
             -o -name 'added_tokens.json' \) | sort)
}

seed_documents() {
  local dir="$CORPUS/fuzz_documents"
  mkdir -p "$dir"
  local f
  while IFS= read -r f; do
    cp -f "$f" "$dir/$(basename "$f")"
  done < <(find "$ROOT/examples/docs" -type f | sort)
  printf '# T\n\n<b>x</b> [a](b) `c`\n\n| a | b |\n|---|---|\n' >"$dir/seed.md"
  printf '<html><head><title>T</title></head><body><h1>H</h1><p>a<br>b</p></body></html>' \
    >"$dir/seed.html"
}

# fuzz_read_paths: the first byte picks the format (byte % 5: txt md html jsonl pdf) and the
# limits, the rest is the file.
seed_read_paths() {
  local dir="$CORPUS/fuzz_read_paths"
  mkdir -p "$dir"
  local f
  while IFS= read -r f; do
    case "$f" in
      *.md) { printf '\001'; cat "$f"; } >"$dir/$(basename "$f")" ;;
      *) { printf '\000'; cat "$f"; } >"$dir/$(basename "$f")" ;;
    esac
  done < <(find "$ROOT/examples/docs" -type f | sort)
  printf '\002<html><head><title>T</title></head><body><div><p>a<b>b</p><table><td>c</table>' \
    >"$dir/seed.html"
  printf '\003{"id": "a", "title": "A", "text": "x", "m": [[1]]}\n{oops\n[1]\n{"text": 1}\n' \
    >"$dir/seed.jsonl"
  printf '\004%s' '%PDF-1.4
1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj
2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj
3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >> endobj
4 0 obj << /Length 44 >> stream
BT /F1 24 Tf 72 720 Td (Hello PDF) Tj ET
endstream endobj
5 0 obj << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> endobj
trailer << /Root 1 0 R >>
%%EOF' >"$dir/seed.pdf"
}

# fuzz_chunker: bytes 0-2 are max_tokens, overlap and counter/title flags, the rest the text.
seed_chunker() {
  local dir="$CORPUS/fuzz_chunker"
  mkdir -p "$dir"
  printf '\020\003\200Title\nOne sentence. Another one!\n\nA paragraph "quoted." (x)\n' \
    >"$dir/words"
  printf '\010\002\001Hard-split-a-very-long-word-\xc3\xa9\xe2\x98\xba-here. Short.' >"$dir/bytes"
  printf '\004\000\002\xf0\x9f\x98\x80\xf0\x9f\x98\x80 \xe2\x98\xba. x' >"$dir/code_points"
}

seed_serve_api() {
  local dir="$CORPUS/fuzz_serve_api"
  mkdir -p "$dir"
  printf '{"model": "docs", "messages": [{"role": "user", "content": "What is zstd?"}], "max_tokens": 8, "stream": true, "stop": ["END"], "k": 3, "search_mode": "bm25", "compress": false}' >"$dir/chat.json"
  printf '{"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "q"}]}]}' >"$dir/parts.json"
  printf '{"model": "docs", "query": "zstd", "k": 5, "mode": "hybrid", "filter": {"document_id": "a", "source_prefix": "/"}}' >"$dir/search.json"
  printf '{"documents": [{"id": "a", "title": "A", "text": "alpha", "source": "s"}]}' >"$dir/documents.json"
  printf '{"keys": {"key-aaaaaaaa": ["a"], "key-admin-1": ["*"]}}' >"$dir/keys.json"
}

seed_torch_save() {
  local dir="$CORPUS/fuzz_torch_save"
  mkdir -p "$dir"
  # The published PISCO files: one adapter (a one-entry dict: SETITEM), two adapters, and the
  # embedding/lm_head pair.
  cp "$FIXTURES/pisco-hub/single_adapter/adapters.pth" "$dir/one-adapter.pth"
  cp "$FIXTURES/pisco-hub/adapters.pth" "$dir/two-adapters.pth"
  cp "$FIXTURES/pisco-hub/decoder_first_last_layers.pth" "$dir/first-last.pth"
  chmod u+w "$dir"/*
}

# fuzz_formats: the first byte picks the mode (byte % 16, see fuzz/fuzz_formats.cpp): whole
# .gz/.bz2/.xz/.docx/.odt/.epub/README/.rst/.org/.tex/.csv files, or one XML part (docx body,
# odt content, epub package, epub chapter) that the target wraps in a valid container.
seed_formats() {
  local dir="$CORPUS/fuzz_formats"
  mkdir -p "$dir"
  local py=/usr/bin/python3
  [[ -x $py ]] || py=python3
  "$py" - "$dir" <<'PY' || echo "fuzz.sh: (could not write the fuzz_formats seeds)"
import bz2, gzip, io, lzma, os, sys, zipfile
out = sys.argv[1]
def put(mode, name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(bytes([mode]) + data)
def zipped(entries):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        for n, d in entries:
            z.writestr(n, d, compress_type=zipfile.ZIP_STORED if n == "mimetype" else None)
    return b.getvalue()
text = b"Release notes\n\nThe frobnicator is fixed.\n"
W = b'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
body = b'<?xml version="1.0"?><w:document ' + W + b'><w:body><w:p><w:r><w:t>Hi</w:t><w:tab/><w:t>there</w:t></w:r></w:p></w:body></w:document>'
rels = b'<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="r" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>'
core = b'<?xml version="1.0"?><cp:coreProperties xmlns:cp="urn:cp" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>T</dc:title></cp:coreProperties>'
NS = b'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" xmlns:dc="http://purl.org/dc/elements/1.1/"'
content = b'<?xml version="1.0"?><office:document-content ' + NS + b'><office:body><office:text><text:h>H</text:h><text:p>a<text:s text:c="2"/>b<text:tab/>c</text:p></office:text></office:body></office:document-content>'
container = b'<?xml version="1.0"?><container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="OPS/p.opf"/></rootfiles></container>'
opf = b'<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>T</dc:title></metadata><manifest><item id="c" href="c.xhtml"/></manifest><spine><itemref idref="c"/></spine></package>'
chapter = b'<?xml version="1.0"?><!DOCTYPE html><html xmlns="http://www.w3.org/1999/xhtml"><head><title>C</title></head><body><h1>C</h1><p>x &amp; y</p></body></html>'
laughs = b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aa"><!ENTITY b "&a;&a;">]><w:document ' + W + b'><w:t>&b;</w:t></w:document>'
put(0, "text.gz", gzip.compress(text))
put(1, "text.bz2", bz2.compress(text))
put(2, "text.xz", lzma.compress(text))
put(3, "doc.docx", zipped([("[Content_Types].xml", b"<Types/>"), ("_rels/.rels", rels), ("word/document.xml", body), ("docProps/core.xml", core)]))
put(4, "doc.odt", zipped([("mimetype", b"application/vnd.oasis.opendocument.text"), ("content.xml", content), ("meta.xml", b'<?xml version="1.0"?><m ' + NS + b'><dc:title>T</dc:title></m>')]))
put(5, "book.epub", zipped([("mimetype", b"application/epub+zip"), ("META-INF/container.xml", container), ("OPS/p.opf", opf), ("OPS/c.xhtml", chapter)]))
put(6, "README", text)
put(7, "doc.rst", b"Title\n=====\n\nSee ``code`` and `link <http://x>`_.\n\n.. note::\n\n   :ref:`x`::\n")
put(8, "doc.org", b"#+TITLE: T\n* TODO H\n:PROPERTIES:\n:ID: 1\n:END:\n[[http://x][d]]\n")
put(9, "doc.tex", b"\\title{A \\emph{T}}\\begin{document}\\section{S}\\label{x} a~b 50\\% % c\n\\end{document}")
put(10, "doc.csv", b"a,b\n1,2\n")
put(11, "docx-body.xml", body)
put(11, "docx-laughs.xml", laughs)
put(12, "odt-content.xml", content)
put(13, "epub-opf.xml", opf)
put(14, "epub-chapter.xhtml", chapter)
put(15, "readme-gz", text)
PY
}

# --- run ---------------------------------------------------------------------------------------
crashed=()
for t in "${present[@]}"; do
  "seed_${t#fuzz_}"
  art="$CORPUS/_artifacts/$t"
  mkdir -p "$art"
  args=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$art/")
  [[ -f "$CORPUS/$t.dict" ]] && args+=(-dict="$CORPUS/$t.dict")
  echo "== running $t for ${seconds}s (corpus $CORPUS/$t, $(ls "$CORPUS/$t" | wc -l) inputs)"
  set +e
  "$BUILD/bin/$t" "${args[@]}" "$CORPUS/$t" >"$art/last-run.log" 2>&1
  rc=$?
  set -e
  grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb)|cov:' "$art/last-run.log" | tail -3
  if [[ $rc -ne 0 ]]; then
    echo "!! $t exited with status $rc; log: $art/last-run.log"
    grep -E 'ERROR:|runtime error|SUMMARY|Test unit written' "$art/last-run.log" | head -8
    crashed+=("$t")
  fi
done

echo
if [[ ${#crashed[@]} -gt 0 ]]; then
  echo "FUZZ: crashes in ${crashed[*]}. Crash inputs:"
  for t in "${crashed[@]}"; do
    ls -1 "$CORPUS/_artifacts/$t"/{crash,leak,timeout,oom,slow-unit}-* 2>/dev/null | sed 's/^/  /'
    echo "  reproduce: $BUILD/bin/$t <input>"
  done
  exit 1
fi
echo "FUZZ: no crashes (${present[*]}; ${seconds}s each). Crash inputs would be under $CORPUS/_artifacts/<target>/"
