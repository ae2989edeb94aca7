// Random-weight COCOM / COCOM-light checkpoints in the published layout (tests, benchmarks).
#include <torch/serialize.h>

#include <filesystem>

#include "common/error.h"
#include "common/json_util.h"
#include "model/checkpoint_io.h"
#include "model/cocom.h"
#include "model/weights.h"

namespace fs = std::filesystem;

namespace cocom::model {

namespace {
void make_dir(const std::string& d) {
  std::error_code ec;
  fs::create_directories(d, ec);
  if (ec) fail_io(d, ": cannot create directory (", ec.message(), ")");
}
}  // namespace

int64_t write_random_cocom(const Json& spec, const std::string& spec_path, bool light,
                           const std::string& out, uint64_t seed, DType dtype) {
  CocomConfig cc = CocomConfig::from_json(
      [&] {
        Json j = spec;
        j["decoder_model_name"] = "base_decoder";
        j["compr_model_name"] = light ? Json("base_compressor") : Json(nullptr);
        j.erase("decoder");
        j.erase("compressor");
        j.erase("decoder_tokenizer");
        j.erase("compressor_tokenizer");
        return j;
      }(),
      spec_path);
  if (!spec.contains("decoder"))
    fail(spec_path, ": missing object 'decoder' (the decoder's config)");
  Json dj = spec["decoder"];
  if (!dj.contains("model_type")) dj["model_type"] = "mistral";
  DecoderConfig dcfg = DecoderConfig::from_json(dj, spec_path + " (decoder)");
  const std::string dec_tok = json_string_or(spec, "decoder_tokenizer", "", spec_path);
  if (dec_tok.empty()) {
    fail(spec_path, ": field 'decoder_tokenizer' must name a directory with tokenizer.model ",
         "(COCOM checkpoints are used with their base decoder's tokenizer)");
  }
  auto tok = load_tokenizer(dec_tok);
  if (tok->size() != dcfg.vocab_size) {
    fail(spec_path, ": decoder vocab_size ", dcfg.vocab_size, " but the tokenizer in ", dec_tok,
         " has ", tok->size(), " tokens");
  }
  make_dir(out);
  const std::string base_dec = join_path(out, "base_decoder");
  make_dir(base_dec);
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                        "added_tokens.json", "generation_config.json"}) {
    if (file_exists(join_path(dec_tok, f))) {
      fs::copy_file(join_path(dec_tok, f), join_path(base_dec, f),
                    fs::copy_options::overwrite_existing);
    }
  }
  Json dout = dcfg.to_json();
  dout["torch_dtype"] = "bfloat16";
  write_json_file(join_path(base_dec, "config.json"), dout);

  // The decoder with its embeddings resized by the four COCOM tokens, LoRA in PEFT layout.
  DecoderConfig resized = dcfg;
  resized.vocab_size += static_cast<int64_t>(format::kSpecialTokens.size());
  // Tensors are made and written one at a time (a Mistral-7B-shaped checkpoint is 14.5 GB in
  // bf16), in the order the random generator has always been drawn in.
  RandomWeights rnd(seed);
  std::vector<LazyTensor> tensors;
  int64_t params = 0;
  auto add = [&](const std::string& name, const std::vector<int64_t>& shape,
                 const std::string& draw_name) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    params += n;
    tensors.push_back(
        {name, shape, [&rnd, draw_name, shape] { return rnd.get(draw_name, shape, c10::kCPU); }});
  };
  const std::string dp = "decoder.base_model.model.";
  const int64_t r = cc.lora_r;
  for (const auto& [name, shape] : decoder_tensor_specs(resized)) {
    const bool lora_target = cc.lora && name.find("layers.") != std::string::npos &&
                             (name.find("_proj.weight") != std::string::npos);
    if (lora_target) {
      const std::string stem = dp + name.substr(0, name.size() - 7);  // drop ".weight"
      add(stem + ".base_layer.weight", shape, name);
      add(stem + ".lora_A.default.weight", {r, shape[1]}, stem + ".lora_A");
      add(stem + ".lora_B.default.weight", {shape[0], r}, stem + ".lora_B");
    } else {
      add(dp + name, shape, name);
    }
  }
  if (light) {
    if (!spec.contains("compressor"))
      fail(spec_path, ": missing object 'compressor' (BERT config)");
    Json bj = spec["compressor"];
    if (!bj.contains("model_type")) bj["model_type"] = "bert";
    BertConfig bcfg = BertConfig::from_json(bj, spec_path + " (compressor)");
    const std::string comp_tok = json_string_or(spec, "compressor_tokenizer", "", spec_path);
    if (comp_tok.empty())
      fail(spec_path, ": field 'compressor_tokenizer' must name a directory with vocab.txt");
    const std::string base_comp = join_path(out, "base_compressor");
    make_dir(base_comp);
    for (const char* f : {"vocab.txt", "tokenizer_config.json", "special_tokens_map.json"}) {
      if (file_exists(join_path(comp_tok, f))) {
        fs::copy_file(join_path(comp_tok, f), join_path(base_comp, f),
                      fs::copy_options::overwrite_existing);
      }
    }
    write_json_file(join_path(base_comp, "config.json"), bcfg.to_json());
    for (const auto& [name, shape] : bert_tensor_specs(bcfg)) {
      add("compr.model." + name, shape, name);
    }
    const int64_t in =
        cc.compr_linear_type == "concat" ? cc.compr_rate * bcfg.hidden_size : bcfg.hidden_size;
    add("compr.linear.weight", {dcfg.hidden_size, in}, "compr.linear.weight");
    add("compr.linear.bias", {dcfg.hidden_size}, "compr.linear.bias");
  }
  write_streaming(join_path(out, "model.safetensors"), tensors, dtype);
  Json cj = cc.to_json();
  cj["torch_dtype"] = dtype == DType::F32   ? "float32"
                      : dtype == DType::F16 ? "float16"
                                            : "bfloat16";
  write_json_file(join_path(out, "config.json"), cj);
  return params;
}

void write_pisco_files(
    const std::string& out, const CocomConfig& cfg,
    const std::map<std::string, at::Tensor>& first_last,
    const std::map<std::string, std::map<std::string, StoredLoraAdapter>>& adapters, DType dtype) {
  const at::ScalarType st = dtype == DType::F32   ? at::kFloat
                            : dtype == DType::F16 ? at::kHalf
                                                  : at::kBFloat16;
  auto save = [&](const std::string& path, const c10::IValue& v) {
    const std::vector<char> bytes = torch::pickle_save(v);
    write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
  };
  c10::Dict<std::string, at::Tensor> fl;
  for (const auto& [name, t] : first_last)
    fl.insert(name, t.detach().to(at::kCPU, st).contiguous());
  save(join_path(out, "decoder_first_last_layers.pth"), fl);
  c10::Dict<std::string, c10::Dict<std::string, at::Tensor>> ads;
  for (const auto& [adapter, modules] : adapters) {
    c10::Dict<std::string, at::Tensor> keys;
    for (const auto& [stem, ad] : modules) {
      keys.insert(stem + ".lora_A.weight", ad.a.detach().to(at::kCPU, st).contiguous());
      keys.insert(stem + ".lora_B.weight", ad.b.detach().to(at::kCPU, st).contiguous());
    }
    ads.insert(adapter, keys);
  }
  save(join_path(out, "adapters.pth"), ads);
  Json cj = cfg.to_json();
  cj["torch_dtype"] = dtype == DType::F32   ? "float32"
                      : dtype == DType::F16 ? "float16"
                                            : "bfloat16";
  write_json_file(join_path(out, "config.json"), cj);
}

int64_t write_random_pisco(const Json& spec, const std::string& spec_path, const std::string& out,
                           uint64_t seed, DType dtype) {
  CocomConfig cc;
  cc.decoder_model_name = "base_decoder";
  cc.compr_rate = json_int_or(spec, "compr_rate", 16, spec_path);
  cc.doc_max_length = json_int_or(spec, "doc_max_length", 128, spec_path);
  cc.lora_r = json_int_or(spec, "lora_r", 16, spec_path);
  cc.pisco = true;
  cc.sep = true;
  cc.lora = true;
  cc.training_form = "both_separately";
  if (cc.compr_rate < 1 || cc.doc_max_length < cc.compr_rate) {
    fail(spec_path, ": doc_max_length (", cc.doc_max_length, ") must be at least compr_rate (",
         cc.compr_rate, ")");
  }
  if (cc.lora_r < 1) fail(spec_path, ": lora_r must be positive");
  const bool two = json_bool_or(spec, "encoder_adapter", true, spec_path);
  if (!spec.contains("decoder"))
    fail(spec_path, ": missing object 'decoder' (the decoder's config)");
  Json dj = spec["decoder"];
  if (!dj.contains("model_type")) dj["model_type"] = "mistral";
  const DecoderConfig dcfg = DecoderConfig::from_json(dj, spec_path + " (decoder)");
  const std::string dec_tok = json_string_or(spec, "decoder_tokenizer", "", spec_path);
  if (dec_tok.empty()) {
    fail(spec_path, ": field 'decoder_tokenizer' must name a directory with tokenizer.model");
  }
  if (load_tokenizer(dec_tok)->size() != dcfg.vocab_size) {
    fail(spec_path, ": decoder vocab_size ", dcfg.vocab_size, " but the tokenizer in ", dec_tok,
         " has a different size");
  }
  make_dir(out);
  const std::string base_dec = join_path(out, "base_decoder");
  make_dir(base_dec);
  for (const char* f : {"tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                        "generation_config.json"}) {
    if (file_exists(join_path(dec_tok, f))) {
      fs::copy_file(join_path(dec_tok, f), join_path(base_dec, f),
                    fs::copy_options::overwrite_existing);
    }
  }
  int64_t params = write_random_decoder(dcfg, base_dec, seed, dtype);

  RandomWeights rnd(seed + 1);
  // The vocabulary resized by n memory tokens, <AE>, <ENC> and <SEP>.
  const int64_t rows = dcfg.vocab_size + cc.doc_max_length / cc.compr_rate + 3;
  std::map<std::string, at::Tensor> first_last;
  for (const char* name : {"model.embed_tokens.weight", "lm_head.weight"}) {
    first_last[name] = rnd.get(name, {rows, dcfg.hidden_size}, c10::kCPU);
    params += rows * dcfg.hidden_size;
  }
  const int64_t H = dcfg.hidden_size, I = dcfg.intermediate_size;
  const int64_t nq = dcfg.num_attention_heads * dcfg.head_dim;
  const int64_t nkv = dcfg.num_key_value_heads * dcfg.head_dim;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{nq, H}, {nkv, H}, {nkv, H}, {H, nq},
                                                           {I, H},  {I, H},   {H, I}};
  std::map<std::string, std::map<std::string, StoredLoraAdapter>> adapters;
  for (const std::string adapter : {"decoder_adapter", "encoder_adapter"}) {
    if (!two && adapter == "encoder_adapter") continue;
    for (int64_t l = 0; l < dcfg.num_hidden_layers; ++l) {
      for (int s = 0; s < kLoraSlots; ++s) {
        const auto [o, i] = shapes[size_t(s)];
        const std::string stem = "model.layers." + std::to_string(l) + "." + lora_module_name(s);
        StoredLoraAdapter& ad = adapters[adapter][stem];
        ad.a = rnd.get(adapter + stem + ".A", {cc.lora_r, i}, c10::kCPU);
        ad.b = rnd.get(adapter + stem + ".B", {o, cc.lora_r}, c10::kCPU);
        params += cc.lora_r * (i + o);
      }
    }
  }
  write_pisco_files(out, cc, first_last, adapters, dtype);
  return params;
}

}  // namespace cocom::model
