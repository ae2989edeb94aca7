// TokenizerBase's vocabulary: the added tokens and special tokens of Hugging Face's slow
// tokenizers (transformers 4.41 PreTrainedTokenizer), token <-> id lookups, add_special_tokens
// and set_pad_token.
#include <algorithm>

#include "common/error.h"
#include "model/tokenizer_impl.h"

namespace cocom::model::detail {

void TokenizerBase::init_vocab(const TokenizerFiles& files, int64_t base_size) {
  dir_ = files.dir;
  base_size_ = base_size;
  size_ = base_size;
  special_ = files.special;

  for (const auto& [id, t] : files.added) {
    const std::string& origin = files.added_origin.at(id);
    if (id < base_size_) {
      std::string base = base_token(id);
      if (base != t.content) {
        fail(origin, ": added token \"", t.content, "\" has id ", id,
             ", which the base vocabulary (size ", base_size_, ") holds as \"", base, "\"");
      }
    }
    auto [pos, inserted] = added_encoder_.emplace(t.content, id);
    if (!inserted) {
      fail(origin, ": token \"", t.content, "\" has two ids (", pos->second, " and ", id, ")");
    }
    added_decoder_[id] = t;
    size_ = std::max(size_, id + 1);
  }

  // PreTrainedTokenizer.__init__ adds the special tokens that are not added tokens yet: at
  // their base id when the base vocabulary has them, else at the end.
  for (const auto& token : special_.all()) {
    if (added_encoder_.count(token) != 0) continue;
    AddedToken t;
    auto ext = files.special_extended.find(token);
    if (ext != files.special_extended.end()) t = ext->second;
    t.content = token;
    t.special = true;
    if (ext == files.special_extended.end()) t.normalized = false;
    int64_t id = base_id(token);
    if (id < 0) id = size_++;
    added_encoder_[token] = id;
    added_decoder_[id] = t;
  }

  for (const auto& [id, t] : added_decoder_) trie_.add(t.content);
  refresh_special();

  const std::string origin = files.config_path.empty() ? dir_ : files.config_path;
  clean_up_ = json_opt_bool(files.config, "clean_up_tokenization_spaces", origin)
                  .value_or(default_clean_up());
}

int64_t TokenizerBase::added_id(const std::string& token) const {
  auto it = added_encoder_.find(token);
  return it == added_encoder_.end() ? -1 : it->second;
}

int64_t TokenizerBase::convert_token(const std::string& token) const {
  int64_t id = added_id(token);
  if (id >= 0) return id;
  id = base_id(token);
  if (id >= 0) return id;
  return special_.unk.has_value() ? base_id(*special_.unk) : -1;
}

int64_t TokenizerBase::special_id(const std::optional<std::string>& token) const {
  if (!token.has_value()) return -1;
  return convert_token(*token);
}

void TokenizerBase::refresh_special() {
  all_special_tokens_ = special_.all();
  all_special_set_.clear();
  all_special_set_.insert(all_special_tokens_.begin(), all_special_tokens_.end());
  // all_special_ids = convert_tokens_to_ids(all_special_tokens). Every special token is in the
  // vocabulary (init_vocab adds the missing ones, set_pad_token checks), so convert_token never
  // falls back to unk here.
  all_special_ids_.clear();
  for (const auto& token : all_special_tokens_) {
    const int64_t id = convert_token(token);
    if (id >= 0) all_special_ids_.insert(id);
  }

  // _decode's "legacy added tokens": added tokens that are not special tokens, plus the
  // additional special tokens beyond the base vocabulary. They are decoded on their own and
  // joined to their neighbours with a space.
  legacy_added_.clear();
  for (const auto& [content, id] : added_encoder_) {
    if (all_special_set_.count(content) == 0) legacy_added_.insert(content);
  }
  for (const auto& token : special_.additional) {
    if (convert_token(token) >= base_size_) legacy_added_.insert(token);
  }
  special_tokens_changed();
}

// PreTrainedTokenizerBase.add_special_tokens({"additional_special_tokens": tokens}) with
// replace_additional_special_tokens=True, then _add_tokens(special_tokens=True), as in 4.41.
int64_t TokenizerBase::add_special_tokens(const std::vector<std::string>& tokens) {
  // Validate everything first so that a failure leaves the tokenizer unchanged.
  int64_t n_new = 0;
  std::unordered_set<std::string> fresh;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i].empty()) {
      fail("tokenizer ", dir_, ": add_special_tokens: token ", i,
           " is the empty string, which cannot be a token");
    }
    if (!token_to_id(tokens[i]).has_value() && fresh.insert(tokens[i]).second) ++n_new;
  }
  if (size_ + n_new > int64_t{INT32_MAX}) {
    fail("tokenizer ", dir_, ": add_special_tokens: ", n_new,
         " new tokens would make the vocabulary larger than ", INT32_MAX);
  }
  // An empty list leaves additional_special_tokens as it is (4.41 replaces it only with a
  // non-empty one).
  if (tokens.empty()) return 0;

  special_.additional = tokens;
  int64_t created = 0;
  for (const auto& token : tokens) {
    // get_vocab() lookup: an added token or a base token keeps its id; a new one gets the next.
    std::optional<int64_t> found = token_to_id(token);
    int64_t id = 0;
    if (found.has_value()) {
      id = *found;
    } else {
      id = size_++;
      ++created;
    }
    // The token (re)becomes an added token with the flags of a string passed to
    // add_special_tokens: special, not normalized, no stripping.
    AddedToken t;
    t.content = token;
    t.special = true;
    t.normalized = false;
    added_decoder_[id] = t;
    added_encoder_[token] = id;
    trie_.add(token);
  }
  refresh_special();
  return created;
}

void TokenizerBase::set_pad_token(const std::string& token) {
  if (!token_to_id(token).has_value()) {
    fail("tokenizer ", dir_, ": cannot make \"", token,
         "\" the pad token: it is not in the vocabulary (neither a base token nor an added token)");
  }
  special_.pad = token;
  refresh_special();
}

void TokenizerBase::fail_id(int64_t id) const {
  fail("tokenizer ", dir_, ": token id ", id, " is out of range for the vocabulary of size ",
       size_);
}

std::optional<int64_t> TokenizerBase::token_to_id(const std::string& token) const {
  int64_t id = added_id(token);
  if (id < 0) id = base_id(token);
  if (id < 0) return std::nullopt;
  return id;
}

std::string TokenizerBase::id_to_token(int64_t id) const {
  if (id < 0 || id >= size_) fail_id(id);
  auto it = added_decoder_.find(id);
  if (it != added_decoder_.end()) return it->second.content;
  if (id < base_size_) return base_token(id);
  fail("tokenizer ", dir_, ": token id ", id, " has no token (the added tokens leave a gap before ",
       size_, ")");
}

}  // namespace cocom::model::detail
