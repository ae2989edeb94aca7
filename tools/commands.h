// The `cocom` subcommands. Each returns the process exit code and throws cocom::Error on
// failure (main() prints it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/safetensors.h"
#include "tools/cli_util.h"

namespace cocom::cli {

struct InfoArgs {
  std::string model, decoder_tokenizer, compressor_tokenizer;
  bool json = false;
};
int cmd_info(const GlobalOptions& g, const InfoArgs& a);

struct TokenizeArgs {
  std::string tokenizer;
  std::string text;
  bool json = false;
  bool no_special = false;
};
int cmd_tokenize(const GlobalOptions& g, const TokenizeArgs& a);

struct ForwardArgs {
  std::string model, in, out;
  bool hidden_states = false;
};
int cmd_forward(const GlobalOptions& g, const ForwardArgs& a);

struct CompleteArgs {
  std::string model, in, out, prompt, tokenizer;
  int64_t max_new_tokens = 32;
  double temperature = 0;
  double top_p = 1.0;
  int64_t top_k = 0;
  uint64_t seed = 0;
};
int cmd_complete(const GlobalOptions& g, const CompleteArgs& a);

struct InitArgs {
  std::string arch, config, out, dtype = "bf16";
  uint64_t seed = 0;
};
int cmd_model_init(const GlobalOptions& g, const InitArgs& a);

struct ConformanceArgs {
  std::string fixtures, out, parts = "tokenizer,mistral,bert,cocom,cocom-light";
};
int cmd_conformance(const GlobalOptions& g, const ConformanceArgs& a);
// The COCOM parts (cocom, cocom-light) of conformance.
void run_cocom_conformance(const GlobalOptions& g, const std::string& fixtures,
                           const std::string& part, const std::string& out_dir);

// Options shared by the store commands.
struct StoreArgs {
  std::string db, model, retriever, index_factory, embedding_dtype, decoder_tokenizer,
      compressor_tokenizer, query_prefix, passage_prefix;
};
struct IngestArgs {
  StoreArgs store;
  std::vector<std::string> paths, include, exclude;
  int64_t overlap = 0;
  bool json = false;
  bool progress_lines = false;  // one progress line per document, even when stderr is no terminal
};
int cmd_ingest(const GlobalOptions& g, const IngestArgs& a);
struct SearchArgs {
  StoreArgs store;
  std::string query, mode;  // empty: hybrid with a retriever, else bm25
  int64_t k = 5;
  bool json = false;
};
int cmd_search(const GlobalOptions& g, const SearchArgs& a);
struct RmArgs {
  StoreArgs store;
  std::vector<std::string> targets;
};
int cmd_rm(const GlobalOptions& g, const RmArgs& a);
int cmd_store_info(const GlobalOptions& g, const StoreArgs& a, bool json);

struct GenerateArgs {
  std::string model, in, out, dump_dir, decoder_tokenizer, compressor_tokenizer;
  int64_t batch_size = 1;
  int64_t max_new_tokens = 32;
  int64_t context_max_length = 128;
  bool no_compress = false;
};
int cmd_generate(const GlobalOptions& g, const GenerateArgs& a);

struct CompressArgs {
  std::string model, in, out, decoder_tokenizer, compressor_tokenizer;
  int64_t batch_size = 8;
  int64_t context_max_length = 128;
};
int cmd_compress(const GlobalOptions& g, const CompressArgs& a);


}  // namespace cocom::cli
