// ToCa's scores (toca.md §3): s1, s2 in the official concatenated-key form, s3's ages are the
// cache context's, s4, the token count and the top-k selection.
#include "cache/policies/toca_scores.h"

#include <algorithm>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/error.h"

namespace ditcache::toca {

// The entropy terms negated, u = sum_l w p log(w p + 1e-7) ([B, n] float32): the policy keeps these
// and leaves out the negation, which is exact (see entropy_score_of_negated). In place on the
// temporaries; the input is never written.
at::Tensor negated_entropy_terms(const at::Tensor& probabilities, bool cfg) {
  auto p = probabilities.scalar_type() == at::kFloat ? probabilities : probabilities.to(at::kFloat);
  if (cfg) p = p * 0.5;
  return p.add(1e-7).log_().mul_(p).sum(-1);  // [B, n]
}

// concatenated_entropy_score from the negated terms: 1 + (t_c + t_u) = 1 - (u_c + u_u) bit for bit
// (negating is exact and rounding is symmetric), normalised per row.
at::Tensor entropy_score_of_negated(const at::Tensor& negated, bool cfg) {
  at::Tensor s;
  if (cfg) {
    const int64_t half = negated.size(0) / 2;
    s = at::rsub(at::add(negated.narrow(0, 0, half), negated.narrow(0, half, half)), 1);  // [B/2, N]
  } else {
    s = at::rsub(negated, 1);
  }
  return s.div_(s.norm(2, {1}, true).clamp_min_(1e-12));
}

at::Tensor concatenated_entropy_terms(const at::Tensor& probabilities, bool cfg) {
  // Each half's probabilities sit on its own keys of the concatenated axis, scaled by 0.5 in the
  // CFG average; padding (probability 0) adds 0 · log(1e-7) = 0.
  return negated_entropy_terms(probabilities, cfg).neg_();  // [B, n]
}

at::Tensor concatenated_entropy_score(const at::Tensor& terms, bool cfg) {
  auto e = terms.scalar_type() == at::kFloat ? terms : terms.to(at::kFloat);
  at::Tensor s;
  if (cfg) {
    const int64_t half = e.size(0) / 2;
    s = at::add(e.narrow(0, 0, half), e.narrow(0, half, half)).add_(1);  // 1 + e_cond + e_uncond, [B/2, N]
  } else {
    s = e.add(1);
  }
  return s.div_(s.norm(2, {1}, true).clamp_min_(1e-12));
}

int64_t fresh_tokens(double ratio, int64_t num_tokens) {
  float r = static_cast<float>(ratio);
  r = std::min(std::max(r, 0.0f), 1.0f);
  return static_cast<int64_t>(r * static_cast<float>(num_tokens));
}

// s4's layout: the token ids of every g x g block of the grid, [blocks, g*g] int64, blocks and their
// tokens row-major (the reference's reshape / permute order).
at::Tensor spread_block_order(int64_t grid_h, int64_t grid_w, int g, const at::Device& device) {
  if (g < 1 || grid_h % g || grid_w % g) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("toca: s4 grid {} does not divide the {}x{} token grid", g, grid_h, grid_w));
  }
  return at::arange(grid_h * grid_w, at::TensorOptions().dtype(at::kLong).device(device))
      .view({grid_h / g, g, grid_w / g, g})
      .permute({0, 2, 1, 3})
      .reshape({(grid_h / g) * (grid_w / g), g * g});  // [blocks, g*g]
}

// s4 in place on a score [B, N] that nothing else holds, with the block layout as spread_block_order
// gives it, flat ([N]) and expanded over the rows ([B, blocks, g*g]): index_select, max, gather,
// one scatter.
void add_spread_bonus_(at::Tensor& score, const at::Tensor& order_flat, const at::Tensor& order_rows, double beta) {
  const int64_t B = score.size(0), N = score.size(1), blocks = order_rows.size(1), per_block = order_rows.size(2);
  auto values = score.index_select(1, order_flat).view({B, blocks, per_block});  // [B, blocks, g*g]
  auto [best, where] = values.max(-1, true);                                     // [B, blocks, 1]: first maximum
  auto token = order_rows.gather(-1, where);                                     // its token
  // The reference's value there: best + (1 · best) · β; every other token keeps its score.
  auto boosted = best + best * beta;
  score.view({B, N, 1}).scatter_(1, token, boosted);
}

at::Tensor spread_bonus(const at::Tensor& score, int64_t grid_h, int64_t grid_w, int g, double beta) {
  if (grid_h % g || grid_w % g || score.size(1) != grid_h * grid_w) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("toca: s4 grid {} does not divide the {}x{} token grid ({} tokens)",
                                                         g, grid_h, grid_w, score.size(1)));
  }
  auto out = score.clone(at::MemoryFormat::Contiguous);
  const auto order = spread_block_order(grid_h, grid_w, g, score.device());
  add_spread_bonus_(out, order.view({-1}), order.expand({score.size(0), order.size(0), order.size(1)}), beta);
  return out;  // [B, N]
}

at::Tensor attention_score(const at::Tensor& column_sums) {
  auto s = column_sums.scalar_type() == at::kFloat ? column_sums : column_sums.to(at::kFloat);
  return s / s.norm(2, {1}, true).clamp_min_(1e-12);
}

at::Tensor select_top(const at::Tensor& score, int64_t k) {
  return score.argsort(1, true).narrow(1, 0, k);  // [B, k]
}

}  // namespace ditcache::toca
