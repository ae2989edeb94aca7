#include "model/bert.h"

#include <cmath>
#include <limits>

#include "common/error.h"
#include "common/json_util.h"
#include "model/mistral.h"  // dense()

namespace cocom::model {

namespace {

// Older BERT checkpoints name LayerNorm parameters gamma/beta.
at::Tensor get_ln(TensorProvider& src, const std::string& stem, const char* kind, int64_t H,
                  c10::Device device) {
  std::string modern = stem + (std::string(kind) == "weight" ? ".weight" : ".bias");
  std::string legacy = stem + (std::string(kind) == "weight" ? ".gamma" : ".beta");
  if (!src.has(modern) && src.has(legacy)) return src.get(legacy, {H}, device);
  return src.get(modern, {H}, device);
}

std::string detect_bert_prefix(const CheckpointFiles& files) {
  const std::string key = "embeddings.word_embeddings.weight";
  if (files.has(key)) return "";
  for (const auto& n : files.names()) {
    if (n.size() > key.size() && n.compare(n.size() - key.size(), key.size(), key) == 0) {
      return n.substr(0, n.size() - key.size());
    }
  }
  fail(files.dir(), ": no tensor named 'embeddings.word_embeddings.weight' (or with a prefix ",
       "such as 'bert.'); this does not look like a BERT checkpoint");
}

}  // namespace

std::unique_ptr<BertModel> BertModel::load(const std::string& dir, c10::Device device) {
  std::string cfg_path = join_path(dir, "config.json");
  if (!file_exists(cfg_path))
    fail_not_found(dir, ": no config.json (is this a Hugging Face model directory?)");
  Json j = read_json_file(cfg_path);
  if (detect_arch(j, cfg_path) != Arch::Bert) {
    fail(cfg_path, ": describes a decoder, not a BERT encoder");
  }
  BertConfig cfg = BertConfig::from_json(j, cfg_path);
  auto files = CheckpointFiles::open(dir);
  std::string prefix = detect_bert_prefix(*files);
  WeightSource src(*files, prefix, {});
  auto model = from_weights(cfg, src, device);
  // Task heads of BertFor* checkpoints (masked-LM, NSP) are not part of BertModel.
  std::vector<std::string> ignorable = {"embeddings.position_ids"};
  // With a "bert." prefix the task heads ("cls.predictions...") lie outside it, unchecked.
  src.check_all_used(ignorable);
  return model;
}

std::unique_ptr<BertModel> BertModel::from_weights(const BertConfig& cfg, TensorProvider& src,
                                                   c10::Device device) {
  std::unique_ptr<BertModel> m(new BertModel());
  m->cfg_ = cfg;
  m->device_ = device;
  const int64_t H = cfg.hidden_size, I = cfg.intermediate_size;
  m->word_ = src.get("embeddings.word_embeddings.weight", {cfg.vocab_size, H}, device);
  m->pos_ =
      src.get("embeddings.position_embeddings.weight", {cfg.max_position_embeddings, H}, device);
  m->type_ = src.get("embeddings.token_type_embeddings.weight", {cfg.type_vocab_size, H}, device);
  m->emb_ln_w_ = get_ln(src, "embeddings.LayerNorm", "weight", H, device);
  m->emb_ln_b_ = get_ln(src, "embeddings.LayerNorm", "bias", H, device);
  src.ignore("embeddings.position_ids");
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    Layer L;
    L.wqkv = at::cat({src.get(p + "attention.self.query.weight", {H, H}, device),
                      src.get(p + "attention.self.key.weight", {H, H}, device),
                      src.get(p + "attention.self.value.weight", {H, H}, device)},
                     0)
                 .contiguous();
    L.bqkv = at::cat({src.get(p + "attention.self.query.bias", {H}, device),
                      src.get(p + "attention.self.key.bias", {H}, device),
                      src.get(p + "attention.self.value.bias", {H}, device)},
                     0);
    L.wo = src.get(p + "attention.output.dense.weight", {H, H}, device);
    L.bo = src.get(p + "attention.output.dense.bias", {H}, device);
    L.ln1_w = get_ln(src, p + "attention.output.LayerNorm", "weight", H, device);
    L.ln1_b = get_ln(src, p + "attention.output.LayerNorm", "bias", H, device);
    L.wi = src.get(p + "intermediate.dense.weight", {I, H}, device);
    L.bi = src.get(p + "intermediate.dense.bias", {I}, device);
    L.wout = src.get(p + "output.dense.weight", {H, I}, device);
    L.bout = src.get(p + "output.dense.bias", {H}, device);
    L.ln2_w = get_ln(src, p + "output.LayerNorm", "weight", H, device);
    L.ln2_b = get_ln(src, p + "output.LayerNorm", "bias", H, device);
    m->layers_.push_back(std::move(L));
  }
  if (src.has("pooler.dense.weight")) {
    m->pooler_w_ = src.get("pooler.dense.weight", {H, H}, device);
    m->pooler_b_ = src.get("pooler.dense.bias", {H}, device);
  }
  return m;
}

NamedTensorList BertModel::parameters() const {
  NamedTensorList out = {{"embeddings.word_embeddings.weight", word_},
                         {"embeddings.position_embeddings.weight", pos_},
                         {"embeddings.token_type_embeddings.weight", type_},
                         {"embeddings.LayerNorm.weight", emb_ln_w_},
                         {"embeddings.LayerNorm.bias", emb_ln_b_}};
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    out.insert(out.end(), {{p + "attention.self.qkv.weight", L.wqkv},
                           {p + "attention.self.qkv.bias", L.bqkv},
                           {p + "attention.output.dense.weight", L.wo},
                           {p + "attention.output.dense.bias", L.bo},
                           {p + "attention.output.LayerNorm.weight", L.ln1_w},
                           {p + "attention.output.LayerNorm.bias", L.ln1_b},
                           {p + "intermediate.dense.weight", L.wi},
                           {p + "intermediate.dense.bias", L.bi},
                           {p + "output.dense.weight", L.wout},
                           {p + "output.dense.bias", L.bout},
                           {p + "output.LayerNorm.weight", L.ln2_w},
                           {p + "output.LayerNorm.bias", L.ln2_b}});
  }
  if (has_pooler()) {
    out.push_back({"pooler.dense.weight", pooler_w_});
    out.push_back({"pooler.dense.bias", pooler_b_});
  }
  return out;
}

NamedTensorList BertModel::hf_tensors() const {
  const int64_t H = cfg_.hidden_size;
  const std::string stem = "attention.self.qkv.";
  NamedTensorList out;
  for (auto& [name, t] : parameters()) {
    const size_t at = name.find(stem);
    if (at == std::string::npos) {
      out.push_back({name, t});
      continue;
    }
    const std::string p = name.substr(0, at) + "attention.self.";
    const std::string kind = name.substr(at + stem.size());  // weight | bias
    out.push_back({p + "query." + kind, t.narrow(0, 0, H)});
    out.push_back({p + "key." + kind, t.narrow(0, H, H)});
    out.push_back({p + "value." + kind, t.narrow(0, 2 * H, H)});
  }
  return out;
}

BertOutput BertModel::forward(const at::Tensor& input_ids, const at::Tensor& attention_mask,
                              const at::Tensor& token_type_ids, bool output_hidden_states,
                              const ForwardHooks* hooks) const {
  const ForwardHooks none;
  const ForwardHooks& t = hooks ? *hooks : none;
  const double p_hidden = t.bert_hidden_dropout, p_attention = t.bert_attention_dropout;
  if (input_ids.dim() != 2) {
    fail("input_ids: expected a [batch, length] tensor, got ", shape_str(input_ids.sizes()));
  }
  const int64_t B = input_ids.size(0), T = input_ids.size(1), H = cfg_.hidden_size;
  const int64_t nh = cfg_.num_attention_heads, d = H / nh;
  if (T == 0) fail("input_ids: empty sequence");
  if (T > cfg_.max_position_embeddings) {
    fail("input_ids: length ", T, " exceeds max_position_embeddings (",
         cfg_.max_position_embeddings, ")");
  }
  if (attention_mask.sizes() != input_ids.sizes()) {
    fail("attention_mask: expected shape ", shape_str(input_ids.sizes()), ", got ",
         shape_str(attention_mask.sizes()));
  }
  at::Tensor ids = input_ids.to(at::kCPU, at::kLong);
  if (ids.min().item<int64_t>() < 0 || ids.max().item<int64_t>() >= cfg_.vocab_size) {
    fail("input_ids: token id outside the vocabulary (size ", cfg_.vocab_size, ")");
  }
  at::Tensor types;
  if (token_type_ids.defined()) {
    if (token_type_ids.sizes() != input_ids.sizes()) {
      fail("token_type_ids: expected shape ", shape_str(input_ids.sizes()), ", got ",
           shape_str(token_type_ids.sizes()));
    }
    types = token_type_ids.to(at::kCPU, at::kLong);
    if (types.min().item<int64_t>() < 0 || types.max().item<int64_t>() >= cfg_.type_vocab_size) {
      fail("token_type_ids: value outside [0, ", cfg_.type_vocab_size, ")");
    }
    types = types.to(device_);
  } else {
    types = at::zeros({B, T}, at::TensorOptions().dtype(at::kLong).device(device_));
  }
  ids = ids.to(device_);
  at::Tensor positions = at::arange(T, at::TensorOptions().dtype(at::kLong).device(device_));
  at::Tensor h = at::embedding(word_, ids) + at::embedding(type_, types) +
                 at::embedding(pos_, positions).unsqueeze(0);
  const double eps = cfg_.layer_norm_eps;
  h = t.apply_dropout(at::layer_norm(h, {H}, emb_ln_w_, emb_ln_b_, eps), p_hidden);
  BertOutput out;
  if (output_hidden_states) out.hidden_states.push_back(h);
  // Additive mask over keys: 0 for tokens, the lowest float for padding.
  at::Tensor mask = attention_mask.to(device_, at::kFloat);
  at::Tensor bias = ((1.0 - mask) * std::numeric_limits<float>::lowest()).view({B, 1, 1, T});
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (const Layer& L : layers_) {
    at::Tensor qkv = dense(h, L.wqkv, L.bqkv);
    at::Tensor q = qkv.narrow(-1, 0, H).view({B, T, nh, d}).transpose(1, 2);
    at::Tensor k = qkv.narrow(-1, H, H).view({B, T, nh, d}).transpose(1, 2);
    at::Tensor v = qkv.narrow(-1, 2 * H, H).view({B, T, nh, d}).transpose(1, 2);
    at::Tensor scores = at::matmul(q, k.transpose(-1, -2)).mul_(scale) + bias;
    at::Tensor probs = t.apply_dropout(at::softmax(scores, -1), p_attention);
    at::Tensor ctx = at::matmul(probs, v).transpose(1, 2).reshape({B, T, H});
    h = at::layer_norm(t.apply_dropout(dense(ctx, L.wo, L.bo), p_hidden) + h, {H}, L.ln1_w, L.ln1_b,
                       eps);
    at::Tensor inter = at::gelu(dense(h, L.wi, L.bi));  // exact erf GELU
    h = at::layer_norm(t.apply_dropout(dense(inter, L.wout, L.bout), p_hidden) + h, {H}, L.ln2_w,
                       L.ln2_b, eps);
    if (output_hidden_states) out.hidden_states.push_back(h);
  }
  out.last_hidden_state = h;
  if (has_pooler()) out.pooler_output = at::tanh(dense(h.select(1, 0), pooler_w_, pooler_b_));
  return out;
}

at::Tensor BertModel::cls_pool(const at::Tensor& last_hidden_state) {
  return last_hidden_state.select(1, 0);
}

at::Tensor BertModel::mean_pool(const at::Tensor& last_hidden_state,
                                const at::Tensor& attention_mask) {
  at::Tensor m = attention_mask.to(last_hidden_state.device(), at::kFloat).unsqueeze(-1);
  return (last_hidden_state * m).sum(1) / m.sum(1).clamp_min(1e-9);
}

}  // namespace cocom::model
