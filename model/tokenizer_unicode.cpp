// Unicode helpers of the tokenizers: code points as Python sees them (str.isspace, strip,
// lower) and Hugging Face's clean_up_tokenization.
#include <utf8proc.h>

#include "common/error.h"
#include "model/tokenizer_impl.h"

namespace cocom::model::detail {

std::vector<Utf8Unit> utf8_units(const std::string& s) {
  std::vector<Utf8Unit> units;
  units.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    uint32_t cp = 0;
    size_t bad = 0;
    const size_t len = utf8::decode(s.data(), s.size(), i, &cp, &bad);
    if (len == 0) {  // one unit per byte of an ill-formed sequence (byte fallback)
      units.push_back({kInvalidUnitBase + static_cast<unsigned char>(s[i]), i, 1});
      ++i;
      continue;
    }
    units.push_back({cp, i, len});
    i += len;
  }
  return units;
}

bool py_isspace(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
  if (cp >= kInvalidUnitBase) return false;
  const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
  return p->category == UTF8PROC_CATEGORY_ZS || p->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
         p->bidi_class == UTF8PROC_BIDI_CLASS_B || p->bidi_class == UTF8PROC_BIDI_CLASS_S;
}

std::string py_strip(const std::string& s, bool left, bool right) {
  auto units = utf8_units(s);
  size_t first = 0;
  size_t last = units.size();
  if (left) {
    while (first < last && py_isspace(units[first].cp)) ++first;
  }
  if (right) {
    while (last > first && py_isspace(units[last - 1].cp)) --last;
  }
  if (first == last) return "";
  size_t begin = units[first].offset;
  size_t end = units[last - 1].offset + units[last - 1].length;
  return s.substr(begin, end - begin);
}

void py_lower_append(std::u32string* out, uint32_t cp) {
  if (cp == 0x130) {  // the one unconditional multi-character lowercase mapping
    out->push_back(U'i');
    out->push_back(0x307);
    return;
  }
  out->push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(cp))));
}

namespace {
void replace_all(std::string* s, const std::string& from, const std::string& to) {
  size_t pos = 0;
  while ((pos = s->find(from, pos)) != std::string::npos) {
    s->replace(pos, from.size(), to);
    pos += to.size();
  }
}
}  // namespace

std::string clean_up_tokenization(const std::string& s) {
  std::string out = s;
  static const std::pair<const char*, const char*> kRules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (const auto& [from, to] : kRules) replace_all(&out, from, to);
  return out;
}

}  // namespace cocom::model::detail
