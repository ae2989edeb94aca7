// A COCOM model that autograd can train: a model::CocomModel loaded with fp32 weights (the
// decoder's stacked matrices, BERT and the projection are the leaf tensors), optional PEFT-style
// LoRA adapters on every decoder linear layer (r, alpha = 2r, dropout), a causal-LM loss over
// inputs_embeds, and saving in the naver/Hugging Face layout that model::CocomModel::load reads.
//
// There is no second transformer here: compression, slot replacement and the decoder run the
// inference code (compress::compress_on_device, generate::embed_with_contexts,
// model::MistralModel::forward_embeds, model::BertModel::forward) with model::ForwardHooks
// carrying the adapters and dropout.
#pragma once

#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/cocom.h"
#include "model/config.h"
#include "model/forward_hooks.h"
#include "model/safetensors.h"
#include "model/tokenizer.h"
#include "train/examples.h"

namespace cocom::train {

struct TrainableOptions {
  int64_t lora_r = 16;  // 0 = full-parameter training of the decoder
  double lora_dropout = 0.1;
  std::string training_form = "both";  // both | compressor (decoder frozen; COCOM-light only)
  // > 0: a new compression rate (a decoder-compressor or `mean` projection has no weight whose
  // shape depends on it; COCOM-light `concat` refuses a change).
  int64_t compr_rate = 0;
  c10::Device device = c10::kCPU;
  uint64_t seed = 0;              // LoRA initialisation and dropout masks
  std::string decoder_tokenizer;  // as CocomLoadOptions
  std::string compressor_tokenizer;
};

struct LossOutput {
  at::Tensor loss;  // scalar (mean over labelled tokens)
  int64_t labelled = 0;
};

using model::NamedTensorList;

class TrainableCocom {
 public:
  // Loads a COCOM checkpoint directory. Existing LoRA adapters are kept as the trainable adapter
  // when their rank equals opt.lora_r (or the decoder is frozen); otherwise they are merged into
  // the base weights and fresh adapters are made (A uniform(+-1/sqrt(in)), B zero, as PEFT).
  static std::unique_ptr<TrainableCocom> load(const std::string& dir, const TrainableOptions& opt);

  const model::CocomConfig& config() const { return model_->config(); }
  const model::DecoderConfig& decoder_config() const { return model_->decoder().config(); }
  const TrainableOptions& options() const { return opt_; }
  // The model the forward runs (weights shared with the trainable parameters).
  const model::CocomModel& model() const { return *model_; }
  ExampleFormat example_format(int64_t context_max_length) const;
  bool has_lora() const { return !lora_.empty(); }
  int64_t lora_rank() const { return lora_r_; }

  // The parameters the optimizer updates, sorted by name (a stable order for checkpoints).
  const NamedTensorList& trainable_parameters() const { return trainable_; }
  // Every decoder tensor (base weights; LoRA adapters as "<module>.lora_A" / ".lora_B").
  NamedTensorList decoder_tensors() const;

  // Dropout (LoRA; COCOM-light's BERT with its config's hidden/attention dropout) is active
  // only in training mode.
  void set_training(bool training) { training_ = training; }
  bool training() const { return training_; }

  // Context embeddings [rows, n, H] for compressor inputs (differentiable).
  at::Tensor compress(const at::Tensor& enc_input_ids, const at::Tensor& enc_attention_mask,
                      int64_t mem_per_passage);
  // Token embeddings [B, T, H] with the <MEM> slots replaced, row by row and in order, by the
  // rows of `compressed` [B * k, n, H].
  at::Tensor embed_with_memory(const at::Tensor& dec_input_ids, const at::Tensor& compressed);
  // Decoder last hidden state (after the final norm) [B, T, H] over inputs_embeds.
  at::Tensor decoder_hidden(const at::Tensor& inputs_embeds, const at::Tensor& attention_mask,
                            const at::Tensor& position_ids);
  at::Tensor lm_logits(const at::Tensor& hidden) const;
  // The causal-LM loss of a batch: compression, <MEM> replacement, decoder, shifted
  // cross-entropy over labels != -100. Positions are 0..T-1 (pads counted), as the reference's
  // training forward (no position_ids given).
  LossOutput loss(const TrainBatch& batch);

  // Writes `dir` (created; files replaced) in the naver layout: config.json, model.safetensors,
  // base_decoder/ (and base_compressor/) with the tokenizer and base config. merge_lora = false
  // keeps PEFT base_layer/lora_A/lora_B (config lora = true, lora_r = r); true (or no LoRA)
  // writes plain decoder weights under "decoder." with lora = false.
  void save(const std::string& dir, bool merge_lora, model::DType dtype = model::DType::F32) const;

  // The dropout generator's state (a uint8 tensor), for exact resumption.
  // The dropout generator lives on the training device (CPU: a Mersenne twister shared with the
  // LoRA initialisation; CUDA: a Philox generator of its own, seeded with opt.seed).
  at::Tensor rng_state() const;
  void set_rng_state(const at::Tensor& state);
  void set_rng_seed(uint64_t seed);

 private:
  TrainableCocom() = default;
  at::Tensor dropout(const at::Tensor& x, double p);
  // The adapters and dropout for one forward (dropout only in training mode); `compressing`:
  // PISCO's compression adapter when it has one.
  model::ForwardHooks hooks(bool compressing);
  void save_pisco(const std::string& dir, bool merge_lora, model::DType dtype) const;
  void collect_trainable();

  TrainableOptions opt_;
  std::unique_ptr<model::CocomModel> model_;
  std::map<std::string, model::LoraAdapter> lora_;             // module stem -> adapter
  std::map<std::string, model::LoraAdapter> compressor_lora_;  // PISCO's encoder_adapter
  int64_t lora_r_ = 0;
  double lora_scale_ = 0;
  double bert_hidden_dropout_ = 0.1, bert_attention_dropout_ = 0.1;
  at::Generator gen_;
  bool training_ = true;
  NamedTensorList trainable_;
};

}  // namespace cocom::train
