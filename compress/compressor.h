// COCOM compressors: a passage becomes ceil(L / compr_rate) context embeddings in the
// decoder's input space.
//  - COCOM (decoder compressor): '<ENC><s>' + passage + '</s>', <MEM> slots appended, the LoRA
//    decoder's last hidden states (after the final norm) at the <MEM> positions.
//  - COCOM-light: BERT over the passage, its last hidden states grouped by compr_rate
//    (padded rows included), `concat` or `mean`, then the linear projection.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "model/cocom.h"

namespace cocom::compress {

struct EncoderInputs {
  at::Tensor input_ids;       // [N, L] (decoder compressor: <MEM> slots included)
  at::Tensor attention_mask;  // [N, L]
  int64_t mem_per_passage = 0;
  int64_t truncated = 0;  // passages cut at context_max_length
};

enum class Padding {
  Longest,    // the reference batch semantics: pad to the longest passage of the batch
  MaxLength,  // the engine regime: every passage padded to context_max_length, so its
              // embeddings never depend on its batch-mates
};

EncoderInputs encoder_inputs(const model::CocomModel& m, const std::vector<std::string>& passages,
                             int64_t context_max_length, Padding padding);

// Context embeddings [N, n, H_decoder] (fp32, on the CPU) for prepared inputs.
at::Tensor compress(const model::CocomModel& m, const EncoderInputs& in);
// The same on the model's device; with `hooks` (train/) the forward applies its LoRA
// adapters and dropout and stays differentiable.
at::Tensor compress_on_device(const model::CocomModel& m, const EncoderInputs& in,
                              const model::ForwardHooks* hooks = nullptr);

// Engine regime, in batches of `batch_size`: [N, ceil(context_max_length / r), H].
at::Tensor compress_passages(const model::CocomModel& m, const std::vector<std::string>& passages,
                             int64_t context_max_length = 128, int64_t batch_size = 8);

}  // namespace cocom::compress
