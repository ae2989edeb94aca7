// Internals shared by the tokenizer sources (not a public header).
//
// Part 1 is the C interface of the sentencepiece shim (libcocom_spm.so, built from
// spm_shim.cpp). It is plain C so that nothing of sentencepiece, protobuf or the C++ standard
// library crosses the dlopen boundary (ENVIRONMENT.md, trap 4). spm_shim.cpp includes only this
// part (COCOM_SPM_C_API_ONLY).
//
// Part 2 holds the C++ helpers: the shim loader (tokenizer_spm.cpp), added-token handling with
// Hugging Face slow tokenizer semantics (transformers 4.41: tokenizer_trie.cpp for the split,
// tokenizer_files.cpp for the JSON files), Unicode helpers (tokenizer_unicode.cpp) and the
// common base of the two tokenizers (tokenizer_vocab.cpp: the added and special vocabulary;
// tokenizer_codec.cpp: tokenize, encode, decode). Tokenizer::encode_batch is in
// tokenizer_batch.cpp, load_tokenizer in tokenizer.cpp.
#pragma once

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define COCOM_SPM_API __attribute__((visibility("default")))
#else
#define COCOM_SPM_API
#endif

// Bumped whenever a signature below changes; the loader refuses a shim of another version.
#define COCOM_SPM_ABI_VERSION 1

extern "C" {

typedef struct cocom_spm_model cocom_spm_model;
// An encoding (pieces + ids) or a decoded text, owned by the caller until
// cocom_spm_result_free.
typedef struct cocom_spm_result cocom_spm_result;

enum {
  COCOM_SPM_PIECE_CONTROL = 1,
  COCOM_SPM_PIECE_UNKNOWN = 2,
  COCOM_SPM_PIECE_BYTE = 4,
  COCOM_SPM_PIECE_UNUSED = 8,
};

// Every function is noexcept: errors come back as NULL / -1 plus a message in *error, which
// the caller frees with cocom_spm_free_error.
COCOM_SPM_API int cocom_spm_abi_version(void);
// Loads a serialized ModelProto from `path`. add_dummy_prefix: -1 keeps the model's setting,
// 0/1 override normalizer_spec.add_dummy_prefix (the non-legacy LlamaTokenizer sets it to 0).
COCOM_SPM_API cocom_spm_model* cocom_spm_load(const char* path, int add_dummy_prefix, char** error);
COCOM_SPM_API void cocom_spm_free(cocom_spm_model* model);
COCOM_SPM_API void cocom_spm_free_error(char* error);
COCOM_SPM_API int32_t cocom_spm_piece_size(const cocom_spm_model* model);
// The piece of `id` (valid while the model lives), NULL when out of range.
COCOM_SPM_API const char* cocom_spm_id_to_piece(const cocom_spm_model* model, int32_t id,
                                                size_t* len);
// sentencepiece's PieceToId (unk id for an unknown piece).
COCOM_SPM_API int32_t cocom_spm_piece_to_id(const cocom_spm_model* model, const char* piece,
                                            size_t len);
// COCOM_SPM_PIECE_* bits, -1 when out of range.
COCOM_SPM_API int cocom_spm_piece_flags(const cocom_spm_model* model, int32_t id);
// which: 0 unk, 1 bos, 2 eos, 3 pad (as in the model's trainer spec; -1 when disabled).
COCOM_SPM_API int32_t cocom_spm_special_id(const cocom_spm_model* model, int which);
// Encode(text) -> pieces and ids.
COCOM_SPM_API cocom_spm_result* cocom_spm_encode(const cocom_spm_model* model, const char* text,
                                                 size_t len, char** error);
// Decode(pieces) -> text.
COCOM_SPM_API cocom_spm_result* cocom_spm_decode_pieces(const cocom_spm_model* model,
                                                        const char* const* pieces,
                                                        const size_t* lens, size_t n, char** error);
COCOM_SPM_API size_t cocom_spm_result_size(const cocom_spm_result* result);
COCOM_SPM_API const char* cocom_spm_result_piece(const cocom_spm_result* result, size_t i,
                                                 size_t* len);
COCOM_SPM_API int32_t cocom_spm_result_id(const cocom_spm_result* result, size_t i);
COCOM_SPM_API const char* cocom_spm_result_text(const cocom_spm_result* result, size_t* len);
COCOM_SPM_API void cocom_spm_result_free(cocom_spm_result* result);

}  // extern "C"

#ifndef COCOM_SPM_C_API_ONLY

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/json_util.h"
#include "common/utf8.h"
#include "model/tokenizer.h"

namespace cocom::model::detail {

// ---------------------------------------------------------------------------------------------
// The sentencepiece shim, loaded once per process (thread-safe).

struct SpmApi {
  std::string path;  // the shared object that was loaded
  decltype(&cocom_spm_abi_version) abi_version = nullptr;
  decltype(&cocom_spm_load) load = nullptr;
  decltype(&cocom_spm_free) free_model = nullptr;
  decltype(&cocom_spm_free_error) free_error = nullptr;
  decltype(&cocom_spm_piece_size) piece_size = nullptr;
  decltype(&cocom_spm_id_to_piece) id_to_piece = nullptr;
  decltype(&cocom_spm_piece_to_id) piece_to_id = nullptr;
  decltype(&cocom_spm_piece_flags) piece_flags = nullptr;
  decltype(&cocom_spm_special_id) special_id = nullptr;
  decltype(&cocom_spm_encode) encode = nullptr;
  decltype(&cocom_spm_decode_pieces) decode_pieces = nullptr;
  decltype(&cocom_spm_result_size) result_size = nullptr;
  decltype(&cocom_spm_result_piece) result_piece = nullptr;
  decltype(&cocom_spm_result_id) result_id = nullptr;
  decltype(&cocom_spm_result_text) result_text = nullptr;
  decltype(&cocom_spm_result_free) result_free = nullptr;
};

// Finds and dlopens libcocom_spm.so: $COCOM_SPM_LIBRARY, the directory of the running
// executable and its ../lib, COCOM_SPM_BUILD_DIR, COCOM_SPM_INSTALL_DIR. Throws cocom::Error
// listing every place tried. The result is cached for the life of the process.
const SpmApi& spm_api();

// A loaded sentencepiece model (RAII over the C handle).
class SpmModel {
 public:
  // Throws cocom::Error naming `path`.
  SpmModel(const std::string& path, int add_dummy_prefix);
  ~SpmModel();
  SpmModel(const SpmModel&) = delete;
  SpmModel& operator=(const SpmModel&) = delete;

  int32_t size() const { return size_; }
  // Pieces of the vocabulary, cached at load.
  const std::string& piece(int32_t id) const { return pieces_[static_cast<size_t>(id)]; }
  int flags(int32_t id) const { return flags_[static_cast<size_t>(id)]; }
  // -1 when absent.
  int32_t find_piece(const std::string& piece) const;
  int32_t unk_id() const { return unk_id_; }

  // Encode(text): pieces and ids.
  std::vector<std::pair<std::string, int64_t>> encode(const std::string& text) const;
  // Decode(pieces) (DecodePieces).
  std::string decode_pieces(const std::vector<std::string>& pieces) const;

 private:
  const SpmApi* api_ = nullptr;
  cocom_spm_model* model_ = nullptr;
  std::string path_;
  int32_t size_ = 0;
  int32_t unk_id_ = -1;
  std::vector<std::string> pieces_;
  std::vector<int> flags_;
  std::unordered_map<std::string, int32_t> piece_ids_;
};

// ---------------------------------------------------------------------------------------------
// Unicode helpers (code points as Python sees them).

// One code point of a UTF-8 string, or one byte of an ill-formed sequence (cp = 0x110000 +
// byte, which matches nothing).
struct Utf8Unit {
  uint32_t cp;
  size_t offset;  // byte offset in the string
  size_t length;  // bytes
};
constexpr uint32_t kInvalidUnitBase = 0x110000;
std::vector<Utf8Unit> utf8_units(const std::string& s);
// Python's str.isspace() for one code point.
bool py_isspace(uint32_t cp);
// Python's str.strip() with no argument (on UTF-8; ill-formed bytes are never whitespace).
std::string py_strip(const std::string& s, bool left, bool right);
// Python's str.lower() for one code point (full mapping: U+0130 -> "i\u0307").
void py_lower_append(std::u32string* out, uint32_t cp);
// Hugging Face clean_up_tokenization.
std::string clean_up_tokenization(const std::string& s);

// ---------------------------------------------------------------------------------------------
// Added tokens and special tokens (the PreTrainedTokenizer bookkeeping).

struct AddedToken {
  std::string content;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = true;
};

// The trie of Hugging Face's PreTrainedTokenizer (Trie.split), on code points.
class AddedTokenTrie {
 public:
  AddedTokenTrie();
  void add(const std::string& token);
  // Splits `text` along the added tokens found, with Trie.split's greedy/longest rules.
  std::vector<std::string> split(const std::string& text) const;

 private:
  struct Node {
    std::map<uint32_t, int32_t> next;
    bool terminal = false;
  };
  int32_t child(int32_t node, uint32_t cp) const;
  std::vector<Node> nodes_;
};

// Special-token attributes (SPECIAL_TOKENS_ATTRIBUTES order).
struct SpecialTokens {
  std::optional<std::string> bos, eos, unk, sep, pad, cls, mask;
  std::vector<std::string> additional;
  // all_special_tokens: bos, eos, unk, sep, pad, cls, mask, additional, in this order. As
  // all_special_tokens_extended (4.41) does, a token is left out when an earlier attribute (or,
  // for the additional list, a token before the list) has it; duplicates inside the additional
  // list are kept.
  std::vector<std::string> all() const;
};

// Parsed tokenizer_config.json / special_tokens_map.json / added_tokens.json of a directory.
struct TokenizerFiles {
  std::string dir;
  std::string config_path;  // empty when absent
  Json config = Json::object();
  std::string special_map_path;
  std::string added_tokens_path;
  SpecialTokens special;
  // From added_tokens_decoder (tokenizer_config.json) and added_tokens.json, merged.
  std::map<int64_t, AddedToken> added;
  // Where each added id came from (for messages).
  std::map<int64_t, std::string> added_origin;
  // Special tokens given as {"content": ...} objects, with their flags.
  std::map<std::string, AddedToken> special_extended;
};

// Reads the three JSON files of `dir` with the given default special tokens. Throws
// cocom::Error naming the file and field at fault.
TokenizerFiles read_tokenizer_files(const std::string& dir, const SpecialTokens& defaults);

// Optional bool field: absent or null -> nullopt.
std::optional<bool> json_opt_bool(const Json& j, const std::string& key, const std::string& origin);

// Common machinery of the slow tokenizers: the added vocabulary, special tokens, the
// added-token split of tokenize(), decode's sub-text logic and the batch hooks.
class TokenizerBase : public Tokenizer {
 public:
  int64_t size() const override { return size_; }
  std::optional<int64_t> token_to_id(const std::string& token) const override;
  std::string id_to_token(int64_t id) const override;
  bool is_special(int64_t id) const override { return all_special_ids_.count(id) != 0; }
  std::vector<std::string> special_tokens() const override { return all_special_tokens_; }
  int64_t bos_id() const override { return special_id(special_.bos); }
  int64_t eos_id() const override { return special_id(special_.eos); }
  int64_t pad_id() const override { return special_id(special_.pad); }
  int64_t unk_id() const override { return special_id(special_.unk); }

  int64_t add_special_tokens(const std::vector<std::string>& tokens) override;
  void set_pad_token(const std::string& token) override;

  std::vector<int64_t> encode(const std::string& text, bool add_special_tokens) const override;
  std::vector<std::string> tokenize(const std::string& text,
                                    bool add_special_tokens) const override;
  std::string decode(const std::vector<int64_t>& ids, bool skip_special_tokens) const override;

  // Tokens and ids of `text` without the special tokens of add_special_tokens.
  virtual std::vector<std::pair<std::string, int64_t>> tokenize_body(
      const std::string& text) const = 0;
  // build_inputs_with_special_tokens for a single sequence: prefix + ids + suffix.
  virtual void special_affixes(std::vector<int64_t>* prefix,
                               std::vector<int64_t>* suffix) const = 0;
  // num_special_tokens_to_add(pair=False).
  size_t num_special_tokens_to_add() const;

 protected:
  // Sets up the added vocabulary: `base_size` tokens of the base vocabulary (base_token(id)
  // gives their strings, base_id(token) looks one up, -1 when absent), then the added tokens
  // of `files` and the special tokens (added at the end when missing, as
  // PreTrainedTokenizer.__init__ does). Throws on inconsistent files.
  void init_vocab(const TokenizerFiles& files, int64_t base_size);
  virtual std::string base_token(int64_t id) const = 0;
  virtual int64_t base_id(const std::string& token) const = 0;
  // convert_tokens_to_string of the subclass.
  virtual std::string tokens_to_string(std::vector<std::string> tokens) const = 0;
  virtual bool default_clean_up() const = 0;
  // Recomputes what derives from the special tokens and the added vocabulary: all_special_*,
  // legacy_added_, then calls special_tokens_changed(). Run by init_vocab and after every change.
  void refresh_special();
  // Hook for the subclass state that depends on the special tokens (BERT's lower-casing pass and
  // never_split). Called from refresh_special().
  virtual void special_tokens_changed() {}

  // The token-level split of PreTrainedTokenizer.tokenize(): chunks of text and added tokens
  // (is_added = true), after lstrip/rstrip/single_word handling, empty chunks dropped.
  struct Chunk {
    std::string text;
    bool is_added;
  };
  std::vector<Chunk> split_added(const std::string& text) const;
  // Added token id of `token`, -1 when it is not an added token.
  int64_t added_id(const std::string& token) const;
  // convert_tokens_to_ids for one token (added tokens first, then the base vocabulary; the
  // unknown id when absent). Used for tokenizer output, where the token always exists.
  int64_t convert_token(const std::string& token) const;
  bool is_special_token(const std::string& token) const {
    return all_special_set_.count(token) != 0;
  }
  // convert_tokens_to_ids of a special-token attribute: -1 when unset.
  int64_t special_id(const std::optional<std::string>& token) const;
  // An error with the tokenizer directory as context.
  [[noreturn]] void fail_id(int64_t id) const;

  std::string dir_;
  int64_t base_size_ = 0;
  int64_t size_ = 0;
  SpecialTokens special_;
  std::map<int64_t, AddedToken> added_decoder_;
  std::unordered_map<std::string, int64_t> added_encoder_;
  AddedTokenTrie trie_;
  std::vector<std::string> all_special_tokens_;
  std::unordered_set<std::string> all_special_set_;
  std::unordered_set<int64_t> all_special_ids_;
  std::unordered_set<std::string> legacy_added_;  // see refresh_special() and decode()
  bool clean_up_ = false;
};

std::unique_ptr<Tokenizer> load_llama_tokenizer(const std::string& dir);
std::unique_ptr<Tokenizer> load_bert_tokenizer(const std::string& dir);

}  // namespace cocom::model::detail

#endif  // COCOM_SPM_C_API_ONLY
