#include "model/cocom.h"

#include <dirent.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "common/error.h"
#include "common/json_util.h"
#include "common/log.h"
#include "model/checkpoint_io.h"

namespace cocom::model {

CocomConfig CocomConfig::from_json(const Json& j, const std::string& origin) {
  if (!j.is_object()) fail(origin, ": expected a JSON object at the top level");
  CocomConfig c;
  c.decoder_model_name = json_string_or(j, "decoder_model_name", "", origin);
  if (c.decoder_model_name.empty()) {
    fail(origin, ": missing field 'decoder_model_name' (is this a COCOM checkpoint?)");
  }
  if (j.contains("compr_model_name") && !j["compr_model_name"].is_null()) {
    c.compr_model_name = json_string_or(j, "compr_model_name", "", origin);
    if (c.compr_model_name->empty()) c.compr_model_name.reset();
  }
  c.compr_rate = json_int_or(j, "compr_rate", 16, origin);
  if (c.compr_rate < 1 || c.compr_rate > 4096) {
    fail(origin, ": field 'compr_rate' must be between 1 and 4096 (got ", c.compr_rate, ")");
  }
  c.compr_linear_type = json_string_or(j, "compr_linear_type", "concat", origin);
  if (c.compr_linear_type != "concat" && c.compr_linear_type != "mean") {
    fail(origin, ": field 'compr_linear_type' must be concat or mean (got '", c.compr_linear_type,
         "')");
  }
  c.generation_top_k = json_int_or(j, "generation_top_k", 5, origin);
  if (c.generation_top_k < 1) fail(origin, ": field 'generation_top_k' must be at least 1");
  c.sep = json_bool_or(j, "sep", true, origin);
  c.lora = json_bool_or(j, "lora", true, origin);
  c.lora_r = json_int_or(j, "lora_r", 16, origin);
  if (c.lora && c.lora_r < 1) fail(origin, ": field 'lora_r' must be positive");
  c.training_form = json_string_or(j, "training_form", "both", origin);
  c.quantization = json_string_or(j, "quantization", "no", origin);
  c.pisco = json_bool_or(j, "different_mem_tokens", false, origin);
  c.doc_max_length = json_int_or(j, "doc_max_length", 128, origin);
  if (c.pisco && (c.doc_max_length < c.compr_rate || c.doc_max_length > 1 << 20)) {
    fail(origin, ": field 'doc_max_length' (", c.doc_max_length, ") must be at least compr_rate (",
         c.compr_rate, ") and at most 2^20");
  }
  if (c.pisco && c.compr_model_name) {
    fail(origin, ": a PISCO checkpoint (different_mem_tokens) with a separate compressor ('",
         *c.compr_model_name, "') is not supported");
  }
  return c;
}

CocomConfig CocomConfig::load(const std::string& path) {
  return from_json(read_json_file(path), path);
}

Json CocomConfig::to_json() const {
  Json j;
  j["architectures"] = {"COCOM"};
  j["model_type"] = "COCOM";
  j["decoder_model_name"] = decoder_model_name;
  j["compr_model_name"] = compr_model_name ? Json(*compr_model_name) : Json(nullptr);
  j["compr_rate"] = compr_rate;
  j["compr_linear_type"] = compr_linear_type;
  j["generation_top_k"] = generation_top_k;
  j["sep"] = sep;
  j["lora"] = lora;
  j["lora_r"] = lora_r;
  j["training_form"] = training_form;
  j["quantization"] = quantization;
  if (pisco) {
    j["different_mem_tokens"] = true;
    j["doc_max_length"] = doc_max_length;
  }
  return j;
}

bool is_cocom_checkpoint(const std::string& dir) {
  std::string p = join_path(dir, "config.json");
  if (!file_exists(p)) return false;
  try {
    Json j = read_json_file(p);
    return j.is_object() && j.contains("decoder_model_name");
  } catch (const Error&) {
    return false;
  }
}

namespace {

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// The Hugging Face hub cache directories, in the order huggingface_hub consults them.
std::vector<std::string> hub_caches() {
  std::vector<std::string> out;
  if (const char* c = std::getenv("HF_HUB_CACHE")) out.push_back(c);
  if (const char* h = std::getenv("HF_HOME")) out.push_back(join_path(h, "hub"));
  if (const char* x = std::getenv("XDG_CACHE_HOME")) out.push_back(join_path(x, "huggingface/hub"));
  if (const char* home = std::getenv("HOME"))
    out.push_back(join_path(home, ".cache/huggingface/hub"));
  return out;
}

bool has_model_files(const std::string& dir, const std::string& kind) {
  if (!file_exists(join_path(dir, "config.json"))) return false;
  if (kind == "decoder") return file_exists(join_path(dir, "tokenizer.model"));
  return file_exists(join_path(dir, "vocab.txt"));
}

std::string describe_missing(const std::string& dir, const std::string& kind) {
  if (!dir_exists(dir)) return "no such directory";
  std::string need = kind == "decoder" ? "tokenizer.model" : "vocab.txt";
  std::string miss;
  if (!file_exists(join_path(dir, "config.json"))) miss += "config.json";
  if (!file_exists(join_path(dir, need))) miss += (miss.empty() ? "" : " and ") + need;
  return "no " + miss;
}

}  // namespace

std::string resolve_base_model_dir(const std::string& checkpoint_dir, const std::string& name,
                                   const std::string& flag_dir, const std::string& kind,
                                   const std::string& flag) {
  std::vector<std::string> tried;
  auto try_dir = [&](const std::string& d) {
    if (has_model_files(d, kind)) return true;
    tried.push_back(d + " (" + describe_missing(d, kind) + ")");
    return false;
  };
  if (!flag_dir.empty()) {
    if (try_dir(flag_dir)) return flag_dir;
    fail(flag, " ", flag_dir, ": not a usable ", kind, " directory (",
         describe_missing(flag_dir, kind), "); it needs config.json and ",
         kind == "decoder" ? "tokenizer.model" : "vocab.txt");
  }
  if (!name.empty() && name[0] != '/' && try_dir(join_path(checkpoint_dir, name))) {
    return join_path(checkpoint_dir, name);
  }
  if (!name.empty() && dir_exists(name) && try_dir(name)) return name;
  std::string cache_name = "models--" + name;
  for (size_t p = cache_name.find('/'); p != std::string::npos; p = cache_name.find('/')) {
    cache_name.replace(p, 1, "--");
  }
  for (const auto& cache : hub_caches()) {
    std::string base = join_path(cache, cache_name);
    std::string snaps = join_path(base, "snapshots");
    if (!dir_exists(snaps)) {
      tried.push_back(snaps + " (not in this cache)");
      continue;
    }
    // The snapshot that refs/main points at first, then the others.
    std::vector<std::string> order;
    std::string ref = join_path(base, "refs/main");
    if (file_exists(ref)) {
      std::string h = read_text_file(ref);
      h.erase(std::remove_if(h.begin(), h.end(),
                             [](char c) { return std::isspace(static_cast<unsigned char>(c)); }),
              h.end());
      if (!h.empty()) order.push_back(h);
    }
    for (const auto& s : list_dir(snaps)) {
      if (std::find(order.begin(), order.end(), s) == order.end()) order.push_back(s);
    }
    for (const auto& s : order) {
      if (try_dir(join_path(snaps, s))) return join_path(snaps, s);
    }
  }
  std::string list;
  for (const auto& t : tried) list += "\n  - " + t;
  fail_not_found("cannot find the ", kind, " model '", name, "' named in ",
                 join_path(checkpoint_dir, "config.json"),
                 " (it provides the tokenizer and the base config.json, which COCOM checkpoints do "
                 "not include). "
                 "Looked in:",
                 list, "\nPass ", flag, " DIR (a directory with config.json and ",
                 kind == "decoder" ? "tokenizer.model" : "vocab.txt",
                 "), or download the model into the Hugging Face cache.");
}

namespace {

// The prefix under which the decoder's `model.embed_tokens.weight` lives
// ("decoder.base_model.model." with PEFT, "decoder." without).
std::string decoder_prefix(const CheckpointFiles& files) {
  const std::string key = "model.embed_tokens.weight";
  for (const auto& n : files.names()) {
    if (n.rfind("decoder.", 0) == 0 && n.size() > key.size() &&
        n.compare(n.size() - key.size(), key.size(), key) == 0) {
      return n.substr(0, n.size() - key.size());
    }
  }
  fail(files.dir(),
       ": no decoder embedding tensor ('decoder.base_model.model.model.embed_tokens.weight' ",
       "or 'decoder.model.embed_tokens.weight'); this is not a COCOM checkpoint in the reference "
       "layout");
}

}  // namespace

void CocomModel::set_decoder_tokenizer(const std::string& dir) {
  decoder_source_ = dir;
  std::unique_ptr<Tokenizer> tok = load_tokenizer(dir);
  if (tok->kind() != "llama") {
    fail(dir, ": the decoder tokenizer must be a sentencepiece tokenizer.model");
  }
  // cfg_ is read before the tokenizer.
  const int64_t n = cfg_.doc_max_length / cfg_.compr_rate;
  tok->add_special_tokens(cfg_.pisco ? format::pisco_special_tokens(n) : format::kSpecialTokens);
  if (tok->bos_id() < 0) fail(dir, ": the decoder tokenizer has no bos token");
  tok->set_pad_token(tok->id_to_token(tok->bos_id()));
  tokens_ = cfg_.pisco ? format::Tokens::pisco(*tok, n) : format::Tokens::of(*tok, cfg_.sep);
  dec_tok_ = std::move(tok);
}

int64_t CocomModel::slots_per_passage(int64_t context_max_length) const {
  if (cfg_.pisco) return tokens_.mem_count;
  return format::slots_per_passage(context_max_length, cfg_.compr_rate);
}

namespace {

// A published PISCO checkpoint's decoder: the base model's tensors, with embed_tokens and
// lm_head replaced by those of decoder_first_last_layers and one adapter merged into the
// seven projections of every layer.
class PiscoWeights : public TensorProvider {
 public:
  PiscoWeights(WeightSource& base, std::map<std::string, at::Tensor> first_last,
               std::string first_last_path, const std::map<std::string, StoredLoraAdapter>& merge)
      : base_(base),
        first_last_(std::move(first_last)),
        first_last_path_(std::move(first_last_path)),
        merge_(merge) {
    for (const auto& [name, t] : first_last_) base_.ignore(name);
  }
  bool has(const std::string& name) const override {
    return first_last_.count(name) || base_.has(name);
  }
  at::Tensor get(const std::string& name, const std::vector<int64_t>& shape,
                 c10::Device device) override {
    auto fl = first_last_.find(name);
    if (fl != first_last_.end()) {
      if (fl->second.sizes().vec() != shape) {
        fail(first_last_path_, ": tensor '", name, "' has shape ", shape_str(fl->second.sizes()),
             " but the config and tokenizer imply ", shape_str(shape));
      }
      return fl->second.to(device);
    }
    at::Tensor w = base_.get(name, shape, c10::kCPU);
    const std::string suffix = ".weight";
    if (name.size() > suffix.size() &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      auto ad = merge_.find(name.substr(0, name.size() - suffix.size()));
      if (ad != merge_.end()) {
        const StoredLoraAdapter& a = ad->second;
        if (a.a.size(1) != w.size(1) || a.b.size(0) != w.size(0) || a.b.size(1) != a.a.size(0)) {
          fail("PISCO adapter for '", ad->first, "': lora_A ", shape_str(a.a.sizes()), ", lora_B ",
               shape_str(a.b.sizes()), " do not fit the base weight ", shape_str(w.sizes()));
        }
        w.addmm_(a.b, a.a, 1.0, a.scale);
      }
    }
    return device.is_cpu() ? w : w.to(device);
  }
  void ignore(const std::string& name) override { base_.ignore(name); }
  std::string origin() const override { return base_.origin(); }

 private:
  WeightSource& base_;
  std::map<std::string, at::Tensor> first_last_;
  std::string first_last_path_;
  const std::map<std::string, StoredLoraAdapter>& merge_;
};

// A checkpoint file as safetensors (the convenience copies) or as torch.save (published).
std::map<std::string, at::Tensor> read_pisco_file(const std::string& dir, const std::string& stem,
                                                  std::string* path) {
  const std::string st = join_path(dir, stem + ".safetensors");
  const std::string pth = join_path(dir, stem + ".pth");
  if (file_exists(st)) {
    *path = st;
    std::map<std::string, at::Tensor> out;
    for (auto& [name, t] : read_all_tensors(st)) out[name] = t;
    return out;
  }
  if (!file_exists(pth)) {
    fail_not_found(dir, ": no ", stem, ".pth (nor ", stem,
                   ".safetensors); a published PISCO checkpoint has both adapters.pth and "
                   "decoder_first_last_layers.pth");
  }
  *path = pth;
  return read_torch_save(pth);
}

// adapters.pth: {adapter name: {"model.layers.N.<module>.lora_{A,B}.weight": tensor}} ->
// adapter name -> module stem -> adapter, with scale 2 lora_r / r (lora_alpha = 2 lora_r).
std::map<std::string, std::map<std::string, StoredLoraAdapter>> group_adapters(
    const std::map<std::string, at::Tensor>& flat, const std::string& path, int64_t lora_r) {
  std::map<std::string, std::map<std::string, StoredLoraAdapter>> out;
  for (const auto& [key, t] : flat) {
    const size_t slash = key.find('/');
    if (slash == std::string::npos) {
      fail(path, ": tensor '", key, "' is not inside a named adapter ({adapter: {key: tensor}})");
    }
    const std::string adapter = key.substr(0, slash);
    std::string rest = key.substr(slash + 1);
    const std::string peft = "base_model.model.";
    if (rest.rfind(peft, 0) == 0) rest = rest.substr(peft.size());
    const size_t a = rest.find(".lora_A."), b = rest.find(".lora_B.");
    if ((a == std::string::npos) == (b == std::string::npos) || t.dim() != 2) {
      fail(path, ": '", key, "' is not a 2-D lora_A or lora_B weight");
    }
    StoredLoraAdapter& ad = out[adapter][rest.substr(0, a != std::string::npos ? a : b)];
    (a != std::string::npos ? ad.a : ad.b) = t;
  }
  for (auto& [adapter, modules] : out) {
    for (auto& [stem, ad] : modules) {
      if (!ad.a.defined() || !ad.b.defined()) {
        fail(path, ": adapter '", adapter, "' has only one of lora_A and lora_B for '", stem, "'");
      }
      ad.scale = 2.0 * static_cast<double>(lora_r) / static_cast<double>(ad.a.size(0));
    }
  }
  return out;
}

// The decoder's module stem ("model.layers.N.self_attn.q_proj") as (layer, slot).
std::pair<size_t, int> lora_slot(const std::string& stem, const std::string& path, int64_t layers) {
  const std::string p = "model.layers.";
  if (stem.rfind(p, 0) == 0) {
    const size_t dot = stem.find('.', p.size());
    const std::string num = stem.substr(p.size(), dot - p.size());
    if (dot != std::string::npos && !num.empty() &&
        num.find_first_not_of("0123456789") == std::string::npos && num.size() < 6) {
      const int64_t l = std::stoll(num);
      for (int s = 0; s < kLoraSlots && l < layers; ++s) {
        if (stem.compare(dot + 1, std::string::npos, lora_module_name(s)) == 0) {
          return {size_t(l), s};
        }
      }
    }
  }
  fail(path, ": adapter on '", stem, "', not one of the decoder's adapted projections");
}

}  // namespace

std::unique_ptr<CocomModel> CocomModel::load_pisco(const std::string& dir, CocomConfig cfg,
                                                   const CocomLoadOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<CocomModel> m(new CocomModel());
  m->dir_ = dir;
  m->cfg_ = std::move(cfg);
  if (opt.compr_rate > 0 && opt.compr_rate != m->cfg_.compr_rate) {
    fail("--compr-rate ", opt.compr_rate, ": ", dir, " is a PISCO checkpoint with ",
         m->cfg_.doc_max_length / m->cfg_.compr_rate, " memory tokens (its rate cannot change)");
  }
  const std::string base = resolve_base_model_dir(
      dir, m->cfg_.decoder_model_name, opt.decoder_tokenizer, "decoder", "--decoder-tokenizer");
  m->set_decoder_tokenizer(base);

  std::string fl_path, ad_path;
  std::map<std::string, at::Tensor> first_last =
      read_pisco_file(dir, "decoder_first_last_layers", &fl_path);
  for (const auto& [name, t] : first_last) {
    if (name != "model.embed_tokens.weight" && name != "lm_head.weight") {
      fail(fl_path, ": unexpected tensor '", name,
           "' (expected model.embed_tokens.weight and lm_head.weight)");
    }
  }
  if (!first_last.count("model.embed_tokens.weight")) {
    fail(fl_path, ": missing tensor 'model.embed_tokens.weight'");
  }
  auto adapters =
      group_adapters(read_pisco_file(dir, "adapters", &ad_path), ad_path, m->cfg_.lora_r);
  if (!adapters.count("decoder_adapter")) {
    std::string names;
    for (const auto& [name, a] : adapters) names += (names.empty() ? "" : ", ") + name;
    fail(ad_path, ": no 'decoder_adapter' (adapters: ", names.empty() ? "none" : names, ")");
  }

  DecoderConfig dcfg = DecoderConfig::load(join_path(base, "config.json"));
  const int64_t rows = first_last.at("model.embed_tokens.weight").size(0);
  if (rows != m->dec_tok_->size()) {
    fail(fl_path, ": tensor 'model.embed_tokens.weight' has ", rows, " rows but the tokenizer of ",
         base, " has ", m->dec_tok_->size(), " tokens with PISCO's ", m->tokens_.mem_count + 3,
         "; the tokenizer does not belong to this checkpoint");
  }
  dcfg.vocab_size = rows;
  auto files = CheckpointFiles::open(base);
  {
    WeightSource src(*files, "", {});
    // Training keeps the adapters apart (take_lora_adapters) instead of merging one.
    const std::map<std::string, StoredLoraAdapter> none;
    PiscoWeights pw(src, std::move(first_last), fl_path,
                    opt.keep_lora_adapters ? none : adapters.at("decoder_adapter"));
    m->decoder_ = MistralModel::from_weights(dcfg, pw, opt.device, opt.decoder_weights);
    src.check_all_used();
  }
  if (opt.keep_lora_adapters) {
    for (auto& [name, modules] : adapters) {
      for (auto& [stem, ad] : modules) {
        lora_slot(stem, ad_path, dcfg.num_hidden_layers);  // a module the forward adapts
        ad.a = ad.a.to(opt.device);
        ad.b = ad.b.to(opt.device);
      }
    }
    m->lora_adapters_ = std::move(adapters.at("decoder_adapter"));
    if (adapters.count("encoder_adapter")) {
      m->compressor_lora_adapters_ = std::move(adapters.at("encoder_adapter"));
    }
  } else if (adapters.count("encoder_adapter")) {
    // Compression runs with the encoder adapter alone: on the fly, as its contribution minus
    // the decoding adapter's (merged above), one stacked adapter per module.
    auto hooks = std::make_shared<ForwardHooks>();
    hooks->decoder_lora.resize(size_t(dcfg.num_hidden_layers));
    hooks->lora_scale = 1.0;
    std::map<std::pair<size_t, int>, std::vector<std::pair<const StoredLoraAdapter*, double>>>
        parts;
    for (const auto& [stem, ad] : adapters.at("encoder_adapter")) {
      parts[lora_slot(stem, ad_path, dcfg.num_hidden_layers)].push_back({&ad, 1.0});
    }
    for (const auto& [stem, ad] : adapters.at("decoder_adapter")) {
      parts[lora_slot(stem, ad_path, dcfg.num_hidden_layers)].push_back({&ad, -1.0});
    }
    for (const auto& [where, list] : parts) {
      std::vector<at::Tensor> as, bs;
      for (const auto& [ad, sign] : list) {
        as.push_back(ad->a);
        bs.push_back(ad->b * (sign * ad->scale));
      }
      LoraAdapter& out = hooks->decoder_lora[where.first][size_t(where.second)];
      out.a = at::cat(as, 0).to(opt.device);
      out.b = at::cat(bs, 1).to(opt.device);
    }
    m->compressor_hooks_ = hooks;
  }
  m->prompt_memory_bytes_ = opt.prompt_memory_mb << 20;
  m->load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return m;
}

std::unique_ptr<CocomModel> CocomModel::random(const RandomCocomSpec& spec) {
  auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<CocomModel> m(new CocomModel());
  m->dir_ = "(random weights)";
  m->cfg_ = spec.config;
  m->cfg_.lora = false;
  m->set_decoder_tokenizer(spec.decoder_tokenizer);
  DecoderConfig dcfg = spec.decoder;
  dcfg.vocab_size = std::max<int64_t>(dcfg.vocab_size + 4, m->dec_tok_->size());
  RandomWeights rnd(spec.seed);
  m->decoder_ = MistralModel::from_weights(dcfg, rnd, spec.device, spec.decoder_weights);
  if (spec.bert) {
    m->cfg_.compr_model_name = "bert (random weights)";
    m->compressor_source_ = spec.compressor_tokenizer;
    m->enc_tok_ = load_tokenizer(spec.compressor_tokenizer);
    BertConfig bcfg = *spec.bert;
    bcfg.vocab_size = std::max<int64_t>(bcfg.vocab_size, m->enc_tok_->size());
    RandomWeights rb(spec.seed + 1);
    m->bert_ = BertModel::from_weights(bcfg, rb, spec.device);
    const int64_t H = dcfg.hidden_size, Hb = bcfg.hidden_size;
    const int64_t in = m->cfg_.compr_linear_type == "concat" ? m->cfg_.compr_rate * Hb : Hb;
    RandomWeights rp(spec.seed + 100 + uint64_t(m->cfg_.compr_rate));
    m->proj_w_ = rp.get("compr.linear.weight", {H, in}, spec.device);
    m->proj_b_ = rp.get("compr.linear.bias", {H}, spec.device);
  } else {
    m->cfg_.compr_model_name.reset();
  }
  m->load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return m;
}

std::unique_ptr<CocomModel> CocomModel::with_rate(int64_t compr_rate, uint64_t seed) const {
  if (compr_rate < 1) fail("compression rate ", compr_rate, ": must be at least 1");
  std::unique_ptr<CocomModel> m(new CocomModel(*this));
  m->cfg_.compr_rate = compr_rate;
  if (bert_) {
    const int64_t H = decoder_->config().hidden_size, Hb = bert_->config().hidden_size;
    const int64_t in = cfg_.compr_linear_type == "concat" ? compr_rate * Hb : Hb;
    RandomWeights rp(seed + 100 + uint64_t(compr_rate));
    m->proj_w_ = rp.get("compr.linear.weight", {H, in}, proj_w_.device());
    m->proj_b_ = rp.get("compr.linear.bias", {H}, proj_w_.device());
  }
  return m;
}

std::unique_ptr<CocomModel> CocomModel::load(const std::string& dir, const CocomLoadOptions& opt) {
  auto t0 = std::chrono::steady_clock::now();
  if (opt.prompt_memory_mb < 1) {
    fail("prompt_memory_mb ", opt.prompt_memory_mb, ": must be at least 1 (MB)");
  }
  const std::string cfg_path = join_path(dir, "config.json");
  if (!dir_exists(dir)) fail_not_found("--model ", dir, ": no such directory");
  if (!file_exists(cfg_path))
    fail_not_found(dir, ": no config.json (is this a COCOM checkpoint directory?)");
  std::unique_ptr<CocomModel> m(new CocomModel());
  m->dir_ = dir;
  m->cfg_ = CocomConfig::load(cfg_path);
  if (m->cfg_.pisco) return load_pisco(dir, m->cfg_, opt);
  if (opt.compr_rate > 0 && opt.compr_rate != m->cfg_.compr_rate) {
    if (m->cfg_.light() && m->cfg_.compr_linear_type == "concat") {
      fail("--compr-rate ", opt.compr_rate, ": ", dir, " has a concat projection made for rate ",
           m->cfg_.compr_rate, " (its shape depends on the rate)");
    }
    m->cfg_.compr_rate = opt.compr_rate;
  }
  const CocomConfig& cfg = m->cfg_;

  // Decoder tokenizer: the base model's, plus the COCOM tokens, pad := bos (as the reference).
  m->set_decoder_tokenizer(resolve_base_model_dir(
      dir, cfg.decoder_model_name, opt.decoder_tokenizer, "decoder", "--decoder-tokenizer"));

  auto files = CheckpointFiles::open(dir);
  const std::string prefix = decoder_prefix(*files);
  DecoderConfig dcfg = DecoderConfig::load(join_path(m->decoder_source_, "config.json"));
  const TensorInfo& emb = files->info(prefix + "model.embed_tokens.weight");
  if (emb.shape.size() != 2) fail(files->file_of(emb.name), ": tensor '", emb.name, "' is not 2-D");
  const int64_t rows = emb.shape[0];
  if (rows != m->dec_tok_->size()) {
    fail(files->file_of(emb.name), ": tensor '", emb.name, "' has ", rows,
         " rows but the decoder tokenizer from ", m->decoder_source_, " has ", m->dec_tok_->size(),
         " tokens after adding <MEM> <AE> <ENC> <SEP>; the tokenizer does not belong to this "
         "checkpoint");
  }
  if (rows != dcfg.vocab_size) {
    log::debug("decoder vocabulary resized from {} to {} (COCOM tokens)", dcfg.vocab_size, rows);
  }
  dcfg.vocab_size = rows;
  LoraSettings lora;
  if (cfg.lora) {
    lora.r = cfg.lora_r;
    lora.alpha = 2.0 * static_cast<double>(cfg.lora_r);  // LoraConfig(lora_alpha = 2 * lora_r)
  }
  lora.merge = !opt.keep_lora_adapters;
  {
    WeightSource src(*files, prefix, lora);
    m->decoder_ = MistralModel::from_weights(dcfg, src, opt.device, opt.decoder_weights);
    src.check_all_used();
    m->lora_adapters_ = src.take_adapters();
    if (cfg.lora && src.lora_merged() == 0 && m->lora_adapters_.empty()) {
      log::warn("{}: config says lora=true but no LoRA adapters were found", cfg_path);
    }
  }

  std::vector<std::string> known_prefixes = {prefix};
  if (cfg.light()) {
    m->compressor_source_ =
        resolve_base_model_dir(dir, *cfg.compr_model_name, opt.compressor_tokenizer, "compressor",
                               "--compressor-tokenizer");
    m->enc_tok_ = load_tokenizer(m->compressor_source_);
    BertConfig bcfg = BertConfig::load(join_path(m->compressor_source_, "config.json"));
    WeightSource bsrc(*files, "compr.model.", {});
    m->bert_ = BertModel::from_weights(bcfg, bsrc, opt.device);
    bsrc.check_all_used({"embeddings.position_ids"});
    const int64_t H = dcfg.hidden_size, Hb = bcfg.hidden_size;
    const int64_t in = cfg.compr_linear_type == "concat" ? cfg.compr_rate * Hb : Hb;
    const std::string wname = "compr.linear.weight";
    if (!files->has(wname))
      fail(dir, ": missing tensor '", wname, "' (the COCOM-light projection)");
    const TensorInfo& wi = files->info(wname);
    if (wi.shape != std::vector<int64_t>{H, in}) {
      fail(files->file_of(wname), ": tensor '", wname, "' has shape ", shape_str(wi.shape),
           " but compr_rate ", cfg.compr_rate, " with compr_linear_type '", cfg.compr_linear_type,
           "' and BERT hidden size ", Hb, " needs ", shape_str(std::vector<int64_t>{H, in}));
    }
    WeightSource lsrc(*files, "compr.linear.", {});
    m->proj_w_ = lsrc.get("weight", {H, in}, opt.device);
    m->proj_b_ = lsrc.has("bias") ? lsrc.get("bias", {H}, opt.device)
                                  : at::zeros({H}, at::TensorOptions().device(opt.device));
    known_prefixes.push_back("compr.");
  }
  for (const auto& n : files->names()) {
    bool known = false;
    for (const auto& p : known_prefixes) known = known || n.rfind(p, 0) == 0;
    if (!known) {
      fail(files->file_of(n), ": unexpected tensor '", n, "'",
           cfg.light() ? "" : " (compr_model_name is null, so no compressor tensors are expected)");
    }
  }
  m->prompt_memory_bytes_ = opt.prompt_memory_mb << 20;
  m->load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return m;
}

}  // namespace cocom::model
