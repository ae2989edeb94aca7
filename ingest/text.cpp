#include "ingest/text.h"

#include <cctype>

namespace cocom::ingest::detail {

bool is_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && is_space(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

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

}  // namespace cocom::ingest::detail
