// What the cache machinery itself costs, counted instead of timed: for a tiny random-weight DiT,
// PixArt-α and STDiT3 and each cache policy, a short CFG sampling loop runs under an ATen
// RecordFunction global callback that counts
//   - ATen operator calls per step, split into full steps (every site computed) and cached steps
//     (some site reused or partial): top-level calls, and all calls including nested ones;
//   - the cache's own operator calls per site, by action (compute / reuse / partial): everything
//     CacheContext and the policy run at a site outside the model's module call (the context's
//     profiler scopes, include/ditcache/cache/context.h, tell them apart);
//   - host-device synchronisation points: operators that read device values on the host
//     (item, _local_scalar_dense, is_nonzero, equal, allclose), whose output shape depends on the
//     data (nonzero, argwhere, masked_select, unique, bincount, repeat_interleave with a tensor of
//     repeats) and copies between host and device (counted when the run is on a GPU).
// On the CPU the synchronisations are free and the op counts are what a GPU would launch, less the
// views; every operator is roughly one kernel launch (5-10 us) there, and every sync a stall.
//
// Each row also gives the wall time of a run (without the callback) and a hash of the final
// latents: equal hashes across builds mean bit-identical samples. --names lists the calls by name.
//
//   cache_overhead [--models dit,pixart,stdit3] [--policies "none;fora:interval=3;toca"] [--steps 0]
//                  [--reps 3] [--threads 1] [--device cpu] [--names]
#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "ditcache/ditcache.h"
#include "ditcache/step_driver.h"
#include "common/cli_util.h"

namespace {

using namespace ditcache;

// ---------------------------------------------------------------------------------------------
// Counting.

struct Counts {
  int64_t top = 0, all = 0, syncs = 0;
  Counts& operator+=(const Counts& o) {
    top += o.top;
    all += o.all;
    syncs += o.syncs;
    return *this;
  }
};

// Where an operator runs: outside any site (the model), in a policy decision, in the cache's
// handling of a site by action, or in the model's module called from a site.
enum Region : int { kModel, kDecide, kCompute, kReuse, kPartial, kModule, kRegions };

struct Counter {
  bool active = false;
  std::thread::id thread;
  int depth = 0;                  // nesting of operator calls
  int sync_depth = 0;             // inside a counted synchronisation (count the outermost only)
  std::vector<Region> regions;    // open profiler scopes of the cache
  std::array<Counts, kRegions> step{};  // this step, per region
  std::array<int64_t, kRegions> sites{};  // sites this step, per action (kCompute..kPartial)
  Counts pending_decide;          // a decision's ops, charged to the action that follows
  bool names = false;             // also tally the cache's top-level calls by name
  std::vector<std::string> pending_names;
  std::map<std::string, int64_t> by_name[kRegions];  // per action: "aten::op" -> calls
  std::map<std::string, int64_t> module_names[kRegions];  // the module calls under each action
};

Counter g_counter;

bool is_sync_op(const char* name) {
  static const char* const kNames[] = {"aten::item", "aten::_local_scalar_dense", "aten::is_nonzero", "aten::equal",
                                       "aten::allclose", "aten::nonzero", "aten::argwhere", "aten::masked_select",
                                       "aten::bincount", "aten::histc"};
  for (const char* n : kNames) {
    if (std::strcmp(name, n) == 0) return true;
  }
  return std::strncmp(name, "aten::unique", 12) == 0 || std::strncmp(name, "aten::_unique", 13) == 0;
}

// repeat_interleave with a tensor of repeats and no output size sizes its output from the data.
bool is_data_dependent_repeat(const at::RecordFunction& fn) {
  if (std::strcmp(fn.name(), "aten::repeat_interleave") != 0) return false;
  const auto inputs = fn.inputs();
  const bool tensor_repeats = inputs.size() >= 2 && inputs[1].isTensor();
  const bool sized = !inputs.empty() && inputs.back().isInt();
  return tensor_repeats && !sized;
}

// A copy between host and device (to, _to_copy, copy_): the devices of its tensors and target.
bool crosses_devices(const at::RecordFunction& fn) {
  const char* name = fn.name();
  if (std::strcmp(name, "aten::to") != 0 && std::strcmp(name, "aten::_to_copy") != 0 && std::strcmp(name, "aten::copy_") != 0) {
    return false;
  }
  std::optional<c10::Device> first;
  for (const auto& v : fn.inputs()) {
    std::optional<c10::Device> d;
    if (v.isTensor() && v.toTensor().defined()) d = v.toTensor().device();
    if (v.isDevice()) d = v.toDevice();
    if (!d) continue;
    if (!first) {
      first = d;
    } else if (d->type() != first->type()) {
      return true;
    }
  }
  return false;
}

Region current_region() { return g_counter.regions.empty() ? kModel : g_counter.regions.back(); }

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  auto& c = g_counter;
  if (!c.active || std::this_thread::get_id() != c.thread) return nullptr;
  if (fn.scope() == at::RecordScope::USER_SCOPE) {
    const char* name = fn.name();
    Region r = kModel;
    if (std::strcmp(name, kScopeDecide) == 0) r = kDecide;
    else if (std::strcmp(name, kScopeCompute) == 0) r = kCompute;
    else if (std::strcmp(name, kScopeReuse) == 0) r = kReuse;
    else if (std::strcmp(name, kScopePartial) == 0) r = kPartial;
    else if (std::strcmp(name, kScopeModule) == 0) r = kModule;
    else return nullptr;
    if (r >= kCompute && r <= kPartial) {
      c.step[r] += c.pending_decide;
      c.pending_decide = Counts{};
      for (const auto& n : c.pending_names) ++c.by_name[r][n];
      c.pending_names.clear();
      ++c.sites[r];
    }
    c.regions.push_back(r);
    return nullptr;
  }
  Counts add;
  add.all = 1;
  add.top = c.depth == 0 ? 1 : 0;
  if (c.sync_depth == 0 && (is_sync_op(fn.name()) || is_data_dependent_repeat(fn) || crosses_devices(fn))) {
    add.syncs = 1;
    ++c.sync_depth;
  } else if (c.sync_depth > 0) {
    ++c.sync_depth;
  }
  ++c.depth;
  const Region r = current_region();
  if (r == kDecide) {
    c.pending_decide += add;
    if (c.names && add.top) c.pending_names.emplace_back(fn.name());
  } else {
    c.step[r] += add;
    if (c.names && add.top && r >= kCompute && r <= kPartial) ++c.by_name[r][fn.name()];
    if (c.names && add.top && r == kModule && c.regions.size() >= 2) ++c.module_names[c.regions[c.regions.size() - 2]][fn.name()];
  }
  return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  auto& c = g_counter;
  if (!c.active || std::this_thread::get_id() != c.thread) return;
  if (fn.scope() == at::RecordScope::USER_SCOPE) {
    const char* name = fn.name();
    const bool ours = std::strcmp(name, kScopeDecide) == 0 || std::strcmp(name, kScopeCompute) == 0 ||
                      std::strcmp(name, kScopeReuse) == 0 || std::strcmp(name, kScopePartial) == 0 ||
                      std::strcmp(name, kScopeModule) == 0;
    if (ours && !c.regions.empty()) c.regions.pop_back();
    return;
  }
  if (c.depth > 0) --c.depth;
  if (c.sync_depth > 0) --c.sync_depth;
}

// ---------------------------------------------------------------------------------------------
// Tiny models with random weights, driven step by step through a StepDriver with CFG (batch
// [cond; uncond]) and a plain update x <- x - 0.05 * guided eps, so every step sees new inputs.

struct Workload {
  std::string name;
  int steps = 0;
  std::function<void(CacheContext&, int steps)> begin;    // a new run through the cache
  std::function<void(CacheContext*, int position)> step;  // one model call through the cache (and the update)
  std::function<void()> reset;                            // back to the initial latents
  std::function<at::Tensor()> latents;                    // the current latents
};

c10::TensorOptions options(const c10::Device& device) { return at::TensorOptions().device(device); }

// Any backbone: `model` keeps the module alive, `base` holds its conditions for the CFG batch,
// `timestep(position, steps)` is the time the model sees and `guidance` the CFG scale.
template <typename Model>
Workload make_workload(const std::string& name, int steps, Model model, const at::Tensor& x0, const BackboneInputs& base,
                       std::function<at::Tensor(int position, int steps)> timestep, double guidance) {
  auto x = std::make_shared<at::Tensor>(x0);
  auto driver = std::make_shared<std::shared_ptr<StepDriver>>();  // the current run's
  auto impl = model.ptr();                                         // the module, kept alive by the workload
  const auto device = x0.device();
  const int64_t cin = x0.size(1);
  Workload w;
  w.name = name;
  w.steps = steps;
  w.begin = [=](CacheContext& cache, int n) {
    BackboneInputs in = base;
    in.x = at::cat({*x, *x}, 0);
    *driver = std::make_shared<StepDriver>(&cache, impl->info(), impl->run_shape(in), n, "overhead", device);
  };
  w.reset = [=] { *x = x0; };
  w.latents = [=] { return *x; };
  w.step = [=](CacheContext*, int position) {
    auto& d = **driver;
    BackboneInputs in = base;
    in.x = at::cat({*x, *x}, 0);
    in.timestep = timestep(position, d.num_steps());
    auto eps = d.step(position, [&](CacheContext* cache) { return impl->forward(in, cache).narrow(1, 0, cin); });
    auto halves = eps.chunk(2, 0);
    *x = *x - 0.05 * (halves[1] + guidance * (halves[0] - halves[1]));
  };
  return w;
}

Workload dit_workload(const c10::Device& device) {
  DiTConfig config;
  config.name = "DiT-tiny";
  config.depth = 4;
  config.hidden_size = 96;
  config.num_heads = 4;
  config.input_size = 16;  // 8 x 8 tokens
  config.num_classes = 10;
  DiT model(config);
  model->eval();
  model->to(device);
  BackboneInputs base;
  base.y = at::tensor({3, config.num_classes}, options(device).dtype(at::kLong));  // class 3, then the null class
  auto x0 = at::randn({1, config.in_channels, config.input_size, config.input_size}, options(device));
  return make_workload("DiT", 10, model, x0, base, [device](int position, int steps) {
    const int index = steps - 1 - position;  // DiT counts down
    return at::full({2}, (index + 1) * 999 / steps, options(device).dtype(at::kLong));
  }, 4.0);
}

Workload pixart_workload(const c10::Device& device) {
  PixArtConfig config;
  config.name = "PixArt-tiny";
  config.depth = 4;
  config.hidden_size = 48;
  config.num_heads = 2;
  config.caption_channels = 32;
  config.model_max_length = 8;
  config.input_size = 16;  // 8 x 8 tokens, four 4 x 4 blocks for ToCa's s4
  PixArt model(config);
  model->eval();
  model->to(device);
  auto x0 = at::randn({1, config.in_channels, config.input_size, config.input_size}, options(device));
  BackboneInputs base;
  base.y = at::cat({at::randn({1, config.model_max_length, config.caption_channels}, options(device)),
                    model->null_caption().unsqueeze(0)}, 0);  // [2, L, C]: prompt, null caption
  base.mask = at::zeros({1, config.model_max_length}, options(device));
  base.mask.narrow(1, 0, 5).fill_(1);  // 5 valid caption tokens, repeated over the CFG batch
  return make_workload("PixArt", 10, model, x0, base, [device](int position, int steps) {
    return at::full({2}, 999.0 * (1.0 - static_cast<double>(position) / steps), options(device));
  }, 4.5);
}

Workload stdit3_workload(const c10::Device& device) {
  STDiT3Config config;
  config.name = "STDiT3-tiny";
  config.depth = 2;
  config.hidden_size = 64;
  config.num_heads = 4;
  config.caption_channels = 32;
  config.model_max_length = 8;
  STDiT3 model(config);
  model->eval();
  model->to(device);
  const int64_t frames = 5, h = 4, w = 6;  // 5 frames of 2 x 3 tokens
  auto x0 = at::randn({1, config.in_channels, frames, h, w}, options(device));
  BackboneInputs base;
  base.y = at::cat({at::randn({1, config.model_max_length, config.caption_channels}, options(device)),
                    model->null_caption().unsqueeze(0)}, 0);
  base.mask = at::zeros({1, config.model_max_length}, options(device));
  base.mask.narrow(1, 0, 5).fill_(1);
  base.fps = at::full({1}, 24.0, options(device));
  base.height = 32;
  base.width = 48;
  // 12 steps: ToCa's steps 0-2 full, then the 3- and 6-step cycles.
  return make_workload("STDiT3", 12, model, x0, base, [device](int position, int steps) {
    return at::full({2}, 1000.0 * (1.0 - static_cast<double>(position) / steps), options(device));
  }, 7.0);
}

// ---------------------------------------------------------------------------------------------

struct Result {
  int full_steps = 0, cached_steps = 0;
  Counts full, cached;                 // ops over the full / cached steps
  Counts cache;                        // the cache's own ops (decide + action, without modules), all steps
  std::array<Counts, kRegions> site{};  // the cache's own ops per action, summed
  std::array<int64_t, kRegions> sites{};
  double ms = 0;                       // median wall time of a run, callbacks off
  uint32_t latents = 0;                // FNV-1a of the final latents' bytes: equal hashes, bit-identical samples
};

uint32_t fnv1a(const at::Tensor& t) {
  auto bytes = t.to(at::kCPU).contiguous();
  const auto* p = static_cast<const unsigned char*>(bytes.data_ptr());
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < bytes.nbytes(); ++i) h = (h ^ p[i]) * 16777619u;
  return h;
}

std::string per(int64_t value, int64_t n) { return n > 0 ? fmt::format("{:.1f}", static_cast<double>(value) / n) : "-"; }
std::string ops(const Counts& c, int64_t n) { return n > 0 ? fmt::format("{} ({})", per(c.top, n), per(c.all, n)) : "-"; }

Result measure(Workload& w, const std::string& spec, int steps, int reps, const c10::Device& device) {
  Result r;
  CacheContext cache(make_policy(spec));
  at::NoGradGuard no_grad;
  auto sync = [&] {
    if (device.is_cuda()) at::zeros({1}, options(device)).item<float>();  // waits for the device
  };
  // Counted run.
  for (auto& m : g_counter.by_name) m.clear();
  for (auto& m : g_counter.module_names) m.clear();
  const auto handle = at::addGlobalCallback(at::RecordFunctionCallback(on_start, on_end)
                                                .needsInputs(true)
                                                .scopes({at::RecordScope::FUNCTION, at::RecordScope::USER_SCOPE}));
  w.reset();
  w.begin(cache, steps);
  for (int i = 0; i < steps; ++i) {
    g_counter.step.fill(Counts{});
    g_counter.sites.fill(0);
    g_counter.pending_decide = Counts{};
    g_counter.active = true;
    w.step(&cache, i);
    g_counter.active = false;
    Counts total;
    for (const auto& c : g_counter.step) total += c;
    total += g_counter.pending_decide;
    const auto& rec = cache.steps().back();
    const bool full = rec.mode == StepMode::kPerSite &&
                      std::all_of(rec.sites.begin(), rec.sites.end(), [](const SiteRecord& s) { return s.action == Action::kCompute; });
    (full ? r.full : r.cached) += total;
    ++(full ? r.full_steps : r.cached_steps);
    for (int a = kCompute; a <= kPartial; ++a) {
      r.site[a] += g_counter.step[a];
      r.sites[a] += g_counter.sites[a];
      r.cache += g_counter.step[a];
    }
    r.cache += g_counter.pending_decide;
  }
  r.latents = fnv1a(w.latents());
  at::removeCallback(handle);
  // Timed runs, no callback.
  std::vector<double> ms;
  for (int rep = 0; rep <= reps; ++rep) {
    w.reset();
    w.begin(cache, steps);
    sync();
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) w.step(&cache, i);
    sync();
    if (rep > 0) ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  r.ms = ms.empty() ? 0 : ms[ms.size() / 2];
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Count the ATen operator calls and host-device syncs of the cache machinery per step and site "
               "(tiny random-weight DiT, PixArt-alpha, STDiT3)."};
  std::string models = "dit,pixart,stdit3", device_name = "cpu";
  std::string policies = "none;fora:interval=3;toca";
  int steps = 0, reps = 3, threads = 1;
  bool names = false;
  app.add_option("--models", models, "comma-separated: dit, pixart, stdit3")->capture_default_str();
  app.add_option("--policies", policies, "semicolon-separated policy strings")->capture_default_str();
  app.add_option("--steps", steps, "sampling steps (0: DiT 10, PixArt 10, STDiT3 12)")->capture_default_str();
  app.add_option("--reps", reps, "timed runs per row (median reported; one untimed run first)")->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads")->capture_default_str();
  app.add_option("--device", device_name, "cpu or cuda")->capture_default_str();
  app.add_flag("--names", names, "after the table, the top-level operator calls per site by name, action and part (cache or module)");
  CLI11_PARSE(app, argc, argv);
  try {
    if (steps < 0 || reps < 0 || threads < 1) throw Error(ErrorCode::kInvalidArgument, "--steps and --reps must be >= 0, --threads >= 1");
    at::set_num_threads(threads);
    const c10::Device device(device_name);
    at::manual_seed(0);
    g_counter.thread = std::this_thread::get_id();
    g_counter.names = names;
    fmt::print("Per step: ATen operator calls, top-level (all, nested included); syncs: host-device synchronisation "
               "points per step (of them in the cache machinery). Per site: the cache's own calls (decision, gather, "
               "scatter, ages, scores, statistics; not the module) by action. ms: a whole run without the callback, {} "
               "thread(s), {}. latents: a hash of the final latents (equal: bit-identical samples).\n\n", threads, device_name);
    fmt::print("| model | policy | steps full / cached | ops / full step | ops / cached step | syncs / step (cache) | "
               "cache ops / compute site | / reuse site | / partial site | ms / run | latents |\n");
    fmt::print("|---|---|---|---|---|---|---|---|---|---|---|\n");
    std::vector<std::string> notes;  // --names
    for (const auto& name : cli::split(models, ',', "--models")) {
      if (name != "dit" && name != "pixart" && name != "stdit3") {
        throw Error(ErrorCode::kInvalidArgument, fmt::format("--models: unknown model '{}' (dit, pixart, stdit3)", name));
      }
      Workload w = name == "dit" ? dit_workload(device) : name == "pixart" ? pixart_workload(device) : stdit3_workload(device);
      const int n = steps > 0 ? steps : w.steps;
      for (const auto& spec : cli::split(policies, ';', "--policies")) {
        const auto r = measure(w, spec, n, reps, device);
        const int64_t total_steps = r.full_steps + r.cached_steps;
        fmt::print("| {} | {} | {} / {} | {} | {} | {} ({}) | {} | {} | {} | {:.1f} | {:08x} |\n", w.name, spec, r.full_steps, r.cached_steps,
                   ops(r.full, r.full_steps), ops(r.cached, r.cached_steps),
                   per(r.full.syncs + r.cached.syncs, total_steps), per(r.cache.syncs, total_steps),
                   ops(r.site[kCompute], r.sites[kCompute]), ops(r.site[kReuse], r.sites[kReuse]),
                   ops(r.site[kPartial], r.sites[kPartial]), r.ms, r.latents);
        if (names) {
          static const char* const kAction[kRegions] = {"", "", "compute", "reuse", "partial", ""};
          for (int a = kCompute; a <= kPartial; ++a) {
            if (g_counter.by_name[a].empty() && g_counter.module_names[a].empty()) continue;
            std::string line;
            for (const auto& [op, calls] : g_counter.by_name[a]) line += fmt::format(" {} {},", op, per(calls, r.sites[a]));
            if (!line.empty()) {
              notes.push_back(fmt::format("- {} {}, the cache per {} site:{}", w.name, spec, kAction[a], line.substr(0, line.size() - 1)));
            }
            line.clear();
            for (const auto& [op, calls] : g_counter.module_names[a]) line += fmt::format(" {} {},", op, per(calls, r.sites[a]));
            if (!line.empty()) {
              notes.push_back(fmt::format("- {} {}, the module per {} site:{}", w.name, spec, kAction[a], line.substr(0, line.size() - 1)));
            }
          }
        }
      }
    }
    if (!notes.empty()) fmt::print("\nTop-level calls per site by name:\n{}\n", fmt::join(notes, "\n"));
  } catch (const std::exception& e) {
    std::cerr << "cache_overhead: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
