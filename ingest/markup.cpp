// Light markup stripping for reStructuredText, Org and LaTeX files: one linear pass each, no
// recursion; what is not recognised stays as text (these are read as text files whose most
// visible markup is dropped, not parsed documents).
#include <cctype>
#include <string>
#include <vector>

#include "ingest/documents.h"
#include "ingest/text.h"

namespace cocom::ingest {

using namespace detail;  // NOLINT

namespace {

std::vector<std::string> split_lines(const std::string& s) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos <= s.size()) {
    size_t nl = s.find('\n', pos);
    if (nl == std::string::npos) nl = s.size();
    std::string line = s.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    if (nl == s.size()) break;
    pos = nl + 1;
  }
  return lines;
}

// --- reStructuredText ----------------------------------------------------------------------

// A section adornment or transition: one punctuation character repeated (at least 3 times,
// trailing spaces allowed).
bool rst_adornment(const std::string& line) {
  const std::string t = trim(line);
  if (t.size() < 3 || line.empty() || is_space(static_cast<unsigned char>(line[0]))) return false;
  const unsigned char c = static_cast<unsigned char>(t[0]);
  if (!std::ispunct(c)) return false;
  for (char ch : t) {
    if (ch != t[0]) return false;
  }
  return true;
}

// Inline markup: ``literal`` -> literal, :role:`text` -> text, `text <url>`_ -> text,
// `text`_ -> text.
std::string rst_inline(const std::string& line) {
  std::string out;
  out.reserve(line.size());
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '`') {
      if (i + 1 < line.size() && line[i + 1] == '`') ++i;  // ``
      // A role written just before the backquote (":ref:`x`") is dropped.
      if (!out.empty() && out.back() == ':') {
        size_t k = out.size() - 1;
        while (k > 0 && (std::isalnum(static_cast<unsigned char>(out[k - 1])) ||
                         out[k - 1] == '-' || out[k - 1] == '_' || out[k - 1] == ':')) {
          --k;
        }
        if (k < out.size() - 1 && out[k] == ':') out.erase(k);
      }
      // A closing backquote followed by '_' or '__' (a reference).
      size_t j = i + 1;
      while (j < line.size() && line[j] == '_' && j < i + 3) ++j;
      if (j > i + 1 && (j == line.size() || !std::isalnum(static_cast<unsigned char>(line[j])))) {
        i = j - 1;
        // `text <url>`_: drop the " <url>" part already copied.
        if (!out.empty() && out.back() == '>') {
          const size_t lt = out.rfind(" <");
          if (lt != std::string::npos) out.erase(lt);
        }
      }
      continue;
    }
    out.push_back(c);
  }
  // "Paragraph::" introduces a literal block: "Paragraph:".
  if (out.size() >= 2 && out.compare(out.size() - 2, 2, "::") == 0) out.pop_back();
  return out;
}

// --- LaTeX -----------------------------------------------------------------------------------

bool is_letter(char c) { return std::isalpha(static_cast<unsigned char>(c)) != 0; }

// Skips spaces, then a balanced {...} group starting at s[i]; returns the index after it (or i
// unchanged when there is no group). `inner` receives the group's content.
size_t skip_group(const std::string& s, size_t i, std::string* inner = nullptr) {
  size_t j = i;
  while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
  if (j >= s.size() || s[j] != '{') return i;
  int64_t depth = 0;
  const size_t open = j;
  for (; j < s.size(); ++j) {
    if (s[j] == '\\') {
      ++j;
      continue;
    }
    if (s[j] == '{') ++depth;
    if (s[j] == '}' && --depth == 0) {
      if (inner) *inner = s.substr(open + 1, j - open - 1);
      return j + 1;
    }
  }
  if (inner) *inner = s.substr(open + 1);
  return s.size();
}

// An optional [...] argument right after a command, on the same line and short.
size_t skip_optional(const std::string& s, size_t i) {
  if (i >= s.size() || s[i] != '[') return i;
  for (size_t j = i + 1; j < s.size() && j < i + 256; ++j) {
    if (s[j] == '\n') return i;
    if (s[j] == ']') return j + 1;
  }
  return i;
}

bool drops_argument(const std::string& name) {
  static const char* const kNames[] = {"label",
                                       "ref",
                                       "eqref",
                                       "pageref",
                                       "cite",
                                       "citep",
                                       "citet",
                                       "nocite",
                                       "includegraphics",
                                       "usepackage",
                                       "documentclass",
                                       "bibliography",
                                       "bibliographystyle",
                                       "input",
                                       "include",
                                       "vspace",
                                       "hspace",
                                       "setlength",
                                       "newcommand",
                                       "renewcommand",
                                       "pagestyle",
                                       "thispagestyle",
                                       "begin",
                                       "end"};
  for (const char* n : kNames) {
    if (name == n) return true;
  }
  return false;
}

std::string tex_strip(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const char c = s[i];
    if (c == '%') {  // comment: up to and with the end of the line
      size_t nl = s.find('\n', i);
      i = nl == std::string::npos ? s.size() : nl + 1;
      continue;
    }
    if (c == '\\') {
      if (i + 1 >= s.size()) break;
      const char n = s[i + 1];
      if (is_letter(n)) {
        size_t j = i + 1;
        while (j < s.size() && is_letter(s[j])) ++j;
        const std::string name = s.substr(i + 1, j - i - 1);
        if (j < s.size() && s[j] == '*') ++j;
        j = skip_optional(s, j);
        if (drops_argument(name)) {
          j = skip_group(s, j);
          if (name == "newcommand" || name == "renewcommand")
            j = skip_group(s, skip_optional(s, j));
        }
        if (name == "par") out += "\n\n";
        if (name == "item") out += "\n";
        if (name == "section" || name == "subsection" || name == "subsubsection" ||
            name == "chapter" || name == "paragraph") {
          out += "\n\n";
        }
        i = j;
        continue;
      }
      if (static_cast<unsigned char>(n) >= 0x80) {  // a backslash before a multi-byte character
        ++i;                                        // goes; the character stays whole
        continue;
      }
      if (n == '\\') {
        out.push_back('\n');
      } else if (n == ',' || n == ';' || n == ' ' || n == '!') {
        out.push_back(' ');
      } else if (std::string("%&$#_{}").find(n) != std::string::npos) {
        out.push_back(n);
      }
      i += 2;
      continue;
    }
    if (c == '{' || c == '}' || c == '$') {
      ++i;
      continue;
    }
    out.push_back(c == '~' ? ' ' : c);
    ++i;
  }
  return out;
}

}  // namespace

std::string rst_to_text(const std::string& rst, std::string* title) {
  std::vector<std::string> lines = split_lines(rst);
  std::string out;
  std::string first_title;
  for (size_t i = 0; i < lines.size(); ++i) {
    const std::string& line = lines[i];
    if (rst_adornment(line)) continue;
    const std::string t = trim(line);
    if (t.rfind(".. ", 0) == 0 || t == "..") {
      // Explicit markup: a directive ".. note::" keeps its content (the indented lines that
      // follow); comments, targets and substitution definitions are dropped with their line.
      const size_t dc = t.find("::");
      if (dc != std::string::npos && dc + 2 < t.size()) {
        out += trim(t.substr(dc + 2));  // ".. title:: Text" -> "Text"
        out.push_back('\n');
      }
      continue;
    }
    const bool underlined = i + 1 < lines.size() && rst_adornment(lines[i + 1]) && !t.empty() &&
                            trim(lines[i + 1]).size() + 1 >= t.size();
    if (underlined && first_title.empty()) first_title = rst_inline(t);
    out += rst_inline(line);
    out.push_back('\n');
    if (underlined) out.push_back('\n');
  }
  if (title) *title = normalize_title(first_title);
  return out;
}

std::string org_to_text(const std::string& org, std::string* title) {
  std::vector<std::string> lines = split_lines(org);
  std::string out;
  std::string keyword_title, first_heading;
  bool in_drawer = false;
  for (const std::string& line : lines) {
    const std::string t = trim(line);
    if (in_drawer) {
      if (to_lower(t) == ":end:") in_drawer = false;
      continue;
    }
    if (t.size() > 2 && t.front() == ':' && t.back() == ':' && t.find(' ') == std::string::npos &&
        to_lower(t) != ":end:") {
      in_drawer = true;  // :PROPERTIES: / :LOGBOOK: ... :END:
      continue;
    }
    if (t.rfind("#+", 0) == 0) {
      const std::string lower = to_lower(t);
      if (lower.rfind("#+title:", 0) == 0 && keyword_title.empty()) {
        keyword_title = trim(t.substr(8));
      }
      continue;  // keywords and #+BEGIN_/#+END_ block markers
    }
    if (t == "#" || t.rfind("# ", 0) == 0) continue;  // comment line
    std::string body = line;
    if (!line.empty() && line[0] == '*') {  // heading: "** TODO Text"
      size_t k = 0;
      while (k < line.size() && line[k] == '*') ++k;
      if (k < line.size() && line[k] == ' ') {
        body = trim(line.substr(k));
        if (first_heading.empty()) first_heading = body;
        out.push_back('\n');
      }
    }
    // Links: [[target][description]] -> description, [[target]] -> target.
    std::string linked;
    linked.reserve(body.size());
    for (size_t i = 0; i < body.size(); ++i) {
      if (body.compare(i, 2, "[[") == 0) {
        const size_t close = body.find("]]", i + 2);
        if (close != std::string::npos) {
          const std::string inner = body.substr(i + 2, close - i - 2);
          const size_t mid = inner.find("][");
          linked += mid == std::string::npos ? inner : inner.substr(mid + 2);
          i = close + 1;
          continue;
        }
      }
      linked.push_back(body[i]);
    }
    out += linked;
    out.push_back('\n');
  }
  if (title) {
    *title = normalize_title(keyword_title.empty() ? first_heading : keyword_title);
  }
  return out;
}

std::string tex_to_text(const std::string& tex, std::string* title) {
  if (title) {
    title->clear();
    size_t t = tex.find("\\title");
    while (t != std::string::npos && t + 6 < tex.size() && is_letter(tex[t + 6])) {
      t = tex.find("\\title", t + 6);  // \titleformat and the like
    }
    if (t != std::string::npos) {
      std::string inner;
      skip_group(tex, skip_optional(tex, t + 6), &inner);
      *title = normalize_title(tex_strip(inner));
    }
  }
  size_t begin = 0, end = tex.size();
  const size_t b = tex.find("\\begin{document}");
  if (b != std::string::npos) {
    begin = b + 16;
    const size_t e = tex.find("\\end{document}", begin);
    if (e != std::string::npos) end = e;
  }
  return tex_strip(tex.substr(begin, end - begin));
}

}  // namespace cocom::ingest
