// The `cocom` subcommands. Each returns the process exit code and throws cocom::Error on
// failure (main() prints it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cocom/cocom.h"
#include "model/safetensors.h"
#include "tools/cli_util.h"

namespace CLI {
class App;
}  // namespace CLI

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

// --weights fp32|bf16|int8|int8g: resident format of a decoder's linear layers (model/quant.h).
model::WeightFormat weight_format_option(const std::string& value);
// The same flags for the public API (cmd_store.cpp); both throw naming the flag.
cocom::WeightFormat weights_flag(const std::string& value);
cocom::EmbeddingDType embedding_dtype_flag(const std::string& value);

struct CompleteArgs {
  std::string model, in, out, prompt, tokenizer;
  std::string weights = "fp32";  // --weights
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
  // Named shapes instead of --config (tinyllama, mistral-7b, bert-base) and their options.
  std::string shape, tokenizer, compressor_tokenizer;
  int64_t compr_rate = 16;
  int64_t vocab_size = 0;  // 0 = the shape's
  bool sep = true;
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
      compressor_tokenizer, query_prefix, passage_prefix, language;
  std::string weights = "fp32";  // --weights (ingest): resident format of the decoder compressor
};
struct IngestArgs {
  StoreArgs store;
  std::vector<std::string> paths, include, exclude;
  int64_t overlap = -1;  // -1: unset (the store's, or 0 for a new store)
  int64_t passages_per_batch = 256;
  int64_t max_file_mb = 256, max_nesting_depth = 256, max_unpacked_mb = 256;
  bool json = false;
  bool progress_lines = false;  // one progress line per document, even when stderr is no terminal
  std::string shard;            // --shard I/N (with --export-sst)
  std::string export_sst;       // --export-sst DIR
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
// cocom store import --db DIR SHARD_DIR...
struct ImportArgs {
  std::string db;
  std::vector<std::string> shards;
  bool json = false;
};
int cmd_store_import(const GlobalOptions& g, const ImportArgs& a);

// cocom ask: built on the public API (include/cocom/cocom.h).
struct AskArgs {
  std::string db, model, retriever, decoder_tokenizer, compressor_tokenizer, query_prefix, mode;
  std::string question;
  int64_t k = 5;
  int64_t max_new_tokens = 64;
  double temperature = 0;
  double top_p = 1.0;
  int64_t top_k = 0;
  uint64_t seed = 0;
  int64_t prompt_memory_mb = 8192;
  bool json = false;
  bool no_compress = false;
  bool read_only = false;        // --read-only: a replica (Options::read_only)
  std::string weights = "fp32";  // --weights: decoder resident format
};
int cmd_ask(const GlobalOptions& g, const AskArgs& a);

// Engine::Open for commands that only read (search, info, ask, console): when another
// process holds the store's lock (an ingestion), opens it read-only instead and says so on
// stderr.
Status open_for_reading(Options o, std::unique_ptr<Engine>* engine);

struct GenerateArgs {
  std::string model, in, out, dump_dir, decoder_tokenizer, compressor_tokenizer;
  std::string weights = "fp32";  // --weights: decoder resident format
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

// `cocom console`: interactive QA over a store (public API only; tools/cmd_console.cpp).
struct ConsoleArgs {
  std::string db, model, retriever, decoder_tokenizer, compressor_tokenizer;
  std::string mode;  // dense, bm25, hybrid; empty = auto
  int64_t k = 5;
  int64_t max_new_tokens = 64;
  int64_t prompt_memory_mb = 8192;
  bool no_compress = false;
  bool read_only = false;        // --read-only: a replica (Options::read_only)
  std::string weights = "fp32";  // --weights: decoder resident format
};
int cmd_console(const GlobalOptions& g, const ConsoleArgs& a);

// `cocom train pretrain|finetune` (tools/cmd_train.cpp): adds the subcommands to `app`; their
// callbacks set `rc`.
void add_train_commands(CLI::App& app, const GlobalOptions& g, int& rc);

// `cocom eval --task reconstruction|qa` (tools/cmd_eval.cpp): adds the subcommand to `app`;
// its callback sets `rc`.
void add_eval_command(CLI::App& app, const GlobalOptions& g, int& rc);

struct ServeArgs {
  std::vector<std::string> dbs;  // NAME=DIR
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_keys;
  int max_queue = 64, max_batch = 8, max_jobs = 16, max_body_mb = 64, k = 5;
  std::string weights = "fp32";
  std::string decoder_tokenizer, compressor_tokenizer;
  double grace = 5;
  int64_t prompt_memory_mb = 8192;
  bool no_web = false;
  bool read_only = false;  // --read-only: replicas (Options::read_only)
};
int cmd_serve(const GlobalOptions& g, const ServeArgs& a);
void add_serve_command(CLI::App& app, const GlobalOptions& g, ServeArgs& a, int& rc);
void add_bench_serve_command(CLI::App& bench, const GlobalOptions& g, int& rc);

}  // namespace cocom::cli
