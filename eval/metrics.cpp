#include "eval/metrics.h"

#include <utf8proc.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <map>

#include "common/error.h"
#include "common/utf8.h"

namespace cocom::eval {
namespace {

// Code points of a UTF-8 string; invalid bytes become U+FFFD so that no input throws.
std::vector<int32_t> decode_utf8(const std::string& s) {
  std::vector<int32_t> out;
  out.reserve(s.size());
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(s.data());
  utf8proc_ssize_t left = static_cast<utf8proc_ssize_t>(s.size());
  while (left > 0) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t n = utf8proc_iterate(p, left, &cp);
    if (n <= 0) {
      cp = 0xFFFD;
      n = 1;
    }
    out.push_back(cp);
    p += n;
    left -= n;
  }
  return out;
}

bool is_space(int32_t cp) {
  if (cp == ' ' || (cp >= '\t' && cp <= '\r') || (cp >= 0x1c && cp <= 0x1f) || cp == 0x85)
    return true;
  if (cp < 0x80) return false;
  const utf8proc_category_t c = utf8proc_category(cp);
  return c == UTF8PROC_CATEGORY_ZS || c == UTF8PROC_CATEGORY_ZL || c == UTF8PROC_CATEGORY_ZP;
}

// What a regular expression's \w matches on Unicode text: letters, numbers, underscore.
bool is_word(int32_t cp) {
  if (cp == '_') return true;
  if (cp < 0x80) return std::isalnum(cp) != 0;
  switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

bool is_ascii_punct(int32_t cp) {
  return cp < 0x80 && std::strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", cp) && cp != 0;
}

bool is_article(const std::vector<int32_t>& w) {
  auto eq = [&](const char* a) {
    const size_t n = std::strlen(a);
    if (w.size() != n) return false;
    for (size_t i = 0; i < n; ++i) {
      if (w[i] != a[i]) return false;
    }
    return true;
  };
  return eq("a") || eq("an") || eq("the");
}

std::vector<std::string> split_space(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (int32_t cp : decode_utf8(s)) {
    if (is_space(cp)) {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      utf8::append(&cur, static_cast<uint32_t>(cp));
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

double best_of(const std::vector<std::string>& golds,
               const std::function<double(const std::string&)>& f) {
  double best = 0;
  for (const auto& g : golds) best = std::max(best, f(g));
  return best;
}

double f_measure(size_t overlap, size_t n_pred, size_t n_ref) {
  if (overlap == 0 || n_pred == 0 || n_ref == 0) return 0.0;
  const double p = double(overlap) / double(n_pred), r = double(overlap) / double(n_ref);
  return 2 * p * r / (p + r);
}

size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

std::string normalize_answer(const std::string& s) {
  // Lower-case, then drop punctuation (so "U.S." -> "us"), then articles as whole words.
  std::vector<int32_t> cps;
  for (int32_t cp : decode_utf8(s)) {
    cp = utf8proc_tolower(cp);
    if (!is_ascii_punct(cp)) cps.push_back(cp);
  }
  std::string spaced;
  for (size_t i = 0; i < cps.size();) {
    if (!is_word(cps[i])) {
      utf8::append(&spaced, static_cast<uint32_t>(cps[i++]));
      continue;
    }
    size_t j = i;
    while (j < cps.size() && is_word(cps[j])) ++j;
    std::vector<int32_t> word(cps.begin() + long(i), cps.begin() + long(j));
    if (is_article(word)) {
      spaced += ' ';
    } else {
      for (int32_t cp : word) utf8::append(&spaced, static_cast<uint32_t>(cp));
    }
    i = j;
  }
  std::string out;
  for (const auto& w : split_space(spaced)) {
    if (!out.empty()) out += ' ';
    out += w;
  }
  return out;
}

double match(const std::string& prediction, const std::vector<std::string>& golds) {
  const std::string p = normalize_answer(prediction);
  return best_of(golds, [&](const std::string& g) {
    const std::string n = normalize_answer(g);
    return !n.empty() && p.find(n) != std::string::npos ? 1.0 : 0.0;
  });
}

double exact_match(const std::string& prediction, const std::vector<std::string>& golds) {
  const std::string p = normalize_answer(prediction);
  return best_of(golds, [&](const std::string& g) { return normalize_answer(g) == p ? 1.0 : 0.0; });
}

double token_f1(const std::string& prediction, const std::vector<std::string>& golds) {
  const std::vector<std::string> pt = split_space(normalize_answer(prediction));
  return best_of(golds, [&](const std::string& g) {
    const std::vector<std::string> gt = split_space(normalize_answer(g));
    // Both empty counts as agreement, one empty as none (the SQuAD rule).
    if (pt.empty() || gt.empty()) return pt.empty() && gt.empty() ? 1.0 : 0.0;
    std::map<std::string, size_t> counts;
    for (const auto& t : gt) ++counts[t];
    size_t overlap = 0;
    for (const auto& t : pt) {
      auto it = counts.find(t);
      if (it != counts.end() && it->second > 0) {
        --it->second;
        ++overlap;
      }
    }
    return f_measure(overlap, pt.size(), gt.size());
  });
}

std::vector<std::string> rouge_tokens(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (unsigned char c : s) {
    const char l = static_cast<char>(std::tolower(c));
    if ((l >= 'a' && l <= 'z') || (l >= '0' && l <= '9')) {
      cur += l;
    } else if (!cur.empty()) {
      out.push_back(std::move(cur));
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

double rouge_l(const std::string& prediction, const std::vector<std::string>& references) {
  const std::vector<std::string> pt = rouge_tokens(prediction);
  return best_of(references, [&](const std::string& r) {
    const std::vector<std::string> rt = rouge_tokens(r);
    return f_measure(lcs_length(pt, rt), pt.size(), rt.size());
  });
}

QaScores score_qa(const std::vector<std::string>& predictions,
                  const std::vector<std::vector<std::string>>& golds) {
  if (predictions.size() != golds.size()) {
    fail("score_qa: ", predictions.size(), " predictions for ", golds.size(), " gold answer lists");
  }
  QaScores s;
  s.count = predictions.size();
  if (s.count == 0) return s;
  for (size_t i = 0; i < predictions.size(); ++i) {
    s.match += match(predictions[i], golds[i]);
    s.exact_match += exact_match(predictions[i], golds[i]);
    s.f1 += token_f1(predictions[i], golds[i]);
    s.rouge_l += rouge_l(predictions[i], golds[i]);
  }
  const double n = double(s.count);
  s.match /= n;
  s.exact_match /= n;
  s.f1 /= n;
  s.rouge_l /= n;
  return s;
}

}  // namespace cocom::eval
