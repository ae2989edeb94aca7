// The sentence-packing chunker: passages of at most max_tokens compressor tokens ("Title. "
// included), cut at sentence boundaries, then words, with optional overlap.
#include "ingest/documents.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/hash.h"
#include "common/json_util.h"
#include "common/utf8.h"
#include "ingest/text.h"

namespace cocom::ingest {
namespace {

using namespace detail;  // NOLINT

// ---------------------------------------------------------------------------------------------
// Chunking

struct Span {
  size_t b, e;
};

bool closing_punct(unsigned char c) {
  return c == '"' || c == '\'' || c == ')' || c == ']' || c == '}';
}

// Sentence spans (no leading/trailing whitespace) in order.
std::vector<Span> split_sentences(const std::string& t) {
  std::vector<Span> out;
  const size_t n = t.size();
  size_t i = 0;
  while (i < n) {
    while (i < n && is_space(static_cast<unsigned char>(t[i]))) ++i;
    if (i >= n) break;
    size_t start = i, end = n;
    while (i < n) {
      unsigned char c = static_cast<unsigned char>(t[i]);
      if (c == '.' || c == '!' || c == '?') {
        size_t j = i + 1;
        while (j < n && (t[j] == '.' || t[j] == '!' || t[j] == '?')) ++j;
        while (j < n && closing_punct(static_cast<unsigned char>(t[j]))) ++j;
        if (j == n || is_space(static_cast<unsigned char>(t[j]))) {
          end = j;
          i = j;
          break;
        }
        i = j;
        continue;
      }
      if (c == '\n') {
        size_t j = i + 1;
        while (j < n && (t[j] == ' ' || t[j] == '\t' || t[j] == '\r')) ++j;
        if (j < n && t[j] == '\n') {  // paragraph break
          end = i;
          i = j;
          break;
        }
      }
      ++i;
    }
    if (end == n) i = n;
    while (end > start && is_space(static_cast<unsigned char>(t[end - 1]))) --end;
    if (end > start) out.push_back({start, end});
  }
  return out;
}

class Chunker {
 public:
  Chunker(const Document& doc, const ChunkOptions& opt,
          const std::function<int64_t(const std::string&)>& count)
      : doc_(doc), opt_(opt), count_(count) {
    if (opt_.max_tokens <= 0)
      fail("chunk_document: max_tokens must be positive (got ", opt_.max_tokens, ")");
    if (opt_.overlap_tokens < 0)
      fail("chunk_document: overlap_tokens must be >= 0 (got ", opt_.overlap_tokens, ")");
    prefix_ = doc.title.empty() ? std::string() : doc.title + ". ";
  }

  std::vector<Passage> run() {
    std::vector<Span> sentences = split_sentences(doc_.text);
    if (sentences.empty()) return {};
    // A title so long that it leaves no room for a single character is dropped from the
    // passages (documented fallback; otherwise no passage could be produced at all).
    {
      const Span& s = sentences.front();
      size_t len = char_len(s.b);
      if (count_(prefix_ + doc_.text.substr(s.b, len)) > opt_.max_tokens) prefix_.clear();
    }
    // Units: sentences that fit alone, else word-packed pieces, else hard-split pieces.
    for (const Span& s : sentences) {
      if (fits(s.b, s.e)) {
        units_.push_back(s);
      } else {
        split_long(s);
      }
    }
    std::vector<Passage> out;
    size_t i = 0;
    const size_t u = units_.size();
    while (i < u) {
      // Galloping search for the largest j such that units [i, j) fit (j > i always).
      size_t j = gallop(i + 1, u, [&](size_t k) { return fits(units_[i].b, units_[k - 1].e); });
      Passage p;
      p.index = static_cast<int64_t>(out.size());
      p.char_begin = static_cast<int64_t>(units_[i].b);
      p.char_end = static_cast<int64_t>(units_[j - 1].e);
      p.text = passage_text(units_[i].b, units_[j - 1].e);
      out.push_back(std::move(p));
      if (j >= u) break;
      size_t next = j;
      if (opt_.overlap_tokens > 0) {
        // The smallest k in (i, j) whose suffix [k, j) counts at most overlap_tokens...
        size_t k = j;
        while (k > i + 1 &&
               count_(collapse_ws(doc_.text.substr(
                   units_[k - 1].b, units_[j - 1].e - units_[k - 1].b))) <= opt_.overlap_tokens) {
          --k;
        }
        // ... and that still leaves room for the next new unit (guarantees progress).
        while (k < j && !fits(units_[k].b, units_[j].e)) ++k;
        next = k;
      }
      i = next;
    }
    return out;
  }

 private:
  // Largest k in [lo, hi] with ok(k), assuming ok is monotone and ok(lo) holds.
  template <typename F>
  size_t gallop(size_t lo, size_t hi, F ok) {
    size_t good = lo, step = 1;
    size_t bad = hi + 1;
    while (true) {
      size_t probe = good + step;
      if (probe > hi) {
        probe = hi;
        if (probe == good) return good;
        if (ok(probe)) return probe;
        bad = probe;
        break;
      }
      if (ok(probe)) {
        good = probe;
        step *= 2;
      } else {
        bad = probe;
        break;
      }
    }
    while (bad - good > 1) {
      size_t mid = good + (bad - good) / 2;
      if (ok(mid)) {
        good = mid;
      } else {
        bad = mid;
      }
    }
    return good;
  }

  std::string passage_text(size_t b, size_t e) const {
    return prefix_ + collapse_ws(doc_.text.substr(b, e - b));
  }
  bool fits(size_t b, size_t e) const { return count_(passage_text(b, e)) <= opt_.max_tokens; }

  size_t char_len(size_t pos) const {
    uint32_t cp = 0;
    size_t bad = 0;
    const size_t len = utf8::decode(doc_.text.data(), doc_.text.size(), pos, &cp, &bad);
    return len == 0 ? 1 : len;
  }

  void split_long(const Span& s) {
    // Words inside the sentence.
    std::vector<Span> words;
    size_t i = s.b;
    while (i < s.e) {
      while (i < s.e && is_space(static_cast<unsigned char>(doc_.text[i]))) ++i;
      size_t b = i;
      while (i < s.e && !is_space(static_cast<unsigned char>(doc_.text[i]))) ++i;
      if (i > b) words.push_back({b, i});
    }
    size_t w = 0;
    while (w < words.size()) {
      if (!fits(words[w].b, words[w].e)) {
        hard_split(words[w]);
        ++w;
        continue;
      }
      size_t end =
          gallop(w + 1, words.size(), [&](size_t k) { return fits(words[w].b, words[k - 1].e); });
      units_.push_back({words[w].b, words[end - 1].e});
      w = end;
    }
  }

  void hard_split(const Span& word) {
    // Character boundaries of the word.
    std::vector<size_t> bounds;
    for (size_t p = word.b; p < word.e; p += char_len(p)) bounds.push_back(p);
    bounds.push_back(word.e);
    size_t c = 0;  // index into bounds
    const size_t last = bounds.size() - 1;
    while (c < last) {
      if (!fits(bounds[c], bounds[c + 1])) {
        fail("chunk_document: max_tokens ", opt_.max_tokens,
             " is too small to hold a single character of document '", doc_.id, "'");
      }
      size_t end = gallop(c + 1, last, [&](size_t k) { return fits(bounds[c], bounds[k]); });
      units_.push_back({bounds[c], bounds[end]});
      c = end;
    }
  }

  const Document& doc_;
  const ChunkOptions& opt_;
  const std::function<int64_t(const std::string&)>& count_;
  std::string prefix_;
  std::vector<Span> units_;
};

}  // namespace

std::vector<Passage> chunk_document(
    const Document& doc, const ChunkOptions& opt,
    const std::function<int64_t(const std::string&)>& count_tokens) {
  return Chunker(doc, opt, count_tokens).run();
}

}  // namespace cocom::ingest
