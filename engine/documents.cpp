// Document readers (txt, Markdown, HTML via gumbo, PDF via poppler-cpp, jsonl) and the
// sentence-packing chunker. Torch-free.
//
// Decisions worth knowing:
//  - Directories are walked depth-first; the files found under one given root are ordered by
//    their path relative to that root (byte order). Directories are identified by (device,
//    inode) so symlink loops (and a directory reached twice through links) are visited once.
//  - include/exclude globs (fnmatch, no flags: '*' also matches '/') are tried against the
//    path relative to the given root and against the base name. Excluded directories are
//    pruned. Globs only filter directory contents: a file named explicitly is always read.
//  - Duplicate document ids within one read_paths call: the FIRST one wins, later ones are
//    dropped with a warning (keeps the sorted order stable and never rewrites a document).
//  - A jsonl record without "title" gets an empty title (not the file stem: the stem would
//    prefix every record of the corpus). "id" may be a string or a number; missing/null ->
//    "<path>#<line>" (1-based line).
//  - Texts are normalised after extraction: CR LF / CR / FF / VT -> "\n", NUL and other C0
//    controls (except TAB and LF) -> ' '. Titles additionally have whitespace collapsed.
//  - Invalid UTF-8: repaired (one U+FFFD per maximal invalid subpart, as WHATWG / Python's
//    errors="replace") with a warning naming the document, or the document is skipped with
//    reason "invalid UTF-8" (for jsonl the record is skipped; the skip path is "path:line").
//  - Empty / whitespace-only files are kept as documents (chunk_document gives no passages).
#include "engine/documents.h"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gumbo.h>
#include <poppler-document.h>
#include <poppler-global.h>
#include <poppler-page.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>
#include <utility>

#include "common/error.h"
#include "common/hash.h"
#include "common/json_util.h"

namespace cocom::engine {
namespace {

bool is_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && is_space(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

// Collapses runs of ASCII whitespace into one space and trims.
std::string collapse_ws(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  bool pending = false;
  for (char ch : s) {
    if (is_space(static_cast<unsigned char>(ch))) {
      pending = !out.empty();
    } else {
      if (pending) out.push_back(' ');
      pending = false;
      out.push_back(ch);
    }
  }
  return out;
}

std::string to_lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Length of the valid UTF-8 sequence starting at s[i], or 0 when s[i] starts an invalid one;
// *bad_len receives the length of the maximal invalid subpart (>= 1) in that case.
size_t utf8_seq(const std::string& s, size_t i, size_t* bad_len) {
  const size_t n = s.size();
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1;
  } else if (c == 0xE0) {
    need = 2, lo = 0xA0;
  } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
    need = 2;
  } else if (c == 0xED) {
    need = 2, hi = 0x9F;
  } else if (c == 0xF0) {
    need = 3, lo = 0x90;
  } else if (c >= 0xF1 && c <= 0xF3) {
    need = 3;
  } else if (c == 0xF4) {
    need = 3, hi = 0x8F;
  } else {
    *bad_len = 1;
    return 0;
  }
  size_t k = 1;
  for (; k <= need; ++k) {
    if (i + k >= n) break;
    unsigned char x = b(i + k);
    unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
    if (x < l || x > h) break;
  }
  if (k == need + 1) return need + 1;
  *bad_len = k;  // the lead byte plus the continuation bytes that were valid so far
  return 0;
}

bool valid_utf8(const std::string& s) {
  size_t i = 0, bad = 0;
  while (i < s.size()) {
    size_t len = utf8_seq(s, i, &bad);
    if (len == 0) return false;
    i += len;
  }
  return true;
}

// Text normalisation applied to every extracted document text.
std::string normalize_text(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c == '\r') {
      out.push_back('\n');
      if (i + 1 < s.size() && s[i + 1] == '\n') ++i;
    } else if (c == '\f' || c == '\v') {
      out.push_back('\n');
    } else if (c < 0x20 && c != '\t' && c != '\n') {
      out.push_back(' ');
    } else if (c == 0x7F) {
      out.push_back(' ');
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

std::string normalize_title(const std::string& s) { return collapse_ws(normalize_text(s)); }

// ---------------------------------------------------------------------------------------------
// Markdown

// Returns, for every i, the index of the next occurrence of `c` at or after i (n if none).
std::vector<size_t> next_index(const std::string& s, char c) {
  std::vector<size_t> nx(s.size() + 1, s.size());
  for (size_t i = s.size(); i-- > 0;) nx[i] = s[i] == c ? i : nx[i + 1];
  return nx;
}

// One pass: removes images ![alt](url) (images=true) or keeps the text of links [text](url)
// and [text][ref] (images=false). Linear time: "next occurrence" tables, no backtracking.
std::string md_links_pass(const std::string& s, bool images) {
  if (s.find('[') == std::string::npos) return s;
  const size_t n = s.size();
  auto nclose = next_index(s, ']');
  auto nopen = next_index(s, '[');
  auto nparen = next_index(s, ')');
  std::string out;
  out.reserve(n);
  size_t i = 0;
  while (i < n) {
    char c = s[i];
    if (c == '\\' && i + 1 < n) {
      out.append(s, i, 2);
      i += 2;
      continue;
    }
    bool image = images && c == '!' && i + 1 < n && s[i + 1] == '[';
    if ((!images && c == '[') || image) {
      size_t open = image ? i + 1 : i;
      size_t close = nclose[open + 1 <= n ? open + 1 : n];
      if (close < n && nopen[open + 1] > close && close + 1 < n &&
          (s[close + 1] == '(' || s[close + 1] == '[')) {
        size_t end = s[close + 1] == '(' ? nparen[close + 1] : nclose[close + 1];
        if (end < n) {
          if (!image) out.append(s, open + 1, close - open - 1);
          i = end + 1;
          continue;
        }
      }
      if (image && close < n && nopen[open + 1] > close) {  // "![alt]" without url
        i = close + 1;
        continue;
      }
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

std::string md_links(const std::string& s) {
  return md_links_pass(md_links_pass(s, /*images=*/true), /*images=*/false);
}

// Removes inline HTML tags and comments; keeps the URL of autolinks <http://...>.
std::string md_tags(const std::string& s) {
  if (s.find('<') == std::string::npos) return s;
  const size_t n = s.size();
  auto ngt = next_index(s, '>');
  auto nlt = next_index(s, '<');
  std::string out;
  out.reserve(n);
  size_t i = 0;
  while (i < n) {
    if (s[i] == '<' && i + 1 < n) {
      unsigned char d = static_cast<unsigned char>(s[i + 1]);
      size_t gt = ngt[i + 1];
      if (gt < n && nlt[i + 1] > gt && (std::isalpha(d) || d == '/' || d == '!' || d == '?')) {
        std::string inner = s.substr(i + 1, gt - i - 1);
        if (inner.rfind("http://", 0) == 0 || inner.rfind("https://", 0) == 0 ||
            inner.rfind("mailto:", 0) == 0) {
          out += inner;
        }
        i = gt + 1;
        continue;
      }
    }
    out.push_back(s[i]);
    ++i;
  }
  return out;
}

bool is_word_byte(unsigned char c) { return std::isalnum(c) || c >= 0x80; }

// Removes emphasis delimiters (*, _, ~~) and backslash escapes; decodes a few entities.
std::string md_emphasis(const std::string& s) {
  const size_t n = s.size();
  std::string out;
  out.reserve(n);
  size_t i = 0;
  while (i < n) {
    char c = s[i];
    if (c == '\\' && i + 1 < n && std::ispunct(static_cast<unsigned char>(s[i + 1]))) {
      out.push_back(s[i + 1]);
      i += 2;
      continue;
    }
    if (c == '*' || c == '_' || c == '~') {
      size_t j = i;
      while (j < n && s[j] == c) ++j;
      unsigned char prev = i > 0 ? static_cast<unsigned char>(s[i - 1]) : ' ';
      unsigned char next = j < n ? static_cast<unsigned char>(s[j]) : ' ';
      bool left_space = is_space(prev), right_space = is_space(next);
      bool remove = !(left_space && right_space);
      if (c == '_' && is_word_byte(prev) && is_word_byte(next)) remove = false;  // snake_case
      if (c == '~' && j - i < 2) remove = false;
      if (!remove) out.append(s, i, j - i);
      i = j;
      continue;
    }
    if (c == '&') {
      static const std::pair<const char*, const char*> kEnt[] = {
          {"&amp;", "&"}, {"&lt;", "<"},   {"&gt;", ">"},  {"&quot;", "\""},
          {"&#39;", "'"}, {"&apos;", "'"}, {"&nbsp;", " "}};
      bool done = false;
      for (const auto& [ent, rep] : kEnt) {
        size_t len = std::strlen(ent);
        if (s.compare(i, len, ent) == 0) {
          out += rep;
          i += len;
          done = true;
          break;
        }
      }
      if (done) continue;
    }
    out.push_back(c);
    ++i;
  }
  return out;
}

// Inline Markdown: code spans are kept verbatim (without backticks), the rest is stripped.
std::string md_inline(const std::string& s) {
  std::string out, plain;
  auto flush_plain = [&] {
    if (!plain.empty()) out += md_emphasis(md_tags(md_links(plain)));
    plain.clear();
  };
  const size_t n = s.size();
  auto ntick = next_index(s, '`');
  size_t i = 0;
  while (i < n) {
    if (s[i] == '\\' && i + 1 < n && s[i + 1] == '`') {
      plain.append(s, i, 2);
      i += 2;
      continue;
    }
    if (s[i] != '`') {
      plain.push_back(s[i]);
      ++i;
      continue;
    }
    size_t j = i;
    while (j < n && s[j] == '`') ++j;
    size_t run = j - i;
    // Look for a closing run of the same length (bounded number of hops: linear time).
    size_t k = ntick[j], hops = 0, close = n;
    while (k < n && hops < 64) {
      size_t m = k;
      while (m < n && s[m] == '`') ++m;
      if (m - k == run) {
        close = k;
        break;
      }
      k = ntick[m];
      ++hops;
    }
    if (close == n) {
      plain.append(s, i, run);
      i = j;
      continue;
    }
    flush_plain();
    std::string code = s.substr(j, close - j);
    if (code.size() >= 2 && code.front() == ' ' && code.back() == ' ') {
      code = code.substr(1, code.size() - 2);
    }
    out += code;
    i = close + run;
  }
  flush_plain();
  return out;
}

size_t leading_spaces(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return i;
}

// "```" / "~~~" fence (up to 3 spaces indentation): returns the fence char and run length.
bool md_fence(const std::string& line, char* ch, size_t* len) {
  size_t i = leading_spaces(line);
  if (i > 3 || i >= line.size()) return false;
  char c = line[i];
  if (c != '`' && c != '~') return false;
  size_t j = i;
  while (j < line.size() && line[j] == c) ++j;
  if (j - i < 3) return false;
  if (c == '`' && line.find('`', j) != std::string::npos) return false;
  *ch = c;
  *len = j - i;
  return true;
}

bool md_rule_or_underline(const std::string& t, char c) {
  size_t count = 0;
  for (char x : t) {
    if (x == c) {
      ++count;
    } else if (x != ' ' && x != '\t') {
      return false;
    }
  }
  return count >= (c == '=' ? 1u : 3u) || (c == '-' && count >= 2 && t.find(' ') == t.npos);
}

bool md_table_separator(const std::string& t) {
  if (t.find('|') == std::string::npos || t.find('-') == std::string::npos) return false;
  for (char x : t) {
    if (x != '|' && x != '-' && x != ':' && x != ' ' && x != '\t') return false;
  }
  return true;
}

std::string md_table_row(std::string t) {
  if (!t.empty() && t.front() == '|') t.erase(0, 1);
  if (!t.empty() && t.back() == '|' && (t.size() < 2 || t[t.size() - 2] != '\\')) t.pop_back();
  std::string out, cell;
  auto flush = [&] {
    std::string c = collapse_ws(md_inline(trim(cell)));
    if (!c.empty()) {
      if (!out.empty()) out.push_back(' ');
      out += c;
    }
    cell.clear();
  };
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '\\' && i + 1 < t.size() && t[i + 1] == '|') {
      cell.push_back('|');
      ++i;
    } else if (t[i] == '|') {
      flush();
    } else {
      cell.push_back(t[i]);
    }
  }
  flush();
  return out;
}

// Strips list markers ("- ", "* ", "+ ", "1. ", "1) ") and task boxes.
std::string md_strip_list_marker(const std::string& t) {
  size_t i = 0;
  if (t.size() >= 2 && (t[0] == '-' || t[0] == '*' || t[0] == '+') &&
      (t[1] == ' ' || t[1] == '\t')) {
    i = 2;
  } else {
    size_t d = 0;
    while (d < t.size() && d < 9 && std::isdigit(static_cast<unsigned char>(t[d]))) ++d;
    if (d > 0 && d + 1 < t.size() && (t[d] == '.' || t[d] == ')') &&
        (t[d + 1] == ' ' || t[d + 1] == '\t')) {
      i = d + 2;
    }
  }
  if (i == 0) return t;
  std::string rest = t.substr(i + leading_spaces(t.substr(i)));
  if (rest.size() >= 3 && rest[0] == '[' && rest[2] == ']' &&
      (rest[1] == ' ' || rest[1] == 'x' || rest[1] == 'X')) {
    rest = trim(rest.substr(3));
  }
  return rest;
}

// ---------------------------------------------------------------------------------------------
// HTML (gumbo), iterative traversals only (deeply nested documents must not overflow the stack).

bool html_skipped(GumboTag tag) {
  return tag == GUMBO_TAG_SCRIPT || tag == GUMBO_TAG_STYLE || tag == GUMBO_TAG_NOSCRIPT ||
         tag == GUMBO_TAG_TEMPLATE || tag == GUMBO_TAG_HEAD;
}

// 2 = paragraph break, 1 = line break, 0 = inline.
int html_break(GumboTag tag) {
  switch (tag) {
    case GUMBO_TAG_P:
    case GUMBO_TAG_DIV:
    case GUMBO_TAG_H1:
    case GUMBO_TAG_H2:
    case GUMBO_TAG_H3:
    case GUMBO_TAG_H4:
    case GUMBO_TAG_H5:
    case GUMBO_TAG_H6:
    case GUMBO_TAG_SECTION:
    case GUMBO_TAG_ARTICLE:
    case GUMBO_TAG_HEADER:
    case GUMBO_TAG_FOOTER:
    case GUMBO_TAG_NAV:
    case GUMBO_TAG_ASIDE:
    case GUMBO_TAG_MAIN:
    case GUMBO_TAG_BLOCKQUOTE:
    case GUMBO_TAG_PRE:
    case GUMBO_TAG_UL:
    case GUMBO_TAG_OL:
    case GUMBO_TAG_DL:
    case GUMBO_TAG_TABLE:
    case GUMBO_TAG_FORM:
    case GUMBO_TAG_FIGURE:
    case GUMBO_TAG_HR:
    case GUMBO_TAG_ADDRESS:
    case GUMBO_TAG_FIELDSET:
    case GUMBO_TAG_DETAILS:
    case GUMBO_TAG_BODY:
      return 2;
    case GUMBO_TAG_BR:
    case GUMBO_TAG_LI:
    case GUMBO_TAG_TR:
    case GUMBO_TAG_DT:
    case GUMBO_TAG_DD:
    case GUMBO_TAG_CAPTION:
    case GUMBO_TAG_FIGCAPTION:
    case GUMBO_TAG_SUMMARY:
    case GUMBO_TAG_OPTION:
    case GUMBO_TAG_LEGEND:
      return 1;
    default:
      return 0;
  }
}

const GumboVector* html_children(const GumboNode* node) {
  if (node->type == GUMBO_NODE_DOCUMENT) return &node->v.document.children;
  if (node->type == GUMBO_NODE_ELEMENT || node->type == GUMBO_NODE_TEMPLATE) {
    return &node->v.element.children;
  }
  return nullptr;
}

class HtmlText {
 public:
  void text(const char* s, bool pre) {
    for (const char* p = s; *p; ++p) {
      unsigned char c = static_cast<unsigned char>(*p);
      bool nbsp = c == 0xC2 && static_cast<unsigned char>(p[1]) == 0xA0;
      if (!pre && (is_space(c) || nbsp)) {
        if (nbsp) ++p;
        space_ = true;
        continue;
      }
      if (pre && c == '\n') {
        flush();
        out_.push_back('\n');
        continue;
      }
      flush();
      out_.push_back(static_cast<char>(c));
    }
  }
  void brk(int level) { break_ = std::max(break_, level); }
  void space() { space_ = true; }
  std::string take() { return std::move(out_); }
  size_t size() const { return out_.size(); }
  const std::string& str() const { return out_; }

 private:
  void flush() {
    if (!out_.empty()) {
      if (break_ > 0) {
        while (!out_.empty() && (out_.back() == ' ' || out_.back() == '\t')) out_.pop_back();
        if (!out_.empty() && out_.back() != '\n') out_.push_back('\n');
        if (break_ == 2 && !(out_.size() >= 2 && out_[out_.size() - 2] == '\n')) {
          out_.push_back('\n');
        }
      } else if (space_ && !is_space(static_cast<unsigned char>(out_.back()))) {
        out_.push_back(' ');
      }
    }
    break_ = 0;
    space_ = false;
  }
  std::string out_;
  int break_ = 0;
  bool space_ = false;
};

// Text of a subtree with whitespace collapsed (for <title> and <h1>).
std::string html_subtree_text(const GumboNode* root) {
  std::string acc;
  std::vector<const GumboNode*> stack{root};
  // Depth-first, children pushed in reverse so they pop in document order.
  while (!stack.empty()) {
    const GumboNode* node = stack.back();
    stack.pop_back();
    if (node->type == GUMBO_NODE_TEXT || node->type == GUMBO_NODE_CDATA ||
        node->type == GUMBO_NODE_WHITESPACE) {
      acc += node->v.text.text;
      continue;
    }
    if (node->type == GUMBO_NODE_ELEMENT && node != root && html_skipped(node->v.element.tag)) {
      continue;
    }
    const GumboVector* ch = html_children(node);
    if (!ch) continue;
    for (unsigned i = ch->length; i-- > 0;) {
      stack.push_back(static_cast<const GumboNode*>(ch->data[i]));
    }
  }
  std::string t = acc;
  // Collapse NBSP too.
  std::string out;
  for (size_t i = 0; i < t.size(); ++i) {
    if (static_cast<unsigned char>(t[i]) == 0xC2 && i + 1 < t.size() &&
        static_cast<unsigned char>(t[i + 1]) == 0xA0) {
      out.push_back(' ');
      ++i;
    } else {
      out.push_back(t[i]);
    }
  }
  return collapse_ws(out);
}

const GumboNode* html_find_first(const GumboNode* root, GumboTag tag, bool skip_head) {
  std::vector<const GumboNode*> stack{root};
  while (!stack.empty()) {
    const GumboNode* node = stack.back();
    stack.pop_back();
    if (node->type == GUMBO_NODE_ELEMENT) {
      if (node->v.element.tag == tag) return node;
      if (skip_head && html_skipped(node->v.element.tag)) continue;
    }
    const GumboVector* ch = html_children(node);
    if (!ch) continue;
    for (unsigned i = ch->length; i-- > 0;) {
      stack.push_back(static_cast<const GumboNode*>(ch->data[i]));
    }
  }
  return nullptr;
}

void silence_poppler(const std::string&, void*) {}

// ---------------------------------------------------------------------------------------------
// File reading

struct Source {
  std::string abs;  // absolute path
  std::string rel;  // path relative to the given root (base name for a given file)
};

std::string errno_text(int err) { return std::strerror(err); }

std::string extension_of(const std::string& path) {
  std::filesystem::path p(path);
  return to_lower(p.extension().string());
}

std::string stem_of(const std::string& path) { return std::filesystem::path(path).stem().string(); }

std::string base_name(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool glob_any(const std::vector<std::string>& globs, const std::string& rel) {
  std::string base = base_name(rel);
  for (const auto& g : globs) {
    if (fnmatch(g.c_str(), rel.c_str(), 0) == 0 || fnmatch(g.c_str(), base.c_str(), 0) == 0) {
      return true;
    }
  }
  return false;
}

bool supported_extension(const std::string& ext) {
  return ext == ".txt" || ext == ".md" || ext == ".markdown" || ext == ".html" || ext == ".htm" ||
         ext == ".pdf" || ext == ".jsonl";
}

// Reads a whole regular file; returns false with errno text on failure.
bool read_file_bytes(const std::string& path, std::string* out, std::string* err) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    *err = errno_text(errno);
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    *err = errno_text(errno);
    ::close(fd);
    return false;
  }
  if (!S_ISREG(st.st_mode)) {
    *err = "not a regular file";
    ::close(fd);
    return false;
  }
  out->clear();
  if (st.st_size > 0) out->reserve(static_cast<size_t>(st.st_size));
  char buf[65536];
  while (true) {
    ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      *err = errno_text(errno);
      ::close(fd);
      return false;
    }
    if (r == 0) break;
    out->append(buf, static_cast<size_t>(r));
  }
  ::close(fd);
  return true;
}

std::string absolute_path(const std::string& p) {
  std::string s = std::filesystem::absolute(std::filesystem::path(p)).lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

class Reader {
 public:
  explicit Reader(const ReadOptions& opt) : opt_(opt) {}

  void add_root(const std::string& given) {
    std::string abs = absolute_path(given);
    struct stat st {};
    if (::stat(abs.c_str(), &st) != 0) {
      res_.skipped.push_back({abs, "unreadable: " + errno_text(errno)});
      return;
    }
    if (S_ISDIR(st.st_mode)) {
      std::vector<Source> files;
      walk(abs, &files);
      std::sort(files.begin(), files.end(),
                [](const Source& a, const Source& b) { return a.rel < b.rel; });
      for (const auto& f : files) read_file(f.abs, /*explicit_file=*/false);
    } else {
      read_file(abs, /*explicit_file=*/true);
    }
  }

  ReadResult take() { return std::move(res_); }

 private:
  void walk(const std::string& root, std::vector<Source>* files) {
    std::set<std::pair<dev_t, ino_t>> visited;
    struct stat st {};
    if (::stat(root.c_str(), &st) == 0) visited.insert({st.st_dev, st.st_ino});
    std::vector<std::pair<std::string, std::string>> stack{{root, ""}};  // (abs, rel)
    while (!stack.empty()) {
      auto [dir_abs, dir_rel] = stack.back();
      stack.pop_back();
      DIR* d = ::opendir(dir_abs.c_str());
      if (!d) {
        res_.skipped.push_back({dir_abs, "unreadable: " + errno_text(errno)});
        continue;
      }
      std::vector<std::string> names;
      while (dirent* e = ::readdir(d)) {
        std::string name = e->d_name;
        if (name == "." || name == "..") continue;
        names.push_back(std::move(name));
      }
      ::closedir(d);
      std::sort(names.begin(), names.end());
      std::vector<std::pair<std::string, std::string>> subdirs;
      for (const auto& name : names) {
        std::string abs = dir_abs + "/" + name;
        std::string rel = dir_rel.empty() ? name : dir_rel + "/" + name;
        struct stat est {};
        if (::stat(abs.c_str(), &est) != 0) {  // e.g. a dangling symlink or a link loop
          int err = errno;
          if (!glob_any(opt_.exclude, rel)) {
            res_.skipped.push_back({abs, "unreadable: " + errno_text(err)});
          }
          continue;
        }
        if (glob_any(opt_.exclude, rel)) continue;
        if (S_ISDIR(est.st_mode)) {
          if (!visited.insert({est.st_dev, est.st_ino}).second) continue;  // loop / seen
          subdirs.emplace_back(abs, rel);
          continue;
        }
        if (!opt_.include.empty() && !glob_any(opt_.include, rel)) continue;
        files->push_back({abs, rel});
      }
      for (auto it = subdirs.rbegin(); it != subdirs.rend(); ++it) stack.push_back(*it);
    }
  }

  // Repairs or rejects invalid UTF-8 in `s`; false = skip the document.
  bool check_utf8(std::string* s, const std::string& what) {
    if (valid_utf8(*s)) return true;
    if (!opt_.repair_utf8) {
      res_.skipped.push_back({what, "invalid UTF-8"});
      return false;
    }
    size_t n = repair_utf8(s);
    res_.warnings.push_back(what + ": replaced " + std::to_string(n) +
                            " invalid UTF-8 sequence(s) with U+FFFD");
    return true;
  }

  void add_document(Document doc, const std::string& where) {
    auto [it, inserted] = ids_.emplace(doc.id, where);
    if (!inserted) {
      res_.warnings.push_back(where + ": duplicate document id '" + doc.id + "' (first seen at " +
                              it->second + "); keeping the first");
      return;
    }
    res_.documents.push_back(std::move(doc));
  }

  void read_file(const std::string& abs, bool explicit_file) {
    (void)explicit_file;
    std::string ext = extension_of(abs);
    if (!supported_extension(ext)) {
      res_.skipped.push_back(
          {abs, "unsupported extension " + (ext.empty() ? std::string("(none)") : ext)});
      return;
    }
    struct stat st {};
    if (::stat(abs.c_str(), &st) != 0) {
      res_.skipped.push_back({abs, "unreadable: " + errno_text(errno)});
      return;
    }
    if (!S_ISREG(st.st_mode)) {
      res_.skipped.push_back({abs, "not a regular file"});
      return;
    }
    Json meta = {{"size", static_cast<int64_t>(st.st_size)},
                 {"mtime", static_cast<int64_t>(st.st_mtime)}};
    if (ext == ".pdf") {
      Document doc;
      try {
        doc.text = pdf_to_text(abs, &doc.title);
      } catch (const std::exception& e) {
        res_.skipped.push_back({abs, e.what()});
        return;
      }
      if (!check_utf8(&doc.text, abs)) return;
      repair_utf8(&doc.title);
      finish_file_doc(std::move(doc), abs, meta);
      return;
    }
    std::string bytes, err;
    if (!read_file_bytes(abs, &bytes, &err)) {
      res_.skipped.push_back({abs, "unreadable: " + err});
      return;
    }
    if (std::memchr(bytes.data(), '\0', std::min<size_t>(bytes.size(), 8192)) != nullptr) {
      res_.skipped.push_back({abs, "binary file"});
      return;
    }
    if (ext == ".jsonl") {
      read_jsonl(abs, bytes);
      return;
    }
    if (!check_utf8(&bytes, abs)) return;
    Document doc;
    if (ext == ".md" || ext == ".markdown") {
      doc.text = markdown_to_text(bytes, &doc.title);
    } else if (ext == ".html" || ext == ".htm") {
      doc.text = html_to_text(bytes, &doc.title);
    } else {
      doc.text = std::move(bytes);
    }
    finish_file_doc(std::move(doc), abs, meta);
  }

  void finish_file_doc(Document doc, const std::string& abs, const Json& meta) {
    doc.text = normalize_text(doc.text);
    doc.title = normalize_title(doc.title);
    if (doc.title.empty()) doc.title = stem_of(abs);
    doc.id = abs;
    doc.source = abs;
    doc.meta_json = meta.dump();
    add_document(std::move(doc), abs);
  }

  void read_jsonl(const std::string& abs, const std::string& bytes) {
    size_t pos = 0;
    int64_t line_no = 0;
    while (pos < bytes.size()) {
      size_t nl = bytes.find('\n', pos);
      if (nl == std::string::npos) nl = bytes.size();
      std::string line = bytes.substr(pos, nl - pos);
      pos = nl + 1;
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (trim(line).empty()) continue;
      std::string where = abs + ":" + std::to_string(line_no);
      if (!check_utf8(&line, where)) continue;
      Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) {
        res_.warnings.push_back(where + ": invalid JSON, line skipped");
        continue;
      }
      if (!j.is_object()) {
        res_.warnings.push_back(where + ": not a JSON object, line skipped");
        continue;
      }
      auto text_it = j.find("text");
      if (text_it == j.end() || !text_it->is_string()) {
        res_.warnings.push_back(where + ": missing string field \"text\", line skipped");
        continue;
      }
      Document doc;
      doc.text = normalize_text(text_it->get<std::string>());
      auto id_it = j.find("id");
      if (id_it != j.end() && id_it->is_string()) {
        doc.id = id_it->get<std::string>();
      } else if (id_it != j.end() && id_it->is_number()) {
        doc.id = id_it->dump();
      } else {
        if (id_it != j.end() && !id_it->is_null()) {
          res_.warnings.push_back(where +
                                  ": field \"id\" is neither a string nor a number; "
                                  "using the line position");
        }
        doc.id = abs + "#" + std::to_string(line_no);
      }
      auto title_it = j.find("title");
      if (title_it != j.end() && title_it->is_string()) {
        doc.title = normalize_title(title_it->get<std::string>());
      } else if (title_it != j.end() && title_it->is_number()) {
        doc.title = title_it->dump();
      }
      Json meta = Json::object();
      for (auto it = j.begin(); it != j.end(); ++it) {
        if (it.key() != "id" && it.key() != "title" && it.key() != "text")
          meta[it.key()] = it.value();
      }
      doc.meta_json = meta.dump();
      doc.source = abs;
      add_document(std::move(doc), where);
    }
  }

  const ReadOptions& opt_;
  ReadResult res_;
  std::unordered_map<std::string, std::string> ids_;  // id -> where first seen
};

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
    size_t bad = 0;
    size_t len = utf8_seq(doc_.text, pos, &bad);
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

// -----------------------------------------------------------------------------------------------

size_t repair_utf8(std::string* s) {
  if (valid_utf8(*s)) return 0;
  std::string out;
  out.reserve(s->size() + 16);
  size_t i = 0, count = 0;
  while (i < s->size()) {
    size_t bad = 0;
    size_t len = utf8_seq(*s, i, &bad);
    if (len > 0) {
      out.append(*s, i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";
      ++count;
      i += bad;
    }
  }
  *s = std::move(out);
  return count;
}

std::string markdown_to_text(const std::string& md, std::string* title) {
  std::string found_title;
  std::vector<std::string> paragraphs;
  std::vector<std::string> para;  // lines of the current paragraph
  auto flush = [&] {
    std::string joined;
    for (const auto& l : para) {
      if (l.empty()) continue;
      if (!joined.empty()) joined.push_back('\n');
      joined += l;
    }
    if (!joined.empty()) paragraphs.push_back(std::move(joined));
    para.clear();
  };
  // A heading that opens the document becomes the title and leaves the text: passages are
  // stored as "Title. text" (the KILT form), which would otherwise repeat it.
  auto add_heading = [&](const std::string& h) {
    if (h.empty()) return;
    if (found_title.empty() && paragraphs.empty()) {
      found_title = h;
      return;
    }
    if (found_title.empty()) found_title = h;
    paragraphs.push_back(h);
  };
  auto heading = [&](const std::string& raw) {
    flush();
    add_heading(collapse_ws(md_inline(raw)));
  };

  bool in_fence = false, in_comment = false, in_table = false;
  char fence_ch = 0;
  size_t fence_len = 0;
  std::vector<std::string> code;
  std::string last_raw;  // raw text of the last paragraph line (for table headers)
  size_t pos = 0;
  while (pos <= md.size()) {
    size_t nl = md.find('\n', pos);
    if (nl == std::string::npos) nl = md.size();
    std::string line = md.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();

    if (in_fence) {
      char c;
      size_t len;
      if (md_fence(line, &c, &len) && c == fence_ch && len >= fence_len &&
          trim(line).size() == len) {
        in_fence = false;
        std::string block;
        for (const auto& l : code) {
          if (!block.empty()) block.push_back('\n');
          block += l;
        }
        block = trim(block);
        if (!block.empty()) paragraphs.push_back(block);
        code.clear();
      } else {
        code.push_back(line);
      }
      continue;
    }
    if (in_comment) {
      size_t end = line.find("-->");
      if (end == std::string::npos) continue;
      in_comment = false;
      line = line.substr(end + 3);
    }
    {
      size_t start = line.find("<!--");
      if (start != std::string::npos && line.find("-->", start + 4) == std::string::npos) {
        in_comment = true;
        line = line.substr(0, start);
      }
    }
    {
      char c;
      size_t len;
      if (md_fence(line, &c, &len)) {
        flush();
        in_fence = true;
        fence_ch = c;
        fence_len = len;
        in_table = false;
        continue;
      }
    }
    std::string t = trim(line);
    // Blockquote markers.
    while (!t.empty() && t[0] == '>') t = trim(t.substr(1));
    if (t.empty()) {
      flush();
      in_table = false;
      continue;
    }
    // ATX heading.
    if (t[0] == '#') {
      size_t h = 0;
      while (h < t.size() && t[h] == '#') ++h;
      if (h <= 6 && (h == t.size() || t[h] == ' ' || t[h] == '\t')) {
        std::string body = trim(t.substr(h));
        size_t e = body.size();
        while (e > 0 && body[e - 1] == '#') --e;
        if (e == 0 || body[e - 1] == ' ' || body[e - 1] == '\t') body = trim(body.substr(0, e));
        heading(body);
        in_table = false;
        continue;
      }
    }
    // Setext underline or thematic break.
    if (md_rule_or_underline(t, '=') || md_rule_or_underline(t, '-')) {
      if (!para.empty() && !in_table) {
        std::string h = para.back();
        para.pop_back();
        flush();
        add_heading(h);
        continue;
      }
      if (t[0] == '-' || t[0] == '=') {
        flush();
        continue;
      }
    }
    if (md_rule_or_underline(t, '*') || md_rule_or_underline(t, '_')) {
      flush();
      continue;
    }
    // Tables.
    if (md_table_separator(t)) {
      if (!para.empty() && !last_raw.empty() && last_raw.find('|') != std::string::npos) {
        para.back() = md_table_row(last_raw);
      }
      in_table = true;
      continue;
    }
    if (in_table || t[0] == '|') {
      para.push_back(md_table_row(t));
      last_raw = t;
      continue;
    }
    // Reference link definitions "[ref]: url".
    if (t[0] == '[') {
      size_t close = t.find("]:");
      if (close != std::string::npos && t.find('[', 1) > close) continue;
    }
    std::string body = md_strip_list_marker(t);
    last_raw = body;
    para.push_back(collapse_ws(md_inline(body)));
  }
  if (in_fence) {  // unterminated fence: keep the code
    std::string block;
    for (const auto& l : code) {
      if (!block.empty()) block.push_back('\n');
      block += l;
    }
    block = trim(block);
    if (!block.empty()) paragraphs.push_back(block);
  }
  flush();
  std::string out;
  for (const auto& p : paragraphs) {
    if (!out.empty()) out += "\n\n";
    out += p;
  }
  if (title) *title = collapse_ws(found_title);
  return out;
}

std::string html_to_text(const std::string& html, std::string* title) {
  GumboOptions options = kGumboDefaultOptions;
  options.max_errors = 100;
  GumboOutput* output = gumbo_parse_with_options(&options, html.data(), html.size());
  if (!output) fail("html_to_text: gumbo failed to parse the document");
  std::unique_ptr<GumboOutput, void (*)(GumboOutput*)> guard(
      output, [](GumboOutput* o) { gumbo_destroy_output(&kGumboDefaultOptions, o); });

  std::string found_title;
  if (const GumboNode* t = html_find_first(output->document, GUMBO_TAG_TITLE, false)) {
    found_title = html_subtree_text(t);
  }
  if (found_title.empty()) {
    if (const GumboNode* h1 = html_find_first(output->document, GUMBO_TAG_H1, true)) {
      found_title = html_subtree_text(h1);
    }
  }

  HtmlText text;
  struct Frame {
    const GumboNode* node;
    unsigned next;
  };
  std::vector<Frame> stack{{output->document, 0}};
  int pre_depth = 0;
  while (!stack.empty()) {
    Frame& f = stack.back();
    const GumboVector* ch = html_children(f.node);
    if (ch && f.next < ch->length) {
      const GumboNode* child = static_cast<const GumboNode*>(ch->data[f.next++]);
      switch (child->type) {
        case GUMBO_NODE_TEXT:
        case GUMBO_NODE_CDATA:
        case GUMBO_NODE_WHITESPACE:
          text.text(child->v.text.text, pre_depth > 0);
          break;
        case GUMBO_NODE_ELEMENT:
        case GUMBO_NODE_TEMPLATE: {
          GumboTag tag = child->v.element.tag;
          if (child->type == GUMBO_NODE_TEMPLATE || html_skipped(tag)) break;
          int b = html_break(tag);
          if (b) text.brk(b);
          if (tag == GUMBO_TAG_TD || tag == GUMBO_TAG_TH) text.space();
          if (tag == GUMBO_TAG_PRE || tag == GUMBO_TAG_TEXTAREA || tag == GUMBO_TAG_LISTING) {
            ++pre_depth;
          }
          stack.push_back({child, 0});  // invalidates f
          break;
        }
        default:
          break;  // comments, document
      }
      continue;
    }
    // Leaving the node.
    if (f.node->type == GUMBO_NODE_ELEMENT) {
      GumboTag tag = f.node->v.element.tag;
      int b = html_break(tag);
      if (b) text.brk(b);
      if (tag == GUMBO_TAG_TD || tag == GUMBO_TAG_TH) text.space();
      if (tag == GUMBO_TAG_PRE || tag == GUMBO_TAG_TEXTAREA || tag == GUMBO_TAG_LISTING) {
        --pre_depth;
      }
    }
    stack.pop_back();
  }
  // Trim trailing spaces of lines (pre text may carry some) and the whole text.
  std::string raw = text.take();
  std::string out;
  out.reserve(raw.size());
  for (char c : raw) {
    if (c == '\n') {
      while (!out.empty() && (out.back() == ' ' || out.back() == '\t')) out.pop_back();
    }
    out.push_back(c);
  }
  if (title) *title = found_title;
  return trim(out);
}

std::string pdf_to_text(const std::string& path, std::string* title) {
  static const bool silenced = [] {
    poppler::set_debug_error_function(&silence_poppler, nullptr);
    return true;
  }();
  (void)silenced;
  std::unique_ptr<poppler::document> doc(poppler::document::load_from_file(path));
  if (!doc) fail_corrupt("cannot read PDF ", path, ": corrupt, encrypted or unreadable");
  if (doc->is_locked()) fail("cannot read PDF ", path, ": encrypted (password required)");
  std::string out;
  const int pages = doc->pages();
  for (int i = 0; i < pages; ++i) {
    std::unique_ptr<poppler::page> page(doc->create_page(i));
    if (!page) continue;
    poppler::byte_array bytes = page->text().to_utf8();
    std::string t = trim(std::string(bytes.begin(), bytes.end()));
    if (t.empty()) continue;
    if (!out.empty()) out += "\n\n";
    out += t;
  }
  if (title) {
    poppler::byte_array tb = doc->info_key("Title").to_utf8();
    std::string t(tb.begin(), tb.end());
    while (!t.empty() && t.back() == '\0') t.pop_back();
    repair_utf8(&t);
    *title = collapse_ws(normalize_text(t));
  }
  return out;
}

ReadResult read_paths(const std::vector<std::string>& paths, const ReadOptions& opt) {
  // Every given path must exist before anything is read.
  for (const auto& p : paths) {
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0 && (errno == ENOENT || errno == ENOTDIR)) {
      fail_not_found("path does not exist: ", p);
    }
  }
  Reader reader(opt);
  for (const auto& p : paths) reader.add_root(p);
  return reader.take();
}

std::vector<Passage> chunk_document(
    const Document& doc, const ChunkOptions& opt,
    const std::function<int64_t(const std::string&)>& count_tokens) {
  return Chunker(doc, opt, count_tokens).run();
}

std::string content_hash(const Document& doc) {
  const char sep = '\0';
  uint64_t h = fnv1a64(doc.title);
  h = fnv1a64(&sep, 1, h);
  return hex64(fnv1a64(doc.text, h));
}

}  // namespace cocom::engine
