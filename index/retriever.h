// The dense retriever: a BERT-family sentence-embedding model in Hugging Face /
// sentence-transformers layout (bge, e5, contriever, MiniLM...). Pooling (CLS or mean) and
// normalisation follow its `modules.json` and `1_Pooling/config.json`; query and passage
// prefixes are configurable (e5: "query: " / "passage: ").
// Supported modules: Transformer (path ""), Pooling (pooling_mode_cls_token or
// pooling_mode_mean_tokens only), Normalize; anything else is an error. Without modules.json:
// CLS pooling + L2 normalisation (the bge convention). Truncation length = min(max_length,
// max_position_embeddings, sentence_bert_config.json's max_seq_length when present).
#pragma once

#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "model/bert.h"
#include "model/tokenizer.h"

namespace cocom::index {

enum class Pooling { Cls, Mean };

struct RetrieverOptions {
  std::string query_prefix;    // default: none
  std::string passage_prefix;  // default: none
  int64_t max_length = 512;    // truncation, capped by the model's positions
  c10::Device device = c10::kCPU;
};

class Retriever {
 public:
  // Throws naming the file at fault (config.json, modules.json, 1_Pooling/config.json,
  // tokenizer files, weights).
  static std::unique_ptr<Retriever> load(const std::string& dir, const RetrieverOptions& opt = {});

  // [N, dim] fp32 (L2-normalised when the model says so), in batches.
  at::Tensor embed_queries(const std::vector<std::string>& texts) const;
  at::Tensor embed_passages(const std::vector<std::string>& texts, int64_t batch_size = 16) const;
  int64_t dim() const;
  Pooling pooling() const;
  bool normalize() const;
  // Identifies the model for the store's manifest: "<dir basename>:<16 hex digits>", an
  // FNV-1a 64 over config.json's text, the pooling/normalize settings and the safetensors
  // header (first 8 + header-length bytes) plus the file size and up to 64 KiB from the start
  // of the data and from the end of the file (sharded checkpoints: the index file and each
  // shard).
  const std::string& fingerprint() const;

 private:
  Retriever() = default;
  at::Tensor embed(const std::vector<std::string>& texts, const std::string& prefix,
                   int64_t batch_size) const;
  std::unique_ptr<model::BertModel> bert_;
  std::unique_ptr<model::Tokenizer> tok_;
  RetrieverOptions opt_;
  Pooling pooling_ = Pooling::Cls;
  bool normalize_ = true;
  std::string fingerprint_;
};

}  // namespace cocom::index
