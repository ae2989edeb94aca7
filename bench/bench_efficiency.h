// `cocom bench efficiency`: the COCOM paper's "Measuring Efficiency" set-up on this machine.
//  - generation: what `cocom ask` does after retrieval -- k passages' stored context
//    embeddings (ceil(doc_length / r) vectors each, in the store's dtype) are decoded from
//    their records, placed in the decoder prompt, prefilled, and label_length tokens are
//    decoded greedily; rate 0 is uncompressed RAG (the decoder reads k * doc_length text
//    tokens + the question);
//  - compression: compressing batch * k passages of doc_length tokens.
// Per configuration: latency (mean, median), analytic GFLOPs, peak resident memory, context
// embedding bytes per passage and for a whole collection, speed-up over rate 0 (generation),
// and the effect of the store's dtype on answers (int8 / bf16 / fp16 vs fp32). Prints numbers;
// never fails on time.
#pragma once

#include <cstdint>
#include <string>

#include "common/json_util.h"
#include "model/config.h"
#include "model/tokenizer.h"

namespace cocom::bench {

struct EfficiencyBenchOptions {
  std::string mode = "generation,compression";  // comma list: generation, compression
  std::string rates = "0,4,16,128";             // compression rates; 0 = uncompressed RAG
  int64_t batch_size = 1;                       // questions per batch (the paper used 16)
  int64_t doc_length = 128;                     // tokens per passage
  int64_t top_k = 5;                            // passages per question
  int64_t query_length = 11;                    // question tokens (after the context slots)
  int64_t label_length = 6;                     // new tokens decoded
  int repeat = 3;                               // timed runs after one warm-up
  int64_t collection_size = 24853658;           // passages (KILT Wikipedia) for the estimate
  std::string model;                            // COCOM checkpoint; empty = random weights
  // With --model: where its tokenizers are. With a shape: the tokenizers its synthetic text
  // is read with (default: the default model's; the source tree's test BERT vocabulary).
  std::string decoder_tokenizer, compressor_tokenizer;
  std::string shape = "tinyllama";                      // tinyllama | mistral-7b
  std::string config;                                   // decoder config.json (overrides --shape)
  std::string compressor = "decoder";    // decoder | bert-base (COCOM-light), random weights
  std::string compressor_config;         // BERT config.json (overrides bert-base)
  std::string embedding_dtype = "fp16";  // the store's dtype for the timed generation runs
  // Decoder weight format: fp32 | bf16 | int8 | int8g (as Options::weights).
  std::string weights = "fp32";
  bool compare_dtypes = true;  // greedy agreement / logit error of int8, bf16, fp16 vs fp32
  uint64_t seed = 0;
  bool json = false;
  std::string device = "cpu";
};

// The synthetic text the benchmark compresses and asks: passage i of doc_length compressor
// tokens (special tokens included), and question b of query_length decoder tokens. Public for
// the test that proves the benchmark feeds the decoder exactly what the engine does.
std::string efficiency_passage(const model::Tokenizer& compressor_tokenizer, bool light,
                               int64_t doc_length, int64_t i);
std::string efficiency_question(const model::Tokenizer& decoder_tokenizer, int64_t query_length,
                                int64_t b);

// Runs the benchmark and returns its results (the object `--json` prints).
Json run_efficiency(const EfficiencyBenchOptions& opt);
// Runs it and prints a table (or the JSON); returns the exit code.
int run_efficiency_bench(const EfficiencyBenchOptions& opt);

// Analytic FLOPs (2 per multiply-add) of the matrix products of one answer, per question:
// a prefill over `prompt` tokens (logits for the last position only) and `new_tokens - 1`
// KV-cached decode steps (the first new token comes from the prefill's logits). With
// q = heads * head_dim, kv = kv_heads * head_dim, H hidden, I intermediate, V vocabulary,
// N layers:
//   linear(t)   = 2 t (H q + 2 H kv + q H + 3 H I)                per layer, t tokens
//   attention   = 4 t s q   (scores Q K^T and probabilities x V)   t queries over s keys
//   prefill(P)  = N (linear(P) + 4 P^2 q) + 2 V H
//   step j      = N (linear(1) + 4 (P + j) q) + 2 V H,    j = 1 .. new_tokens - 1
// (the engine computes the full P x P square of scores, masked, so it is counted in full).
double generation_flops(const model::DecoderConfig& c, int64_t prompt, int64_t new_tokens);
// One passage through the decoder compressor: a forward over `length` tokens without lm_head,
//   N (linear(length) + 4 length^2 q).
double decoder_compression_flops(const model::DecoderConfig& c, int64_t length);
// One passage through BERT (`length` tokens) and the COCOM-light projection of its n output
// vectors from `proj_in` to `hidden` values:
//   N (2 length (4 Hb^2 + 2 Hb Ib) + 4 length^2 Hb) + 2 n proj_in hidden.
double bert_compression_flops(const model::BertConfig& b, int64_t length, int64_t n,
                              int64_t proj_in, int64_t hidden);

}  // namespace cocom::bench
