// LlamaTokenizer (slow, sentencepiece) with the semantics of transformers 4.41.
//
// encode: the text is split on the added tokens (PreTrainedTokenizer.tokenize); every other
// chunk goes through sentencepiece on its own (legacy mode: a plain Encode, which adds the
// dummy-prefix "▁"); bos/eos per add_bos_token/add_eos_token.
// decode: _decode + LlamaTokenizer.convert_tokens_to_string, with sentencepiece's own
// DecodePieces for the runs of ordinary pieces.
#include "common/error.h"
#include "model/tokenizer_impl.h"

namespace cocom::model::detail {
namespace {

const std::string kSpieceUnderline = "\xE2\x96\x81";  // U+2581 "▁"

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

class LlamaTokenizer final : public TokenizerBase {
 public:
  explicit LlamaTokenizer(const std::string& dir) {
    SpecialTokens defaults;
    defaults.unk = "<unk>";
    defaults.bos = "<s>";
    defaults.eos = "</s>";
    TokenizerFiles files = read_tokenizer_files(dir, defaults);
    const std::string origin =
        files.config_path.empty() ? join_path(dir, "tokenizer_config.json") : files.config_path;
    const Json& cfg = files.config;
    // legacy: null or absent means True (with a warning) in transformers.
    legacy_ = json_opt_bool(cfg, "legacy", origin).value_or(true);
    add_bos_ = json_opt_bool(cfg, "add_bos_token", origin).value_or(true);
    add_eos_ = json_opt_bool(cfg, "add_eos_token", origin).value_or(false);
    add_prefix_space_ = json_opt_bool(cfg, "add_prefix_space", origin).value_or(true);

    // The non-legacy tokenizer loads the model with add_dummy_prefix = false
    // (get_spm_processor), the legacy one as it is.
    sp_ = std::make_unique<SpmModel>(join_path(dir, "tokenizer.model"), legacy_ ? -1 : 0);
    init_vocab(files, sp_->size());
    if (!legacy_ && special_.unk.has_value()) {
      unk_token_length_ = sp_->encode(*special_.unk).size();
    }
  }

  std::string kind() const override { return "llama"; }

  std::vector<std::pair<std::string, int64_t>> tokenize_body(
      const std::string& text) const override {
    if (legacy_ || text.empty()) return tokenize_chunks(text);
    // Non-legacy tokenize(): "▁" -> " ", then a "▁" prefix, and the lone "▁" before a special
    // token at the start is dropped.
    std::string t = text;
    for (size_t pos = 0; (pos = t.find(kSpieceUnderline, pos)) != std::string::npos;) {
      t.replace(pos, kSpieceUnderline.size(), " ");
      pos += 1;
    }
    if (add_prefix_space_) t = kSpieceUnderline + t;
    auto tokens = tokenize_chunks(t);
    if (tokens.size() > 1 && tokens[0].first == kSpieceUnderline &&
        is_special_token(tokens[1].first)) {
      tokens.erase(tokens.begin());
    }
    return tokens;
  }

  void special_affixes(std::vector<int64_t>* prefix, std::vector<int64_t>* suffix) const override {
    if (add_bos_ && bos_id() >= 0) prefix->push_back(bos_id());
    if (add_eos_ && eos_id() >= 0) suffix->push_back(eos_id());
  }

 protected:
  std::string base_token(int64_t id) const override { return sp_->piece(static_cast<int32_t>(id)); }
  int64_t base_id(const std::string& token) const override { return sp_->find_piece(token); }
  bool default_clean_up() const override { return false; }

  std::string tokens_to_string(std::vector<std::string> tokens) const override {
    if (!tokens.empty() && add_prefix_space_ && starts_with(tokens[0], kSpieceUnderline)) {
      tokens[0].erase(0, kSpieceUnderline.size());
    }
    std::vector<std::string> current;
    std::string out;
    bool prev_is_special = false;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string& token = tokens[i];
      if (is_special_token(token)) {
        if (!prev_is_special && i != 0 && legacy_) out += ' ';
        out += sp_->decode_pieces(current);
        out += token;
        prev_is_special = true;
        current.clear();
      } else {
        if (prev_is_special && i == 1 && add_prefix_space_ &&
            !starts_with(token, kSpieceUnderline)) {
          out += ' ';
        }
        current.push_back(token);
        prev_is_special = false;
      }
    }
    out += sp_->decode_pieces(current);
    return out;
  }

 private:
  std::vector<std::pair<std::string, int64_t>> tokenize_chunks(const std::string& text) const {
    std::vector<std::pair<std::string, int64_t>> out;
    for (const auto& chunk : split_added(text)) {
      if (chunk.is_added) {
        out.emplace_back(chunk.text, added_id(chunk.text));
        continue;
      }
      for (auto& [piece, id] : sp_tokenize(chunk.text)) {
        // convert_tokens_to_ids looks at the added tokens first.
        int64_t added = added_id(piece);
        out.emplace_back(std::move(piece), added >= 0 ? added : id);
      }
    }
    return out;
  }

  // LlamaTokenizer._tokenize.
  std::vector<std::pair<std::string, int64_t>> sp_tokenize(const std::string& text) const {
    if (legacy_ || !(starts_with(text, kSpieceUnderline) || starts_with(text, " ")) ||
        !special_.unk.has_value()) {
      return sp_->encode(text);
    }
    // Encode "<unk>" + text and drop the pieces of "<unk>", so that a leading space is kept.
    auto pieces = sp_->encode(*special_.unk + text);
    if (pieces.size() >= unk_token_length_) {
      pieces.erase(pieces.begin(), pieces.begin() + static_cast<std::ptrdiff_t>(unk_token_length_));
    }
    return pieces;
  }

  std::unique_ptr<SpmModel> sp_;
  bool legacy_ = true;
  bool add_bos_ = true;
  bool add_eos_ = false;
  bool add_prefix_space_ = true;
  size_t unk_token_length_ = 0;
};

}  // namespace

std::unique_ptr<Tokenizer> load_llama_tokenizer(const std::string& dir) {
  return std::make_unique<LlamaTokenizer>(dir);
}

}  // namespace cocom::model::detail
