#include "model/checkpoint_io.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/float16.h"
#include "model/weights.h"

namespace cocom::model {

namespace {

void make_dirs(const std::string& dir) {
  std::string cur;
  for (size_t i = 0; i <= dir.size(); ++i) {
    if (i == dir.size() || dir[i] == '/') {
      if (!cur.empty() && !dir_exists(cur) && ::mkdir(cur.c_str(), 0755) != 0 && errno != EEXIST) {
        fail_io(dir, ": cannot create directory ", cur, " (", std::strerror(errno), ")");
      }
    }
    if (i < dir.size()) cur += dir[i];
  }
}

// Adds one tensor to the writer in the requested float dtype.
void add_tensor(SafetensorsWriter& w, const std::string& name, const at::Tensor& t0,
                DType float_dtype) {
  at::Tensor t = t0.to(at::kCPU).contiguous();
  std::vector<int64_t> shape = t.sizes().vec();
  if (at::isFloatingType(t.scalar_type())) {
    if (float_dtype == DType::F32) {
      t = t.to(at::kFloat).contiguous();
      w.add(name, DType::F32, shape, t.data_ptr(), t.numel() * 4);
    } else if (float_dtype == DType::F16) {
      t = t.to(at::kHalf).contiguous();
      w.add(name, DType::F16, shape, t.data_ptr(), t.numel() * 2);
    } else if (float_dtype == DType::BF16) {
      t = t.to(at::kFloat).contiguous();
      const float* src = t.data_ptr<float>();
      std::vector<uint16_t> out(static_cast<size_t>(t.numel()));
      for (size_t i = 0; i < out.size(); ++i) out[i] = f16::float_to_bf16(src[i]);
      w.add(name, DType::BF16, shape, out.data(), out.size() * 2);
    } else {
      fail("write_tensors: unsupported float dtype ", dtype_name(float_dtype));
    }
  } else {
    t = t.to(at::kLong).contiguous();
    w.add(name, DType::I64, shape, t.data_ptr(), t.numel() * 8);
  }
}

int64_t write_random(const TensorSpecs& specs, const std::string& dir, uint64_t seed, DType dtype,
                     Json config_json) {
  make_dirs(dir);
  RandomWeights rnd(seed);
  std::vector<LazyTensor> lazy;
  int64_t params = 0;
  for (const auto& [name, shape] : specs) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    params += n;
    lazy.push_back({name, shape, [&rnd, name = name, shape = shape] {
                      return rnd.get(name, shape, c10::kCPU);
                    }});
  }
  write_streaming(join_path(dir, "model.safetensors"), lazy, dtype);
  config_json["torch_dtype"] = dtype == DType::BF16  ? "bfloat16"
                               : dtype == DType::F16 ? "float16"
                                                     : "float32";
  write_json_file(join_path(dir, "config.json"), config_json);
  return params;
}

}  // namespace

void write_streaming(const std::string& path, const std::vector<LazyTensor>& tensors,
                     DType float_dtype, const std::map<std::string, std::string>& metadata) {
  if (float_dtype != DType::F32 && float_dtype != DType::F16 && float_dtype != DType::BF16) {
    fail("write_streaming: unsupported float dtype ", dtype_name(float_dtype));
  }
  std::vector<SafetensorsStreamWriter::Spec> specs;
  for (const LazyTensor& t : tensors) specs.push_back({t.name, float_dtype, t.shape});
  SafetensorsStreamWriter w(path, specs, metadata);
  for (const LazyTensor& lt : tensors) {
    at::Tensor t = lt.make().to(at::kCPU);
    if (!at::isFloatingType(t.scalar_type())) {
      fail(path, ": tensor '", lt.name, "' is not a float tensor");
    }
    if (t.sizes().vec() != lt.shape) {
      fail(path, ": tensor '", lt.name, "' was made with shape ", shape_str(t.sizes()),
           ", listed as ", shape_str(lt.shape));
    }
    // c10's float -> bf16 / fp16 conversions round to nearest even.
    const at::ScalarType st = float_dtype == DType::F32   ? at::kFloat
                              : float_dtype == DType::F16 ? at::kHalf
                                                          : at::kBFloat16;
    t = t.to(st).contiguous();
    w.write_next(lt.name, t.data_ptr(), t.nbytes());
  }
  w.finish();
}

void write_tensors(const std::string& path, const NamedTensors& tensors, DType float_dtype) {
  SafetensorsWriter w;
  for (const auto& [name, t] : tensors) add_tensor(w, name, t, float_dtype);
  w.write(path);
}

NamedTensors read_all_tensors(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  NamedTensors out;
  for (const auto& ti : f->tensors()) {
    at::ScalarType target = dtype_is_float(ti.dtype) ? at::kFloat : at::kLong;
    out.emplace_back(ti.name, read_tensor(*f, ti.name, target));
  }
  return out;
}

TensorSpecs decoder_tensor_specs(const DecoderConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t nq = c.num_attention_heads * c.head_dim, nkv = c.num_key_value_heads * c.head_dim;
  TensorSpecs s;
  s.push_back({"model.embed_tokens.weight", {V, H}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    s.push_back({p + "input_layernorm.weight", {H}});
    s.push_back({p + "self_attn.q_proj.weight", {nq, H}});
    s.push_back({p + "self_attn.k_proj.weight", {nkv, H}});
    s.push_back({p + "self_attn.v_proj.weight", {nkv, H}});
    if (c.attention_bias) {
      s.push_back({p + "self_attn.q_proj.bias", {nq}});
      s.push_back({p + "self_attn.k_proj.bias", {nkv}});
      s.push_back({p + "self_attn.v_proj.bias", {nkv}});
    }
    s.push_back({p + "self_attn.o_proj.weight", {H, nq}});
    s.push_back({p + "post_attention_layernorm.weight", {H}});
    s.push_back({p + "mlp.gate_proj.weight", {I, H}});
    s.push_back({p + "mlp.up_proj.weight", {I, H}});
    s.push_back({p + "mlp.down_proj.weight", {H, I}});
  }
  s.push_back({"model.norm.weight", {H}});
  if (!c.tie_word_embeddings) s.push_back({"lm_head.weight", {V, H}});
  return s;
}

TensorSpecs bert_tensor_specs(const BertConfig& c, bool with_pooler) {
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  TensorSpecs s;
  s.push_back({"embeddings.word_embeddings.weight", {c.vocab_size, H}});
  s.push_back({"embeddings.position_embeddings.weight", {c.max_position_embeddings, H}});
  s.push_back({"embeddings.token_type_embeddings.weight", {c.type_vocab_size, H}});
  s.push_back({"embeddings.LayerNorm.weight", {H}});
  s.push_back({"embeddings.LayerNorm.bias", {H}});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    for (const char* n : {"query", "key", "value"}) {
      s.push_back({p + "attention.self." + n + ".weight", {H, H}});
      s.push_back({p + "attention.self." + n + ".bias", {H}});
    }
    s.push_back({p + "attention.output.dense.weight", {H, H}});
    s.push_back({p + "attention.output.dense.bias", {H}});
    s.push_back({p + "attention.output.LayerNorm.weight", {H}});
    s.push_back({p + "attention.output.LayerNorm.bias", {H}});
    s.push_back({p + "intermediate.dense.weight", {I, H}});
    s.push_back({p + "intermediate.dense.bias", {I}});
    s.push_back({p + "output.dense.weight", {H, I}});
    s.push_back({p + "output.dense.bias", {H}});
    s.push_back({p + "output.LayerNorm.weight", {H}});
    s.push_back({p + "output.LayerNorm.bias", {H}});
  }
  if (with_pooler) {
    s.push_back({"pooler.dense.weight", {H, H}});
    s.push_back({"pooler.dense.bias", {H}});
  }
  return s;
}

int64_t write_random_decoder(const DecoderConfig& cfg, const std::string& dir, uint64_t seed,
                             DType dtype) {
  return write_random(decoder_tensor_specs(cfg), dir, seed, dtype, cfg.to_json());
}

int64_t write_random_bert(const BertConfig& cfg, const std::string& dir, uint64_t seed,
                          DType dtype) {
  return write_random(bert_tensor_specs(cfg), dir, seed, dtype, cfg.to_json());
}

}  // namespace cocom::model
