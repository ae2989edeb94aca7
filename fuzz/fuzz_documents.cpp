// libFuzzer target: arbitrary bytes as a Markdown and an HTML document, then through the
// chunker. The readers may only fail with cocom::Error; their text must be valid UTF-8 after
// repair, and every passage must fit the token budget and lie inside the document.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "common/utf8.h"
#include "ingest/documents.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// Whitespace-separated words: an independent token count for the chunker.
int64_t words(const std::string& s) {
  int64_t n = 0;
  bool in = false;
  for (char c : s) {
    const bool space = c == ' ' || c == '\n' || c == '\t' || c == '\r';
    if (!space && !in) ++n;
    in = !space;
  }
  return n;
}

void chunk(const std::string& title, const std::string& text) {
  cocom::ingest::Document doc;
  doc.id = "fuzz";
  doc.title = title;
  doc.text = text;
  cocom::utf8::repair(&doc.text);
  cocom::utf8::repair(&doc.title);
  cocom::ingest::ChunkOptions co;
  co.max_tokens = 16;
  co.overlap_tokens = 3;
  for (const auto& p : cocom::ingest::chunk_document(doc, co, words)) {
    check(cocom::utf8::is_valid(p.text));
    check(p.char_begin <= p.char_end && p.char_end <= static_cast<int64_t>(doc.text.size()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  for (int kind = 0; kind < 2; ++kind) {
    std::string title, text;
    try {
      text = kind == 0 ? cocom::ingest::markdown_to_text(bytes, &title)
                       : cocom::ingest::html_to_text(bytes, &title);
    } catch (const cocom::Error&) {
      continue;
    }
    chunk(title, text);
  }
  return 0;
}
