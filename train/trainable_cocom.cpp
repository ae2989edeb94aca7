#include "train/trainable_cocom.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <mutex>
#include <set>

#include "common/error.h"
#include "common/json_util.h"
#include "model/checkpoint_io.h"
#include "model/weights.h"

namespace cocom::train {

namespace fs = std::filesystem;

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The decoder's name prefix in a COCOM file: "decoder.base_model.model." (PEFT) or "decoder.".
std::string find_decoder_prefix(const model::CheckpointFiles& files) {
  const std::string key = "model.embed_tokens.weight";
  for (const auto& n : files.names()) {
    if (n.rfind("decoder.", 0) == 0 && ends_with(n, key) && n.size() > key.size()) {
      return n.substr(0, n.size() - key.size());
    }
  }
  fail(files.dir(),
       ": no decoder embedding tensor ('decoder.base_model.model.model.embed_tokens.weight' ",
       "or 'decoder.model.embed_tokens.weight'); this is not a COCOM checkpoint");
}

// The decoder's linear modules that LoRA ('all-linear') adapts: every projection of every layer
// (lm_head excluded).
std::vector<std::string> linear_modules(const model::DecoderConfig& c) {
  std::vector<std::string> out;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                          "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
      out.push_back(p + n);
    }
  }
  return out;
}

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  return w * (x * at::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps));
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

void check_shape(const std::string& origin, const std::string& name, const at::Tensor& t,
                 const std::vector<int64_t>& shape) {
  if (t.sizes().vec() != shape) {
    fail(origin, ": tensor '", name, "' has shape ", model::shape_str(t.sizes()),
         " but the config implies ", model::shape_str(shape));
  }
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
  std::unique_ptr<TrainableCocom> m(new TrainableCocom());
  m->opt_ = opt;
  m->dir_ = dir;
  m->cfg_ = model::CocomConfig::load(cfg_path);
  if (opt.compr_rate > 0 && opt.compr_rate != m->cfg_.compr_rate) {
    if (m->cfg_.light() && m->cfg_.compr_linear_type == "concat") {
      fail("--compr-rate ", opt.compr_rate, ": ", dir, " has a concat projection made for rate ",
           m->cfg_.compr_rate, " (its shape depends on the rate)");
    }
    m->cfg_.compr_rate = opt.compr_rate;
  }
  const model::CocomConfig& cfg = m->cfg_;
  if (opt.training_form == "compressor" && !cfg.light()) {
    fail("--training-form compressor freezes the decoder, but ", dir,
         " compresses with the decoder itself (compr_model_name is null); it needs a separate "
         "compressor (COCOM-light)");
  }
  if (opt.device.is_cuda() && !at::hasCUDA()) {
    fail("device ", opt.device.str(), ": this libtorch build has no CUDA support (use cpu)");
  }
  // LoRA adapters are initialised on the CPU (the same numbers on every device), then moved.
  m->gen_ = at::make_generator<at::CPUGeneratorImpl>(opt.seed);

  m->decoder_source_ = model::resolve_base_model_dir(
      dir, cfg.decoder_model_name, opt.decoder_tokenizer, "decoder", "--decoder-tokenizer");
  m->dec_tok_ = model::load_tokenizer(m->decoder_source_);
  if (m->dec_tok_->kind() != "llama") {
    fail(m->decoder_source_, ": the decoder tokenizer must be a sentencepiece tokenizer.model");
  }
  m->dec_tok_->add_special_tokens(format::kSpecialTokens);
  m->dec_tok_->set_pad_token(m->dec_tok_->id_to_token(m->dec_tok_->bos_id()));
  const format::Tokens t = format::Tokens::of(*m->dec_tok_, cfg.sep);
  m->mem_id_ = t.mem;
  m->ae_id_ = t.ae;
  m->enc_id_ = t.enc;
  m->sep_id_ = t.sep;

  auto files = model::CheckpointFiles::open(dir);
  const std::string prefix = find_decoder_prefix(*files);
  m->dcfg_ = model::DecoderConfig::load(join_path(m->decoder_source_, "config.json"));
  m->dcfg_.vocab_size = m->dec_tok_->size();
  const c10::Device dev = opt.device;

  // Decoder tensors, with PEFT adapters read apart from their base weights.
  std::map<std::string, std::pair<at::Tensor, at::Tensor>> found;
  for (const auto& n : files->names()) {
    if (n.rfind(prefix, 0) != 0) continue;
    std::string rel = n.substr(prefix.size());
    if (ends_with(rel, "rotary_emb.inv_freq")) continue;
    const std::string base_suffix = ".base_layer.weight";
    const size_t a_pos = rel.find(".lora_A."), b_pos = rel.find(".lora_B.");
    if (ends_with(rel, base_suffix)) {
      m->dec_[rel.substr(0, rel.size() - base_suffix.size()) + ".weight"] =
          model::read_tensor(*files, n);
    } else if (a_pos != std::string::npos) {
      found[rel.substr(0, a_pos)].first = model::read_tensor(*files, n);
    } else if (b_pos != std::string::npos) {
      found[rel.substr(0, b_pos)].second = model::read_tensor(*files, n);
    } else {
      m->dec_[rel] = model::read_tensor(*files, n);
    }
    files->release(n);
  }
  const model::TensorSpecs specs = model::decoder_tensor_specs(m->dcfg_);
  m->tied_ = m->dcfg_.tie_word_embeddings && m->dec_.count("lm_head.weight") == 0;
  for (const auto& [name, shape] : specs) {
    auto it = m->dec_.find(name);
    if (it == m->dec_.end()) {
      fail(files->dir(), ": missing tensor '", prefix, name, "' (expected shape ",
           model::shape_str(shape), ")");
    }
    check_shape(files->dir(), prefix + name, it->second, shape);
  }
  if (!m->tied_ && m->dec_.count("lm_head.weight") == 0) {
    fail(files->dir(), ": missing tensor '", prefix, "lm_head.weight'");
  }
  // Existing adapters: keep them (same rank, or a frozen decoder), else merge.
  int64_t old_r = 0;
  for (const auto& [stem, ab] : found) {
    if (!ab.first.defined() || !ab.second.defined()) {
      fail(files->dir(), ": LoRA adapter for '", prefix, stem, "' is incomplete");
    }
    if (m->dec_.count(stem + ".weight") == 0) {
      fail(files->dir(), ": LoRA adapter for '", prefix, stem, "' has no base_layer weight");
    }
    old_r = ab.first.size(0);
  }
  const bool frozen_decoder = opt.training_form == "compressor";
  const bool keep = !found.empty() && (frozen_decoder || old_r == opt.lora_r);
  if (!found.empty() && !keep) {
    // alpha = 2 * lora_r of the checkpoint's config (no adapter_config.json in COCOM files).
    const double scale = 2.0 * static_cast<double>(cfg.lora_r) / static_cast<double>(old_r);
    for (auto& [stem, ab] : found) {
      at::Tensor& w = m->dec_[stem + ".weight"];
      w.add_(at::matmul(ab.second, ab.first), scale);
    }
    found.clear();
  }
  if (keep) {
    m->lora_ = std::move(found);
    m->lora_r_ = old_r;
    m->lora_scale_ = 2.0 * static_cast<double>(cfg.lora_r) / static_cast<double>(old_r);
  } else if (opt.lora_r > 0 && !frozen_decoder) {
    m->lora_r_ = opt.lora_r;
    m->lora_scale_ = 2.0;  // lora_alpha = 2 r
    for (const auto& stem : linear_modules(m->dcfg_)) {
      const at::Tensor& w = m->dec_.at(stem + ".weight");
      const double bound = 1.0 / std::sqrt(static_cast<double>(w.size(1)));
      at::Tensor a =
          at::empty({opt.lora_r, w.size(1)}, at::kFloat).uniform_(-bound, bound, m->gen_);
      at::Tensor b = at::zeros({w.size(0), opt.lora_r}, at::kFloat);
      m->lora_[stem] = {a, b};
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
  for (auto& [name, t] : m->dec_) t = t.to(dev);
  for (auto& [stem, ab] : m->lora_) ab = {ab.first.to(dev), ab.second.to(dev)};

  if (cfg.light()) {
    m->compressor_source_ =
        model::resolve_base_model_dir(dir, *cfg.compr_model_name, opt.compressor_tokenizer,
                                      "compressor", "--compressor-tokenizer");
    m->enc_tok_ = model::load_tokenizer(m->compressor_source_);
    const std::string bcfg_path = join_path(m->compressor_source_, "config.json");
    m->bcfg_ = model::BertConfig::load(bcfg_path);
    const Json bj = read_json_file(bcfg_path);
    m->bert_hidden_dropout_ = json_number_or(bj, "hidden_dropout_prob", 0.1, bcfg_path);
    m->bert_attention_dropout_ = json_number_or(bj, "attention_probs_dropout_prob", 0.1, bcfg_path);
    const std::string bp = "compr.model.";
    for (const auto& n : files->names()) {
      if (n.rfind(bp, 0) != 0) continue;
      const bool is_int = !model::dtype_is_float(files->info(n).dtype);
      m->bert_[n.substr(bp.size())] =
          model::read_tensor(*files, n, is_int ? at::kLong : at::kFloat).to(dev);
      files->release(n);
    }
    const bool pooler = m->bert_.count("pooler.dense.weight") > 0;
    for (const auto& [name, shape] : model::bert_tensor_specs(m->bcfg_, pooler)) {
      auto it = m->bert_.find(name);
      if (it == m->bert_.end()) {
        fail(files->dir(), ": missing tensor '", bp, name, "' (expected shape ",
             model::shape_str(shape), ")");
      }
      check_shape(files->dir(), bp + name, it->second, shape);
    }
    const int64_t H = m->dcfg_.hidden_size, Hb = m->bcfg_.hidden_size;
    const int64_t in = cfg.compr_linear_type == "concat" ? cfg.compr_rate * Hb : Hb;
    if (!files->has("compr.linear.weight")) {
      fail(dir, ": missing tensor 'compr.linear.weight' (the COCOM-light projection)");
    }
    m->proj_w_ = model::read_tensor(*files, "compr.linear.weight");
    check_shape(files->dir(), "compr.linear.weight", m->proj_w_, {H, in});
    m->proj_b_ = files->has("compr.linear.bias") ? model::read_tensor(*files, "compr.linear.bias")
                                                 : at::zeros({H}, at::kFloat);
    m->proj_w_ = m->proj_w_.to(dev);
    m->proj_b_ = m->proj_b_.to(dev);
  }
  for (const auto& n : files->names()) {
    if (n.rfind(prefix, 0) != 0 && !(cfg.light() && n.rfind("compr.", 0) == 0)) {
      fail(files->file_of(n), ": unexpected tensor '", n, "'");
    }
  }
  const int64_t d = m->dcfg_.head_dim;
  at::Tensor idx = at::arange(0, d, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat);
  m->inv_freq_ = (1.0 / at::pow(m->dcfg_.rope_theta, idx / static_cast<double>(d))).to(dev);
  m->collect_trainable();
  return m;
}

void TrainableCocom::collect_trainable() {
  trainable_.clear();
  if (opt_.training_form == "both") {
    if (!lora_.empty()) {
      for (auto& [stem, ab] : lora_) {
        trainable_.push_back({"decoder." + stem + ".lora_A", ab.first});
        trainable_.push_back({"decoder." + stem + ".lora_B", ab.second});
      }
    } else {
      for (auto& [name, t] : dec_) trainable_.push_back({"decoder." + name, t});
    }
  }
  if (cfg_.light()) {
    for (auto& [name, t] : bert_) {
      if (t.is_floating_point()) trainable_.push_back({"compr.model." + name, t});
    }
    trainable_.push_back({"compr.linear.weight", proj_w_});
    trainable_.push_back({"compr.linear.bias", proj_b_});
  }
  std::sort(trainable_.begin(), trainable_.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [name, t] : trainable_) t.requires_grad_(true);
}

ExampleFormat TrainableCocom::example_format(int64_t context_max_length) const {
  ExampleFormat f;
  f.decoder_tokenizer = dec_tok_.get();
  f.compressor_tokenizer = enc_tok_.get();
  f.mem_id = mem_id_;
  f.ae_id = ae_id_;
  f.enc_id = enc_id_;
  f.sep_id = sep_id_;
  f.compr_rate = cfg_.compr_rate;
  f.context_max_length = context_max_length;
  f.sep = cfg_.sep;
  return f;
}

NamedTensorList TrainableCocom::decoder_tensors() const {
  NamedTensorList out;
  for (const auto& [name, t] : dec_) out.push_back({name, t});
  for (const auto& [stem, ab] : lora_) {
    out.push_back({stem + ".lora_A", ab.first});
    out.push_back({stem + ".lora_B", ab.second});
  }
  return out;
}

at::Tensor TrainableCocom::dec(const std::string& name) const {
  auto it = dec_.find(name);
  if (it == dec_.end()) fail("trainable decoder: no tensor '", name, "'");
  return it->second;
}

at::Tensor TrainableCocom::bt(const std::string& name) const {
  auto it = bert_.find(name);
  if (it == bert_.end()) fail("trainable compressor: no tensor 'compr.model.", name, "'");
  return it->second;
}

at::Tensor TrainableCocom::dropout(const at::Tensor& x, double p) {
  if (!training_ || p <= 0) return x;
  // Masks are drawn on x's device from the model's own generator, so a run is reproducible
  // (and resumable) on that device.
  at::Tensor keep = at::empty(x.sizes(), x.options().dtype(at::kFloat)).bernoulli_(1.0 - p, gen_);
  return x * keep * (1.0 / (1.0 - p));
}

at::Tensor TrainableCocom::linear(const std::string& stem, const at::Tensor& x) {
  auto bias = dec_.find(stem + ".bias");
  at::Tensor y = at::linear(
      x, dec(stem + ".weight"),
      bias == dec_.end() ? c10::optional<at::Tensor>() : c10::optional<at::Tensor>(bias->second));
  auto ad = lora_.find(stem);
  if (ad != lora_.end()) {
    y = y +
        at::linear(at::linear(dropout(x, opt_.lora_dropout), ad->second.first), ad->second.second) *
            lora_scale_;
  }
  return y;
}

at::Tensor TrainableCocom::decoder_hidden(const at::Tensor& inputs_embeds,
                                          const at::Tensor& attention_mask,
                                          const at::Tensor& position_ids) {
  const model::DecoderConfig& c = dcfg_;
  const c10::Device dev = opt_.device;
  const int64_t B = inputs_embeds.size(0), T = inputs_embeds.size(1);
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, d = c.head_dim;
  const int64_t G = nh / nkv;
  at::Tensor mask = attention_mask.to(dev, at::kLong);
  auto lopts = at::TensorOptions().dtype(at::kLong).device(dev);
  at::Tensor qi = at::arange(T, lopts).unsqueeze(1), kj = at::arange(T, lopts).unsqueeze(0);
  at::Tensor allowed = kj <= qi;
  if (c.sliding_window) allowed = allowed.logical_and(qi - kj <= *c.sliding_window);
  allowed = allowed.unsqueeze(0).logical_and(mask.unsqueeze(1) != 0).view({B, 1, 1, T, T});
  at::Tensor blocked = allowed.logical_not();

  at::Tensor freqs = position_ids.to(dev, at::kFloat).unsqueeze(-1) * inv_freq_;
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);
  at::Tensor cos = emb.cos(), sin = emb.sin();
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));

  at::Tensor h = inputs_embeds;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    at::Tensor x = rms_norm(h, dec(p + "input_layernorm.weight"), c.rms_norm_eps);
    at::Tensor q = linear(p + "self_attn.q_proj", x).view({B, T, nh, d}).transpose(1, 2);
    at::Tensor k = linear(p + "self_attn.k_proj", x).view({B, T, nkv, d}).transpose(1, 2);
    at::Tensor v = linear(p + "self_attn.v_proj", x).view({B, T, nkv, d}).transpose(1, 2);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    at::Tensor scores = at::matmul(q.reshape({B, nkv, G * T, d}), k.transpose(-1, -2)) * scale;
    // In fp32 (a no-op without autocast): the mask value and the softmax need its range.
    scores = scores.view({B, nkv, G, T, T})
                 .to(at::kFloat)
                 .masked_fill(blocked, std::numeric_limits<float>::lowest());
    at::Tensor probs = at::softmax(scores, -1).view({B, nkv, G * T, T});
    at::Tensor a = at::matmul(probs, v).view({B, nkv, G, T, d}).permute({0, 3, 1, 2, 4});
    h = h + linear(p + "self_attn.o_proj", a.reshape({B, T, nh * d}));
    x = rms_norm(h, dec(p + "post_attention_layernorm.weight"), c.rms_norm_eps);
    at::Tensor act = at::silu(linear(p + "mlp.gate_proj", x)) * linear(p + "mlp.up_proj", x);
    h = h + linear(p + "mlp.down_proj", act);
  }
  return rms_norm(h, dec("model.norm.weight"), c.rms_norm_eps);
}

at::Tensor TrainableCocom::lm_logits(const at::Tensor& hidden) const {
  return at::linear(hidden, dec(tied_ ? "model.embed_tokens.weight" : "lm_head.weight"));
}

at::Tensor TrainableCocom::bert_last_hidden(const at::Tensor& ids,
                                            const at::Tensor& attention_mask) {
  const model::BertConfig& c = bcfg_;
  const int64_t B = ids.size(0), T = ids.size(1), H = c.hidden_size, nh = c.num_attention_heads;
  const int64_t d = H / nh;
  const double eps = c.layer_norm_eps;
  if (T > c.max_position_embeddings) {
    fail("compressor input of ", T, " tokens exceeds BERT's max_position_embeddings (",
         c.max_position_embeddings, "); lower --context-max-length");
  }
  const c10::Device dev = opt_.device;
  at::Tensor pos = at::arange(T, at::TensorOptions().dtype(at::kLong).device(dev));
  at::Tensor types = at::zeros({B, T}, at::TensorOptions().dtype(at::kLong).device(dev));
  at::Tensor h = at::embedding(bt("embeddings.word_embeddings.weight"), ids) +
                 at::embedding(bt("embeddings.token_type_embeddings.weight"), types) +
                 at::embedding(bt("embeddings.position_embeddings.weight"), pos).unsqueeze(0);
  h = at::layer_norm(h, {H}, bt("embeddings.LayerNorm.weight"), bt("embeddings.LayerNorm.bias"),
                     eps);
  h = dropout(h, bert_hidden_dropout_);
  at::Tensor m = attention_mask.to(dev, at::kFloat);
  at::Tensor bias = ((1.0 - m) * std::numeric_limits<float>::lowest()).view({B, 1, 1, T});
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    auto lin = [&](const std::string& n, const at::Tensor& x) {
      return at::linear(x, bt(p + n + ".weight"), bt(p + n + ".bias"));
    };
    at::Tensor q = lin("attention.self.query", h).view({B, T, nh, d}).transpose(1, 2);
    at::Tensor k = lin("attention.self.key", h).view({B, T, nh, d}).transpose(1, 2);
    at::Tensor v = lin("attention.self.value", h).view({B, T, nh, d}).transpose(1, 2);
    at::Tensor scores = at::matmul(q, k.transpose(-1, -2)) * scale + bias;
    at::Tensor probs = dropout(at::softmax(scores, -1), bert_attention_dropout_);
    at::Tensor ctx = at::matmul(probs, v).transpose(1, 2).reshape({B, T, H});
    h = at::layer_norm(dropout(lin("attention.output.dense", ctx), bert_hidden_dropout_) + h, {H},
                       bt(p + "attention.output.LayerNorm.weight"),
                       bt(p + "attention.output.LayerNorm.bias"), eps);
    at::Tensor inter = at::gelu(lin("intermediate.dense", h));
    h = at::layer_norm(dropout(lin("output.dense", inter), bert_hidden_dropout_) + h, {H},
                       bt(p + "output.LayerNorm.weight"), bt(p + "output.LayerNorm.bias"), eps);
  }
  return h;
}

at::Tensor TrainableCocom::compress(const at::Tensor& enc_input_ids,
                                    const at::Tensor& enc_attention_mask, int64_t n) {
  const c10::Device dev = opt_.device;
  at::Tensor ids = enc_input_ids.to(dev, at::kLong);
  const int64_t N = ids.size(0);
  if (!cfg_.light()) {
    at::Tensor emb = at::embedding(dec("model.embed_tokens.weight"), ids);
    at::Tensor pos = at::arange(ids.size(1), ids.options()).unsqueeze(0).expand({N, ids.size(1)});
    at::Tensor h = decoder_hidden(emb, enc_attention_mask, pos);
    at::Tensor rows = h.index({ids == mem_id_});
    if (rows.size(0) != N * n) {
      fail("compress: found ", rows.size(0), " <MEM> positions, expected ", N * n);
    }
    return rows.view({N, n, -1});
  }
  at::Tensor h = bert_last_hidden(ids, enc_attention_mask);
  const int64_t r = cfg_.compr_rate, Hb = h.size(2);
  if (h.size(1) != n * r) fail("compress: encoder length ", h.size(1), " is not n * compr_rate");
  at::Tensor grouped = h.reshape({N, n, r, Hb});
  at::Tensor feats =
      cfg_.compr_linear_type == "concat" ? grouped.reshape({N, n, r * Hb}) : grouped.mean(2);
  return at::linear(feats, proj_w_, proj_b_);
}

at::Tensor TrainableCocom::embed_with_memory(const at::Tensor& dec_input_ids,
                                             const at::Tensor& compressed) {
  at::Tensor ids = dec_input_ids.to(opt_.device, at::kLong);
  at::Tensor emb = at::embedding(dec("model.embed_tokens.weight"), ids);
  at::Tensor is_mem = ids == mem_id_;
  const int64_t H = dcfg_.hidden_size;
  const int64_t slots = is_mem.sum().item<int64_t>();
  if (slots * H != compressed.numel()) {
    fail("decoder input: ", slots, " <MEM> slots for ", compressed.numel() / H,
         " context embeddings");
  }
  // Under autocast the projection's output is bf16; the embedding table is fp32.
  return emb.index_put({is_mem}, compressed.reshape({-1, H}).to(emb.scalar_type()));
}

LossOutput TrainableCocom::loss(const TrainBatch& b) {
  at::Tensor compressed = compress(b.enc_input_ids, b.enc_attention_mask, b.mem_per_passage);
  at::Tensor embeds = embed_with_memory(b.dec_input_ids, compressed);
  const int64_t B = embeds.size(0), T = embeds.size(1);
  at::Tensor pos = at::arange(T, at::TensorOptions().dtype(at::kLong).device(opt_.device))
                       .unsqueeze(0)
                       .expand({B, T});
  at::Tensor h = decoder_hidden(embeds, b.dec_attention_mask, pos);
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
  const bool separate = !lora_.empty() && !merge_lora;
  const std::string prefix = separate ? "decoder.base_model.model." : "decoder.";
  model::NamedTensors out;
  for (const auto& [name, t] : dec_) {
    at::Tensor w = t.detach().to(at::kCPU);
    const std::string stem = ends_with(name, ".weight") ? name.substr(0, name.size() - 7) : name;
    auto ad = lora_.find(stem);
    if (ad == lora_.end()) {
      out.push_back({prefix + name, w});
    } else if (separate) {
      out.push_back({prefix + stem + ".base_layer.weight", w});
      out.push_back(
          {prefix + stem + ".lora_A.default.weight", ad->second.first.detach().to(at::kCPU)});
      out.push_back(
          {prefix + stem + ".lora_B.default.weight", ad->second.second.detach().to(at::kCPU)});
    } else {
      at::Tensor delta =
          at::matmul(ad->second.second.detach(), ad->second.first.detach()).to(at::kCPU);
      out.push_back({prefix + name, w + delta * lora_scale_});
    }
  }
  if (cfg_.light()) {
    for (const auto& [name, t] : bert_)
      out.push_back({"compr.model." + name, t.detach().to(at::kCPU)});
    out.push_back({"compr.linear.weight", proj_w_.detach().to(at::kCPU)});
    out.push_back({"compr.linear.bias", proj_b_.detach().to(at::kCPU)});
  }
  model::write_tensors(join_path(dir, "model.safetensors"), out, dtype);
  // A shard index left by an earlier model would take precedence over the file just written.
  fs::remove(fs::path(dir) / "model.safetensors.index.json");

  model::CocomConfig c = cfg_;
  c.decoder_model_name = "base_decoder";
  copy_base_files(decoder_source_, join_path(dir, c.decoder_model_name),
                  {"config.json", "generation_config.json", "tokenizer.model", "tokenizer.json",
                   "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"});
  if (cfg_.light()) {
    c.compr_model_name = "base_compressor";
    copy_base_files(compressor_source_, join_path(dir, *c.compr_model_name),
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
