// Tokenizers with Hugging Face (slow tokenizer) semantics: sentencepiece-based LlamaTokenizer
// and BERT WordPiece. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace cocom::model {

enum class PaddingSide { Left, Right };

struct BatchEncodeOptions {
  bool add_special_tokens = true;
  PaddingSide padding_side = PaddingSide::Right;
  bool pad_to_longest = true;      // pad every row to the longest row of the batch
  int64_t max_length = 0;          // 0 = no truncation
  bool truncation = false;         // truncate on the right to max_length
  int64_t pad_to_multiple_of = 0;  // 0 = off
};

struct BatchEncoding {
  std::vector<std::vector<int64_t>> input_ids;
  std::vector<std::vector<int64_t>> attention_mask;
  std::vector<std::vector<int64_t>> token_type_ids;  // zeros for single sequences
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // "llama" (sentencepiece) or "bert" (WordPiece).
  virtual std::string kind() const = 0;
  virtual std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const = 0;
  // The token strings of encode() (sentencepiece pieces / WordPiece tokens).
  virtual std::vector<std::string> tokenize(const std::string& text,
                                            bool add_special_tokens) const = 0;
  virtual std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const = 0;

  // Size of the full vocabulary including added tokens (= len(tokenizer) in Python).
  virtual int64_t size() const = 0;
  // nullopt when the token is neither in the base vocabulary nor an added token (no fallback
  // to the unknown token).
  virtual std::optional<int64_t> token_to_id(const std::string& token) const = 0;
  // Throws cocom::Error for an id out of range.
  virtual std::string id_to_token(int64_t id) const = 0;
  virtual bool is_special(int64_t id) const = 0;
  virtual std::vector<std::string> special_tokens() const = 0;

  // -1 when the tokenizer has none.
  virtual int64_t bos_id() const = 0;
  virtual int64_t eos_id() const = 0;
  virtual int64_t pad_id() const = 0;
  virtual int64_t unk_id() const = 0;

  // Adds `tokens` as additional special tokens, as
  // add_special_tokens({"additional_special_tokens": tokens}) does: tokens not yet in the
  // vocabulary get the next ids in order; the additional-special list is replaced
  // (replace_additional_special_tokens=True); all become special (skipped by
  // decode(skip_special_tokens)). Returns how many new ids were created. Throws cocom::Error for
  // an empty token (and then changes nothing).
  //
  // Details, as transformers 4.41 does them:
  // - A token already in the base vocabulary or already an added token keeps its id. It becomes
  //   (again) an added token with fresh flags: special, not normalized, no
  //   lstrip/rstrip/single_word. So a base piece added this way is split out of the text like
  //   any added token from then on.
  // - The next new id is size() (one past the highest id). A token listed twice gets one id and
  //   is listed twice in special_tokens(), as in all_special_tokens.
  // - An empty list changes nothing and returns 0 (the list is only replaced by a non-empty one).
  // - Tokens that drop out of the additional list stay in the vocabulary as added tokens (still
  //   split out of text on encode) but are no longer special tokens: not in special_tokens(),
  //   is_special() false, not skipped by decode(skip_special_tokens), decoded on their own as
  //   "legacy added tokens". 4.41 skips by all_special_ids, not by the AddedToken's `special`
  //   flag (which stays set; so the BERT lower-casing pass no longer spares such a token).
  // Not thread-safe: call it (and set_pad_token) before sharing the tokenizer between threads.
  virtual int64_t add_special_tokens(const std::vector<std::string>& tokens) = 0;
  // pad_token := token (which must already be in the vocabulary; throws naming it otherwise).
  // As `tokenizer.pad_token = token` in 4.41: the token becomes a special token (the previous
  // pad token stops being one unless another attribute holds it); the vocabulary and the split
  // of text on added tokens are not changed.
  virtual void set_pad_token(const std::string& token) = 0;

  // Batch encoding with padding, truncation and pad_to_multiple_of, as the Hugging Face
  // __call__ does for a list of texts. Throws when padding is needed and pad_id() is -1.
  // Truncation keeps the special tokens and cuts the text's tokens (as transformers does, a
  // row is left whole when max_length is smaller than its special tokens alone).
  BatchEncoding encode_batch(const std::vector<std::string>& texts,
                             const BatchEncodeOptions& opt) const;
};

// Loads the tokenizer in a directory: `tokenizer.model` (+ tokenizer_config.json,
// added_tokens.json, special_tokens_map.json) gives a LlamaTokenizer; `vocab.txt` gives a
// BertTokenizer. Throws naming the directory and the file at fault.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& dir);

}  // namespace cocom::model
