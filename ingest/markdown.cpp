// Markdown to plain text (a line-based stripper): headings, lists, tables, fences, links,
// emphasis and inline HTML; the first heading becomes the title. No recursion and no nesting
// state (nested blockquotes and lists are stripped marker by marker), every pass is linear in
// the line, so deeply nested input needs no depth limit.
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

}  // namespace

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
    // Blockquote markers, any nesting, in one pass (t is trimmed on both sides already).
    {
      size_t q = 0;
      while (q < t.size() && t[q] == '>') {
        ++q;
        while (q < t.size() && is_space(static_cast<unsigned char>(t[q]))) ++q;
      }
      if (q > 0) t.erase(0, q);
    }
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

}  // namespace cocom::ingest
