// BertTokenizer (slow, WordPiece) with the semantics of transformers 4.41: the lower-casing
// pass of PreTrainedTokenizer.tokenize, the added-token split, BasicTokenizer (clean text, CJK
// spacing, NFC, whitespace split, lower case + accent stripping, punctuation split) and
// WordpieceTokenizer (greedy longest-match-first with "##"). Unicode data comes from utf8proc.
#include <utf8proc.h>

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "model/tokenizer_impl.h"

namespace cocom::model::detail {
namespace {

constexpr size_t kMaxInputCharsPerWord = 100;

utf8proc_category_t category(uint32_t cp) {
  return utf8proc_category(static_cast<utf8proc_int32_t>(cp));
}

// BasicTokenizer's character classes.
bool bert_is_whitespace(uint32_t cp) {
  if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r') return true;
  return category(cp) == UTF8PROC_CATEGORY_ZS;
}

bool bert_is_control(uint32_t cp) {
  if (cp == '\t' || cp == '\n' || cp == '\r') return false;
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
      return true;
    default:
      return false;
  }
}

bool bert_is_punctuation(uint32_t cp) {
  if ((cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
      (cp >= 123 && cp <= 126)) {
    return true;
  }
  switch (category(cp)) {
    case UTF8PROC_CATEGORY_PC:
    case UTF8PROC_CATEGORY_PD:
    case UTF8PROC_CATEGORY_PS:
    case UTF8PROC_CATEGORY_PE:
    case UTF8PROC_CATEGORY_PI:
    case UTF8PROC_CATEGORY_PF:
    case UTF8PROC_CATEGORY_PO:
      return true;
    default:
      return false;
  }
}

// The CJK Unified Ideographs blocks of BasicTokenizer._is_chinese_char (part of the algorithm,
// not Unicode data: Hangul, kana etc. are deliberately not included).
bool bert_is_chinese_char(uint32_t cp) {
  return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
         (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
         (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

// unicodedata.normalize("NFC"/"NFD", s) via utf8proc.
std::u32string normalize(const std::u32string& s, bool compose) {
  if (s.empty()) return s;
  std::string in = utf8::from_u32(s);
  utf8proc_uint8_t* out = nullptr;
  int options = UTF8PROC_STABLE | (compose ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE);
  utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(in.data()),
                                    static_cast<utf8proc_ssize_t>(in.size()), &out,
                                    static_cast<utf8proc_option_t>(options));
  if (n < 0) {
    // Cannot happen for the well-formed text built here; keep the text unnormalized.
    std::free(out);
    return s;
  }
  std::string result(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
  std::free(out);
  return utf8::to_u32(result);
}

// Python's str.split() with no argument.
std::vector<std::u32string> py_split(const std::u32string& s) {
  std::vector<std::u32string> out;
  std::u32string cur;
  for (char32_t c : s) {
    if (py_isspace(c)) {
      if (!cur.empty()) out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  if (!cur.empty()) out.push_back(std::move(cur));
  return out;
}

std::u32string py_lower(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (char32_t c : s) py_lower_append(&out, c);
  return out;
}

std::u32string strip_accents(const std::u32string& s) {
  std::u32string out;
  for (char32_t c : normalize(s, false)) {
    if (category(c) != UTF8PROC_CATEGORY_MN) out.push_back(c);
  }
  return out;
}

class BertTokenizer final : public TokenizerBase {
 public:
  explicit BertTokenizer(const std::string& dir) {
    SpecialTokens defaults;
    defaults.unk = "[UNK]";
    defaults.sep = "[SEP]";
    defaults.pad = "[PAD]";
    defaults.cls = "[CLS]";
    defaults.mask = "[MASK]";
    TokenizerFiles files = read_tokenizer_files(dir, defaults);
    const std::string origin =
        files.config_path.empty() ? join_path(dir, "tokenizer_config.json") : files.config_path;
    const Json& cfg = files.config;
    do_lower_case_ = json_opt_bool(cfg, "do_lower_case", origin).value_or(true);
    do_basic_tokenize_ = json_opt_bool(cfg, "do_basic_tokenize", origin).value_or(true);
    tokenize_chinese_chars_ = json_opt_bool(cfg, "tokenize_chinese_chars", origin).value_or(true);
    strip_accents_ = json_opt_bool(cfg, "strip_accents", origin);
    auto ns = cfg.find("never_split");
    if (ns != cfg.end() && !ns->is_null()) {
      if (!ns->is_array()) {
        fail(origin, ": field 'never_split' must be a list of strings or null (got ",
             ns->type_name(), ")");
      }
      for (size_t i = 0; i < ns->size(); ++i) {
        if (!(*ns)[i].is_string()) {
          fail(origin, ": field 'never_split[", std::to_string(i), "]' must be a string (got ",
               (*ns)[i].type_name(), ")");
        }
        never_split_.insert((*ns)[i].get<std::string>());
      }
    }

    read_vocab(join_path(dir, "vocab.txt"));
    if (!files.special.unk.has_value()) {
      fail(origin, ": unk_token is null; a WordPiece tokenizer needs one");
    }
    if (vocab_.count(*files.special.unk) == 0) {
      fail(vocab_path_, ": the unknown token \"", *files.special.unk, "\" (unk_token, see ", origin,
           ") is not in the vocabulary");
    }
    init_vocab(files, static_cast<int64_t>(lines_.size()));
  }

  std::string kind() const override { return "bert"; }

  std::vector<std::pair<std::string, int64_t>> tokenize_body(
      const std::string& input) const override {
    // Python text cannot hold ill-formed UTF-8; such bytes become U+FFFD, which
    // BasicTokenizer drops.
    std::string text = utf8::is_valid(input) ? input : utf8::from_u32(utf8::to_u32(input));
    // The do_lower_case property exists only with the basic tokenizer.
    if (do_lower_case_ && do_basic_tokenize_) text = lower_outside_special(text);
    std::vector<std::pair<std::string, int64_t>> out;
    for (const auto& chunk : split_added(text)) {
      if (chunk.is_added) {
        out.emplace_back(chunk.text, added_id(chunk.text));
        continue;
      }
      for (auto& token : bert_tokenize(chunk.text)) {
        int64_t id = convert_token(token);
        out.emplace_back(std::move(token), id);
      }
    }
    return out;
  }

  void special_affixes(std::vector<int64_t>* prefix, std::vector<int64_t>* suffix) const override {
    int64_t cls = special_id(special_.cls);
    int64_t sep = special_id(special_.sep);
    if (cls >= 0) prefix->push_back(cls);
    if (sep >= 0) suffix->push_back(sep);
  }

 protected:
  std::string base_token(int64_t id) const override {
    const std::string& token = lines_[static_cast<size_t>(id)];
    // A token listed twice keeps its last id; the earlier id has no token and reads as unk.
    auto it = vocab_.find(token);
    if (it != vocab_.end() && it->second == id) return token;
    return special_.unk.value_or("");
  }
  int64_t base_id(const std::string& token) const override {
    auto it = vocab_.find(token);
    return it == vocab_.end() ? -1 : it->second;
  }
  bool default_clean_up() const override { return true; }

  // tokenize() and _tokenize read all_special_tokens and the added tokens at every call in
  // transformers; here their derived sets are rebuilt whenever those change.
  void special_tokens_changed() override {
    // The lower-casing pass of tokenize() keeps the special tokens and the non-special
    // normalized added tokens as they are (in this order: the first that matches wins).
    lower_keep_ = all_special_tokens_;
    for (const auto& [id, t] : added_decoder_) {
      if (!t.special && t.normalized) lower_keep_.push_back(t.content);
    }
    basic_never_split_ = never_split_;
    basic_never_split_.insert(all_special_tokens_.begin(), all_special_tokens_.end());
  }

  std::string tokens_to_string(std::vector<std::string> tokens) const override {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i != 0) joined += ' ';
      joined += tokens[i];
    }
    std::string out;
    out.reserve(joined.size());
    for (size_t i = 0; i < joined.size();) {
      if (joined.compare(i, 3, " ##") == 0) {
        i += 3;
      } else {
        out += joined[i++];
      }
    }
    return py_strip(out, true, true);
  }

 private:
  void read_vocab(const std::string& path) {
    vocab_path_ = path;
    std::string data = read_text_file(path);
    if (data.empty()) fail(path, ": empty vocabulary file");
    // Python's text-mode readlines(): universal newlines, then rstrip("\n").
    size_t line_no = 1;
    std::string cur;
    auto finish = [&]() {
      if (!utf8::is_valid(cur)) fail(path, ": line ", line_no, " is not valid UTF-8");
      vocab_[cur] = static_cast<int64_t>(lines_.size());
      lines_.push_back(std::move(cur));
      cur.clear();
      ++line_no;
    };
    for (size_t i = 0; i < data.size(); ++i) {
      char c = data[i];
      if (c == '\n') {
        finish();
      } else if (c == '\r') {
        if (i + 1 < data.size() && data[i + 1] == '\n') ++i;
        finish();
      } else {
        cur += c;
      }
    }
    if (!cur.empty()) finish();
    if (lines_.size() > static_cast<size_t>(INT32_MAX)) fail(path, ": too many tokens");
  }

  // re.sub("(special|...)|(.+?)", keep or lower) of PreTrainedTokenizer.tokenize: every
  // character outside the kept tokens is lower-cased on its own.
  std::string lower_outside_special(const std::string& text) const {
    std::string out;
    out.reserve(text.size());
    const auto units = utf8_units(text);
    size_t i = 0;
    while (i < units.size()) {
      const size_t off = units[i].offset;
      const std::string* kept = nullptr;
      for (const auto& k : lower_keep_) {
        if (!k.empty() && text.compare(off, k.size(), k) == 0) {
          kept = &k;
          break;
        }
      }
      if (kept != nullptr) {
        out += *kept;
        const size_t end = off + kept->size();
        while (i < units.size() && units[i].offset < end) ++i;
        continue;
      }
      std::u32string lowered;
      py_lower_append(&lowered, units[i].cp);
      for (char32_t c : lowered) utf8::append(&out, c);
      ++i;
    }
    return out;
  }

  // BertTokenizer._tokenize.
  std::vector<std::string> bert_tokenize(const std::string& text) const {
    std::vector<std::string> out;
    if (!do_basic_tokenize_) {
      for (const auto& word : py_split(utf8::to_u32(text))) wordpiece(word, &out);
      return out;
    }
    for (const auto& token : basic_tokenize(text)) {
      std::string utf8 = utf8::from_u32(token);
      if (never_split_.count(utf8) != 0) {
        out.push_back(std::move(utf8));
      } else {
        wordpiece(token, &out);
      }
    }
    return out;
  }

  // BasicTokenizer.tokenize(text, never_split=all_special_tokens).
  std::vector<std::u32string> basic_tokenize(const std::string& text) const {
    std::u32string cleaned;
    for (char32_t c : utf8::to_u32(text)) {
      if (c == 0 || c == 0xFFFD || bert_is_control(c)) continue;
      if (bert_is_whitespace(c)) {
        cleaned.push_back(U' ');
      } else if (tokenize_chinese_chars_ && bert_is_chinese_char(c)) {
        cleaned.push_back(U' ');
        cleaned.push_back(c);
        cleaned.push_back(U' ');
      } else {
        cleaned.push_back(c);
      }
    }
    std::vector<std::u32string> split_tokens;
    for (auto token : py_split(normalize(cleaned, true))) {
      if (basic_never_split_.count(utf8::from_u32(token)) == 0) {
        if (do_lower_case_) {
          token = py_lower(token);
          if (strip_accents_.value_or(true)) token = strip_accents(token);
        } else if (strip_accents_.value_or(false)) {
          token = strip_accents(token);
        }
      }
      split_on_punctuation(token, &split_tokens);
    }
    return split_tokens;
  }

  void split_on_punctuation(const std::u32string& token, std::vector<std::u32string>* out) const {
    if (basic_never_split_.count(utf8::from_u32(token)) != 0) {
      out->push_back(token);
      return;
    }
    std::u32string cur;
    for (char32_t c : token) {
      if (bert_is_punctuation(c)) {
        if (!cur.empty()) out->push_back(std::move(cur));
        cur.clear();
        out->push_back(std::u32string(1, c));
      } else {
        cur.push_back(c);
      }
    }
    if (!cur.empty()) out->push_back(std::move(cur));
  }

  // WordpieceTokenizer.tokenize for one whitespace-free word.
  void wordpiece(const std::u32string& word, std::vector<std::string>* out) const {
    const std::string unk = special_.unk.value_or("");
    if (word.size() > kMaxInputCharsPerWord) {
      out->push_back(unk);
      return;
    }
    // Byte offsets of the code points, to look up substrings without re-encoding.
    std::string utf8;
    std::vector<size_t> offsets;
    for (char32_t c : word) {
      offsets.push_back(utf8.size());
      utf8::append(&utf8, c);
    }
    offsets.push_back(utf8.size());
    std::vector<std::string> pieces;
    size_t start = 0;
    while (start < word.size()) {
      size_t end = word.size();
      bool found = false;
      std::string candidate;
      while (start < end) {
        candidate =
            (start > 0 ? "##" : "") + utf8.substr(offsets[start], offsets[end] - offsets[start]);
        if (vocab_.count(candidate) != 0) {
          found = true;
          break;
        }
        --end;
      }
      if (!found) {
        out->push_back(unk);
        return;
      }
      pieces.push_back(std::move(candidate));
      start = end;
    }
    for (auto& p : pieces) out->push_back(std::move(p));
  }

  std::string vocab_path_;
  std::vector<std::string> lines_;
  std::unordered_map<std::string, int64_t> vocab_;
  bool do_lower_case_ = true;
  bool do_basic_tokenize_ = true;
  bool tokenize_chinese_chars_ = true;
  std::optional<bool> strip_accents_;
  std::set<std::string> never_split_;        // the config's never_split
  std::set<std::string> basic_never_split_;  // plus all special tokens
  std::vector<std::string> lower_keep_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_bert_tokenizer(const std::string& dir) {
  return std::make_unique<BertTokenizer>(dir);
}

}  // namespace cocom::model::detail
