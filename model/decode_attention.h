// Attention for one new query position per sequence (decode steps) straight from the CPU KV
// cache, without the packing copies a BLAS GEMM makes of the cached keys and values at every
// step (measured: ~10% of a TinyLlama decode step after a 656-token prompt).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace cocom::model {

// q: [B, H, 1, d] fp32 (after rotary). k_cache, v_cache: [B, KV, capacity, d] contiguous fp32
// CPU tensors, of which the first S slots are used; H is a multiple of KV (query head h reads
// kv head h / (H / KV)). allowed: [B, S] bool, the keys this query may see. Returns
// [B, 1, H * d]: softmax(q k^T * scale) v per head, where hidden keys take the lowest float
// before the softmax, exactly as the reference path does (a query that sees no key gets
// uniform weights over all S slots).
at::Tensor decode_attention(const at::Tensor& q, const at::Tensor& k_cache,
                            const at::Tensor& v_cache, int64_t S, const at::Tensor& allowed,
                            double scale);

// Whether decode_attention accepts these operands (CPU, fp32, contiguous caches, one query).
bool decode_attention_applies(const at::Tensor& q, const at::Tensor& k_cache,
                              const at::Tensor& v_cache);

}  // namespace cocom::model
