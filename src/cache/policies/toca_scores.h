#pragma once
// ToCa's scores (toca.md §3): s1, s2 in the official concatenated-key form, s4, the token count
// and the top-k selection. Internal to the policy (and its tests); a family's schedule lives in its
// folder (models/*/..._toca.cpp).

#include <cstdint>

#include <ATen/Tensor.h>

namespace ditcache::toca {

/// The per-row terms of s2 as the official PixArt / OpenSora code computes it, where every row's
/// valid caption tokens are concatenated along one key axis (a block-diagonal mask), so the CFG
/// average 0.5 M_cond + 0.5 M_uncond has the two halves' probabilities on disjoint keys: from the
/// head-mean probabilities p [B, n, L] of each row over its own caption tokens (0 on padding),
/// t = -sum_l w p log(w p + 1e-7) with w = 0.5 under CFG (1 without) -> [B, n] float32. A token's
/// entropy is t[cond row] + t[uncond row] (CFG) or t (no CFG); see concatenated_entropy_score.
at::Tensor concatenated_entropy_terms(const at::Tensor& probabilities, bool cfg);

/// s2 from those terms [B, N]: e = t[first half] + t[second half] (CFG) or t, then
/// L2-normalise(1 + e) per row -> [B/2, N] (CFG) or [B, N]; the same vector serves both halves.
at::Tensor concatenated_entropy_score(const at::Tensor& terms, bool cfg);

/// The same terms negated (u = -t), which the policy keeps: in place on temporaries, [B, n].
at::Tensor negated_entropy_terms(const at::Tensor& probabilities, bool cfg);

/// concatenated_entropy_score from the negated terms, bit for bit.
at::Tensor entropy_score_of_negated(const at::Tensor& negated, bool cfg);

/// Tokens recomputed per row: trunc(float32(clamp(float32(ratio), 0, 1)) * N).
int64_t fresh_tokens(double ratio, int64_t num_tokens);

/// s4: in every g x g block of the (grid_h x grid_w) token grid, the highest score gets β times
/// itself added. score [B, N] -> [B, N]. Throws Error(kInvalidArgument) when g does not divide the grid.
at::Tensor spread_bonus(const at::Tensor& score, int64_t grid_h, int64_t grid_w, int g, double beta);

/// s4's layout: the token ids of every g x g block of the grid, [blocks, g*g] int64 on `device`.
at::Tensor spread_block_order(int64_t grid_h, int64_t grid_w, int g, const at::Device& device);

/// s4 in place on a score [B, N] that nothing else holds, with the block layout flat ([N]) and
/// expanded over the rows ([B, blocks, g*g]).
void add_spread_bonus_(at::Tensor& score, const at::Tensor& order_flat, const at::Tensor& order_rows, double beta);

/// s1 from head-mean attention column sums [B, N]: L2-normalised per row (eps 1e-12).
at::Tensor attention_score(const at::Tensor& column_sums);

/// The k highest-scoring tokens of each row: descending sort, first k. score [B, N] -> [B, k] int64.
at::Tensor select_top(const at::Tensor& score, int64_t k);

}  // namespace ditcache::toca
