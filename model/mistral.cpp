#include "model/mistral.h"

#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>

#include "common/error.h"
#include "common/json_util.h"
#include "model/decode_attention.h"

namespace cocom::model {

at::Tensor dense(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  const int64_t in = w.size(1);
  if (x.numel() == in) {
    // One row: matrix-vector product streams the weights at memory bandwidth, unlike
    // the gemm path (ENVIRONMENT.md trap 6).
    at::Tensor y = b.defined() ? at::addmv(b, w, x.reshape({in})) : at::mv(w, x.reshape({in}));
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = w.size(0);
    return y.view(shape);
  }
  const int64_t rows = x.numel() / in;
  if (rows <= Linear::kGemvMaxRows && x.device().is_cpu() && w.scalar_type() == at::kFloat &&
      !x.requires_grad() && !w.requires_grad() && w.is_contiguous() &&
      x.scalar_type() == at::kFloat && (!b.defined() || b.is_contiguous())) {
    // A few rows (a decoder step of several sequences): read the weights once for all.
    at::Tensor x2 = x.reshape({rows, in}).contiguous();
    at::Tensor y = at::empty({rows, w.size(0)}, at::kFloat);
    gemv_f32(x2.data_ptr<float>(), rows, in, w.data_ptr<float>(), w.size(0),
             b.defined() ? b.data_ptr<float>() : nullptr, y.data_ptr<float>());
    std::vector<int64_t> shape = x.sizes().vec();
    shape.back() = w.size(0);
    return y.view(shape);
  }
  return at::linear(x, w, b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt);
}

namespace {

// For single-token steps every element-wise op is tiny, so ATen's OpenMP workers would only
// wake up, spin, and steal the cores that the BLAS threads need for the weight-streaming
// matrix-vector products. This keeps the calling thread's OpenMP regions to one thread for the
// duration of such a step (omp_set_num_threads is per calling thread).
// The bf16/int8 matrix-vector kernels still use every thread (KernelThreadsScope).
class SerialElementwiseScope {
 public:
  explicit SerialElementwiseScope(bool active) : active_(active) {
    if (active_) {
      saved_ = omp_get_max_threads();
      kernels_.emplace(saved_);
      omp_set_num_threads(1);
    }
  }
  ~SerialElementwiseScope() {
    if (active_) omp_set_num_threads(saved_);
  }
  SerialElementwiseScope(const SerialElementwiseScope&) = delete;
  SerialElementwiseScope& operator=(const SerialElementwiseScope&) = delete;

 private:
  bool active_;
  int saved_ = 1;
  std::optional<KernelThreadsScope> kernels_;
};

at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  at::Tensor var = x.pow(2).mean(-1, /*keepdim=*/true);
  return weight * (x * at::rsqrt(var + eps));
}

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t half = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// One adapter's contribution, scale * B A dropout(x).
at::Tensor lora_delta(const ForwardHooks& t, const LoraAdapter& ad, const at::Tensor& x) {
  return at::linear(at::linear(t.apply_dropout(x, t.lora_dropout), ad.a), ad.b) * t.lora_scale;
}

// y (a stacked linear layer's output: the modules of `slots` side by side, `width` columns
// each) plus their adapters' contributions. Without adapters y is returned as it is.
at::Tensor add_lora(const ForwardHooks* t, size_t layer, const at::Tensor& x, at::Tensor y,
                    std::initializer_list<std::pair<int, int64_t>> slots) {
  if (!t || t->decoder_lora.empty()) return y;
  const auto& adapters = t->decoder_lora.at(layer);
  std::vector<at::Tensor> parts;
  bool any = false;
  for (const auto& [slot, width] : slots) {
    const LoraAdapter& ad = adapters[size_t(slot)];
    if (ad.defined()) {
      parts.push_back(lora_delta(*t, ad, x));
      any = true;
    } else {
      std::vector<int64_t> shape = x.sizes().vec();
      shape.back() = width;
      parts.push_back(at::zeros(shape, x.options()));
    }
  }
  if (!any) return y;
  return y + (parts.size() == 1 ? parts[0] : at::cat(parts, -1));
}

// Finds the name prefix under which `model.embed_tokens.weight` lives (plain HF layout: "",
// PEFT-wrapped: "base_model.model.").
std::string detect_prefix(const CheckpointFiles& files) {
  const std::string key = "model.embed_tokens.weight";
  if (files.has(key)) return "";
  for (const auto& n : files.names()) {
    if (n.size() > key.size() && n.compare(n.size() - key.size(), key.size(), key) == 0) {
      return n.substr(0, n.size() - key.size());
    }
  }
  fail(files.dir(), ": no tensor named 'model.embed_tokens.weight' (or with a prefix such as ",
       "'base_model.model.'); this does not look like a Mistral/Llama checkpoint");
}

}  // namespace

const char* lora_module_name(int slot) {
  static const char* const names[kLoraSlots] = {
      "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
      "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
  if (slot < 0 || slot >= kLoraSlots) fail("LoRA: no module slot ", slot);
  return names[slot];
}

std::unique_ptr<MistralModel> MistralModel::load(const std::string& dir, c10::Device device,
                                                 const LoraSettings& lora, WeightFormat weights) {
  std::string cfg_path = join_path(dir, "config.json");
  if (!file_exists(cfg_path))
    fail_not_found(dir, ": no config.json (is this a Hugging Face model directory?)");
  Json j = read_json_file(cfg_path);
  if (detect_arch(j, cfg_path) != Arch::Decoder) {
    fail(cfg_path, ": describes a BERT encoder, not a Mistral/Llama decoder");
  }
  DecoderConfig cfg = DecoderConfig::from_json(j, cfg_path);
  auto files = CheckpointFiles::open(dir);
  WeightSource src(*files, detect_prefix(*files), lora);
  auto model = from_weights(cfg, src, device, weights);
  src.check_all_used();
  return model;
}

namespace {
// The matrices one above the other; on the CPU in huge-page memory (a 7B model's stacked
// gate/up matrix is a 470 MB fp32 transient).
at::Tensor stack_rows(const std::vector<at::Tensor>& parts) {
  if (!parts.front().device().is_cpu()) return at::cat(parts, 0).contiguous();
  int64_t rows = 0;
  for (const at::Tensor& t : parts) rows += t.size(0);
  at::Tensor out = empty_hugepage({rows, parts.front().size(1)}, at::kFloat);
  int64_t r = 0;
  for (const at::Tensor& t : parts) {
    out.narrow(0, r, t.size(0)).copy_(t);
    r += t.size(0);
  }
  return out;
}
}  // namespace

std::unique_ptr<MistralModel> MistralModel::from_weights(const DecoderConfig& cfg,
                                                         TensorProvider& src, c10::Device device,
                                                         WeightFormat weights) {
  if (weights != WeightFormat::fp32 && !device.is_cpu()) {
    fail(weight_format_name(weights), " resident weights are implemented for the CPU only (",
         "device ", device.str(), "); use fp32 weights on this device");
  }
  std::unique_ptr<MistralModel> m(new MistralModel());
  m->cfg_ = cfg;
  m->device_ = device;
  m->format_ = weights;
  const WeightFormat wf = weights;
  const int64_t H = cfg.hidden_size, V = cfg.vocab_size, I = cfg.intermediate_size;
  const int64_t d = cfg.head_dim, nq = cfg.num_attention_heads * d,
                nkv = cfg.num_key_value_heads * d;
  // Every tensor is read in fp32, converted to its resident format and dropped before the
  // next one is read: the fp32 transient is one (stacked) matrix at most.
  const bool has_lm_head = src.has("lm_head.weight");
  if (!has_lm_head && !cfg.tie_word_embeddings) {
    fail(src.origin(), ": missing tensor 'lm_head.weight' and config.json has ",
         "tie_word_embeddings false");
  }
  {
    at::Tensor emb = src.get("model.embed_tokens.weight", {V, H}, device);
    m->embed_tokens_ = wf == WeightFormat::fp32 ? emb : to_bf16(emb);
    m->tied_ = !has_lm_head;
    if (!has_lm_head) {
      // Tied: fp32 and bf16 share the embedding's storage; int8 quantises a copy.
      m->lm_head_ = wf == WeightFormat::bf16 ? Linear::from_bf16(m->embed_tokens_)
                                             : Linear::make(emb, {}, wf);
    }
  }
  if (has_lm_head) m->lm_head_ = Linear::make(src.get("lm_head.weight", {V, H}, device), {}, wf);
  m->final_norm_ = src.get("model.norm.weight", {H}, device);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    Layer L;
    L.input_norm = src.get(p + "input_layernorm.weight", {H}, device);
    L.post_norm = src.get(p + "post_attention_layernorm.weight", {H}, device);
    {
      at::Tensor q = src.get(p + "self_attn.q_proj.weight", {nq, H}, device);
      at::Tensor k = src.get(p + "self_attn.k_proj.weight", {nkv, H}, device);
      at::Tensor v = src.get(p + "self_attn.v_proj.weight", {nkv, H}, device);
      at::Tensor wqkv = stack_rows({q, k, v});
      q = k = v = at::Tensor();
      at::Tensor bqkv;
      if (cfg.attention_bias) {
        bqkv = at::cat({src.get(p + "self_attn.q_proj.bias", {nq}, device),
                        src.get(p + "self_attn.k_proj.bias", {nkv}, device),
                        src.get(p + "self_attn.v_proj.bias", {nkv}, device)},
                       0);
      }
      L.qkv = Linear::make(wqkv, bqkv, wf);
      L.qkv_bias = bqkv;
    }
    L.o = Linear::make(src.get(p + "self_attn.o_proj.weight", {H, nq}, device), {}, wf);
    {
      at::Tensor gate = src.get(p + "mlp.gate_proj.weight", {I, H}, device);
      at::Tensor up = src.get(p + "mlp.up_proj.weight", {I, H}, device);
      at::Tensor w_gate_up = stack_rows({gate, up});
      gate = up = at::Tensor();
      L.gate_up = Linear::make(w_gate_up, {}, wf);
    }
    L.down = Linear::make(src.get(p + "mlp.down_proj.weight", {H, I}, device), {}, wf);
    src.ignore(p + "self_attn.rotary_emb.inv_freq");
    m->layers_.push_back(std::move(L));
  }
  // inv_freq[i] = theta^(-2i/d), computed in fp32 like the reference.
  at::Tensor idx = at::arange(0, d, 2, at::TensorOptions().dtype(at::kLong)).to(at::kFloat);
  m->inv_freq_ = (1.0 / at::pow(cfg.rope_theta, idx / static_cast<double>(d))).to(device);
  return m;
}

int64_t MistralModel::parameter_count() const { return cfg_.parameter_count(); }

int64_t MistralModel::decode_weight_bytes() const {
  int64_t b = lm_head_.resident_bytes();
  for (const Layer& L : layers_) {
    b += L.qkv.resident_bytes() + L.o.resident_bytes() + L.gate_up.resident_bytes() +
         L.down.resident_bytes();
  }
  return b;
}

int64_t MistralModel::resident_weight_bytes() const {
  int64_t b = decode_weight_bytes() + static_cast<int64_t>(final_norm_.nbytes());
  const bool shared = lm_head_.stored_weight().defined() &&
                      lm_head_.stored_weight().data_ptr() == embed_tokens_.data_ptr();
  if (!shared) b += static_cast<int64_t>(embed_tokens_.nbytes());
  for (const Layer& L : layers_) {
    b += static_cast<int64_t>(L.input_norm.nbytes() + L.post_norm.nbytes());
  }
  return b;
}

at::Tensor MistralModel::logits(const at::Tensor& hidden) const { return lm_head_.forward(hidden); }

NamedTensorList MistralModel::parameters() const {
  if (format_ != WeightFormat::fp32) {
    fail("decoder parameters: the weights are resident in ", weight_format_name(format_),
         "; training needs fp32");
  }
  NamedTensorList out;
  out.push_back({"model.embed_tokens.weight", embed_tokens_});
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    const std::string p = "model.layers." + std::to_string(l) + ".";
    out.push_back({p + "input_layernorm.weight", L.input_norm});
    out.push_back({p + "self_attn.qkv_proj.weight", L.qkv.stored_weight()});
    if (L.qkv_bias.defined()) out.push_back({p + "self_attn.qkv_proj.bias", L.qkv_bias});
    out.push_back({p + "self_attn.o_proj.weight", L.o.stored_weight()});
    out.push_back({p + "post_attention_layernorm.weight", L.post_norm});
    out.push_back({p + "mlp.gate_up_proj.weight", L.gate_up.stored_weight()});
    out.push_back({p + "mlp.down_proj.weight", L.down.stored_weight()});
  }
  out.push_back({"model.norm.weight", final_norm_});
  if (!tied_) out.push_back({"lm_head.weight", lm_head_.stored_weight()});
  return out;
}

NamedTensorList MistralModel::hf_tensors() const {
  const int64_t d = cfg_.head_dim, nq = cfg_.num_attention_heads * d,
                nkv = cfg_.num_key_value_heads * d, I = cfg_.intermediate_size;
  const std::string qkv_stem = "self_attn.qkv_proj.", gu_stem = "mlp.gate_up_proj.";
  NamedTensorList out;
  for (auto& [name, t] : parameters()) {
    const size_t qkv = name.find(qkv_stem), gu = name.find(gu_stem);
    if (qkv != std::string::npos) {
      const std::string p = name.substr(0, qkv) + "self_attn.";
      const std::string kind = name.substr(qkv + qkv_stem.size());  // weight | bias
      out.push_back({p + "q_proj." + kind, t.narrow(0, 0, nq)});
      out.push_back({p + "k_proj." + kind, t.narrow(0, nq, nkv)});
      out.push_back({p + "v_proj." + kind, t.narrow(0, nq + nkv, nkv)});
    } else if (gu != std::string::npos) {
      const std::string p = name.substr(0, gu) + "mlp.";
      out.push_back({p + "gate_proj.weight", t.narrow(0, 0, I)});
      out.push_back({p + "up_proj.weight", t.narrow(0, I, I)});
    } else {
      out.push_back({name, t});
    }
  }
  return out;
}

at::Tensor MistralModel::embed(const at::Tensor& input_ids) const {
  if (input_ids.dim() != 2) {
    fail("input_ids: expected a [batch, length] tensor, got ", shape_str(input_ids.sizes()));
  }
  if (input_ids.numel() > 0) {
    at::Tensor ids = input_ids.to(at::kCPU);
    int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    if (lo < 0 || hi >= cfg_.vocab_size) {
      int64_t bad = lo < 0 ? lo : hi;
      at::Tensor where = (ids == bad).nonzero();
      fail("input_ids: token id ", bad, " at row ", where[0][0].item<int64_t>(), ", position ",
           where[0][1].item<int64_t>(), " is outside the vocabulary (size ", cfg_.vocab_size, ")");
    }
  }
  if (embed_tokens_.scalar_type() == at::kFloat) {
    return at::embedding(embed_tokens_, input_ids.to(device_, at::kLong));
  }
  // bf16 table: gather the rows and widen them (exact).
  at::Tensor ids = input_ids.to(at::kCPU, at::kLong).contiguous();
  const int64_t H = cfg_.hidden_size, n = ids.numel();
  at::Tensor out = at::empty({input_ids.size(0), input_ids.size(1), H}, at::kFloat);
  const int64_t* id = ids.data_ptr<int64_t>();
  const uint16_t* table = reinterpret_cast<const uint16_t*>(embed_tokens_.data_ptr());
  float* dst = out.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const uint16_t* row = table + id[i] * H;
    for (int64_t k = 0; k < H; ++k) {
      uint32_t bits = static_cast<uint32_t>(row[k]) << 16;
      std::memcpy(dst + i * H + k, &bits, 4);
    }
  }
  return out;
}

KVCache MistralModel::make_cache(int64_t batch, int64_t capacity) const {
  KVCache c;
  auto opts = at::TensorOptions().dtype(at::kFloat).device(device_);
  for (size_t l = 0; l < layers_.size(); ++l) {
    c.k.push_back(at::zeros({batch, cfg_.num_key_value_heads, capacity, cfg_.head_dim}, opts));
    c.v.push_back(at::zeros({batch, cfg_.num_key_value_heads, capacity, cfg_.head_dim}, opts));
  }
  c.key_mask = at::zeros({batch, capacity}, at::TensorOptions().dtype(at::kLong).device(device_));
  c.length = 0;
  return c;
}

at::Tensor MistralModel::arange_positions(const at::Tensor& attention_mask) {
  const int64_t B = attention_mask.size(0), T = attention_mask.size(1);
  return at::arange(T, attention_mask.options().dtype(at::kLong)).unsqueeze(0).expand({B, T});
}

at::Tensor MistralModel::cumsum_positions(const at::Tensor& attention_mask) {
  at::Tensor m = attention_mask.to(at::kLong);
  return (m.cumsum(-1) - 1).masked_fill(m == 0, 1);
}

at::Tensor MistralModel::attention(const Layer& L, const at::Tensor& x, const at::Tensor& cos,
                                   const at::Tensor& sin, const at::Tensor& allowed, KVCache* cache,
                                   size_t layer_index, int64_t start,
                                   const ForwardHooks* hooks) const {
  const int64_t B = x.size(0), T = x.size(1);
  const int64_t nh = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads, d = cfg_.head_dim;
  at::Tensor qkv = add_lora(hooks, layer_index, x, L.qkv.forward(x),
                            {{kLoraQ, nh * d}, {kLoraK, nkv * d}, {kLoraV, nkv * d}});
  at::Tensor q = qkv.narrow(-1, 0, nh * d).view({B, T, nh, d}).transpose(1, 2);
  at::Tensor k = qkv.narrow(-1, nh * d, nkv * d).view({B, T, nkv, d}).transpose(1, 2);
  at::Tensor v = qkv.narrow(-1, (nh + nkv) * d, nkv * d).view({B, T, nkv, d}).transpose(1, 2);
  q = q * cos + rotate_half(q) * sin;
  k = k * cos + rotate_half(k) * sin;
  at::Tensor keys = k, values = v;
  if (cache) {
    const int64_t S = start + T;
    cache->k[layer_index].narrow(2, start, T).copy_(k);
    cache->v[layer_index].narrow(2, start, T).copy_(v);
    keys = cache->k[layer_index].narrow(2, 0, S);
    values = cache->v[layer_index].narrow(2, 0, S);
  }
  const int64_t S = keys.size(2);
  if (cache && T == 1 &&
      decode_attention_applies(q, cache->k[layer_index], cache->v[layer_index])) {
    at::Tensor a = decode_attention(q, cache->k[layer_index], cache->v[layer_index], S,
                                    allowed.reshape({B, S}), 1.0 / std::sqrt(double(d)));
    return add_lora(hooks, layer_index, a, L.o.forward(a), {{kLoraO, cfg_.hidden_size}});
  }
  at::Tensor a = attend(q, keys, values, allowed);
  return add_lora(hooks, layer_index, a, L.o.forward(a), {{kLoraO, cfg_.hidden_size}});
}

at::Tensor MistralModel::attend(const at::Tensor& q, const at::Tensor& keys,
                                const at::Tensor& values, const at::Tensor& allowed) const {
  const int64_t B = q.size(0), T = q.size(2), S = keys.size(2);
  const int64_t nh = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads, d = cfg_.head_dim;
  const int64_t G = nh / nkv;
  // Query head h uses key/value head h / G: group the query heads per kv head.
  at::Tensor qg = q.reshape({B, nkv, G * T, d});
  at::Tensor scores = at::matmul(qg, keys.transpose(-1, -2)).mul_(1.0 / std::sqrt(double(d)));
  // In fp32 (a no-op except under autocast): the mask value and the softmax need its range.
  scores = scores.view({B, nkv, G, T, S}).to(at::kFloat);
  // Disallowed keys get the lowest float (not -inf) like the reference, so a row with no
  // visible key (a padding query) gets a uniform softmax instead of NaN.
  scores.masked_fill_(allowed.logical_not(), std::numeric_limits<float>::lowest());
  at::Tensor probs = at::softmax(scores, -1).view({B, nkv, G * T, S});
  at::Tensor out = at::matmul(probs, values).view({B, nkv, G, T, d});
  return out.permute({0, 3, 1, 2, 4}).reshape({B, T, nh * d});
}

at::Tensor MistralModel::decode_step(const at::Tensor& tokens, const at::Tensor& positions,
                                     const std::vector<KVCache*>& caches) const {
  if (tokens.dim() != 1 || tokens.size(0) < 1) {
    fail("decode_step: expected tokens [batch], got ", shape_str(tokens.sizes()));
  }
  const int64_t B = tokens.size(0);
  if (positions.sizes() != tokens.sizes()) {
    fail("decode_step: positions ", shape_str(positions.sizes()), " do not match tokens ",
         shape_str(tokens.sizes()));
  }
  if (static_cast<int64_t>(caches.size()) != B) {
    fail("decode_step: ", B, " tokens but ", caches.size(), " caches");
  }
  const int64_t nh = cfg_.num_attention_heads, nkv = cfg_.num_key_value_heads, d = cfg_.head_dim;
  std::vector<int64_t> start(static_cast<size_t>(B));
  std::vector<at::Tensor> allowed(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) {
    KVCache* c = caches[size_t(b)];
    if (!c || c->key_mask.size(0) != 1)
      fail("decode_step: cache ", b, " is not a one-sequence cache");
    if (c->length < 1) fail("decode_step: cache ", b, " is empty (prefill it first)");
    if (c->length + 1 > c->capacity()) {
      fail("KV cache: ", c->length + 1, " positions exceed its capacity of ", c->capacity());
    }
    const int64_t s = c->length;
    start[size_t(b)] = s;
    c->key_mask.narrow(1, s, 1).fill_(1);
    at::Tensor a = c->key_mask.narrow(1, 0, s + 1) != 0;  // [1, S]
    if (cfg_.sliding_window) {
      at::Tensor kj = at::arange(0, s + 1, at::TensorOptions().dtype(at::kLong).device(device_));
      a = a.logical_and((s - kj <= *cfg_.sliding_window).unsqueeze(0));
    }
    allowed[size_t(b)] = a;
  }
  SerialElementwiseScope serial(device_.is_cpu() && B <= 4);
  at::Tensor h = embed(tokens.to(device_, at::kLong).view({B, 1})).to(at::kFloat);  // [B, 1, H]
  at::Tensor pos = positions.to(device_, at::kFloat).view({B, 1, 1});
  at::Tensor freqs = pos * inv_freq_;                         // [B, 1, d/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);  // [B, 1, 1, d]
  at::Tensor cos = emb.cos(), sin = emb.sin();
  const double scale = 1.0 / std::sqrt(double(d));
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    at::Tensor qkv = L.qkv.forward(rms_norm(h, L.input_norm, cfg_.rms_norm_eps));
    at::Tensor q = qkv.narrow(-1, 0, nh * d).view({B, 1, nh, d}).transpose(1, 2);
    at::Tensor k = qkv.narrow(-1, nh * d, nkv * d).view({B, 1, nkv, d}).transpose(1, 2);
    at::Tensor v = qkv.narrow(-1, (nh + nkv) * d, nkv * d).view({B, 1, nkv, d}).transpose(1, 2);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    std::vector<at::Tensor> outs;
    outs.reserve(size_t(B));
    for (int64_t b = 0; b < B; ++b) {
      KVCache& c = *caches[size_t(b)];
      const int64_t s = start[size_t(b)], S = s + 1;
      c.k[l].narrow(2, s, 1).copy_(k.narrow(0, b, 1));
      c.v[l].narrow(2, s, 1).copy_(v.narrow(0, b, 1));
      at::Tensor qb = q.narrow(0, b, 1).contiguous();
      if (decode_attention_applies(qb, c.k[l], c.v[l])) {
        outs.push_back(decode_attention(qb, c.k[l], c.v[l], S, allowed[size_t(b)], scale));
      } else {
        outs.push_back(attend(qb, c.k[l].narrow(2, 0, S), c.v[l].narrow(2, 0, S),
                              allowed[size_t(b)].view({1, 1, 1, 1, S})));
      }
    }
    h = h + L.o.forward(B == 1 ? outs[0] : at::cat(outs, 0));
    at::Tensor gu = L.gate_up.forward(rms_norm(h, L.post_norm, cfg_.rms_norm_eps));
    const int64_t I = cfg_.intermediate_size;
    at::Tensor act = at::silu(gu.narrow(-1, 0, I)) * gu.narrow(-1, I, I);
    h = h + L.down.forward(act);
  }
  for (KVCache* c : caches) c->length += 1;
  h = rms_norm(h, final_norm_, cfg_.rms_norm_eps);
  return lm_head_.forward(h).select(1, 0);  // [B, V]
}

DecoderOutput MistralModel::forward_embeds(const at::Tensor& inputs_embeds,
                                           const at::Tensor& attention_mask,
                                           const at::Tensor& position_ids, KVCache* cache,
                                           const DecoderForwardOptions& opt) const {
  if (inputs_embeds.dim() != 3 || inputs_embeds.size(2) != cfg_.hidden_size) {
    fail("inputs_embeds: expected [batch, length, ", cfg_.hidden_size, "], got ",
         shape_str(inputs_embeds.sizes()));
  }
  const int64_t B = inputs_embeds.size(0), T = inputs_embeds.size(1);
  if (T == 0) fail("inputs_embeds: empty sequence (at least one position is needed)");
  if (attention_mask.sizes().vec() != std::vector<int64_t>{B, T}) {
    fail("attention_mask: expected shape ", shape_str(std::vector<int64_t>{B, T}), ", got ",
         shape_str(attention_mask.sizes()));
  }
  if (position_ids.sizes().vec() != std::vector<int64_t>{B, T}) {
    fail("position_ids: expected shape ", shape_str(std::vector<int64_t>{B, T}), ", got ",
         shape_str(position_ids.sizes()));
  }
  at::Tensor mask = attention_mask.to(device_, at::kLong);
  SerialElementwiseScope serial(device_.is_cpu() && B * T <= 4);
  const ForwardHooks* hooks = opt.hooks;
  if (hooks && !hooks->decoder_lora.empty() && hooks->decoder_lora.size() != layers_.size()) {
    fail("decoder forward: adapters for ", hooks->decoder_lora.size(), " layers, the model has ",
         layers_.size());
  }
  const int64_t start = cache ? cache->length : 0;
  if (cache) {
    if (cache->key_mask.size(0) != B) {
      fail("KV cache: made for batch ", cache->key_mask.size(0), ", used with batch ", B);
    }
    if (start + T > cache->capacity()) {
      fail("KV cache: ", start + T, " positions exceed its capacity of ", cache->capacity());
    }
    cache->key_mask.narrow(1, start, T).copy_(mask);
  }
  const int64_t S = start + T;
  at::Tensor key_mask = cache ? cache->key_mask.narrow(1, 0, S) : mask;

  // allowed[b, t, j]: query slot start+t may see key slot j (causal by padded slot index,
  // sliding window counted in slots, padding keys hidden).
  auto lopts = at::TensorOptions().dtype(at::kLong).device(device_);
  at::Tensor qi = at::arange(start, S, lopts).unsqueeze(1);
  at::Tensor kj = at::arange(0, S, lopts).unsqueeze(0);
  at::Tensor allowed = kj <= qi;
  if (cfg_.sliding_window) allowed = allowed.logical_and(qi - kj <= *cfg_.sliding_window);
  allowed = allowed.unsqueeze(0).logical_and(key_mask.unsqueeze(1) != 0);  // [B, T, S]
  allowed = allowed.view({B, 1, 1, T, S});

  at::Tensor pos = position_ids.to(device_, at::kFloat).unsqueeze(-1);  // [B, T, 1]
  at::Tensor freqs = pos * inv_freq_;                                   // [B, T, d/2]
  at::Tensor emb = at::cat({freqs, freqs}, -1).unsqueeze(1);            // [B, 1, T, d]
  at::Tensor cos = emb.cos(), sin = emb.sin();

  DecoderOutput out;
  at::Tensor h = inputs_embeds.to(device_, at::kFloat);
  if (opt.output_hidden_states) out.hidden_states.push_back(h);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    at::Tensor a = attention(L, rms_norm(h, L.input_norm, cfg_.rms_norm_eps), cos, sin, allowed,
                             cache, l, start, hooks);
    h = h + a;
    const int64_t I = cfg_.intermediate_size;
    at::Tensor x = rms_norm(h, L.post_norm, cfg_.rms_norm_eps);
    at::Tensor gu = add_lora(hooks, l, x, L.gate_up.forward(x), {{kLoraGate, I}, {kLoraUp, I}});
    at::Tensor act = at::silu(gu.narrow(-1, 0, I)) * gu.narrow(-1, I, I);
    h = h + add_lora(hooks, l, act, L.down.forward(act), {{kLoraDown, cfg_.hidden_size}});
    if (opt.output_hidden_states && l + 1 < layers_.size()) out.hidden_states.push_back(h);
  }
  if (cache) cache->length = S;
  h = rms_norm(h, final_norm_, cfg_.rms_norm_eps);
  if (opt.output_hidden_states) out.hidden_states.push_back(h);
  out.last_hidden_state = h;
  if (opt.compute_logits) {
    at::Tensor src = opt.last_logits_only ? h.narrow(1, T - 1, 1) : h;
    out.logits = lm_head_.forward(src);
  }
  return out;
}

DecoderOutput MistralModel::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                                    const at::Tensor& position_ids, KVCache* cache,
                                    const DecoderForwardOptions& opt) const {
  return forward_embeds(embed(input_ids), attention_mask, position_ids, cache, opt);
}

}  // namespace cocom::model
