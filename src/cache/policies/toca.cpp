// ToCa as the official code runs it (toca.md §2.2-§3.5): DiT (force-activation schedule counting
// down, the ToCa-ddim50 / ToCa-ddpm250 ratio schedules, s1 + λ3·s3 + s4), PixArt-α (the schedule
// counting up, its 'ToCa' ratios for cross-attention and MLP, s2 + λ3·s3 + s4 with the s2 rows of
// partially recomputed cross-attention tokens refreshed), OpenSora's STDiT3 (fixed per-module
// cycles, s2 + λ3·s3; the same s2 as PixArt's), and the `random` baseline with the same schedules.
#include <cmath>
#include <optional>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "cache/policies/builtin.h"
#include "ditcache/cache/policies.h"
#include "ditcache/cache/toca.h"
#include "ditcache/error.h"

namespace ditcache {

void ToCaConfig::validate() const {
  auto fail = [](const std::string& m) { throw Error(ErrorCode::kInvalidArgument, "toca: " + m); };
  if (!(ratio == kAuto || (ratio >= 0 && ratio <= 1))) fail(fmt::format("ratio={} is out of range [0, 1]", ratio));
  if (schedule != "auto" && schedule != "ddim50" && schedule != "ddpm250" && schedule != "pixart" && schedule != "opensora") {
    fail(fmt::format("schedule='{}' is not one of auto, ddim50, ddpm250, pixart, opensora", schedule));
  }
  if (interval < 0) fail(fmt::format("interval={} must be >= 1 (or 0 for the schedule's value)", interval));
  if (mode != "reference" && mode != "clean") fail(fmt::format("mode='{}' is not one of reference, clean", mode));
  if (!(staleness_weight >= 0)) fail(fmt::format("weight={} must be >= 0", staleness_weight));
  if (!(spread_bonus == kAuto || spread_bonus >= 0)) fail(fmt::format("bonus={} must be >= 0", spread_bonus));
  if (spread_grid != kAutoGrid && (spread_grid < 1 || spread_grid > 64)) fail(fmt::format("grid={} is out of range [1, 64] (or auto)", spread_grid));
  if (score != "attention" && score != "random") fail(fmt::format("score='{}' is not one of attention, random", score));
}

namespace toca {

double force_interval(int step, int num_steps, int interval, double ratio) {
  const double w = ratio == 0 ? 0.0 : 0.4;
  // torch.tensor(python float) is float32; N / tensor and torch.round stay in float32.
  const float factor = static_cast<float>(1 + w - 2 * w * step / num_steps);
  const float quotient = static_cast<float>(interval) / factor;
  double threshold = std::nearbyint(quotient);  // round half to even (default rounding mode)
  const int lo = static_cast<int>(num_steps * 0.2), hi = static_cast<int>(num_steps * 0.4);
  if (step >= lo && step < hi && ratio != 0) threshold = 2;
  return threshold;
}

double fresh_ratio(const std::string& schedule, double r0, int step, int num_steps, int layer, int last_layer, SiteKind module) {
  double step_weight = 0, layer_weight = 0;
  if (schedule == "ddim50") {
    step_weight = 2.0;
    layer_weight = -0.2;
  } else if (schedule == "ddpm250") {
    step_weight = 0.4;
    layer_weight = 0.8;
  } else {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("toca: unknown ratio schedule '{}'", schedule));
  }
  const double step_factor = 1 + step_weight - 2 * step_weight * step / num_steps;
  const double layer_factor = 1 + layer_weight - 2 * layer_weight * (last_layer > 0 ? static_cast<double>(layer) / last_layer : 0.0);
  // module weight 2.5, module time weight 0.6: attention 1 - 0.4 * 2.5 = 0 (never partial), MLP 2.5.
  const double module_weight = 2.5, module_time_weight = 0.6;
  const double module_factor = module == SiteKind::kMLP ? 1 + module_time_weight * module_weight
                                                        : 1 - (1 - module_time_weight) * module_weight;
  return r0 * layer_factor * step_factor * module_factor;
}

double pixart_force_interval(int step, int num_steps, int interval, double ratio) {
  const double w = ratio == 0 ? 0.0 : 0.2;
  // Same float32 arithmetic as DiT's force_scheduler, with the opposite sign of the step term.
  const float factor = static_cast<float>(1 - w + 2 * w * step / num_steps);
  const float quotient = static_cast<float>(interval) / factor;
  return std::nearbyint(quotient);  // round half to even
}

double pixart_fresh_ratio(double r0, int step, int num_steps, int layer, int last_layer, SiteKind module) {
  // The official expression order (Python doubles): step weight -0.9, layer weight 0.6.
  const double step_weight = -0.9, layer_weight = 0.6;
  const double step_factor = 1 - step_weight + 2 * step_weight * step / num_steps;
  const double layer_factor = 1 + layer_weight - 2 * layer_weight * (last_layer > 0 ? static_cast<double>(layer) / last_layer : 0.0);
  // module weight 1.0, module time weight 0.6: cross-attention 1 - 0.4 = 0.6, MLP 1 + 0.6 = 1.6.
  const double module_weight = 1.0, module_time_weight = 0.6;
  const double module_factor = module == SiteKind::kCrossAttention ? 1 - (1 - module_time_weight) * module_weight
                                                                   : 1 + module_time_weight * module_weight;
  return r0 * layer_factor * step_factor * module_factor;
}

double video_fresh_ratio(double r0, SiteKind module) {
  const double module_weight = 1.5, module_time_weight = 0.33;
  const double module_factor = module == SiteKind::kMLP ? 1 + module_time_weight * module_weight
                                                        : 1 - (1 - module_time_weight) * module_weight;
  return r0 * module_factor;
}

bool video_full_step(int step, SiteKind module) {
  const int cycle = module == SiteKind::kCrossAttention ? 6 : 3;
  return step <= 2 || step % cycle == 0;
}

namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

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

}  // namespace toca

namespace detail {

namespace {

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
    if (run.depth < 1 || run.num_steps < 1 || run.num_tokens < 1 || run.batch < 1 || run.grid_h * run.grid_w != run.num_tokens) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{}: run of model '{}' needs depth, steps, rows and tokens >= 1 and a grid_h x grid_w token grid; "
                              "got depth {}, {} steps, {} rows, {} tokens on a {}x{} grid", name_, run.model, run.depth,
                              run.num_steps, run.batch, run.num_tokens, run.grid_h, run.grid_w));
    }
    run_ = run;
    auto resolve = [&](double value, double model_value) { return value == ToCaConfig::kAuto ? model_value : value; };
    int model_grid = 2;
    if (run.model == "DiT") {
      model_ = Model::kDiT;
      if (config_.schedule == "opensora" || config_.schedule == "pixart") {
        throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: schedule={} is {}; DiT uses ddim50 or ddpm250", name_,
                                                             config_.schedule, schedule_owner(config_.schedule)));
      }
      schedule_ = config_.schedule != "auto" ? config_.schedule : run.sampler == "ddim" ? "ddim50" : "ddpm250";
      interval_ = config_.interval > 0 ? config_.interval : schedule_ == "ddim50" ? 3 : 4;
      ratio_ = resolve(config_.ratio, 0.07);
      bonus_ = resolve(config_.spread_bonus, 0.6);
    } else if (run.model == "PixArt") {
      // PixArt-alpha-ToCa: --fresh_threshold 3, --fresh_ratio 0.30, s4 local_selection_with_bonus(0.4, 4).
      model_ = Model::kPixArt;
      if (config_.schedule != "auto" && config_.schedule != "pixart") {
        throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: schedule={} is {}; PixArt runs the pixart schedule (or auto)", name_,
                                                             config_.schedule, schedule_owner(config_.schedule)));
      }
      schedule_ = "pixart";
      interval_ = config_.interval > 0 ? config_.interval : 3;
      ratio_ = resolve(config_.ratio, 0.30);
      bonus_ = resolve(config_.spread_bonus, 0.4);
      model_grid = 4;
      if (run.step_index_counts_down) throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: PixArt steps count up", name_));
    } else if (run.model == "STDiT3") {
      model_ = Model::kVideo;
      if (config_.schedule != "auto" && config_.schedule != "opensora") {
        throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: schedule={} is {}; STDiT3 runs the opensora schedule", name_,
                                                             config_.schedule, schedule_owner(config_.schedule)));
      }
      schedule_ = "opensora";
      interval_ = config_.interval > 0 ? config_.interval : 3;
      ratio_ = resolve(config_.ratio, 0.10);
      bonus_ = resolve(config_.spread_bonus, 0.0);
      if (bonus_ > 0) {
        throw Error(ErrorCode::kUnsupported, fmt::format("{}: bonus={}: the s4 spatial bonus is off for STDiT3 (the reference "
                                                         "disables it for video); use bonus=0 or leave it auto", name_, bonus_));
      }
      if (run.step_index_counts_down) throw Error(ErrorCode::kInvalidArgument, fmt::format("{}: STDiT3 steps count up", name_));
    } else {
      throw Error(ErrorCode::kUnsupported, fmt::format("{}: model '{}' is not supported (DiT, PixArt and STDiT3 are)", name_, run.model));
    }
    grid_ = config_.spread_grid == ToCaConfig::kAutoGrid ? model_grid : config_.spread_grid;
    if (bonus_ > 0 && (run.grid_h % grid_ || run.grid_w % grid_)) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("{}: s4 grid {} does not divide the {}x{} token grid; pick a grid that divides it or bonus=0", name_,
                              grid_, run.grid_h, run.grid_w));
    }
    threshold_ = interval_;
    scores_.assign(static_cast<size_t>(run.depth) * (model_ == Model::kVideo ? 2 : 1), at::Tensor());
    s2_.assign(scores_.size(), at::Tensor());
    block_order_ = block_order_rows_ = at::Tensor();
    generator_ = at::make_generator<at::CPUGeneratorImpl>(config_.seed);
  }

  StepMode begin_step(const StepInfo& step) override {
    step_ = step;
    first_ = step.position == 0;
    if (config_.mode == "clean") {  // one decision per step, taken as the reference takes it at layer 0
      step_full_ = full_now();
      if (step_full_) threshold_ = force_interval();
    }
    return StepMode::kPerSite;
  }

  SiteDecision decide(const SiteState& state, bool dry) override {
    const Site& site = state.site;
    if (model_ == Model::kVideo) return decide_video(state, dry);
    SiteDecision d;
    if (site.kind == SiteKind::kSelfAttention) {
      if (config_.mode == "reference") {
        // Full or partial is decided at every block; the interval is updated at a full block
        // (force_init; it depends on the step only, so layer 0 sets it for the step), so later
        // blocks of the same step may disagree with layer 0 ("mixed step").
        block_full_ = full_now();
        if (block_full_ && site.layer == 0) threshold_ = force_interval();
      } else {
        block_full_ = step_full_;
      }
      d.action = block_full_ ? Action::kCompute : Action::kReuse;  // attention is reused whole at partial steps
      d.attention_stats = block_full_ && model_ == Model::kDiT && config_.score == "attention" && !dry;  // s1 (DiT only)
      return d;
    }
    const bool cross_stats = model_ == Model::kPixArt && site.kind == SiteKind::kCrossAttention && config_.score == "attention" && !dry;
    if (block_full_) {
      d.attention_stats = cross_stats;  // PixArt's s2 from the whole cross-attention map
      return d;  // compute
    }
    d.action = Action::kPartial;
    const double r = model_ == Model::kPixArt
                         ? toca::pixart_fresh_ratio(ratio_, step_.index, run_.num_steps, site.layer, run_.depth - 1, site.kind)
                         : toca::fresh_ratio(schedule_, ratio_, step_.index, run_.num_steps, site.layer, run_.depth - 1, site.kind);
    d.tokens = toca::fresh_tokens(r, run_.num_tokens);
    if (dry || d.tokens == 0) return d;
    d.indices = toca::select_top(score(state), d.tokens);
    d.attention_stats = cross_stats;  // the recomputed rows of the map (update_cache)
    return d;
  }

  void observe_attention(const Site& site, const at::Tensor& stats) override {
    // DiT: s1 from the self-attention column sums; PixArt and STDiT3: the entropy terms of every
    // token, kept negated (s2 is formed when a score is needed). Both official codes compute s2 the same way: the
    // rows' valid caption tokens on one concatenated key axis (block-diagonal mask), so the CFG
    // halves average over disjoint keys.
    const size_t i = score_slot(site);
    scores_.at(i) = model_ == Model::kDiT ? toca::attention_score(stats) : toca::negated_entropy_terms(stats, run_.cfg);
    s2_.at(i) = at::Tensor();
  }

  void observe_attention_rows(const Site& site, const at::Tensor& indices, const at::Tensor& stats) override {
    // PixArt's update_cache scatters the recomputed tokens' rows into the stored cross-attention
    // map; their entropy terms are exactly what changes. [B, k] into [B, N]. (OpenSora's does the
    // same, but its cross-attention ratio is negative: no rows are ever recomputed, none asked.)
    if (model_ != Model::kPixArt || site.kind != SiteKind::kCrossAttention) return;
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
  enum class Model { kDiT, kPixArt, kVideo };

  static const char* schedule_owner(const std::string& schedule) {
    return schedule == "pixart" ? "PixArt's" : schedule == "opensora" ? "STDiT3's (OpenSora)" : "DiT's";
  }

  double force_interval() const {
    return model_ == Model::kPixArt ? toca::pixart_force_interval(step_.index, run_.num_steps, interval_, ratio_)
                                    : toca::force_interval(step_.index, run_.num_steps, interval_, ratio_);
  }

  // OpenSora (toca.md §2.2, §2.3): fixed per-module cycles with steps 0-2 full; self-attention
  // reused whole between, cross-attention too (its ratio is negative, so 0 tokens, but ages still
  // advance), the MLP recomputes r0 * 1.495 of the tokens ranked by s2 + λ3 * s3.
  SiteDecision decide_video(const SiteState& state, bool dry) {
    const Site& site = state.site;
    SiteDecision d;
    if (toca::video_full_step(step_.index, site.kind)) {
      d.attention_stats = site.kind == SiteKind::kCrossAttention && config_.score == "attention" && !dry;
      return d;  // compute
    }
    if (site.kind == SiteKind::kSelfAttention) {
      d.action = Action::kReuse;
      return d;
    }
    d.action = Action::kPartial;
    d.tokens = toca::fresh_tokens(toca::video_fresh_ratio(ratio_, site.kind), run_.num_tokens);
    if (dry || d.tokens == 0) return d;
    d.indices = toca::select_top(score(state), d.tokens);
    return d;
  }

  // DiT: one s1 per layer; PixArt: one set of entropy terms per layer (read by its cross-attention
  // and MLP); STDiT3: one set per (block kind, layer), read by that block's MLP.
  size_t score_slot(const Site& site) const {
    return static_cast<size_t>(site.layer) +
           (model_ == Model::kVideo && site.block == BlockKind::kTemporal ? static_cast<size_t>(run_.depth) : 0);
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
      if (model_ == Model::kDiT) {
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
  Model model_ = Model::kDiT;
  std::string schedule_;
  int interval_ = 3;
  double ratio_ = 0.07, bonus_ = 0.6;  // resolved for the run's model
  int grid_ = 2;
  double threshold_ = 3;
  StepInfo step_;
  bool first_ = true, step_full_ = true, block_full_ = true;
  std::vector<at::Tensor> scores_;  // per layer (x block kind): DiT's s1, PixArt's / STDiT3's entropy terms negated; [B, N]
  std::vector<at::Tensor> s2_;      // per slot: s2 from the current terms (PixArt, STDiT3); undefined when stale
  at::Tensor block_order_, block_order_rows_;  // s4: the tokens of every g x g block, [N] and [B, blocks, g*g] int64
  at::Generator generator_;
};

ToCaConfig read_toca(OptionReader& r, bool random) {
  ToCaConfig c;
  c.ratio = r.number_or_auto("ratio", c.ratio, 0, 1);
  c.interval = static_cast<int>(r.integer("interval", c.interval, 0, 1000));
  c.schedule = r.choice("schedule", c.schedule, {"auto", "ddim50", "ddpm250", "pixart", "opensora"});
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
