// The ToCa policy as the official code runs it (toca.md §2-§3), for any model family that provides
// a ToCaProfile (its schedule and paper settings; DiT, PixArt-α and STDiT3 do, in their folders):
// forced-activation schedules (full or partial blocks, re-evaluated per block) or fixed per-module
// cycles, s1 or s2 + λ3·s3 + s4, and the `random` baseline with the same schedules.
#include <cmath>
#include <optional>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "cache/policies/toca_scores.h"
#include "ditcache/cache/policies.h"
#include "ditcache/cache/toca.h"
#include "ditcache/error.h"

namespace ditcache {

void ToCaConfig::validate() const {
  auto fail = [](const std::string& m) { throw Error(ErrorCode::kInvalidArgument, "toca: " + m); };
  if (!(ratio == kAuto || (ratio >= 0 && ratio <= 1))) fail(fmt::format("ratio={} is out of range [0, 1]", ratio));
  if (schedule.empty()) fail("schedule is empty; name one of the model's schedules or auto");
  if (interval < 0) fail(fmt::format("interval={} must be >= 1 (or 0 for the schedule's value)", interval));
  if (mode != "reference" && mode != "clean") fail(fmt::format("mode='{}' is not one of reference, clean", mode));
  if (!(staleness_weight >= 0)) fail(fmt::format("weight={} must be >= 0", staleness_weight));
  if (!(spread_bonus == kAuto || spread_bonus >= 0)) fail(fmt::format("bonus={} must be >= 0", spread_bonus));
  if (spread_grid != kAutoGrid && (spread_grid < 1 || spread_grid > 64)) fail(fmt::format("grid={} is out of range [1, 64] (or auto)", spread_grid));
  if (score != "attention" && score != "random") fail(fmt::format("score='{}' is not one of attention, random", score));
}

const ToCaProfile::Schedule* ToCaProfile::find(const std::string& name) const {
  for (const auto& s : schedules) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::string ToCaProfile::schedule_names() const {
  std::string names;
  for (const auto& s : schedules) names += (names.empty() ? "" : ", ") + s.name;
  return names;
}

namespace detail {

namespace {

bool contains(const std::vector<SiteKind>& kinds, SiteKind kind) {
  return std::find(kinds.begin(), kinds.end(), kind) != kinds.end();
}

class ToCaPolicy final : public CachePolicy {
 public:
  ToCaPolicy(std::string name, ToCaConfig config) : name_(std::move(name)), config_(std::move(config)) { config_.validate(); }

  std::string name() const override { return name_; }
  std::string to_string() const override {
    auto value = [](double v) { return v == ToCaConfig::kAuto ? std::string("auto") : fmt::format("{}", v); };
    const std::string grid = config_.spread_grid == ToCaConfig::kAutoGrid ? std::string("auto") : fmt::format("{}", config_.spread_grid);
    std::string s = fmt::format("{}:ratio={},interval={},schedule={},mode={},weight={},bonus={},grid={}", name_, value(config_.ratio),
                                config_.interval, config_.schedule, config_.mode, config_.staleness_weight,
                                value(config_.spread_bonus), grid);
    if (config_.score == "random") s += fmt::format(",seed={}", config_.seed);
    return s;
  }

  void begin_run(const RunInfo& run) override {
    if (run.depth < 1 || run.num_steps < 1 || run.num_tokens < 1 || run.batch < 1 || run.grid_h * run.grid_w != run.num_tokens ||
        run.site_kinds.empty()) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{}: run of model '{}' needs depth, steps, rows and tokens >= 1, module sites and a grid_h x grid_w "
                              "token grid; got depth {}, {} steps, {} rows, {} tokens on a {}x{} grid", name_, run.model, run.depth,
                              run.num_steps, run.batch, run.num_tokens, run.grid_h, run.grid_w));
    }
    if (!run.toca) {
      throw Error(ErrorCode::kUnsupported, fmt::format("{}: model '{}' has no ToCa profile (its BackboneInfo::toca; "
                                                       "docs/adding-a-model.md)", name_, run.model));
    }
    run_ = run;
    profile_ = run.toca;
    const auto& p = *profile_;
    const std::string schedule = config_.schedule != "auto" ? config_.schedule
                                 : p.auto_schedule     ? p.auto_schedule(run.sampler)
                                 : p.schedules.empty() ? std::string()
                                                       : p.schedules.front().name;
    schedule_ = p.find(schedule);
    if (!schedule_) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: schedule={} is not one of {}'s: {} (or auto)", name_, schedule,
                                                           run.model, p.schedule_names()));
    }
    if (!schedule_->fresh_ratio || !schedule_->force_interval == !schedule_->full_step) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: {}'s schedule '{}' needs a fresh_ratio and exactly one of "
                                                           "force_interval and full_step", name_, run.model, schedule));
    }
    if (run.step_index_counts_down != p.step_index_counts_down) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: {}'s ToCa schedule numbers steps {}, the run numbers them {}",
                                                           name_, run.model, p.step_index_counts_down ? "down" : "up",
                                                           run.step_index_counts_down ? "down" : "up"));
    }
    auto resolve = [&](double value, double family_value) { return value == ToCaConfig::kAuto ? family_value : value; };
    interval_ = config_.interval > 0 ? config_.interval : schedule_->interval;
    ratio_ = resolve(config_.ratio, p.ratio);
    bonus_ = resolve(config_.spread_bonus, p.bonus);
    if (bonus_ > 0 && !p.bonus_supported) {
      throw Error(ErrorCode::kUnsupported, fmt::format("{}: bonus={}: the s4 spatial bonus is off for {} (its reference code "
                                                       "disables it); use bonus=0 or leave it auto", name_, bonus_, run.model));
    }
    grid_ = config_.spread_grid == ToCaConfig::kAutoGrid ? p.grid : config_.spread_grid;
    if (bonus_ > 0 && (run.grid_h % grid_ || run.grid_w % grid_)) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{}: s4 grid {} does not divide the {}x{} token grid; pick a grid that divides it or bonus=0", name_,
                              grid_, run.grid_h, run.grid_w));
    }
    threshold_ = interval_;
    scores_.assign(static_cast<size_t>(run.depth) * static_cast<size_t>(run.block_kinds), at::Tensor());
    s2_.assign(scores_.size(), at::Tensor());
    block_order_ = block_order_rows_ = at::Tensor();
    generator_ = at::make_generator<at::CPUGeneratorImpl>(config_.seed);
  }

  StepMode begin_step(const StepInfo& step) override {
    step_ = step;
    first_ = step.position == 0;
    if (config_.mode == "clean" && forced()) {  // one decision per step, taken as the reference takes it at layer 0
      step_full_ = full_now();
      if (step_full_) threshold_ = force_interval();
    }
    return StepMode::kPerSite;
  }

  SiteDecision decide(const SiteState& state, bool dry) override {
    const Site& site = state.site;
    const auto& p = *profile_;
    SiteDecision d;
    if (full(site)) {
      d.attention_stats = site.kind == p.score_site && config_.score == "attention" && !dry;  // s1 or s2 from the whole map
      return d;  // compute
    }
    if (contains(p.reused_whole, site.kind)) {
      d.action = Action::kReuse;
      return d;
    }
    d.action = Action::kPartial;
    d.tokens = toca::fresh_tokens(schedule_->fresh_ratio(ratio_, step_.index, run_.num_steps, site.layer, run_.depth - 1, site.kind),
                                  run_.num_tokens);
    if (dry || d.tokens == 0) return d;
    d.indices = toca::select_top(score(state), d.tokens);
    // The recomputed rows of the map (PixArt's update_cache).
    d.attention_stats = p.refresh_partial_rows && site.kind == p.score_site && config_.score == "attention";
    return d;
  }

  void observe_attention(const Site& site, const at::Tensor& stats) override {
    // s1: the self-attention column sums; s2: the entropy terms of every token, kept negated (s2 is
    // formed when a score is needed). Both official codes compute s2 the same way: the rows' valid
    // caption tokens on one concatenated key axis (block-diagonal mask), so the CFG halves average
    // over disjoint keys.
    const size_t i = score_slot(site);
    scores_.at(i) = s1() ? toca::attention_score(stats) : toca::negated_entropy_terms(stats, run_.cfg);
    s2_.at(i) = at::Tensor();
  }

  void observe_attention_rows(const Site& site, const at::Tensor& indices, const at::Tensor& stats) override {
    // update_cache scatters the recomputed tokens' rows into the stored cross-attention map; their
    // entropy terms are exactly what changes. [B, k] into [B, N].
    if (!profile_->refresh_partial_rows || site.kind != profile_->score_site || s1()) return;
    const size_t i = score_slot(site);
    auto& slot = scores_.at(i);
    if (!slot.defined()) return;
    auto terms = toca::negated_entropy_terms(stats, run_.cfg);
    if (indices.device() == slot.device() && terms.device() == slot.device()) {
      slot.scatter_(1, indices, terms);
    } else {
      slot.scatter_(1, indices.to(slot.device()), terms.to(slot.device()));
    }
    s2_.at(i) = at::Tensor();
  }

 private:
  bool forced() const { return static_cast<bool>(schedule_->force_interval); }
  bool s1() const { return profile_->score_site == SiteKind::kSelfAttention; }

  double force_interval() const { return schedule_->force_interval(step_.index, run_.num_steps, interval_, ratio_); }

  // Whether a site is computed whole. Fixed cycles: per site kind and step. Forced activation: per
  // block, decided at its first site; in mode=reference at every block, the interval updated at a
  // full block (force_init; it depends on the step only, so layer 0 sets it for the step), so later
  // blocks of the same step may disagree with layer 0 ("mixed step").
  bool full(const Site& site) {
    if (!forced()) return schedule_->full_step(step_.index, site.kind);
    if (site.kind == run_.site_kinds.front()) {
      if (config_.mode == "reference") {
        block_full_ = full_now();
        if (block_full_ && site.layer == 0) threshold_ = force_interval();
      } else {
        block_full_ = step_full_;
      }
    }
    return block_full_;
  }

  // One score per block (layer x block kind): s1, or the entropy terms read by the block's partial sites.
  size_t score_slot(const Site& site) const {
    return static_cast<size_t>(site.layer) + (site.block == BlockKind::kTemporal ? static_cast<size_t>(run_.depth) : 0);
  }

  bool full_now() const {
    return first_ || std::fmod(static_cast<double>(step_.index), threshold_) == 0;
  }

  // s1 / s2 (or uniform noise) + λ3 · ages / N, then the s4 bonus. [B, N] float. Bit for bit the
  // reference's arithmetic, in few device ops and none on the host: the staleness term is made
  // fresh and the rest added in place; s2 is kept per layer until its terms change; s4's block
  // layout is built once per run.
  at::Tensor score(const SiteState& state) {
    const auto& ages = state.ages;
    const int64_t B = ages.size(0), N = ages.size(1);
    // (ages · λ3) / N in float32 (an integer tensor times a double is float32, computed as the
    // reference's ages.float() · λ3).
    auto s = at::mul(ages, config_.staleness_weight);
    if (s.scalar_type() != at::kFloat) s = s.to(at::kFloat);
    s.div_(static_cast<double>(interval_));
    at::Tensor base;  // [B, N], or [B/2, N] shared by both CFG halves
    if (config_.score == "random") {
      const int64_t rows = run_.cfg ? B / 2 : B;  // one draw shared by both CFG halves
      base = at::rand({rows, N}, generator_, at::TensorOptions().dtype(at::kFloat));
      // Drawn on the host; to a GPU through pinned memory, so the copy does not stall the stream.
      if (base.device() != s.device()) base = base.pin_memory().to(at::TensorOptions().device(s.device()), /*non_blocking=*/true);
    } else {
      const size_t i = score_slot(state.site);
      const auto& stored = scores_.at(i);
      if (!stored.defined()) {
        throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: no attention score for {} (no full step yet)", name_,
                                                             ditcache::to_string(state.site)));
      }
      if (s1()) {
        base = stored;  // s1, per row
      } else {
        auto& s2 = s2_.at(i);
        if (!s2.defined()) s2 = toca::entropy_score_of_negated(stored, run_.cfg);  // [B/2, N] under CFG
        base = s2;
      }
    }
    if (base.size(0) == B) {
      s.add_(base);
    } else {
      s.view({2, B / 2, N}).add_(base);  // the same rows for both CFG halves
    }
    if (bonus_ > 0) {
      if (!block_order_.defined() || block_order_.device() != s.device() || block_order_rows_.size(0) != B) {
        const auto order = toca::spread_block_order(run_.grid_h, run_.grid_w, grid_, s.device());
        block_order_ = order.view({-1});
        block_order_rows_ = order.expand({B, order.size(0), order.size(1)});
      }
      toca::add_spread_bonus_(s, block_order_, block_order_rows_, bonus_);
    }
    return s;
  }

  std::string name_;
  ToCaConfig config_;
  RunInfo run_;
  std::shared_ptr<const ToCaProfile> profile_;
  const ToCaProfile::Schedule* schedule_ = nullptr;  // in *profile_
  int interval_ = 3;
  double ratio_ = 0.07, bonus_ = 0.6;  // resolved for the run's family
  int grid_ = 2;
  double threshold_ = 3;
  StepInfo step_;
  bool first_ = true, step_full_ = true, block_full_ = true;
  std::vector<at::Tensor> scores_;  // per layer (x block kind): s1, or the entropy terms negated; [B, N]
  std::vector<at::Tensor> s2_;      // per slot: s2 from the current terms; undefined when stale
  at::Tensor block_order_, block_order_rows_;  // s4: the tokens of every g x g block, [N] and [B, blocks, g*g] int64
  at::Generator generator_;
};

ToCaConfig read_toca(OptionReader& r, bool random) {
  ToCaConfig c;
  c.ratio = r.number_or_auto("ratio", c.ratio, 0, 1);
  c.interval = static_cast<int>(r.integer("interval", c.interval, 0, 1000));
  c.schedule = r.text("schedule", c.schedule);  // the run's family checks the name
  c.mode = r.choice("mode", c.mode, {"reference", "clean"});
  c.staleness_weight = r.number("weight", c.staleness_weight, 0, 1e6);
  c.spread_bonus = r.number_or_auto("bonus", c.spread_bonus, 0, 1e6);
  c.spread_grid = static_cast<int>(r.integer_or_auto("grid", c.spread_grid, 1, 64));
  if (random) {
    c.score = "random";
    c.seed = static_cast<uint64_t>(r.integer("seed", 0, 0, INT64_MAX));
  }
  r.finish();
  return c;
}

}  // namespace

}  // namespace detail

std::unique_ptr<CachePolicy> make_toca_policy(const ToCaConfig& config) {
  return std::make_unique<detail::ToCaPolicy>(config.score == "random" ? "random" : "toca", config);
}

namespace detail {

std::unique_ptr<CachePolicy> make_toca(const PolicySpec& spec) {
  OptionReader r(spec);
  return make_toca_policy(read_toca(r, false));
}

std::unique_ptr<CachePolicy> make_random(const PolicySpec& spec) {
  OptionReader r(spec);
  return make_toca_policy(read_toca(r, true));
}

}  // namespace detail
}  // namespace ditcache
