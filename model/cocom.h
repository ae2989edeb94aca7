// A COCOM checkpoint (naver/cocom-v1-*, COCOM-light): its config, the LoRA decoder, the
// optional BERT compressor with its projection, and the tokenizers, resolved the way the
// reference code resolves them (the tokenizers are not inside the checkpoint).
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "format/format.h"
#include "model/bert.h"
#include "model/config.h"
#include "model/mistral.h"
#include "model/tokenizer.h"

namespace cocom::model {

// COCOMConfig as the reference saves it in config.json.
struct CocomConfig {
  std::string decoder_model_name;
  std::optional<std::string> compr_model_name;  // null = the decoder compresses (COCOM)
  int64_t compr_rate = 16;
  std::string compr_linear_type = "concat";  // concat | mean (COCOM-light only)
  int64_t generation_top_k = 5;
  bool sep = true;
  bool lora = true;
  int64_t lora_r = 16;
  std::string training_form = "both";
  std::string quantization = "no";
  // PISCO as published (different_mem_tokens: true): n = doc_max_length / compr_rate distinct
  // memory tokens, the base decoder's weights outside the checkpoint, two adapters.
  bool pisco = false;
  int64_t doc_max_length = 128;

  static CocomConfig from_json(const Json& j, const std::string& origin);
  static CocomConfig load(const std::string& path);
  Json to_json() const;
  bool light() const { return compr_model_name.has_value(); }
  format::Family family() const { return pisco ? format::Family::Pisco : format::Family::Cocom; }
};

// True when `dir/config.json` describes a COCOM checkpoint.
bool is_cocom_checkpoint(const std::string& dir);

struct CocomLoadOptions {
  std::string decoder_tokenizer;     // --decoder-tokenizer (directory with tokenizer + config.json)
  std::string compressor_tokenizer;  // --compressor-tokenizer
  c10::Device device = c10::kCPU;
  // Resident format of the decoder's linear layers and lm_head (--weights fp32|bf16|int8);
  // bf16/int8 are CPU only. The COCOM-light BERT compressor and projection stay fp32.
  WeightFormat decoder_weights = WeightFormat::fp32;
  // The most memory one prompt's prefill may take, by generate/'s estimate (attention scores,
  // KV cache, activations); longer prompts are refused (generate::check_prompt_budget).
  int64_t prompt_memory_mb = 8192;
  // Training (train/): > 0 compresses at this rate instead of the saved one (refused for a
  // COCOM-light `concat` projection, whose shape depends on the rate).
  int64_t compr_rate = 0;
  // Training: PEFT adapters are kept apart from their base weights (take_lora_adapters)
  // instead of merged at load.
  bool keep_lora_adapters = false;
};

// An in-memory COCOM model with random weights of a named shape (bench efficiency): the
// tokenizers are real (read from directories), the decoder's vocabulary is the shape's plus
// the COCOM tokens (at least the tokenizer's size). COCOM-light when `bert` is set.
struct RandomCocomSpec {
  CocomConfig config;  // compr_rate, sep, compr_linear_type (compr_model_name set by `bert`)
  DecoderConfig decoder;
  std::string decoder_tokenizer;  // a directory with tokenizer.model
  std::optional<BertConfig> bert;
  std::string compressor_tokenizer;  // a directory with vocab.txt (COCOM-light)
  uint64_t seed = 0;
  c10::Device device = c10::kCPU;
  WeightFormat decoder_weights = WeightFormat::fp32;
};

class CocomModel {
 public:
  // Loads a COCOM directory (config.json + safetensors in the reference key layout). Throws
  // naming the file, tensor or flag at fault.
  static std::unique_ptr<CocomModel> load(const std::string& dir, const CocomLoadOptions& opt = {});
  static std::unique_ptr<CocomModel> random(const RandomCocomSpec& spec);
  // The same model compressing at another rate: decoder, BERT and tokenizers shared (not
  // copied); COCOM-light gets a random projection for the new width (seeded by `seed`).
  std::unique_ptr<CocomModel> with_rate(int64_t compr_rate, uint64_t seed) const;

  const CocomConfig& config() const { return cfg_; }
  const std::string& dir() const { return dir_; }
  const MistralModel& decoder() const { return *decoder_; }
  const Tokenizer& decoder_tokenizer() const { return *dec_tok_; }
  const BertModel* bert() const { return bert_.get(); }
  const Tokenizer* compressor_tokenizer() const { return enc_tok_.get(); }
  const at::Tensor& projection_weight() const { return proj_w_; }
  const at::Tensor& projection_bias() const { return proj_b_; }
  const std::string& decoder_source() const { return decoder_source_; }
  const std::string& compressor_source() const { return compressor_source_; }
  int64_t mem_id() const { return tokens_.mem; }
  int64_t ae_id() const { return tokens_.ae; }
  int64_t enc_id() const { return tokens_.enc; }
  int64_t sep_id() const { return tokens_.sep; }
  // The COCOM tokens of the decoder tokenizer, for the layouts of format/.
  const format::Tokens& tokens() const { return tokens_; }
  // Context embeddings per passage of at most `context_max_length` compressor tokens (PISCO:
  // its fixed number of memory tokens).
  int64_t slots_per_passage(int64_t context_max_length) const;
  // What compression adds to the decoder's forward (PISCO with an encoder adapter: that
  // adapter in place of the decoding one, applied on the fly); nullptr when nothing.
  const ForwardHooks* compressor_hooks() const {
    return compressor_hooks_ ? compressor_hooks_.get() : nullptr;
  }
  double load_seconds() const { return load_seconds_; }
  // With CocomLoadOptions::keep_lora_adapters: the decoder's adapters by module name
  // ("model.layers.0.self_attn.q_proj"); moved out (empty afterwards).
  std::map<std::string, StoredLoraAdapter> take_lora_adapters() {
    return std::move(lora_adapters_);
  }
  // With CocomLoadOptions::keep_lora_adapters on a PISCO checkpoint: its encoder_adapter, the
  // one compression runs with (empty when the checkpoint has only the decoding adapter).
  std::map<std::string, StoredLoraAdapter> take_compressor_lora_adapters() {
    return std::move(compressor_lora_adapters_);
  }
  // CocomLoadOptions::prompt_memory_mb in bytes (the default for random models).
  int64_t prompt_memory_bytes() const { return prompt_memory_bytes_; }

 private:
  CocomModel() = default;
  CocomConfig cfg_;
  std::string dir_;
  void set_decoder_tokenizer(const std::string& dir);
  static std::unique_ptr<CocomModel> load_pisco(const std::string& dir, CocomConfig cfg,
                                                const CocomLoadOptions& opt);
  std::shared_ptr<Tokenizer> dec_tok_, enc_tok_;
  std::shared_ptr<const MistralModel> decoder_;
  std::shared_ptr<const BertModel> bert_;
  at::Tensor proj_w_, proj_b_;
  std::string decoder_source_, compressor_source_;
  format::Tokens tokens_;  // points into *dec_tok_ (shared by with_rate copies)
  double load_seconds_ = 0;
  int64_t prompt_memory_bytes_ = int64_t{8192} << 20;
  std::map<std::string, StoredLoraAdapter> lora_adapters_, compressor_lora_adapters_;
  std::shared_ptr<const ForwardHooks> compressor_hooks_;
};

// Where the base model named `name` (config.json + tokenizer files) is found: `flag_dir` when
// given; else `<checkpoint>/<name>`; else `name` as a path; else the local Hugging Face cache
// ($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub: models--ORG--NAME/snapshots/*/).
// `kind` ("decoder" / "compressor") and `flag` ("--decoder-tokenizer") are used in the error,
// which lists every place looked at.
std::string resolve_base_model_dir(const std::string& checkpoint_dir, const std::string& name,
                                   const std::string& flag_dir, const std::string& kind,
                                   const std::string& flag);

// Writes a random-weight COCOM (light = false) or COCOM-light checkpoint in the published
// layout from a spec: the COCOM fields (compr_rate, sep, lora_r, compr_linear_type,
// generation_top_k), "decoder" (a decoder config with the base vocabulary),
// "decoder_tokenizer" (a directory with tokenizer.model, copied to base_decoder/), and for
// COCOM-light "compressor" (a BERT config) and "compressor_tokenizer". Returns the number of
// parameters written.
int64_t write_random_cocom(const Json& spec, const std::string& spec_path, bool light,
                           const std::string& out, uint64_t seed, DType dtype);

// Writes a random-weight PISCO checkpoint in the published layout (naver/pisco-*): config.json
// (different_mem_tokens), adapters.pth ({"decoder_adapter": ..., and "encoder_adapter" unless
// the spec's "encoder_adapter" is false}), decoder_first_last_layers.pth (the resized embedding
// and lm_head), both torch.save files, and base_decoder/ with the base model's config,
// tokenizer and random weights (which a published checkpoint leaves to the base repository).
// Spec: compr_rate, doc_max_length (128), lora_r, "decoder" (a config with the base
// vocabulary), "decoder_tokenizer". Returns the number of parameters written.
// Writes the files of a PISCO checkpoint in the published layout into `out` (which must hold,
// or have config.json name, the base decoder): config.json from `cfg`, adapters.pth
// ({adapter name: {"model.layers.N.<module>.lora_{A,B}.weight": tensor}}) and
// decoder_first_last_layers.pth (model.embed_tokens.weight, lm_head.weight), as torch.save
// files with tensors in `dtype`. Each file is replaced atomically.
void write_pisco_files(
    const std::string& out, const CocomConfig& cfg,
    const std::map<std::string, at::Tensor>& first_last,
    const std::map<std::string, std::map<std::string, StoredLoraAdapter>>& adapters, DType dtype);

int64_t write_random_pisco(const Json& spec, const std::string& spec_path, const std::string& out,
                           uint64_t seed, DType dtype);

}  // namespace cocom::model
