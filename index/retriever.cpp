// Retriever: a sentence-transformers BERT model (Transformer -> Pooling [-> Normalize]).
//
// Configuration, as sentence-transformers reads it:
// - modules.json (a list of {idx, name, path, type}): a "sentence_transformers.models.Pooling"
//   entry names the pooling directory (usually "1_Pooling"), whose config.json selects CLS
//   (pooling_mode_cls_token) or mean (pooling_mode_mean_tokens) pooling; a
//   "sentence_transformers.models.Normalize" entry turns on L2 normalisation. Other pooling
//   modes, several modes at once and other module types (Dense, ...) are rejected.
// - Without modules.json the model is treated as bge-style: CLS pooling, normalised.
// - sentence_bert_config.json's max_seq_length, when present, also caps the truncation length.
#include "index/retriever.h"

#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "common/error.h"
#include "common/hash.h"
#include "common/json_util.h"

namespace cocom::index {

namespace {

constexpr const char* kPoolingType = "sentence_transformers.models.Pooling";
constexpr const char* kNormalizeType = "sentence_transformers.models.Normalize";
constexpr const char* kTransformerType = "sentence_transformers.models.Transformer";

struct PoolingSettings {
  Pooling pooling = Pooling::Cls;
  bool normalize = true;
};

PoolingSettings read_pooling_config(const std::string& path, int64_t hidden) {
  if (!file_exists(path)) fail(path, ": missing (named by modules.json's Pooling module)");
  Json j = read_json_file(path);
  if (!j.is_object()) fail(path, ": must be a JSON object");
  bool cls = json_bool_or(j, "pooling_mode_cls_token", false, path);
  bool mean = json_bool_or(j, "pooling_mode_mean_tokens", false, path);
  for (const char* other : {"pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                            "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"}) {
    if (json_bool_or(j, other, false, path)) {
      fail(path, ": pooling mode '", other,
           "' is not supported (only pooling_mode_cls_token or pooling_mode_mean_tokens)");
    }
  }
  if (cls && mean) {
    fail(path, ": both pooling_mode_cls_token and pooling_mode_mean_tokens are set (their ",
         "concatenation is not supported)");
  }
  if (!cls && !mean) {
    fail(path, ": no supported pooling mode set (need pooling_mode_cls_token or ",
         "pooling_mode_mean_tokens)");
  }
  if (auto dim = json_opt_int(j, "word_embedding_dimension", path); dim && *dim != hidden) {
    fail(path, ": word_embedding_dimension ", std::to_string(*dim),
         " differs from the model's hidden_size ", std::to_string(hidden));
  }
  PoolingSettings s;
  s.pooling = cls ? Pooling::Cls : Pooling::Mean;
  return s;
}

PoolingSettings read_modules(const std::string& dir, int64_t hidden) {
  PoolingSettings s;
  const std::string path = join_path(dir, "modules.json");
  if (!file_exists(path)) return s;  // bge-style default: CLS + normalize
  Json j = read_json_file(path);
  if (!j.is_array()) fail(path, ": must be a JSON list of modules");
  s.normalize = false;
  std::string pooling_dir;
  bool have_pooling = false;
  for (size_t i = 0; i < j.size(); ++i) {
    const Json& m = j[i];
    const std::string where = path + " (module " + std::to_string(i) + ")";
    if (!m.is_object()) fail(where, ": each module must be a JSON object");
    std::string type = json_string_or(m, "type", "", where);
    if (type == kPoolingType) {
      if (have_pooling) fail(path, ": more than one Pooling module");
      have_pooling = true;
      pooling_dir = json_string_or(m, "path", "1_Pooling", where);
    } else if (type == kNormalizeType) {
      s.normalize = true;
    } else if (type == kTransformerType) {
      std::string p = json_string_or(m, "path", "", where);
      if (!p.empty()) {
        fail(where, ": the Transformer module must be the model directory itself (path \"\"), ",
             "got '", p, "'");
      }
    } else {
      fail(where, ": module type '", type, "' is not supported (only Transformer, Pooling, ",
           "Normalize)");
    }
  }
  if (!have_pooling) fail(path, ": no ", kPoolingType, " module");
  if (pooling_dir.find("..") != std::string::npos ||
      (!pooling_dir.empty() && pooling_dir[0] == '/')) {
    fail(path, ": bad Pooling path '", pooling_dir, "'");
  }
  PoolingSettings p =
      read_pooling_config(join_path(join_path(dir, pooling_dir), "config.json"), hidden);
  s.pooling = p.pooling;
  return s;
}

struct Fnv {
  uint64_t h = kFnv1aOffset;
  void add(const void* p, size_t n) { h = fnv1a64(p, n, h); }
  void add(const std::string& s) {
    uint64_t n = s.size();
    add(&n, sizeof(n));  // length-prefixed, so that fields cannot run into each other
    add(s.data(), s.size());
  }
};

// What identifies a safetensors file cheaply: the first 8 bytes (header length, little-endian
// u64) and the JSON header (names, dtypes, shapes, offsets of every tensor), then the file size
// and up to 64 KiB from the start of the data and from the end of the file (so that retrained
// weights of the same shapes change the fingerprint too, without reading a large file whole).
std::string safetensors_digest_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_io(path, ": cannot open for the model fingerprint");
  unsigned char len_bytes[8];
  if (!in.read(reinterpret_cast<char*>(len_bytes), 8)) fail_corrupt(path, ": truncated safetensors file");
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i) len = (len << 8) | len_bytes[i];
  in.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(in.tellg());
  if (len > size - 8 || len > (uint64_t{100} << 20)) {
    fail(path, ": bad safetensors header length ", std::to_string(len));
  }
  std::string out(reinterpret_cast<const char*>(len_bytes), 8);
  out.resize(8 + len);
  in.seekg(8);
  if (!in.read(out.data() + 8, static_cast<std::streamsize>(len))) {
    fail_corrupt(path, ": truncated safetensors header");
  }
  out.append(reinterpret_cast<const char*>(&size), sizeof(size));
  constexpr uint64_t kSample = 64 * 1024;
  const uint64_t data_start = 8 + len, data_len = size - data_start;
  auto sample = [&](uint64_t from, uint64_t n) {
    std::string buf(n, '\0');
    in.seekg(static_cast<std::streamoff>(from));
    if (!in.read(buf.data(), static_cast<std::streamsize>(n))) fail(path, ": read error");
    out += buf;
  };
  sample(data_start, std::min(kSample, data_len));
  if (data_len > kSample)
    sample(size - std::min(kSample, data_len - kSample), std::min(kSample, data_len - kSample));
  return out;
}

std::string basename_of(std::string dir) {
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  auto slash = dir.find_last_of('/');
  return slash == std::string::npos ? dir : dir.substr(slash + 1);
}

std::string make_fingerprint(const std::string& dir, const PoolingSettings& s) {
  Fnv f;
  f.add(read_text_file(join_path(dir, "config.json")));
  f.add(std::string("pooling=") + (s.pooling == Pooling::Cls ? "cls" : "mean") +
        ";normalize=" + (s.normalize ? "1" : "0"));
  const std::string single = join_path(dir, "model.safetensors");
  const std::string sharded = join_path(dir, "model.safetensors.index.json");
  if (file_exists(single)) {
    f.add(safetensors_digest_bytes(single));
  } else if (file_exists(sharded)) {
    Json idx = read_json_file(sharded);
    f.add(idx.dump());
    std::vector<std::string> shards;
    if (idx.contains("weight_map") && idx["weight_map"].is_object()) {
      for (const auto& [name, file] : idx["weight_map"].items()) {
        (void)name;
        if (file.is_string()) shards.push_back(file.get<std::string>());
      }
    }
    std::sort(shards.begin(), shards.end());
    shards.erase(std::unique(shards.begin(), shards.end()), shards.end());
    for (const auto& s : shards) f.add(safetensors_digest_bytes(join_path(dir, s)));
  } else {
    fail(dir, ": no model.safetensors (or model.safetensors.index.json) for the fingerprint");
  }
  return basename_of(dir) + ":" + hex64(f.h);
}

}  // namespace

std::unique_ptr<Retriever> Retriever::load(const std::string& dir, const RetrieverOptions& opt) {
  if (!dir_exists(dir)) fail_not_found(dir, ": retriever model directory does not exist");
  if (opt.max_length <= 0) {
    fail("retriever ", dir, ": max_length must be positive (got ", std::to_string(opt.max_length),
         ")");
  }
  std::unique_ptr<Retriever> r(new Retriever());
  r->opt_ = opt;
  r->bert_ = model::BertModel::load(dir, opt.device);
  const int64_t hidden = r->bert_->config().hidden_size;
  PoolingSettings s = read_modules(dir, hidden);
  r->pooling_ = s.pooling;
  r->normalize_ = s.normalize;
  r->opt_.max_length = std::min(opt.max_length, r->bert_->config().max_position_embeddings);
  const std::string st_cfg = join_path(dir, "sentence_bert_config.json");
  if (file_exists(st_cfg)) {
    Json j = read_json_file(st_cfg);
    if (auto msl = json_opt_int(j, "max_seq_length", st_cfg); msl && *msl > 0) {
      r->opt_.max_length = std::min(r->opt_.max_length, *msl);
    }
  }
  r->tok_ = model::load_tokenizer(dir);
  if (r->tok_->kind() != "bert") {
    fail(dir, ": the retriever needs a BERT WordPiece tokenizer (vocab.txt), found a ",
         r->tok_->kind(), " tokenizer");
  }
  if (r->tok_->size() > r->bert_->config().vocab_size) {
    fail(dir, ": tokenizer has ", std::to_string(r->tok_->size()),
         " tokens but config.json's vocab_size is ", std::to_string(r->bert_->config().vocab_size));
  }
  r->fingerprint_ = make_fingerprint(dir, s);
  return r;
}

at::Tensor Retriever::embed(const std::vector<std::string>& texts, const std::string& prefix,
                            int64_t batch_size) const {
  if (batch_size <= 0) {
    fail("retriever: batch_size must be positive (got ", std::to_string(batch_size), ")");
  }
  const int64_t H = bert_->config().hidden_size;
  if (texts.empty()) return at::zeros({0, H}, at::kFloat);
  model::BatchEncodeOptions eo;
  eo.add_special_tokens = true;
  eo.padding_side = model::PaddingSide::Right;
  eo.pad_to_longest = true;
  eo.truncation = true;
  eo.max_length = opt_.max_length;
  std::vector<at::Tensor> parts;
  {
    c10::InferenceMode guard;
    for (size_t start = 0; start < texts.size(); start += static_cast<size_t>(batch_size)) {
      const size_t end = std::min(texts.size(), start + static_cast<size_t>(batch_size));
      std::vector<std::string> batch;
      batch.reserve(end - start);
      for (size_t i = start; i < end; ++i) batch.push_back(prefix + texts[i]);
      model::BatchEncoding enc = tok_->encode_batch(batch, eo);
      const auto B = static_cast<int64_t>(enc.input_ids.size());
      const auto T = static_cast<int64_t>(enc.input_ids.empty() ? 0 : enc.input_ids[0].size());
      at::Tensor ids = at::empty({B, T}, at::kLong);
      at::Tensor mask = at::empty({B, T}, at::kLong);
      auto ia = ids.accessor<int64_t, 2>();
      auto ma = mask.accessor<int64_t, 2>();
      for (int64_t b = 0; b < B; ++b) {
        if (static_cast<int64_t>(enc.input_ids[b].size()) != T ||
            static_cast<int64_t>(enc.attention_mask[b].size()) != T) {
          fail("retriever: tokenizer returned ragged rows");
        }
        for (int64_t t = 0; t < T; ++t) {
          ia[b][t] = enc.input_ids[b][t];
          ma[b][t] = enc.attention_mask[b][t];
        }
      }
      ids = ids.to(opt_.device);
      mask = mask.to(opt_.device);
      model::BertOutput out = bert_->forward(ids, mask, at::zeros_like(ids));
      at::Tensor pooled = pooling_ == Pooling::Cls
                              ? model::BertModel::cls_pool(out.last_hidden_state)
                              : model::BertModel::mean_pool(out.last_hidden_state, mask);
      pooled = pooled.to(at::kFloat);
      if (normalize_) {
        // As torch.nn.functional.normalize(p=2, dim=1, eps=1e-12).
        pooled = pooled / pooled.norm(2, {1}, true).clamp_min(1e-12);
      }
      parts.push_back(pooled.to(at::kCPU).contiguous());
    }
  }
  // Cloned outside inference mode, so that callers may use the result in ordinary code.
  at::Tensor all = parts.size() == 1 ? parts[0].clone() : at::cat(parts, 0);
  return all;
}

at::Tensor Retriever::embed_queries(const std::vector<std::string>& texts) const {
  return embed(texts, opt_.query_prefix, 16);
}

at::Tensor Retriever::embed_passages(const std::vector<std::string>& texts,
                                     int64_t batch_size) const {
  return embed(texts, opt_.passage_prefix, batch_size);
}

int64_t Retriever::dim() const { return bert_->config().hidden_size; }
Pooling Retriever::pooling() const { return pooling_; }
bool Retriever::normalize() const { return normalize_; }
const std::string& Retriever::fingerprint() const { return fingerprint_; }

}  // namespace cocom::index
