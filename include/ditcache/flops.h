#pragma once
/// \file Analytic FLOPs in the convention of the official ToCa code (toca.md §6), so totals are
/// comparable with the paper's TFLOPs: matmuls 2·m·n·k, softmax 5 per score, GELU 6 per element,
/// LayerNorm 1 per element, adaLN as B·C + chunks·B·C² (MACs, not doubled). Embedders, the final
/// layer, scores, sorting and gather/scatter are not counted.

#include <cstdint>

namespace ditcache::flops {

/// Self-attention with `queries` of `keys` tokens per row (all: queries == keys): QKV projections
/// (q for the queries, k and v for all keys), q scaling, QKᵀ, softmax, PV, output projection.
double attention(int64_t rows, int64_t queries, int64_t keys, int64_t hidden, int64_t heads);
/// timm MLP on `tokens` tokens per row: two projections and the GELU.
double mlp(int64_t rows, int64_t tokens, int64_t hidden, int64_t mlp_hidden);
/// A LayerNorm over `tokens` tokens per row.
double layer_norm(int64_t rows, int64_t tokens, int64_t hidden);
/// adaLN modulation: SiLU and Linear(C -> chunks·C).
double ada_ln(int64_t rows, int64_t hidden, int64_t chunks);

}  // namespace ditcache::flops
