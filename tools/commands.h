// The `cocom` subcommands. Each returns the process exit code and throws cocom::Error on
// failure (main() prints it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tools/cli_util.h"

namespace cocom::cli {

struct InfoArgs {
  std::string model;
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
  std::string fixtures, out, parts = "tokenizer,mistral,bert";
};
int cmd_conformance(const GlobalOptions& g, const ConformanceArgs& a);

}  // namespace cocom::cli
