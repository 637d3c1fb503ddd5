// The family-independent half of the model interface (backbone.h): run info, the FLOPs-only walk,
// block and site execution through the cache context.
#include "ditcache/backbone.h"

#include <algorithm>

#include <fmt/format.h>

#include "ditcache/error.h"

namespace ditcache {

int64_t& SiteTokens::operator[](SiteKind kind) {
  switch (kind) {
    case SiteKind::kSelfAttention: return self_attention;
    case SiteKind::kCrossAttention: return cross_attention;
    case SiteKind::kMLP: return mlp;
    default: break;
  }
  throw Error(ErrorCode::kInvalidArgument, fmt::format("SiteTokens: '{}' is no module site kind", to_string(kind)));
}

double BackboneInfo::full_block_flops(BlockKind block, const RunShape& shape) const {
  return block_flops(block, shape, SiteTokens::all(shape.tokens()));
}

void BackboneInfo::validate() const {
  auto fail = [&](const std::string& what) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("backbone '{}': {}", family.empty() ? name : family, what));
  };
  if (family.empty()) fail("no family name");
  if (depth < 1) fail(fmt::format("depth {} must be >= 1", depth));
  if (block_kinds.empty()) fail("no block kinds");
  if (site_kinds.empty()) fail("no module sites");
  for (SiteKind kind : site_kinds) {
    if (kind == SiteKind::kBlock) fail("'block' is not a module site (whole-block caching is built in)");
    if (std::count(site_kinds.begin(), site_kinds.end(), kind) > 1) fail(fmt::format("site '{}' listed twice", to_string(kind)));
  }
  if (!block_flops) fail("no block FLOPs function");
}

RunInfo make_run_info(const BackboneInfo& info, const RunShape& shape, int num_steps, const std::string& sampler) {
  info.validate();
  RunInfo run;
  run.model = info.family;
  run.depth = info.depth;
  run.block_kinds = static_cast<int>(info.block_kinds.size());
  run.batch = shape.rows;
  run.cfg = shape.cfg;
  run.num_tokens = shape.tokens();
  run.frames = shape.frames;
  run.grid_h = shape.frames * shape.grid_h;  // frames stacked vertically (heat maps, s4 blocks stay within a frame)
  run.grid_w = shape.grid_w;
  run.context_tokens = shape.context_tokens;
  run.num_steps = num_steps;
  run.step_index_counts_down = info.step_index_counts_down;
  run.sampler = sampler;
  run.site_kinds = info.site_kinds;
  run.toca = info.toca;
  return run;
}

void count_step_flops(const BackboneInfo& info, const RunShape& shape, CacheContext& cache) {
  const int64_t N = shape.tokens();
  const bool reused = !cache.steps().empty() && cache.steps().back().mode == StepMode::kReuseOutput;
  // What a real forward counts (BlockRunner): the tokens each module computed.
  auto ran = [&](const SiteDecision& d) -> int64_t {
    return d.action == Action::kCompute ? N : d.action == Action::kPartial ? d.tokens : 0;
  };
  for (int layer = 0; layer < info.depth; ++layer) {
    for (BlockKind kind : info.block_kinds) {
      const double full = info.full_block_flops(kind, shape);
      if (reused) {
        cache.add_flops(0.0, full);
      } else if (cache.uses_block_sites()) {
        const auto d = cache.decide_dry({layer, kind, SiteKind::kBlock});
        cache.add_flops(d.action == Action::kCompute ? full : 0.0, full);
      } else {
        SiteTokens computed;
        for (SiteKind site : info.site_kinds) computed[site] = ran(cache.decide_dry({layer, kind, site}));
        cache.add_flops(info.block_flops(kind, shape, computed), full);
      }
    }
  }
}

BlockRunner::BlockRunner(CacheContext* cache, const BackboneInfo& info, BlockKind kind, int layer, const RunShape& shape)
    : cache_(cache), info_(info), kind_(kind), layer_(layer), shape_(shape) {}

at::Tensor BlockRunner::attention(SiteKind kind, const at::Tensor& x, const AttentionModule& module) {
  auto counted = [&](const at::Tensor& in, const at::Tensor& queries, at::Tensor* stats) {
    computed_[kind] = queries.defined() ? queries.size(1) : in.size(1);
    return module(in, queries, stats);
  };
  return cache_ ? cache_->run_attention(site(kind), x, counted) : counted(x, {}, nullptr);
}

at::Tensor BlockRunner::token_wise(SiteKind kind, const at::Tensor& x, const TokenModule& module) {
  auto counted = [&](const at::Tensor& rows) {
    computed_[kind] = rows.size(1);
    return module(rows);
  };
  return cache_ ? cache_->run(site(kind), x, counted) : counted(x);
}

void BlockRunner::finish() {
  if (cache_) cache_->add_flops(info_.block_flops(kind_, shape_, computed_), info_.full_block_flops(kind_, shape_));
}

at::Tensor run_block(CacheContext* cache, const BackboneInfo& info, BlockKind kind, int layer, const RunShape& shape,
                     const at::Tensor& x, const std::function<at::Tensor(const at::Tensor& x, BlockRunner& sites)>& body) {
  if (cache && cache->uses_block_sites()) {
    bool computed = false;
    auto out = cache->run_block({layer, kind, SiteKind::kBlock}, x, [&](const at::Tensor& in) {
      computed = true;
      BlockRunner direct(nullptr, info, kind, layer, shape);
      return body(in, direct);
    });
    const double full = info.full_block_flops(kind, shape);
    cache->add_flops(computed ? full : 0.0, full);
    return out;
  }
  BlockRunner sites(cache, info, kind, layer, shape);
  auto out = body(x, sites);
  sites.finish();
  return out;
}

void reject_unused_inputs(const BackboneInputs& inputs, const std::string& family, const std::vector<std::string>& used) {
  auto check = [&](const char* field, bool set) {
    if (set && std::find(used.begin(), used.end(), field) == used.end()) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{} forward: input '{}' is set, but {} does not read it", family, field, family));
    }
  };
  check("mask", inputs.mask.defined());
  check("resolution", inputs.resolution.defined());
  check("aspect_ratio", inputs.aspect_ratio.defined());
  check("fps", inputs.fps.defined());
  check("size", inputs.height != 0 || inputs.width != 0);
  check("x_mask", inputs.x_mask.defined());
}

}  // namespace ditcache
