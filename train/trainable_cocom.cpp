#include "train/trainable_cocom.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <limits>
#include <mutex>
#include <set>

#include "common/error.h"
#include "common/json_util.h"
#include "compress/compressor.h"
#include "generate/cocom_generate.h"
#include "model/checkpoint_io.h"
#include "model/weights.h"

namespace cocom::train {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void copy_base_files(const std::string& from, const std::string& to,
                     const std::vector<std::string>& names) {
  if (fs::exists(to) && fs::exists(from) && fs::equivalent(from, to)) return;
  fs::create_directories(to);
  for (const auto& n : names) {
    fs::path src = fs::path(from) / n;
    if (fs::exists(src)) fs::copy_file(src, fs::path(to) / n, fs::copy_options::overwrite_existing);
  }
}

// The rank of the decoder's PEFT adapters in a checkpoint (0 = none).
int64_t stored_lora_rank(const std::string& dir) {
  auto files = model::CheckpointFiles::open(dir);
  for (const auto& n : files->names()) {
    if (n.rfind("decoder.", 0) == 0 && n.find(".lora_A.") != std::string::npos) {
      const auto& shape = files->info(n).shape;
      if (shape.size() != 2) fail(files->file_of(n), ": LoRA tensor '", n, "' is not 2-D");
      return shape[0];
    }
  }
  return 0;
}

std::string module_stem(size_t layer, int slot) {
  return "model.layers." + std::to_string(layer) + "." + model::lora_module_name(slot);
}

}  // namespace

std::unique_ptr<TrainableCocom> TrainableCocom::load(const std::string& dir,
                                                     const TrainableOptions& opt) {
  if (opt.training_form != "both" && opt.training_form != "compressor") {
    fail("--training-form must be both or compressor (got '", opt.training_form, "')");
  }
  if (opt.lora_r < 0) fail("--lora-r must be >= 0 (0 = full-parameter training)");
  if (opt.lora_dropout < 0 || opt.lora_dropout >= 1) fail("LoRA dropout must be in [0, 1)");
  const std::string cfg_path = join_path(dir, "config.json");
  if (!file_exists(cfg_path)) fail(dir, ": no config.json (is this a COCOM checkpoint directory?)");
  const model::CocomConfig saved = model::CocomConfig::load(cfg_path);
  const bool frozen_decoder = opt.training_form == "compressor";
  if (frozen_decoder && !saved.light()) {
    fail("--training-form compressor freezes the decoder, but ", dir,
         " compresses with the decoder itself (compr_model_name is null); it needs a separate "
         "compressor (COCOM-light)");
  }
  if (opt.device.is_cuda() && !at::hasCUDA()) {
    fail("device ", opt.device.str(), ": this libtorch build has no CUDA support (use cpu)");
  }
  std::unique_ptr<TrainableCocom> m(new TrainableCocom());
  m->opt_ = opt;
  // Adapters in the checkpoint stay adapters when they have the rank asked for (or the decoder
  // is frozen); otherwise they are merged into the base weights at load and fresh ones made.
  // PISCO's two adapters (decoding, compression) are always trained as they are.
  if (saved.pisco && opt.lora_r == 0) {
    fail(dir,
         ": a PISCO checkpoint is trained through its adapters; full-parameter training "
         "(--lora-r 0) is not available for it");
  }
  const int64_t old_r = saved.pisco ? 0 : stored_lora_rank(dir);
  const bool keep = saved.pisco || (old_r > 0 && (frozen_decoder || old_r == opt.lora_r));
  model::CocomLoadOptions lo;
  lo.device = opt.device;
  lo.decoder_tokenizer = opt.decoder_tokenizer;
  lo.compressor_tokenizer = opt.compressor_tokenizer;
  lo.compr_rate = opt.compr_rate;
  lo.keep_lora_adapters = keep;
  m->model_ = model::CocomModel::load(dir, lo);
  const model::DecoderConfig& dc = m->model_->decoder().config();
  const size_t layers = static_cast<size_t>(dc.num_hidden_layers);

  // LoRA adapters are initialised on the CPU (the same numbers on every device), then moved.
  m->gen_ = at::make_generator<at::CPUGeneratorImpl>(opt.seed);
  const c10::Device dev = opt.device;
  if (keep) {
    for (auto& [stem, ad] : m->model_->take_lora_adapters()) {
      m->lora_[stem] = {ad.a, ad.b};
      m->lora_r_ = ad.a.size(0);
      m->lora_scale_ = ad.scale;
    }
    for (auto& [stem, ad] : m->model_->take_compressor_lora_adapters()) {
      if (ad.a.size(0) != m->lora_r_) {
        fail(dir, ": the encoder adapter has rank ", ad.a.size(0), ", the decoder adapter ",
             m->lora_r_, " (both are trained with one scale)");
      }
      m->compressor_lora_[stem] = {ad.a, ad.b};
    }
  } else if (opt.lora_r > 0 && !frozen_decoder) {
    m->lora_r_ = opt.lora_r;
    m->lora_scale_ = 2.0;  // lora_alpha = 2 r
    const int64_t H = dc.hidden_size, I = dc.intermediate_size;
    const int64_t nq = dc.num_attention_heads * dc.head_dim;
    const int64_t nkv = dc.num_key_value_heads * dc.head_dim;
    // [out, in] of each slot, in model::LoraSlot order.
    const std::array<std::pair<int64_t, int64_t>, model::kLoraSlots> shapes = {
        {{nq, H}, {nkv, H}, {nkv, H}, {H, nq}, {I, H}, {I, H}, {H, I}}};
    for (size_t l = 0; l < layers; ++l) {
      for (int s = 0; s < model::kLoraSlots; ++s) {
        const auto [out, in] = shapes[size_t(s)];
        const double bound = 1.0 / std::sqrt(static_cast<double>(in));
        at::Tensor a = at::empty({opt.lora_r, in}, at::kFloat).uniform_(-bound, bound, m->gen_);
        at::Tensor b = at::zeros({out, opt.lora_r}, at::kFloat);
        m->lora_[module_stem(l, s)] = {a.to(dev), b.to(dev)};
      }
    }
  }
  // Every adapter must sit on a module the forward adapts.
  std::set<std::string> known;
  for (size_t l = 0; l < layers; ++l) {
    for (int s = 0; s < model::kLoraSlots; ++s) known.insert(module_stem(l, s));
  }
  for (const auto* adapters : {&m->lora_, &m->compressor_lora_}) {
    for (const auto& [stem, ad] : *adapters) {
      if (!known.count(stem)) {
        fail(dir, ": LoRA adapter on 'decoder.", stem, "', a module this decoder does not adapt");
      }
    }
  }
  if (!dev.is_cpu()) {
    // Dropout masks are drawn on the device from a generator of its own.
    at::Generator g = at::globalContext().defaultGenerator(dev).clone();
    {
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_current_seed(opt.seed);
    }
    m->gen_ = g;
  }
  if (m->model_->config().light()) {
    const std::string bcfg_path = join_path(m->model_->compressor_source(), "config.json");
    const Json bj = read_json_file(bcfg_path);
    m->bert_hidden_dropout_ = json_number_or(bj, "hidden_dropout_prob", 0.1, bcfg_path);
    m->bert_attention_dropout_ = json_number_or(bj, "attention_probs_dropout_prob", 0.1, bcfg_path);
  }
  m->collect_trainable();
  return m;
}

void TrainableCocom::collect_trainable() {
  trainable_.clear();
  if (opt_.training_form == "both") {
    if (!lora_.empty()) {
      for (auto& [stem, ad] : lora_) {
        trainable_.push_back({"decoder." + stem + ".lora_A", ad.a});
        trainable_.push_back({"decoder." + stem + ".lora_B", ad.b});
      }
      for (auto& [stem, ad] : compressor_lora_) {
        trainable_.push_back({"encoder_adapter." + stem + ".lora_A", ad.a});
        trainable_.push_back({"encoder_adapter." + stem + ".lora_B", ad.b});
      }
    } else {
      for (auto& [name, t] : model_->decoder().parameters()) {
        trainable_.push_back({"decoder." + name, t});
      }
    }
  }
  if (model_->config().light()) {
    for (auto& [name, t] : model_->bert()->parameters()) {
      trainable_.push_back({"compr.model." + name, t});
    }
    trainable_.push_back({"compr.linear.weight", model_->projection_weight()});
    trainable_.push_back({"compr.linear.bias", model_->projection_bias()});
  }
  std::sort(trainable_.begin(), trainable_.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [name, t] : trainable_) t.requires_grad_(true);
}

ExampleFormat TrainableCocom::example_format(int64_t context_max_length) const {
  ExampleFormat f;
  f.tokens = model_->tokens();
  f.compressor_tokenizer = model_->compressor_tokenizer();
  f.compr_rate = config().compr_rate;
  f.context_max_length = context_max_length;
  return f;
}

NamedTensorList TrainableCocom::decoder_tensors() const {
  NamedTensorList out = model_->decoder().hf_tensors();
  for (const auto& [stem, ad] : lora_) {
    out.push_back({stem + ".lora_A", ad.a});
    out.push_back({stem + ".lora_B", ad.b});
  }
  return out;
}

at::Tensor TrainableCocom::dropout(const at::Tensor& x, double p) {
  if (!training_ || p <= 0) return x;
  // Masks are drawn on x's device from the model's own generator, so a run is reproducible
  // (and resumable) on that device.
  at::Tensor keep = at::empty(x.sizes(), x.options().dtype(at::kFloat)).bernoulli_(1.0 - p, gen_);
  return x * keep * (1.0 / (1.0 - p));
}

model::ForwardHooks TrainableCocom::hooks(bool compressing) {
  model::ForwardHooks h;
  // PISCO compresses with its encoder adapter alone (when it has one).
  const auto& lora = compressing && !compressor_lora_.empty() ? compressor_lora_ : lora_;
  if (!lora.empty()) {
    const size_t layers = static_cast<size_t>(decoder_config().num_hidden_layers);
    h.decoder_lora.resize(layers);
    for (size_t l = 0; l < layers; ++l) {
      for (int s = 0; s < model::kLoraSlots; ++s) {
        auto it = lora.find(module_stem(l, s));
        if (it != lora.end()) h.decoder_lora[l][size_t(s)] = it->second;
      }
    }
    h.lora_scale = lora_scale_;
    h.lora_dropout = opt_.lora_dropout;
  }
  h.bert_hidden_dropout = bert_hidden_dropout_;
  h.bert_attention_dropout = bert_attention_dropout_;
  if (training_) h.dropout = [this](const at::Tensor& x, double p) { return dropout(x, p); };
  return h;
}

at::Tensor TrainableCocom::decoder_hidden(const at::Tensor& inputs_embeds,
                                          const at::Tensor& attention_mask,
                                          const at::Tensor& position_ids) {
  const model::ForwardHooks h = hooks(false);
  model::DecoderForwardOptions fo;
  fo.compute_logits = false;
  fo.hooks = &h;
  return model_->decoder()
      .forward_embeds(inputs_embeds, attention_mask, position_ids, nullptr, fo)
      .last_hidden_state;
}

at::Tensor TrainableCocom::lm_logits(const at::Tensor& hidden) const {
  return model_->decoder().logits(hidden);
}

at::Tensor TrainableCocom::compress(const at::Tensor& enc_input_ids,
                                    const at::Tensor& enc_attention_mask, int64_t n) {
  compress::EncoderInputs in;
  in.input_ids = enc_input_ids.to(at::kLong);
  in.attention_mask = enc_attention_mask;
  in.mem_per_passage = n;
  const model::ForwardHooks h = hooks(true);
  return compress::compress_on_device(*model_, in, &h);
}

at::Tensor TrainableCocom::embed_with_memory(const at::Tensor& dec_input_ids,
                                             const at::Tensor& compressed) {
  const int64_t rows = dec_input_ids.size(0);
  if (rows < 1 || compressed.dim() != 3 || compressed.size(0) % rows != 0) {
    fail("decoder input: ", model::shape_str(compressed.sizes()),
         " context embeddings do not divide among ", rows, " rows");
  }
  generate::DecoderInputs in;
  in.input_ids = dec_input_ids.to(at::kLong);
  return generate::embed_with_contexts(*model_, in, compressed, compressed.size(0) / rows);
}

LossOutput TrainableCocom::loss(const TrainBatch& b) {
  at::Tensor compressed = compress(b.enc_input_ids, b.enc_attention_mask, b.mem_per_passage);
  at::Tensor embeds = embed_with_memory(b.dec_input_ids, compressed);
  const int64_t T = embeds.size(1);
  // Positions 0..T-1 (pads counted), as the reference's training forward (no position_ids).
  at::Tensor h = decoder_hidden(embeds, b.dec_attention_mask,
                                model::MistralModel::arange_positions(b.dec_attention_mask));
  at::Tensor next = b.labels.to(opt_.device, at::kLong).narrow(1, 1, T - 1);
  at::Tensor sel = next != kIgnoreIndex;
  LossOutput out;
  out.labelled = sel.sum().item<int64_t>();
  if (out.labelled == 0) fail("training batch has no labelled tokens");
  // Logits only where a label is predicted: the same mean as over all positions, without the
  // [B, T, V] tensor.
  at::Tensor logits = lm_logits(h.narrow(1, 0, T - 1).index({sel}));
  // The loss in fp32 (logits are bf16 under autocast).
  out.loss = at::cross_entropy_loss(logits.to(at::kFloat), next.index({sel}));
  return out;
}

void TrainableCocom::save(const std::string& dir, bool merge_lora, model::DType dtype) const {
  fs::create_directories(dir);
  if (config().pisco) {
    save_pisco(dir, merge_lora, dtype);
    return;
  }
  const bool separate = !lora_.empty() && !merge_lora;
  const std::string prefix = separate ? "decoder.base_model.model." : "decoder.";
  model::NamedTensors out;
  for (const auto& [name, t] : model_->decoder().hf_tensors()) {
    at::Tensor w = t.detach().to(at::kCPU);
    const std::string stem = ends_with(name, ".weight") ? name.substr(0, name.size() - 7) : name;
    auto ad = lora_.find(stem);
    if (ad == lora_.end()) {
      out.push_back({prefix + name, w});
    } else if (separate) {
      out.push_back({prefix + stem + ".base_layer.weight", w});
      out.push_back({prefix + stem + ".lora_A.default.weight", ad->second.a.detach().to(at::kCPU)});
      out.push_back({prefix + stem + ".lora_B.default.weight", ad->second.b.detach().to(at::kCPU)});
    } else {
      at::Tensor delta = at::matmul(ad->second.b.detach(), ad->second.a.detach()).to(at::kCPU);
      out.push_back({prefix + name, w + delta * lora_scale_});
    }
  }
  const model::CocomConfig& cfg = model_->config();
  if (cfg.light()) {
    for (const auto& [name, t] : model_->bert()->hf_tensors()) {
      out.push_back({"compr.model." + name, t.detach().to(at::kCPU)});
    }
    out.push_back({"compr.linear.weight", model_->projection_weight().detach().to(at::kCPU)});
    out.push_back({"compr.linear.bias", model_->projection_bias().detach().to(at::kCPU)});
  }
  model::write_tensors(join_path(dir, "model.safetensors"), out, dtype);
  // A shard index left by an earlier model would take precedence over the file just written.
  fs::remove(fs::path(dir) / "model.safetensors.index.json");

  model::CocomConfig c = cfg;
  c.decoder_model_name = "base_decoder";
  copy_base_files(model_->decoder_source(), join_path(dir, c.decoder_model_name),
                  {"config.json", "generation_config.json", "tokenizer.model", "tokenizer.json",
                   "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"});
  if (cfg.light()) {
    c.compr_model_name = "base_compressor";
    copy_base_files(model_->compressor_source(), join_path(dir, *c.compr_model_name),
                    {"config.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                     "tokenizer.json"});
  }
  c.lora = separate;
  if (separate) c.lora_r = lora_r_;
  c.training_form = opt_.training_form;
  Json j = c.to_json();
  j["torch_dtype"] = dtype == model::DType::BF16  ? "bfloat16"
                     : dtype == model::DType::F16 ? "float16"
                                                  : "float32";
  write_json_file(join_path(dir, "config.json"), j);
}

// The published PISCO layout: adapters.pth and decoder_first_last_layers.pth beside a
// base_decoder/ whose weights, unchanged by adapter training, are linked (or copied) from the
// base model the checkpoint was loaded with.
void TrainableCocom::save_pisco(const std::string& dir, bool merge_lora, model::DType dtype) const {
  if (merge_lora) {
    fail(
        "--merge-lora: a PISCO checkpoint keeps its decoding and compression adapters apart "
        "(the published layout has no merged form)");
  }
  const std::string base = join_path(dir, "base_decoder");
  const std::string from = model_->decoder_source();
  if (!(fs::exists(base) && fs::equivalent(from, base))) {
    fs::create_directories(base);
    for (const auto& e : fs::directory_iterator(from)) {
      if (!e.is_regular_file()) continue;
      const fs::path to = fs::path(base) / e.path().filename();
      fs::remove(to);
      std::error_code ec;
      fs::create_hard_link(e.path(), to, ec);
      if (ec) fs::copy_file(e.path(), to);
    }
  }
  std::map<std::string, at::Tensor> first_last;
  for (const auto& [name, t] : model_->decoder().hf_tensors()) {
    if (name == "model.embed_tokens.weight" || name == "lm_head.weight") first_last[name] = t;
  }
  std::map<std::string, std::map<std::string, model::StoredLoraAdapter>> adapters;
  for (const auto& [stem, ad] : lora_) adapters["decoder_adapter"][stem] = {ad.a, ad.b, 0};
  for (const auto& [stem, ad] : compressor_lora_) {
    adapters["encoder_adapter"][stem] = {ad.a, ad.b, 0};
  }
  model::CocomConfig c = config();
  c.decoder_model_name = "base_decoder";
  model::write_pisco_files(dir, c, first_last, adapters, dtype);
}

at::Tensor TrainableCocom::rng_state() const { return gen_.get_state(); }

void TrainableCocom::set_rng_state(const at::Tensor& state) {
  std::lock_guard<std::mutex> lock(gen_.mutex());
  gen_.set_state(state);
}

void TrainableCocom::set_rng_seed(uint64_t seed) {
  std::lock_guard<std::mutex> lock(gen_.mutex());
  gen_.set_current_seed(seed);
}

}  // namespace cocom::train
