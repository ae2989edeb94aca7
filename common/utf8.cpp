#include "common/utf8.h"

#include <utf8proc.h>

namespace cocom::utf8 {

size_t decode(const char* s, size_t n, size_t i, uint32_t* cp, size_t* bad) {
  auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t need;
  unsigned char lo = 0x80, hi = 0xBF;  // the range of the second byte
  uint32_t v;
  if (c >= 0xC2 && c <= 0xDF) {
    need = 1, v = c & 0x1Fu;
  } else if (c == 0xE0) {
    need = 2, lo = 0xA0, v = c & 0x0Fu;
  } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
    need = 2, v = c & 0x0Fu;
  } else if (c == 0xED) {
    need = 2, hi = 0x9F, v = c & 0x0Fu;
  } else if (c == 0xF0) {
    need = 3, lo = 0x90, v = c & 0x07u;
  } else if (c >= 0xF1 && c <= 0xF3) {
    need = 3, v = c & 0x07u;
  } else if (c == 0xF4) {
    need = 3, hi = 0x8F, v = c & 0x07u;
  } else {
    *bad = 1;
    return 0;
  }
  size_t k = 1;
  for (; k <= need; ++k) {
    if (i + k >= n) break;
    const unsigned char x = b(i + k);
    if (x < (k == 1 ? lo : 0x80) || x > (k == 1 ? hi : 0xBF)) break;
    v = (v << 6) | (x & 0x3Fu);
  }
  if (k == need + 1) {
    *cp = v;
    return need + 1;
  }
  *bad = k;  // the lead byte and the continuation bytes that were valid so far
  return 0;
}

size_t first_invalid(const char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint32_t cp = 0;
    size_t bad = 0;
    const size_t len = decode(s, n, i, &cp, &bad);
    if (len == 0) return i;
    i += len;
  }
  return std::string::npos;
}

bool is_valid(const std::string& s) {
  return first_invalid(s.data(), s.size()) == std::string::npos;
}

size_t repair(std::string* s) {
  size_t i = first_invalid(s->data(), s->size());
  if (i == std::string::npos) return 0;
  std::string out(*s, 0, i);
  out.reserve(s->size() + 16);
  size_t count = 0;
  while (i < s->size()) {
    uint32_t cp = 0;
    size_t bad = 0;
    const size_t len = decode(s->data(), s->size(), i, &cp, &bad);
    if (len > 0) {
      out.append(*s, i, len);
      i += len;
    } else {
      out += kReplacement;
      ++count;
      i += bad;
    }
  }
  *s = std::move(out);
  return count;
}

size_t complete_prefix_length(const std::string& s) {
  const size_t n = s.size();
  size_t i = n;
  int continuation = 0;  // trailing 10xxxxxx bytes
  while (i > 0 && continuation < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) {
    --i;
    ++continuation;
  }
  if (i == 0) return continuation == 0 ? n : 0;
  const unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  size_t need = 1;
  if ((lead & 0xE0) == 0xC0) {
    need = 2;
  } else if ((lead & 0xF0) == 0xE0) {
    need = 3;
  } else if ((lead & 0xF8) == 0xF0) {
    need = 4;
  }
  return static_cast<size_t>(continuation) + 1 < need ? i - 1 : n;
}

void append(std::string* out, uint32_t cp) {
  if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {  // utf8proc would encode surrogates
    out->append(kReplacement);
    return;
  }
  utf8proc_uint8_t buf[4];
  const utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(cp), buf);
  if (n <= 0) {
    out->append(kReplacement);
    return;
  }
  out->append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
}

std::u32string to_u32(const std::string& s) {
  std::u32string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp = 0;
    size_t bad = 0;
    const size_t len = decode(s.data(), s.size(), i, &cp, &bad);
    out.push_back(len > 0 ? cp : 0xFFFD);
    i += len > 0 ? len : 1;
  }
  return out;
}

std::string from_u32(const std::u32string& s) {
  std::string out;
  out.reserve(s.size());
  for (char32_t c : s) append(&out, c);
  return out;
}

}  // namespace cocom::utf8
