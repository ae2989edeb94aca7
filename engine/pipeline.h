// End-to-end COCOM answering, in two forms:
//  (a) generate_from_text(): contexts and questions in, answers out, with the reference's batch
//      semantics (all passages of the batch compressed together, padded to the longest) --
//      for parity with the Python code and for users migrating from it;
//  (b) the engine path: compress passages once (compress::compress_passages, every passage
//      padded to context_max_length, so its embeddings never depend on its batch-mates),
//      store them, and later answer() a question from the stored embeddings of k passages.
// An uncompressed baseline answers with the same decoder from the passages' text.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "compress/compressor.h"
#include "generate/cocom_generate.h"
#include "model/cocom.h"

namespace cocom::engine {

struct TextGeneration {
  compress::EncoderInputs encoder;  // empty for the uncompressed baseline
  at::Tensor compressed;            // [Q * k, n, H]
  generate::DecoderInputs decoder;
  at::Tensor decoder_embeds;  // [Q, L, H] after <MEM> replacement
  generate::Answers answers;
  double compress_seconds = 0;
};

struct TextGenerationOptions {
  model::SamplingOptions sampling;
  int64_t context_max_length = 128;  // the published models were trained with 128
};

// contexts[q] are the passages of question q; every question needs the same number of them.
TextGeneration generate_from_text(const model::CocomModel& m,
                                  const std::vector<std::vector<std::string>>& contexts,
                                  const std::vector<std::string>& questions,
                                  const TextGenerationOptions& opt);

// The standard RAG baseline: the passages' text in the prompt, no compression.
TextGeneration generate_uncompressed(const model::CocomModel& m,
                                     const std::vector<std::vector<std::string>>& contexts,
                                     const std::vector<std::string>& questions,
                                     const TextGenerationOptions& opt);

// Engine path: one question, the stored embeddings of its k passages [k, n, H].
generate::Answers answer(const model::CocomModel& m, const std::string& question,
                         const at::Tensor& passage_embeddings, const model::SamplingOptions& opt,
                         const model::TokenCallback& on_token = nullptr);

}  // namespace cocom::engine
