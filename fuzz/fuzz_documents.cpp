// libFuzzer target: arbitrary bytes as a Markdown and an HTML document, then through the
// chunker. The readers may only fail with cocom::Error; their text must be valid UTF-8 after
// repair, and every passage must lie inside the document. HTML is also read with a small
// nesting limit, and gumbo's tree of the normalised document must stay within the bound that
// keeps the reader linear (see ingest/html.cpp).
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "common/utf8.h"
#include "ingest/documents.h"
#include "ingest/html.h"

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

// The normalised HTML keeps gumbo's element depth within ~2x the limit (implied <tbody>/<tr>
// in tables) plus <html>/<body>; 3x + 8 leaves room for reconstructed formatting elements.
void check_html_depth(const std::string& html) {
  constexpr int64_t kLimit = 8;
  const cocom::ingest::detail::NormalizedHtml norm =
      cocom::ingest::detail::normalize_html(html, kLimit);
  check(norm.max_depth <= kLimit);
  check(cocom::ingest::detail::gumbo_element_depth(norm.html) <= 3 * kLimit + 8);
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
  try {
    check_html_depth(bytes);
  } catch (const cocom::Error&) {
  }
  return 0;
}
