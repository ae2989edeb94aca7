#include "engine/pipeline.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>

#include "common/error.h"

namespace cocom::engine {

namespace {

int64_t check_contexts(const model::CocomModel& m,
                       const std::vector<std::vector<std::string>>& contexts,
                       const std::vector<std::string>& questions) {
  if (questions.empty()) fail("generate: no questions given");
  if (contexts.size() != questions.size()) {
    fail("generate: ", questions.size(), " questions but ", contexts.size(), " context lists");
  }
  const size_t k = contexts[0].size();
  if (k == 0) fail("generate: question 0 has no contexts");
  for (size_t q = 0; q < contexts.size(); ++q) {
    if (contexts[q].size() != k) {
      fail("generate: question ", q, " has ", contexts[q].size(), " contexts but question 0 has ", k,
           "; every question of a batch needs the same number");
    }
  }
  if (static_cast<int64_t>(k) != m.config().generation_top_k) {
    spdlog::warn("{} passages per question, but this checkpoint was trained with generation_top_k = {}",
                 k, m.config().generation_top_k);
  }
  return static_cast<int64_t>(k);
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

TextGeneration generate_from_text(const model::CocomModel& m,
                                  const std::vector<std::vector<std::string>>& contexts,
                                  const std::vector<std::string>& questions,
                                  const TextGenerationOptions& opt) {
  const int64_t k = check_contexts(m, contexts, questions);
  std::vector<std::string> flat;
  for (const auto& c : contexts) flat.insert(flat.end(), c.begin(), c.end());
  TextGeneration r;
  auto t0 = std::chrono::steady_clock::now();
  r.encoder = compress::encoder_inputs(m, flat, opt.context_max_length, compress::Padding::Longest);
  r.compressed = compress::compress(m, r.encoder);
  r.compress_seconds = since(t0);
  r.decoder = generate::decoder_prompts(m, questions, k, r.encoder.mem_per_passage);
  r.decoder_embeds = generate::embed_with_contexts(m, r.decoder, r.compressed, k);
  r.answers = generate::generate_answers(m, r.decoder_embeds, r.decoder.attention_mask, opt.sampling);
  return r;
}

TextGeneration generate_uncompressed(const model::CocomModel& m,
                                     const std::vector<std::vector<std::string>>& contexts,
                                     const std::vector<std::string>& questions,
                                     const TextGenerationOptions& opt) {
  check_contexts(m, contexts, questions);
  TextGeneration r;
  for (size_t q = 0; q < questions.size(); ++q) {
    if (questions[q].find_first_not_of(" \t\r\n") == std::string::npos) {
      fail("generate: question ", q, " is empty");
    }
    r.decoder.prompts.push_back(generate::uncompressed_prompt(m, contexts[q], questions[q]));
  }
  generate::encode_prompts(m, &r.decoder);
  r.decoder_embeds = m.decoder().embed(r.decoder.input_ids);
  r.answers = generate::generate_answers(m, r.decoder_embeds, r.decoder.attention_mask, opt.sampling);
  return r;
}

generate::Answers answer(const model::CocomModel& m, const std::string& question,
                         const at::Tensor& passage_embeddings, const model::SamplingOptions& opt,
                         const model::TokenCallback& on_token) {
  if (passage_embeddings.dim() != 3 || passage_embeddings.size(0) < 1) {
    fail("answer: expected passage embeddings [k, n, H], got ",
         model::shape_str(passage_embeddings.sizes()));
  }
  const int64_t k = passage_embeddings.size(0), n = passage_embeddings.size(1);
  // Said once per process: a console or server asks many questions with the same k (or a
  // store holding fewer passages than k), and the warning would repeat with every answer.
  static std::atomic<bool> warned{false};
  if (k != m.config().generation_top_k && !warned.exchange(true)) {
    spdlog::warn("{} passages per question, but this checkpoint was trained with generation_top_k = {}",
                 k, m.config().generation_top_k);
  }
  generate::DecoderInputs in = generate::decoder_prompts(m, {question}, k, n);
  at::Tensor embeds = generate::embed_with_contexts(m, in, passage_embeddings, k);
  return generate::generate_answers(m, embeds, in.attention_mask, opt, on_token);
}

}  // namespace cocom::engine
