// libFuzzer target: the chunker alone, with budgets and token counters taken from the input.
// Byte 0: max_tokens (1..48); byte 1: overlap_tokens (0..max_tokens); byte 2: the counter
// (whitespace words, bytes or code points: simple, monotonic stand-ins for a tokenizer) and
// whether the text up to the first newline is the title; the rest is the document.
// chunk_document may only fail with cocom::Error (a budget that cannot hold one character);
// otherwise every passage fits the budget, is valid UTF-8, lies inside the document at
// character boundaries in order, the passages cover every non-space byte, and a second run
// gives the same passages.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/utf8.h"
#include "ingest/documents.h"

namespace {

void check(bool ok) {
  if (!ok) __builtin_trap();
}

bool space(char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

int64_t words(const std::string& s) {
  int64_t n = 0;
  bool in = false;
  for (char c : s) {
    if (!space(c) && !in) ++n;
    in = !space(c);
  }
  return n;
}

int64_t bytes(const std::string& s) { return static_cast<int64_t>(s.size()); }

int64_t code_points(const std::string& s) {
  int64_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  cocom::ingest::ChunkOptions co;
  co.max_tokens = 1 + data[0] % 48;
  co.overlap_tokens = data[1] % (co.max_tokens + 1);
  int64_t (*count)(const std::string&) = data[2] % 3 == 0   ? words
                                         : data[2] % 3 == 1 ? bytes
                                                            : code_points;
  std::string rest(reinterpret_cast<const char*>(data) + 3, size - 3);
  cocom::ingest::Document doc;
  doc.id = "fuzz";
  const size_t nl = rest.find('\n');
  if ((data[2] & 0x80) && nl != std::string::npos) {
    doc.title = rest.substr(0, nl);
    rest.erase(0, nl + 1);
  }
  doc.text = rest;
  cocom::utf8::repair(&doc.text);
  cocom::utf8::repair(&doc.title);

  std::vector<cocom::ingest::Passage> passages;
  try {
    passages = cocom::ingest::chunk_document(doc, co, count);
  } catch (const cocom::Error&) {
    return 0;
  }
  const auto n = static_cast<int64_t>(doc.text.size());
  auto boundary = [&](int64_t at) {
    return at == n ||
           (static_cast<unsigned char>(doc.text[static_cast<size_t>(at)]) & 0xC0) != 0x80;
  };
  std::vector<bool> covered(doc.text.size(), false);
  int64_t last_begin = 0;
  for (size_t i = 0; i < passages.size(); ++i) {
    const auto& p = passages[i];
    check(p.index == static_cast<int64_t>(i));
    check(!p.text.empty() && cocom::utf8::is_valid(p.text));
    check(count(p.text) <= co.max_tokens);
    check(0 <= p.char_begin && p.char_begin < p.char_end && p.char_end <= n);
    check(boundary(p.char_begin) && boundary(p.char_end));
    check(p.char_begin >= last_begin);
    last_begin = p.char_begin;
    for (int64_t k = p.char_begin; k < p.char_end; ++k) covered[static_cast<size_t>(k)] = true;
  }
  for (size_t k = 0; k < doc.text.size(); ++k) check(covered[k] || space(doc.text[k]));

  const auto again = cocom::ingest::chunk_document(doc, co, count);
  check(again.size() == passages.size());
  for (size_t i = 0; i < again.size(); ++i) {
    check(again[i].text == passages[i].text && again[i].char_begin == passages[i].char_begin &&
          again[i].char_end == passages[i].char_end);
  }
  return 0;
}
