// Markdown to plain text through md4c's SAX parser (md_parse): CommonMark plus tables and
// task lists. The callbacks keep O(1) state (no stack): md4c itself keeps block and span
// nesting in arrays, not on the call stack, so deeply nested quotes and lists read in linear
// time without a depth limit (tests/test_documents.cpp, Markdown.Hostile*).
//
// What comes out:
//  - Blocks are separated by a blank line ("\n\n"); list items, consecutive lists and table
//    rows by one newline; table cells by a space. Soft and hard line breaks stay newlines.
//    Each line has its whitespace collapsed, and lines left empty (an image alone on its line,
//    a tag) are dropped.
//  - Code (blocks and spans) is kept verbatim (a code block is trimmed as a whole).
//  - Links keep their text (autolinks their URL); images are dropped, alt text included;
//    emphasis delimiters go; entities are decoded (numeric ones, and a few common names).
//  - Raw HTML: inline tags are dropped; an HTML block keeps its text without tags or comments
//    (a <script> or <style> block is dropped whole).
//  - The first non-empty heading is the title; when it opens the document (no text before it)
//    it leaves the text: passages are stored as "Title. text" (the KILT form), which would
//    otherwise repeat it.
//  - md4c's strikethrough extension is off: in md4c 0.4.8 it is quadratic on runs of "~a "
//    (a 400 KB line took 12 s). Runs of two or more '~' that touch a word are dropped instead.
//  - NUL bytes read as spaces; ill-formed UTF-8 is repaired (U+FFFD) before parsing, so the
//    text is valid UTF-8. The text is never longer than the (repaired) input.
#include <md4c.h>

#include <cctype>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include "common/error.h"
#include "common/utf8.h"
#include "ingest/documents.h"
#include "ingest/text.h"

namespace cocom::ingest {
namespace {

using detail::collapse_ws;
using detail::is_space;
using detail::trim;

// Named entities decoded; anything else md4c reports as an entity is kept as written. Every
// replacement is shorter than its entity.
struct NamedEntity {
  const char* name;
  const char* text;
};
constexpr NamedEntity kEntities[] = {
    {"amp", "&"},
    {"lt", "<"},
    {"gt", ">"},
    {"quot", "\""},
    {"apos", "'"},
    {"nbsp", " "},
    {"shy", ""},
    {"copy", "\xC2\xA9"},
    {"reg", "\xC2\xAE"},
    {"deg", "\xC2\xB0"},
    {"middot", "\xC2\xB7"},
    {"laquo", "\xC2\xAB"},
    {"raquo", "\xC2\xBB"},
    {"times", "\xC3\x97"},
    {"ndash", "\xE2\x80\x93"},
    {"mdash", "\xE2\x80\x94"},
    {"lsquo", "\xE2\x80\x98"},
    {"rsquo", "\xE2\x80\x99"},
    {"ldquo", "\xE2\x80\x9C"},
    {"rdquo", "\xE2\x80\x9D"},
    {"bull", "\xE2\x80\xA2"},
    {"hellip", "\xE2\x80\xA6"},
    {"euro", "\xE2\x82\xAC"},
    {"trade", "\xE2\x84\xA2"},
};

// The entity at s[0..n) ("&...;", as md4c reports one, or found in an HTML block): appends its
// text to *out and returns the bytes it spans; 0 when s does not start an entity (or names one
// not in the table). Bounded look-ahead: at most 34 bytes.
size_t decode_entity(const char* s, size_t n, std::string* out) {
  if (n < 3 || s[0] != '&') return 0;
  if (s[1] == '#') {
    const bool hex = n > 2 && (s[2] == 'x' || s[2] == 'X');
    size_t i = hex ? 3 : 2;
    const size_t first = i, max_digits = hex ? 6 : 7;
    uint32_t cp = 0;
    while (i < n && i - first < max_digits &&
           (hex ? std::isxdigit(static_cast<unsigned char>(s[i]))
                : std::isdigit(static_cast<unsigned char>(s[i])))) {
      const char c = static_cast<char>(std::tolower(static_cast<unsigned char>(s[i])));
      cp = cp * (hex ? 16 : 10) + static_cast<uint32_t>(c <= '9' ? c - '0' : c - 'a' + 10);
      ++i;
    }
    if (i == first || i >= n || s[i] != ';') return 0;
    // NUL and what is not a code point (surrogates, > U+10FFFF) become U+FFFD.
    utf8::append(out, cp == 0 ? 0xFFFDu : cp);
    return i + 1;
  }
  size_t i = 1;
  while (i < n && i <= 32 && std::isalnum(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 1 || i >= n || s[i] != ';') return 0;
  for (const auto& e : kEntities) {
    if (std::strlen(e.name) == i - 1 && std::memcmp(e.name, s + 1, i - 1) == 0) {
      *out += e.text;
      return i + 1;
    }
  }
  return 0;
}

// Appends inline text, dropping runs of two or more '~' that touch a non-space (the
// strikethrough delimiters md4c is not asked to parse).
void append_inline(const char* s, size_t n, std::string* out) {
  size_t i = 0;
  while (i < n) {
    if (s[i] != '~') {
      const void* tilde = std::memchr(s + i, '~', n - i);
      const size_t end = tilde ? static_cast<size_t>(static_cast<const char*>(tilde) - s) : n;
      out->append(s + i, end - i);
      i = end;
      continue;
    }
    size_t j = i;
    while (j < n && s[j] == '~') ++j;
    const bool space_before = i == 0 || is_space(static_cast<unsigned char>(s[i - 1]));
    const bool space_after = j == n || is_space(static_cast<unsigned char>(s[j]));
    if (j - i < 2 || (space_before && space_after)) out->append(s + i, j - i);
    i = j;
  }
}

bool starts_with_ci(const std::string& s, size_t at, const char* word) {
  const size_t n = std::strlen(word);
  if (s.size() - at < n) return false;
  for (size_t k = 0; k < n; ++k) {
    if (std::tolower(static_cast<unsigned char>(s[at + k])) != word[k]) return false;
  }
  return true;
}

// Tags after which an HTML block's text starts a new line.
bool is_line_tag(const std::string& name) {
  static const char* const kTags[] = {
      "address", "article",    "aside",  "blockquote", "br",   "dd",  "details", "div", "dl",
      "dt",      "figcaption", "figure", "footer",     "h1",   "h2",  "h3",      "h4",  "h5",
      "h6",      "header",     "hr",     "li",         "main", "nav", "ol",      "p",   "pre",
      "section", "summary",    "table",  "td",         "th",   "tr",  "ul"};
  for (const char* t : kTags) {
    if (name == t) return true;
  }
  return false;
}

// The text of a raw HTML block: comments and tags dropped (a line-level tag leaves a newline),
// entities decoded. A <script> or <style> block gives nothing. Linear: the next '<' and '>'
// are found once per position they can answer for.
std::string html_block_text(const std::string& s) {
  const size_t lead = s.find_first_not_of(" \t\n");
  if (lead == std::string::npos) return "";
  if (starts_with_ci(s, lead, "<script") || starts_with_ci(s, lead, "<style")) return "";
  const size_t n = s.size();
  std::string out;
  out.reserve(n);
  size_t next_gt = 0, next_lt = 0;  // caches: the next '>' / '<' at or after some position
  bool gt_searched = false, lt_searched = false;
  size_t i = 0;
  while (i < n) {
    const char c = s[i];
    if (c == '<' && s.compare(i, 4, "<!--") == 0) {
      const size_t end = s.find("-->", i + 4);
      i = end == std::string::npos ? n : end + 3;
      continue;
    }
    if (c == '<' && i + 1 < n) {
      const unsigned char d = static_cast<unsigned char>(s[i + 1]);
      if (std::isalpha(d) || d == '/' || d == '!' || d == '?') {
        if (!gt_searched || (next_gt != std::string::npos && next_gt <= i)) {
          next_gt = s.find('>', i + 1);
          gt_searched = true;
        }
        if (!lt_searched || (next_lt != std::string::npos && next_lt <= i)) {
          next_lt = s.find('<', i + 1);
          lt_searched = true;
        }
        if (next_gt != std::string::npos && next_gt < next_lt) {  // a tag: no '<' inside
          size_t b = i + 1 + (d == '/');
          size_t e = b;
          while (e < next_gt && std::isalnum(static_cast<unsigned char>(s[e]))) ++e;
          std::string name = s.substr(b, e - b);
          for (auto& ch : name)
            ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          if (is_line_tag(name)) out.push_back('\n');
          i = next_gt + 1;
          continue;
        }
      }
    }
    if (c == '&') {
      const size_t used = decode_entity(s.data() + i, n - i, &out);
      if (used > 0) {
        i += used;
        continue;
      }
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

// Each line with its whitespace collapsed; empty lines dropped.
std::string clean_lines(const std::string& s) {
  std::string out;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t nl = s.find('\n', pos);
    if (nl == std::string::npos) nl = s.size();
    std::string line = collapse_ws(s.substr(pos, nl - pos));
    if (!line.empty()) {
      if (!out.empty()) out.push_back('\n');
      out += line;
    }
    pos = nl + 1;
  }
  return out;
}

class Reader {
 public:
  std::string text, title;

  static int enter_block(MD_BLOCKTYPE type, void* /*detail*/, void* self) {
    static_cast<Reader*>(self)->block(type, /*enter=*/true);
    return 0;
  }
  static int leave_block(MD_BLOCKTYPE type, void* /*detail*/, void* self) {
    static_cast<Reader*>(self)->block(type, /*enter=*/false);
    return 0;
  }
  static int enter_span(MD_SPANTYPE type, void* /*detail*/, void* self) {
    if (type == MD_SPAN_IMG) ++static_cast<Reader*>(self)->in_image_;
    return 0;
  }
  static int leave_span(MD_SPANTYPE type, void* /*detail*/, void* self) {
    if (type == MD_SPAN_IMG) --static_cast<Reader*>(self)->in_image_;
    return 0;
  }
  static int on_text(MD_TEXTTYPE type, const MD_CHAR* s, MD_SIZE n, void* self) {
    static_cast<Reader*>(self)->add_text(type, s, n);
    return 0;
  }

  void finish() { flush(); }

 private:
  // What separates two pieces of text: the strongest boundary crossed between them.
  enum Sep { kNone = 0, kSpace = 1, kLine = 2, kPara = 3 };
  enum Leaf { kInline, kHeading, kCode, kHtml };

  static Sep separator(MD_BLOCKTYPE type) {
    switch (type) {
      case MD_BLOCK_TH:
      case MD_BLOCK_TD:
        return kSpace;
      case MD_BLOCK_UL:
      case MD_BLOCK_OL:
      case MD_BLOCK_LI:
      case MD_BLOCK_THEAD:
      case MD_BLOCK_TBODY:
      case MD_BLOCK_TR:
        return kLine;
      default:  // document, quote, paragraph, heading, code, HTML, rule, table
        return kPara;
    }
  }

  void block(MD_BLOCKTYPE type, bool enter) {
    flush();
    if (separator(type) > sep_) sep_ = separator(type);
    leaf_ = kInline;
    if (enter) {
      if (type == MD_BLOCK_H) leaf_ = kHeading;
      if (type == MD_BLOCK_CODE) leaf_ = kCode;
      if (type == MD_BLOCK_HTML) leaf_ = kHtml;
    }
  }

  void add_text(MD_TEXTTYPE type, const char* s, size_t n) {
    if (in_image_ > 0) return;  // alt text
    switch (type) {
      case MD_TEXT_NORMAL:
        append_inline(s, n, &chunk_);
        break;
      case MD_TEXT_NULLCHAR:
        chunk_.push_back(' ');
        break;
      case MD_TEXT_BR:
      case MD_TEXT_SOFTBR:
        chunk_.push_back('\n');
        break;
      case MD_TEXT_ENTITY: {
        const size_t used = decode_entity(s, n, &chunk_);  // 0: a name not in the table
        chunk_.append(s + used, n - used);
        break;
      }
      case MD_TEXT_HTML:
        if (leaf_ == kHtml) chunk_.append(s, n);  // inline tags are dropped
        break;
      default:  // code, LaTeX
        chunk_.append(s, n);
        break;
    }
  }

  // Ends the text of the current leaf (at every block boundary).
  void flush() {
    if (chunk_.empty()) return;
    std::string piece;
    switch (leaf_) {
      case kInline:
        piece = clean_lines(chunk_);
        break;
      case kHeading:
        piece = collapse_ws(chunk_);
        if (!piece.empty() && title.empty()) {
          title = piece;
          if (text.empty()) piece.clear();  // the opening heading is the title only
        }
        break;
      case kCode:
        piece = trim(chunk_);
        break;
      case kHtml:
        piece = clean_lines(html_block_text(chunk_));
        break;
    }
    chunk_.clear();
    if (piece.empty()) return;
    if (!text.empty()) text += sep_ == kPara ? "\n\n" : sep_ == kLine ? "\n" : " ";
    text += piece;
    sep_ = kNone;
  }

  std::string chunk_;  // text of the current leaf since the last block boundary
  Sep sep_ = kNone;
  Leaf leaf_ = kInline;
  int64_t in_image_ = 0;
};

}  // namespace

std::string markdown_to_text(const std::string& md, std::string* title) {
  std::string repaired;
  const std::string* input = &md;
  if (!utf8::is_valid(md)) {
    repaired = md;
    utf8::repair(&repaired);
    input = &repaired;
  }
  if (input->size() > std::numeric_limits<MD_SIZE>::max()) {
    fail("markdown_to_text: a document of ", input->size(),
         " bytes is larger than md4c reads (4 GiB - 1)");
  }
  Reader reader;
  MD_PARSER parser{};
  parser.abi_version = 0;
  parser.flags = MD_FLAG_TABLES | MD_FLAG_TASKLISTS;
  parser.enter_block = &Reader::enter_block;
  parser.leave_block = &Reader::leave_block;
  parser.enter_span = &Reader::enter_span;
  parser.leave_span = &Reader::leave_span;
  parser.text = &Reader::on_text;
  const int rc = md_parse(input->data(), static_cast<MD_SIZE>(input->size()), &parser, &reader);
  if (rc != 0) fail("markdown_to_text: md4c failed (out of memory?), code ", rc);
  reader.finish();
  if (title) *title = reader.title;
  return std::move(reader.text);
}

}  // namespace cocom::ingest
