#include "model/config.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <vector>

#include "common/error.h"

namespace cocom::model {

namespace {

void require_positive(int64_t v, const char* field, const std::string& origin) {
  if (v <= 0) fail(origin, ": field '", field, "' must be a positive integer (got ", v, ")");
}

// Bounds that keep a hostile config from asking for absurd allocations before any tensor is
// checked against it.
constexpr int64_t kMaxDim = int64_t{1} << 20;
constexpr int64_t kMaxLayers = 4096;

void require_range(int64_t v, int64_t hi, const char* field, const std::string& origin) {
  require_positive(v, field, origin);
  if (v > hi) fail(origin, ": field '", field, "' is implausibly large (", v, " > ", hi, ")");
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

Arch detect_arch(const Json& j, const std::string& origin) {
  if (!j.is_object()) fail(origin, ": expected a JSON object at the top level");
  std::string mt = lower(json_string_or(j, "model_type", "", origin));
  if (mt == "mistral" || mt == "llama") return Arch::Decoder;
  if (mt == "bert") return Arch::Bert;
  if (j.contains("architectures") && j["architectures"].is_array()) {
    for (const auto& a : j["architectures"]) {
      if (!a.is_string()) continue;
      std::string s = a.get<std::string>();
      if (s.rfind("Mistral", 0) == 0 || s.rfind("Llama", 0) == 0) return Arch::Decoder;
      if (s.rfind("Bert", 0) == 0) return Arch::Bert;
    }
  }
  fail(origin, ": unsupported model_type '", mt,
       "' (supported: mistral, llama for decoders; bert for encoders)");
}

DecoderConfig DecoderConfig::from_json(const Json& j, const std::string& origin) {
  if (!j.is_object()) fail(origin, ": expected a JSON object at the top level");
  DecoderConfig c;
  c.model_type = lower(json_string_or(j, "model_type", "mistral", origin));
  if (c.model_type != "mistral" && c.model_type != "llama") {
    fail(origin, ": model_type '", c.model_type, "' is not a Mistral/Llama decoder");
  }
  c.vocab_size = json_int(j, "vocab_size", origin);
  c.hidden_size = json_int(j, "hidden_size", origin);
  c.intermediate_size = json_int(j, "intermediate_size", origin);
  c.num_hidden_layers = json_int(j, "num_hidden_layers", origin);
  c.num_attention_heads = json_int(j, "num_attention_heads", origin);
  c.num_key_value_heads = json_int_or(j, "num_key_value_heads", c.num_attention_heads, origin);
  c.head_dim = json_int_or(j, "head_dim", 0, origin);
  if (c.head_dim == 0 && c.num_attention_heads > 0) {
    // Without an explicit head_dim, HF derives it as hidden_size / num_heads and refuses
    // configs where that division is not exact.
    if (c.hidden_size % c.num_attention_heads != 0) {
      fail(origin, ": hidden_size (", c.hidden_size,
           ") must be a multiple of num_attention_heads (", c.num_attention_heads,
           ") when head_dim is not given");
    }
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  c.max_position_embeddings = json_int_or(j, "max_position_embeddings", 4096, origin);
  c.rms_norm_eps = json_number_or(j, "rms_norm_eps", 1e-6, origin);
  c.rope_theta = json_number_or(j, "rope_theta", 10000.0, origin);
  c.sliding_window = json_opt_int(j, "sliding_window", origin);
  c.tie_word_embeddings = json_bool_or(j, "tie_word_embeddings", false, origin);
  c.attention_bias = json_bool_or(j, "attention_bias", false, origin);
  c.bos_token_id = json_int_or(j, "bos_token_id", 1, origin);
  // eos_token_id may be a list in some configs; the first entry is the stop token.
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array() && !j["eos_token_id"].empty()) {
    Json first = {{"eos_token_id", j["eos_token_id"][0]}};
    c.eos_token_id = json_int(first, "eos_token_id", origin);
  } else {
    c.eos_token_id = json_int_or(j, "eos_token_id", 2, origin);
  }
  c.torch_dtype = json_string_or(j, "torch_dtype", "float32", origin);
  std::string act = json_string_or(j, "hidden_act", "silu", origin);
  if (act != "silu" && act != "swish") {
    fail(origin, ": field 'hidden_act' is '", act, "'; only silu is supported for decoders");
  }
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    fail(origin, ": field 'rope_scaling' is set; scaled RoPE is not supported");
  }
  c.validate(origin);
  return c;
}

void DecoderConfig::validate(const std::string& origin) const {
  require_range(vocab_size, int64_t{1} << 24, "vocab_size", origin);
  require_range(hidden_size, kMaxDim, "hidden_size", origin);
  require_range(intermediate_size, kMaxDim, "intermediate_size", origin);
  require_range(num_hidden_layers, kMaxLayers, "num_hidden_layers", origin);
  require_range(num_attention_heads, kMaxDim, "num_attention_heads", origin);
  require_range(num_key_value_heads, kMaxDim, "num_key_value_heads", origin);
  require_range(head_dim, kMaxDim, "head_dim", origin);
  require_range(max_position_embeddings, int64_t{1} << 30, "max_position_embeddings", origin);
  if (num_attention_heads % num_key_value_heads != 0) {
    fail(origin, ": num_attention_heads (", num_attention_heads,
         ") must be a multiple of num_key_value_heads (", num_key_value_heads, ")");
  }
  if (head_dim % 2 != 0) fail(origin, ": head_dim (", head_dim, ") must be even for RoPE");
  if (!(rms_norm_eps > 0) || !std::isfinite(rms_norm_eps)) {
    fail(origin, ": field 'rms_norm_eps' must be a positive number");
  }
  if (!(rope_theta > 0) || !std::isfinite(rope_theta)) {
    fail(origin, ": field 'rope_theta' must be a positive number");
  }
  if (bos_token_id < 0 || bos_token_id >= vocab_size) {
    fail(origin, ": field 'bos_token_id' (", bos_token_id, ") is outside the vocabulary (",
         vocab_size, ")");
  }
  if (eos_token_id < 0 || eos_token_id >= vocab_size) {
    fail(origin, ": field 'eos_token_id' (", eos_token_id, ") is outside the vocabulary (",
         vocab_size, ")");
  }
  if (sliding_window && *sliding_window <= 0) {
    fail(origin, ": field 'sliding_window' must be positive or null (got ", *sliding_window, ")");
  }
}

DecoderConfig DecoderConfig::load(const std::string& path) {
  return from_json(read_json_file(path), path);
}

Json DecoderConfig::to_json() const {
  Json j;
  j["architectures"] = {model_type == "llama" ? "LlamaForCausalLM" : "MistralForCausalLM"};
  j["model_type"] = model_type;
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["num_key_value_heads"] = num_key_value_heads;
  if (head_dim * num_attention_heads != hidden_size) j["head_dim"] = head_dim;
  j["max_position_embeddings"] = max_position_embeddings;
  j["rms_norm_eps"] = rms_norm_eps;
  j["rope_theta"] = rope_theta;
  j["sliding_window"] = sliding_window ? Json(*sliding_window) : Json(nullptr);
  j["tie_word_embeddings"] = tie_word_embeddings;
  if (attention_bias) j["attention_bias"] = true;
  j["hidden_act"] = "silu";
  j["bos_token_id"] = bos_token_id;
  j["eos_token_id"] = eos_token_id;
  j["torch_dtype"] = torch_dtype;
  return j;
}

int64_t DecoderConfig::parameter_count() const {
  int64_t h = hidden_size, kv = num_key_value_heads * head_dim, q = num_attention_heads * head_dim;
  int64_t per_layer = h * q + 2 * h * kv + q * h + 3 * h * intermediate_size + 2 * h;
  int64_t emb = vocab_size * h;
  return emb + (tie_word_embeddings ? 0 : emb) + num_hidden_layers * per_layer + h;
}

BertConfig BertConfig::from_json(const Json& j, const std::string& origin) {
  if (!j.is_object()) fail(origin, ": expected a JSON object at the top level");
  BertConfig c;
  std::string mt = lower(json_string_or(j, "model_type", "bert", origin));
  if (mt != "bert") fail(origin, ": model_type '", mt, "' is not a BERT encoder");
  c.vocab_size = json_int(j, "vocab_size", origin);
  c.hidden_size = json_int(j, "hidden_size", origin);
  c.intermediate_size = json_int(j, "intermediate_size", origin);
  c.num_hidden_layers = json_int(j, "num_hidden_layers", origin);
  c.num_attention_heads = json_int(j, "num_attention_heads", origin);
  c.max_position_embeddings = json_int_or(j, "max_position_embeddings", 512, origin);
  c.type_vocab_size = json_int_or(j, "type_vocab_size", 2, origin);
  c.layer_norm_eps = json_number_or(j, "layer_norm_eps", 1e-12, origin);
  c.pad_token_id = json_int_or(j, "pad_token_id", 0, origin);
  c.hidden_act = json_string_or(j, "hidden_act", "gelu", origin);
  c.torch_dtype = json_string_or(j, "torch_dtype", "float32", origin);
  std::string pet = json_string_or(j, "position_embedding_type", "absolute", origin);
  if (pet != "absolute") {
    fail(origin, ": position_embedding_type '", pet, "' is not supported (only absolute)");
  }
  c.validate(origin);
  return c;
}

void BertConfig::validate(const std::string& origin) const {
  require_range(vocab_size, int64_t{1} << 24, "vocab_size", origin);
  require_range(hidden_size, kMaxDim, "hidden_size", origin);
  require_range(intermediate_size, kMaxDim, "intermediate_size", origin);
  require_range(num_hidden_layers, kMaxLayers, "num_hidden_layers", origin);
  require_range(num_attention_heads, kMaxDim, "num_attention_heads", origin);
  require_range(max_position_embeddings, int64_t{1} << 24, "max_position_embeddings", origin);
  require_range(type_vocab_size, 1 << 16, "type_vocab_size", origin);
  if (hidden_size % num_attention_heads != 0) {
    fail(origin, ": hidden_size (", hidden_size, ") must be a multiple of num_attention_heads (",
         num_attention_heads, ")");
  }
  if (pad_token_id < 0 || pad_token_id >= vocab_size) {
    fail(origin, ": field 'pad_token_id' (", pad_token_id, ") is outside the vocabulary (",
         vocab_size, ")");
  }
  if (hidden_act != "gelu") {
    fail(origin, ": field 'hidden_act' is '", hidden_act, "'; only exact (erf) gelu is supported");
  }
  if (!(layer_norm_eps > 0) || !std::isfinite(layer_norm_eps)) {
    fail(origin, ": field 'layer_norm_eps' must be a positive number");
  }
}

BertConfig BertConfig::load(const std::string& path) {
  return from_json(read_json_file(path), path);
}

Json BertConfig::to_json() const {
  Json j;
  j["architectures"] = {"BertModel"};
  j["model_type"] = "bert";
  j["vocab_size"] = vocab_size;
  j["hidden_size"] = hidden_size;
  j["intermediate_size"] = intermediate_size;
  j["num_hidden_layers"] = num_hidden_layers;
  j["num_attention_heads"] = num_attention_heads;
  j["max_position_embeddings"] = max_position_embeddings;
  j["type_vocab_size"] = type_vocab_size;
  j["layer_norm_eps"] = layer_norm_eps;
  j["pad_token_id"] = pad_token_id;
  j["hidden_act"] = hidden_act;
  j["position_embedding_type"] = "absolute";
  j["torch_dtype"] = torch_dtype;
  return j;
}

int64_t BertConfig::parameter_count() const {
  int64_t h = hidden_size;
  int64_t emb = (vocab_size + max_position_embeddings + type_vocab_size) * h + 2 * h;
  int64_t per_layer = 4 * (h * h + h) + 2 * h * intermediate_size + intermediate_size + h + 4 * h;
  int64_t pooler = h * h + h;
  return emb + num_hidden_layers * per_layer + pooler;
}

DecoderConfig named_decoder_shape(const std::string& shape) {
  DecoderConfig c;
  if (shape == "tinyllama") {
    c.model_type = "llama";
    c.vocab_size = 32000;
    c.hidden_size = 2048;
    c.intermediate_size = 5632;
    c.num_hidden_layers = 16;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 8;
    c.head_dim = 64;
    c.max_position_embeddings = 2048;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 10000.0;
  } else if (shape == "mistral-7b") {
    c.model_type = "mistral";
    c.vocab_size = 32000;
    c.hidden_size = 4096;
    c.intermediate_size = 14336;
    c.num_hidden_layers = 32;
    c.num_attention_heads = 32;
    c.num_key_value_heads = 8;
    c.head_dim = 128;
    c.max_position_embeddings = 32768;
    c.rms_norm_eps = 1e-5;
    c.rope_theta = 1e6;
  } else {
    fail("--shape ", shape, ": not a decoder shape (tinyllama or mistral-7b)");
  }
  c.torch_dtype = "bfloat16";
  return c;
}

BertConfig bert_base_config() {
  BertConfig c;
  c.vocab_size = 30522;
  c.hidden_size = 768;
  c.intermediate_size = 3072;
  c.num_hidden_layers = 12;
  c.num_attention_heads = 12;
  c.max_position_embeddings = 512;
  c.type_vocab_size = 2;
  c.layer_norm_eps = 1e-12;
  return c;
}

}  // namespace cocom::model
