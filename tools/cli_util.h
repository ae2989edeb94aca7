// Helpers shared by the `cocom` subcommands.
#pragma once

#include <ATen/ATen.h>
#include <signal.h>

#include <chrono>
#include <memory>
#include <string>

#include "common/json_util.h"
#include "model/bert.h"
#include "model/mistral.h"
#include "model/tokenizer.h"

namespace cocom::cli {

struct GlobalOptions {
  int threads = 0;
  std::string device = "cpu";
  bool verbose = false;
};

// Applies --threads/--device/-v; returns the device to load models on.
c10::Device setup_runtime(const GlobalOptions& g);

// A decoder or a BERT encoder, whichever config.json describes.
struct AnyModel {
  model::Arch arch = model::Arch::Decoder;
  std::unique_ptr<model::MistralModel> decoder;
  std::unique_ptr<model::BertModel> bert;
  double load_seconds = 0;
};
// `weights`: resident format of a decoder's linear layers (BERT encoders stay fp32).
AnyModel load_any_model(const std::string& dir, c10::Device device,
                        model::WeightFormat weights = model::WeightFormat::fp32);

// The tokenizer that belongs to a model directory: the directory itself, or its
// `tokenizer/` sub-directory. Throws listing both places.
std::string find_tokenizer_dir(const std::string& model_dir);

// Token-id batches given as JSON: {"input_ids": [[...]], "attention_mask": [[...]],
// "token_type_ids": [[...]], "position_ids": [[...]]}; only input_ids is required. Rows must
// have equal length; values must be integers (masks 0/1). Throws naming the file and field.
struct IdBatch {
  at::Tensor input_ids, attention_mask, token_type_ids, position_ids;  // int64 [B, T]
};
IdBatch read_id_batch(const std::string& path);

Json tensor_to_json(const at::Tensor& t);  // 2-D int64 tensor -> nested list

// A message of the public API in the command line's terms: option names such as
// Options::top_k or AskOptions::k become the flags that set them (--k), and notes that only
// make sense to a library user are dropped. Names without a flag stay as they are.
std::string cli_terms(const std::string& api_message);

// While one is alive, Ctrl-C (SIGINT) sets interrupted() instead of ending the process, so a
// command can stop cleanly (keep what was committed, end a streamed answer); the previous
// disposition comes back when it ends. Creating one clears the flag.
class SigintScope {
 public:
  SigintScope();
  ~SigintScope();
  SigintScope(const SigintScope&) = delete;
  SigintScope& operator=(const SigintScope&) = delete;
  static bool interrupted();

 private:
  struct sigaction old_ {};
};

class Stopwatch {
 public:
  Stopwatch() : t0_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace cocom::cli
