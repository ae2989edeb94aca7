// The COCOM answer path, the one home of the decoder side of the format: the decoder prompt
// with <MEM> slots, replacement of the slots by the passages' embeddings, the uncompressed,
// closed-book and auto-encoding prompts, and the one answer loop (prefill, decode, stop,
// stream, cancel) that the engine, Model::Generate, `cocom generate`, eval/ and
// `bench efficiency` all run.
//   prompt = '<s>' + ('<MEM>' * n [+ '<SEP>']) * k + '[INST]' + question + '\n[/INST]\n'
// The compressor side (slot count, compressor inputs, compress()) is compress/compressor.h.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <string>
#include <vector>

#include "compress/compressor.h"
#include "model/cocom.h"
#include "model/generation.h"

namespace cocom::generate {

struct DecoderInputs {
  at::Tensor input_ids;       // [Q, L] left padded with <s>
  at::Tensor attention_mask;  // [Q, L]
  std::vector<std::string> prompts;
};

// Tokenizes in->prompts (no special tokens added, left padding with <s>) into
// in->input_ids / in->attention_mask.
void encode_prompts(const model::CocomModel& m, DecoderInputs* in);

// Throws for an empty question list or an empty question.
DecoderInputs decoder_prompts(const model::CocomModel& m, const std::vector<std::string>& questions,
                              int64_t passages_per_question, int64_t mem_per_passage);

// Token embeddings of the prompts with the <MEM> slots of question i replaced, in order, by
// the rows of compressed[i * k + j] (j = 0..k-1); <SEP> rows keep their token embedding.
at::Tensor embed_with_contexts(const model::CocomModel& m, const DecoderInputs& in,
                               const at::Tensor& compressed, int64_t passages_per_question);

struct Answers {
  model::GenerationResult generation;  // tokens [Q, T'] (new tokens only), timings
  std::vector<std::string> texts;      // decoded, special tokens skipped
};

Answers generate_answers(const model::CocomModel& m, const at::Tensor& inputs_embeds,
                         const at::Tensor& attention_mask, const model::SamplingOptions& opt,
                         const model::TokenCallback& on_token = nullptr);

// The uncompressed baseline prompt: the same decoder reads the passages' text.
std::string uncompressed_prompt(const model::CocomModel& m,
                                const std::vector<std::string>& passages,
                                const std::string& question);

// The closed-book baseline prompt: the compressed prompt without passages,
// '<s>[INST]' + question + '\n[/INST]\n'.
std::string closed_book_prompt(const model::CocomModel& m, const std::string& question);

// The auto-encoding (reconstruction) prompt: the training row '<AE><s>' + '<MEM>' * n +
// passage + '</s>' without the passage, so the decoder regenerates the compressed passage
// after it (stopping at '</s>'); one passage's embeddings replace the slots.
std::string autoencoding_prompt(const model::CocomModel& m, int64_t mem_per_passage);

// ---------------------------------------------------------------------------------------------
// The prompt budget
//
// A prompt must fit the decoder's positions (max_position_embeddings; the answer may run past
// them, as with the reference, whose RoPE extends) and the memory the generation may take
// (CocomModel::prompt_memory_bytes(), from CocomLoadOptions::prompt_memory_mb): the prefill holds
// every head's attention scores and probabilities (quadratic in the prompt length), the key/value
// cache grows to prompt + new tokens, and each layer's activations are linear in the prompt. A
// prompt over either limit is refused before anything is computed (Error, kInvalidArgument), naming
// both limits and sizes.

// Estimated peak bytes of generating `max_new_tokens` after `batch` prompts of `prompt_tokens`.
double generation_bytes(const model::CocomModel& m, int64_t batch, int64_t prompt_tokens,
                        int64_t max_new_tokens);

// The longest prompt, in tokens, that `batch` questions may each have with `max_new_tokens`
// to generate (0 when even one token does not fit).
int64_t max_prompt_tokens(const model::CocomModel& m, int64_t max_new_tokens, int64_t batch = 1);

// Throws (kInvalidArgument) when `batch` prompts of `prompt_tokens` do not fit; the message
// starts with `what` and names the limit that was hit.
void check_prompt_budget(const model::CocomModel& m, int64_t batch, int64_t prompt_tokens,
                         int64_t max_new_tokens, const std::string& what = "generate");

// Tokens of the compressed prompt for `question` with k passages of n slots each (computed
// from the one-passage prompt: every further passage adds its n slots and the separator).
int64_t qa_prompt_tokens(const model::CocomModel& m, const std::string& question, int64_t k,
                         int64_t n);

// The most passages of n slots that fit beside `question` (0 when not even one does).
int64_t max_passages(const model::CocomModel& m, const std::string& question, int64_t n,
                     int64_t max_new_tokens);

// ---------------------------------------------------------------------------------------------
// One question

struct AnswerRequest {
  std::string question;
  // The compressed answer: the k passages' context embeddings [k, n, H] (any float dtype or
  // device). When undefined, the decoder reads `passages` as text instead (the uncompressed
  // baseline), or nothing at all when `passages` is empty too (closed book).
  at::Tensor contexts;
  std::vector<std::string> passages;
  model::SamplingOptions sampling;
  // Streaming: receives each new piece of the answer (never a split UTF-8 character); return
  // false to stop the generation (the result is then marked cancelled).
  std::function<bool(const std::string& piece)> on_text;
};

struct AnswerResult {
  std::string text;
  bool cancelled = false;
  model::GenerationResult generation;  // tokens, prompt length, prefill and decode times
  double assembly_seconds = 0;         // prompt tokenization and slot replacement
};

AnswerResult answer(const model::CocomModel& m, const AnswerRequest& request);

// What answer() feeds the decoder: the prompt assembled and embedded ([1, L, H] with the
// passages' embeddings in their slots), its mask, and the sampling options with the
// tokenizer's end-of-sequence id filled in. generate/batcher.h decodes these too.
struct PreparedAnswer {
  at::Tensor embeds, attention_mask;
  model::SamplingOptions sampling;
  double assembly_seconds = 0;
};
PreparedAnswer prepare_answer(const model::CocomModel& m, const AnswerRequest& request);
// The compressed answer from k passages' embeddings [k, n, H], without streaming.
AnswerResult answer(const model::CocomModel& m, const std::string& question,
                    const at::Tensor& contexts, const model::SamplingOptions& sampling);

// ---------------------------------------------------------------------------------------------
// Batches of questions with the reference's semantics (cocom generate, eval, conformance)

struct TextGeneration {
  compress::EncoderInputs encoder;  // empty for the uncompressed baseline
  at::Tensor compressed;            // [Q * k, n, H]
  DecoderInputs decoder;
  at::Tensor decoder_embeds;  // [Q, L, H] after <MEM> replacement
  Answers answers;
  double compress_seconds = 0;
};

struct TextGenerationOptions {
  model::SamplingOptions sampling;
  int64_t context_max_length = 128;  // the published models were trained with 128
};

// contexts[q] are the passages of question q; every question needs the same number of them.
// All passages of the batch are compressed together, padded to the longest (the reference).
TextGeneration generate_from_text(const model::CocomModel& m,
                                  const std::vector<std::vector<std::string>>& contexts,
                                  const std::vector<std::string>& questions,
                                  const TextGenerationOptions& opt);

// The standard RAG baseline: the passages' text in the prompt, no compression.
TextGeneration generate_uncompressed(const model::CocomModel& m,
                                     const std::vector<std::vector<std::string>>& contexts,
                                     const std::vector<std::string>& questions,
                                     const TextGenerationOptions& opt);

// Test hook: when set, called with the decoder's input embeddings [Q, L, H] and attention
// mask of every generation (generate_answers) before the prefill. Process-wide; set it only
// from tests (the benchmark/engine identity test compares what both feed the decoder).
using DecoderInputObserver = std::function<void(const at::Tensor& embeds, const at::Tensor& mask)>;
void set_decoder_input_observer(DecoderInputObserver observer);

}  // namespace cocom::generate
