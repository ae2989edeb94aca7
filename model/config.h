// Model configurations read from Hugging Face `config.json` files. Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/json_util.h"

namespace cocom::model {

// Mistral / Llama decoder (MistralForCausalLM, LlamaForCausalLM).
struct DecoderConfig {
  std::string model_type = "mistral";
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;  // hidden_size / num_attention_heads unless given
  int64_t max_position_embeddings = 4096;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<int64_t> sliding_window;  // null = full attention
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;
  std::string torch_dtype = "float32";

  // Parses and validates; `origin` names the file in error messages.
  static DecoderConfig from_json(const Json& j, const std::string& origin);
  static DecoderConfig load(const std::string& path);
  Json to_json() const;
  // Throws naming `origin` and the field when a value is inconsistent.
  void validate(const std::string& origin) const;
  int64_t parameter_count() const;
};

// BERT encoder (BertModel).
struct BertConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t max_position_embeddings = 512;
  int64_t type_vocab_size = 2;
  double layer_norm_eps = 1e-12;
  int64_t pad_token_id = 0;
  std::string hidden_act = "gelu";
  std::string torch_dtype = "float32";

  static BertConfig from_json(const Json& j, const std::string& origin);
  static BertConfig load(const std::string& path);
  Json to_json() const;
  void validate(const std::string& origin) const;
  int64_t parameter_count() const;
};

// The named shapes used by `model init --shape` and the benchmarks: "tinyllama" (hidden 2048,
// 16 layers, 32/8 heads, intermediate 5632, vocabulary 32000) and "mistral-7b" (v0.2: 4096,
// 32 layers, 32/8 heads, 14336, 32000, rope_theta 1e6, no sliding window). Throws naming the
// shape otherwise.
DecoderConfig named_decoder_shape(const std::string& shape);
// BERT-base (uncased): 768 hidden, 12 layers, 12 heads, 3072, vocabulary 30522.
BertConfig bert_base_config();

enum class Arch { Decoder, Bert };
// Which architecture a config.json describes (model_type / architectures); throws otherwise.
Arch detect_arch(const Json& j, const std::string& origin);

}  // namespace cocom::model
