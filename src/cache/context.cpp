#include "ditcache/cache/context.h"

#include <algorithm>
#include <tuple>

#include <ATen/ATen.h>
#include <ATen/record_function.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"

namespace ditcache {

namespace {

// A named profiler range (an ATen RecordFunction user scope): nothing but a flag check unless a
// profiler or a global callback listens.
class ProfileScope {
 public:
  explicit ProfileScope(const char* name) : guard_(at::RecordScope::USER_SCOPE) {
    if (guard_.isActive()) guard_.before(name);
  }

 private:
  at::RecordFunction guard_;
};

}  // namespace

const char* to_string(BlockKind kind) noexcept { return kind == BlockKind::kTemporal ? "temporal" : "spatial"; }
const char* to_string(SiteKind kind) noexcept {
  switch (kind) {
    case SiteKind::kSelfAttention: return "attn";
    case SiteKind::kCrossAttention: return "cross_attn";
    case SiteKind::kMLP: return "mlp";
    case SiteKind::kBlock: return "block";
  }
  return "?";
}
const char* to_string(Action action) noexcept {
  switch (action) {
    case Action::kCompute: return "compute";
    case Action::kReuse: return "reuse";
    case Action::kPartial: return "partial";
  }
  return "?";
}
const char* to_string(StepMode mode) noexcept { return mode == StepMode::kReuseOutput ? "reuse_output" : "per_site"; }
std::string to_string(const Site& site) {
  return fmt::format("{}.{}.{}", to_string(site.block), site.layer, to_string(site.kind));
}

CacheContext::CacheContext(std::shared_ptr<CachePolicy> policy, bool trace) : policy_(std::move(policy)), trace_(trace) {
  if (!policy_) throw Error(ErrorCode::kInvalidArgument, "CacheContext: no policy given (use make_policy(\"none\"))");
}

uint32_t CacheContext::key(const Site& site) {
  return (static_cast<uint32_t>(site.layer) << 8) | (static_cast<uint32_t>(site.block) << 4) | static_cast<uint32_t>(site.kind);
}

void CacheContext::begin_run(const RunInfo& run) {
  run_ = run;
  entries_.clear();
  steps_.clear();
  step_output_ = at::Tensor();
  policy_->begin_run(run);
}

StepMode CacheContext::begin_step(const StepInfo& step) {
  StepRecord record;
  record.step = step;
  record.mode = policy_->begin_step(step);
  if (record.mode == StepMode::kReuseOutput && !step_output_.defined() && !dry_ && steps_.empty()) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("policy '{}' reuses the model output at step {} before any step was computed",
                            policy_->to_string(), step.index));
  }
  steps_.push_back(std::move(record));
  return steps_.back().mode;
}

void CacheContext::end_step() { policy_->end_step(); }

void CacheContext::add_flops(double actual, double full) {
  if (steps_.empty()) return;
  steps_.back().flops += actual;
  steps_.back().full_flops += full;
}

void CacheContext::check_decision(const Site& site, const SiteDecision& d, const Entry& entry, int64_t rows,
                                  int64_t tokens) const {
  if (d.action != Action::kCompute && !entry.store.defined() && !dry_) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("policy '{}' asked to {} site {} before it was ever computed",
                                                         policy_->to_string(), to_string(d.action), to_string(site)));
  }
  if (d.action != Action::kPartial) return;
  if (d.tokens < 0 || d.tokens > tokens) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("policy '{}' selected {} of {} tokens at {}", policy_->to_string(),
                                                         d.tokens, tokens, to_string(site)));
  }
  if (!dry_ && d.tokens > 0 &&
      (!d.indices.defined() || d.indices.dim() != 2 || d.indices.size(0) != rows || d.indices.size(1) != d.tokens)) {
    throw Error(ErrorCode::kShapeMismatch,
                fmt::format("policy '{}' at {}: indices {}, expected [{}, {}]", policy_->to_string(), to_string(site),
                            d.indices.defined() ? shape_string(d.indices.sizes()) : "undefined", rows, d.tokens));
  }
}

SiteDecision CacheContext::decide(const Site& site, Entry& entry) {
  const SiteState state{site, entry.store.defined() || dry_, entry.ages};
  return policy_->decide(state, dry_);
}

void CacheContext::record(const Site& site, const SiteDecision& d) {
  if (steps_.empty()) throw Error(ErrorCode::kInvalidArgument, "CacheContext: a site ran outside begin_step/end_step");
  SiteRecord r;
  r.site = site;
  r.action = d.action;
  r.tokens = d.action == Action::kCompute ? run_.num_tokens : d.action == Action::kPartial ? d.tokens : 0;
  if (trace_ && d.action == Action::kPartial && d.tokens > 0 && d.indices.defined()) {
    auto host = d.indices.to(at::kCPU, at::kLong).contiguous();  // [rows, k]; the one sync tracing costs
    r.indices.assign(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel());
  }
  steps_.back().sites.push_back(std::move(r));
}

// Staleness: every token ages one step; the recomputed ones restart at 0 (toca.md §3.3 order:
// the policy has already read the ages before this update).
void CacheContext::age(Entry& entry, const SiteDecision& d) {
  if (d.action == Action::kCompute) return;
  entry.ages.add_(1);
  if (d.action == Action::kPartial && d.tokens > 0) entry.ages.scatter_(1, d.indices, 0);
}

// After a full compute every token is fresh: the ages [B, N] int32 are zeroed in place (one fill,
// no new tensor) once the site has them in this shape.
void CacheContext::reset_ages(Entry& entry, const at::Tensor& x) {
  const int64_t B = x.size(0), N = x.size(1);
  if (entry.ages.defined() && entry.ages.dim() == 2 && entry.ages.size(0) == B && entry.ages.size(1) == N &&
      entry.ages.device() == x.device()) {
    entry.ages.zero_();
  } else {
    entry.ages = at::zeros({B, N}, x.options().dtype(at::kInt));
  }
}

CacheContext::Entry& CacheContext::entry(const Site& site) {
  auto& e = entries_[key(site)];
  e.site = site;
  return e;
}

void CacheContext::count(Entry& entry, const SiteDecision& d, const at::Tensor& x) {
  if (!count_tokens_ || d.action == Action::kReuse) return;
  const int64_t B = x.size(0), N = x.size(1);
  if (!entry.counts.defined()) entry.counts = at::zeros({N}, x.options().dtype(at::kFloat));
  if (d.action == Action::kCompute) {
    entry.counts.add_(static_cast<double>(B));
  } else if (d.tokens > 0) {
    entry.counts.index_add_(0, d.indices.flatten(), at::ones({d.indices.numel()}, entry.counts.options()));
  }
}

std::vector<std::pair<Site, at::Tensor>> CacheContext::token_counts() const {
  std::vector<std::pair<Site, at::Tensor>> out;
  for (const auto& [k, e] : entries_) {
    if (e.counts.defined()) out.emplace_back(e.site, e.counts.to(at::kCPU, at::kDouble));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::make_tuple(a.first.layer, a.first.block, a.first.kind) < std::make_tuple(b.first.layer, b.first.block, b.first.kind);
  });
  return out;
}

SiteDecision CacheContext::decide_dry(const Site& site) {
  auto& entry = this->entry(site);
  auto d = decide(site, entry);
  check_decision(site, d, entry, run_.batch, run_.num_tokens);
  record(site, d);
  return d;
}

at::Tensor CacheContext::run(const Site& site, const at::Tensor& x, const TokenModule& module) {
  return run_site(site, x, nullptr, &module);
}

at::Tensor CacheContext::run_attention(const Site& site, const at::Tensor& x, const AttentionModule& module) {
  return run_site(site, x, &module, nullptr);
}

// One site: the decision, then its action. Everything here outside the module call is the cache's
// own work (per site: a few small device ops, no host sync unless tracing); the profiler scopes
// name the parts (decide, the action, the module) so tools can count them separately
// (benchmarks/cache_overhead.cpp).
at::Tensor CacheContext::run_site(const Site& site, const at::Tensor& x, const AttentionModule* attention,
                                  const TokenModule* token_module) {
  auto& entry = this->entry(site);
  SiteDecision d;
  {
    ProfileScope scope(kScopeDecide);
    d = decide(site, entry);
  }
  const int64_t B = x.size(0), N = x.size(1);
  check_decision(site, d, entry, B, N);
  ProfileScope scope(d.action == Action::kCompute ? kScopeCompute : d.action == Action::kReuse ? kScopeReuse : kScopePartial);
  record(site, d);
  count(entry, d, x);
  const bool stats = d.attention_stats && (site.kind == SiteKind::kSelfAttention || site.kind == SiteKind::kCrossAttention);
  // The model's module: all tokens (queries undefined), or the selected queries / rows.
  auto call = [&](const at::Tensor& queries, const at::Tensor& rows, at::Tensor* statistics) {
    ProfileScope module_scope(kScopeModule);
    return token_module ? (*token_module)(rows) : (*attention)(x, queries, statistics);
  };
  switch (d.action) {
    case Action::kCompute: {
      at::Tensor column_sums;
      auto out = call(at::Tensor(), x, stats ? &column_sums : nullptr);
      if (stats) policy_->observe_attention(site, column_sums);
      if (!policy_->stores()) return out;
      entry.store = to_storage(out);
      reset_ages(entry, x);
      return out;
    }
    case Action::kReuse:
      age(entry, d);
      return from_storage(entry.store, x);
    case Action::kPartial:
      if (d.tokens > 0) {
        // [B, k, C]: the selected rows; one index serves the gather and the scatter when the module
        // keeps the width and the store is on the model's device.
        at::Tensor index = d.indices.unsqueeze(-1).expand({B, d.tokens, x.size(2)});
        at::Tensor rows = token_module ? x.gather(1, index) : at::Tensor();
        at::Tensor row_stats;
        auto fresh = call(d.indices, rows, stats ? &row_stats : nullptr);  // [B, k, C']: the selected tokens only
        if (stats) {
          if (!row_stats.defined()) {
            throw Error(ErrorCode::kUnsupported, fmt::format("policy '{}' asked for attention statistics of the recomputed rows at "
                                                             "{}, which this model's site does not report", policy_->to_string(),
                                                             to_string(site)));
          }
          policy_->observe_attention_rows(site, d.indices, row_stats);
        }
        if (fresh.size(2) != x.size(2) || entry.store.device() != x.device()) {
          index = d.indices.to(entry.store.device()).unsqueeze(-1).expand({B, d.tokens, fresh.size(2)});
        }
        entry.store.scatter_(1, index, like_store(fresh, entry.store));
      }
      age(entry, d);
      return from_storage(entry.store, x);
  }
  return from_storage(entry.store, x);
}

at::Tensor CacheContext::to_storage(const at::Tensor& t) const {
  if (!storage_.dtype && !storage_.device) return t;
  return t.to(storage_.device.value_or(t.device()), storage_.dtype.value_or(t.scalar_type()));
}

at::Tensor CacheContext::like_store(const at::Tensor& t, const at::Tensor& store) {
  if (t.device() == store.device() && t.scalar_type() == store.scalar_type()) return t;
  return t.to(store.device(), store.scalar_type());
}

at::Tensor CacheContext::from_storage(const at::Tensor& stored, const at::Tensor& like) {
  // The same tensor, without an operator call, when the store is kept as computed.
  if (stored.device() == like.device() && stored.scalar_type() == like.scalar_type()) return stored;
  return stored.to(like.device(), like.scalar_type());
}

at::Tensor CacheContext::run_block(const Site& site, const at::Tensor& x, const std::function<at::Tensor(const at::Tensor&)>& block) {
  auto& entry = this->entry(site);
  SiteDecision d;
  {
    ProfileScope scope(kScopeDecide);
    d = decide(site, entry);
  }
  const int64_t B = x.size(0), N = x.size(1);
  check_decision(site, d, entry, B, N);
  if (d.action == Action::kPartial) {
    throw Error(ErrorCode::kUnsupported, fmt::format("policy '{}': whole-block site {} cannot be partial",
                                                     policy_->to_string(), to_string(site)));
  }
  ProfileScope scope(d.action == Action::kCompute ? kScopeCompute : kScopeReuse);
  record(site, d);
  count(entry, d, x);
  if (d.action == Action::kReuse) {
    age(entry, d);
    return x + from_storage(entry.store, x);
  }
  at::Tensor out;
  {
    ProfileScope module_scope(kScopeModule);
    out = block(x);
  }
  if (!policy_->stores()) return out;
  entry.store = to_storage(out - x);  // [B, N, C] the block's residual update
  reset_ages(entry, x);
  return out;
}

RunSummary CacheContext::summary() const {
  RunSummary s;
  const int64_t per_row = run_.num_tokens;
  const int64_t module_sites = static_cast<int64_t>(run_.site_kinds.size());
  for (const auto& step : steps_) {
    s.flops += step.flops;
    s.full_flops += step.full_flops;
    s.tokens_total += run_.depth * run_.block_kinds * module_sites * run_.batch * per_row;
    for (const auto& r : step.sites) {
      const int64_t weight = r.site.kind == SiteKind::kBlock ? module_sites : 1;
      s.tokens_computed += weight * r.tokens * run_.batch;
    }
  }
  for (const auto& [k, e] : entries_) {
    if (e.store.defined()) s.cache_bytes += static_cast<int64_t>(e.store.nbytes());
    if (e.ages.defined()) s.cache_bytes += static_cast<int64_t>(e.ages.nbytes());
  }
  if (step_output_.defined()) s.cache_bytes += static_cast<int64_t>(step_output_.nbytes());
  return s;
}

std::string CacheContext::trace_json() const {
  nlohmann::json j;
  j["policy"] = policy_->to_string();
  j["model"] = run_.model;
  j["batch"] = run_.batch;
  j["num_tokens"] = run_.num_tokens;
  j["num_steps"] = run_.num_steps;
  const auto s = summary();
  j["flops"] = s.flops;
  j["full_flops"] = s.full_flops;
  j["computed_share"] = s.computed_share();
  auto& steps = j["steps"] = nlohmann::json::array();
  for (const auto& step : steps_) {
    nlohmann::json js = {{"index", step.step.index}, {"position", step.step.position}, {"mode", to_string(step.mode)},
                         {"flops", step.flops}, {"full_flops", step.full_flops}};
    auto& sites = js["sites"] = nlohmann::json::array();
    for (const auto& r : step.sites) {
      nlohmann::json jr = {{"layer", r.site.layer}, {"block", to_string(r.site.block)}, {"site", to_string(r.site.kind)},
                           {"action", to_string(r.action)}, {"tokens", r.tokens}};
      if (r.action == Action::kPartial && !r.indices.empty() && r.tokens > 0) {
        auto rows = nlohmann::json::array();
        for (size_t b = 0; b * static_cast<size_t>(r.tokens) < r.indices.size(); ++b) {
          rows.push_back(std::vector<int64_t>(r.indices.begin() + static_cast<long>(b * r.tokens),
                                              r.indices.begin() + static_cast<long>((b + 1) * r.tokens)));
        }
        jr["indices"] = rows;
      }
      sites.push_back(jr);
    }
    steps.push_back(js);
  }
  return j.dump();
}

}  // namespace ditcache
