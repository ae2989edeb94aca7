// TokenizerBase's text conversion: tokenize and encode (the split of text along added tokens,
// special tokens around the body) and decode.

#include "common/error.h"
#include "model/tokenizer_impl.h"

namespace cocom::model::detail {

size_t TokenizerBase::num_special_tokens_to_add() const {
  std::vector<int64_t> prefix, suffix;
  special_affixes(&prefix, &suffix);
  return prefix.size() + suffix.size();
}

std::vector<int64_t> TokenizerBase::encode(const std::string& text, bool add_special_tokens) const {
  std::vector<int64_t> prefix, suffix;
  if (add_special_tokens) special_affixes(&prefix, &suffix);
  std::vector<int64_t> ids = prefix;
  for (const auto& [token, id] : tokenize_body(text)) ids.push_back(id);
  ids.insert(ids.end(), suffix.begin(), suffix.end());
  return ids;
}

std::vector<std::string> TokenizerBase::tokenize(const std::string& text,
                                                 bool add_special_tokens) const {
  std::vector<int64_t> prefix, suffix;
  if (add_special_tokens) special_affixes(&prefix, &suffix);
  std::vector<std::string> tokens;
  for (int64_t id : prefix) tokens.push_back(id_to_token(id));
  for (auto& [token, id] : tokenize_body(text)) tokens.push_back(std::move(token));
  for (int64_t id : suffix) tokens.push_back(id_to_token(id));
  return tokens;
}

std::string TokenizerBase::decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> sub_texts;
  std::vector<std::string> current;
  for (int64_t id : ids) {
    if (id < 0 || id >= size_) fail_id(id);
    if (skip_special_tokens && all_special_ids_.count(id) != 0) continue;
    std::string token = id_to_token(id);
    if (legacy_added_.count(token) != 0) {
      if (!current.empty()) {
        std::string s = tokens_to_string(std::move(current));
        if (!s.empty()) sub_texts.push_back(std::move(s));
        current.clear();
      }
      sub_texts.push_back(std::move(token));
    } else {
      current.push_back(std::move(token));
    }
  }
  if (!current.empty()) sub_texts.push_back(tokens_to_string(std::move(current)));
  // spaces_between_special_tokens: the slow tokenizers' _decode default (True) applies; the
  // value saved in tokenizer_config.json is not read by decode().
  std::string text;
  for (size_t i = 0; i < sub_texts.size(); ++i) {
    if (i != 0) text += ' ';
    text += sub_texts[i];
  }
  return clean_up_ ? clean_up_tokenization(text) : text;
}

std::vector<TokenizerBase::Chunk> TokenizerBase::split_added(const std::string& text) const {
  std::vector<std::string> parts = trie_.split(text);
  for (size_t i = 0; i < parts.size(); ++i) {
    auto it = added_encoder_.find(parts[i]);
    if (it == added_encoder_.end()) continue;
    const AddedToken& tok = added_decoder_.at(it->second);
    const bool has_left = i > 0 && !parts[i - 1].empty();
    const bool has_right = i + 1 < parts.size() && !parts[i + 1].empty();
    const std::string left = has_left ? parts[i - 1] : std::string();
    const std::string right = has_right ? parts[i + 1] : std::string();
    if (tok.rstrip && has_right) parts[i + 1] = py_strip(right, true, false);
    if (tok.lstrip && has_left) parts[i - 1] = py_strip(left, false, true);
    if (tok.single_word && has_left && left.back() != ' ') {
      parts[i - 1] += parts[i];
      parts[i].clear();
    } else if (tok.single_word && has_right && right.front() != ' ') {
      parts[i] += right;
      parts[i + 1].clear();
    }
  }
  std::vector<Chunk> chunks;
  for (auto& p : parts) {
    if (p.empty()) continue;
    bool added = added_encoder_.count(p) != 0;
    chunks.push_back({std::move(p), added});
  }
  return chunks;
}

}  // namespace cocom::model::detail
