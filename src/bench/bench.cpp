// The benchmark grid (include/ditcache/bench.h).
#include "ditcache/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/memory.h"
#include "ditcache/cache/context.h"
#include "ditcache/cache/policy.h"
#include "ditcache/data/shapes.h"
#include "ditcache/device.h"
#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/metrics/classifier.h"
#include "ditcache/metrics/quality.h"
#include "ditcache/models/dit.h"
#include "ditcache/models/vae.h"
#include "ditcache/pipeline.h"
#include "ditcache/plot.h"
#include "ditcache/sampling/gaussian_diffusion.h"

namespace ditcache {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kLosslessDb = 100.0;  // where the speedup plot draws outputs identical to uncached

// A model of the grid, loaded on one device.
struct Model {
  std::string name;
  DiT dit{nullptr};
  AutoencoderKLDecoder vae{nullptr};
  bool pixel = false;     // pixel-space: the samples are the images
  bool shapes10 = false;  // the embedded model: quality metrics apply
};

bool is_file(const std::string& path) { return std::filesystem::is_regular_file(path); }

Model load_model(const std::string& spec, const BenchOptions& o, const c10::Device& device, at::ScalarType dtype) {
  Model m;
  m.name = spec;
  std::unique_ptr<WeightFile> file;
  DiTConfig config;
  if (spec == "shapes10") {
    file = open_weights(embedded_model_dir() + "/dit.safetensors");
    m.shapes10 = true;
  } else if (is_file(spec)) {
    file = open_weights(spec);
    m.name = std::filesystem::path(spec).filename().string();
  } else {
    config = DiTConfig::preset(spec);  // validate() has checked the name and --random-weights
  }
  if (file) config = DiTConfig::from_weights(*file);
  at::manual_seed(o.seed);
  m.dit = DiT(config);
  if (file) m.dit->load(*file);
  m.dit->eval();
  m.dit->to(device, dtype);
  m.pixel = config.in_channels == 3;
  if (!m.pixel && !o.vae.empty()) {
    auto vae_file = open_weights(o.vae);
    m.vae = AutoencoderKLDecoder(VAEConfig::from_weights(*vae_file));
    m.vae->load(*vae_file);
    m.vae->eval();
    m.vae->to(device, dtype);
  }
  return m;
}

struct RunResult {
  at::Tensor latents, images;  // images: [-1, 1], undefined for a latent model without a VAE
  double wall_ms = 0, forward_ms = 0;
  RunSummary summary;
  std::vector<std::pair<Site, at::Tensor>> counts;
};

RunResult run_once(Model& m, const BenchOptions& o, const std::string& policy, int64_t steps, int64_t batch,
                   uint64_t seed, int64_t first_label, bool record, const c10::Device& device) {
  CacheContext cache(make_policy(policy));
  cache.set_count_tokens(record);
  DiTSampleOptions so;
  for (int64_t i = 0; i < batch; ++i) so.class_labels.push_back((first_label + i) % m.dit->config().num_classes);
  so.sampler = parse_sampler(o.sampler);
  so.steps = steps;
  so.guidance_scale = o.guidance_scale;
  so.seed = seed;
  so.cache = &cache;
  double forward_seconds = 0;
  so.forward_seconds = &forward_seconds;
  RunResult r;
  bench::synchronize(device);
  const auto start = std::chrono::steady_clock::now();
  r.latents = sample_dit(m.dit, so);
  if (m.pixel) {
    r.images = r.latents.clamp(-1.0, 1.0);  // what the PNG shows
  } else if (m.vae) {
    at::NoGradGuard no_grad;
    r.images = decode_latents(m.vae, r.latents).to(at::kFloat).clamp(-1.0, 1.0);
  }
  bench::synchronize(device);
  r.wall_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  r.forward_ms = forward_seconds * 1e3;
  r.summary = cache.summary();
  if (record) r.counts = cache.token_counts();
  return r;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string policy_family(const std::string& spec) { return spec.substr(0, spec.find(':')); }

// The quality set of a shapes10 row: quality_samples images in chunks of `batch`, labels cycling.
at::Tensor quality_images(Model& m, const BenchOptions& o, const std::string& policy, int64_t steps, int64_t batch,
                          const c10::Device& device, at::Tensor& labels) {
  std::vector<at::Tensor> images;
  std::vector<int64_t> all_labels;
  for (int64_t start = 0; start < o.quality_samples; start += batch) {
    const int64_t n = std::min(batch, o.quality_samples - start);
    auto r = run_once(m, o, policy, steps, n, o.seed + 1000 + static_cast<uint64_t>(start), start, false, device);
    images.push_back(r.images.to(at::kCPU, at::kFloat));
    for (int64_t i = 0; i < n; ++i) all_labels.push_back((start + i) % kShapesClasses);
  }
  labels = at::tensor(all_labels, at::TensorOptions().dtype(at::kLong));
  return at::cat(images);
}

ShapesClassifier load_classifier(const BenchOptions& o) {
  const auto path = o.classifier.empty() ? embedded_model_dir() + "/classifier.safetensors" : o.classifier;
  auto classifier = load_shapes_classifier(path);
  if (classifier->num_classes() != kShapesClasses) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("classifier '{}' has {} classes; shapes10 has {}", path,
                                                         classifier->num_classes(), kShapesClasses));
  }
  return classifier;
}

void validate(const BenchOptions& o) {
  auto bad = [](const std::string& what) { throw Error(ErrorCode::kInvalidArgument, "ditcache-bench: " + what); };
  if (o.models.empty() || o.policies.empty() || o.steps.empty() || o.batches.empty() || o.devices.empty()) {
    bad("every grid axis (models, policies, steps, batches, devices) needs at least one value");
  }
  for (auto s : o.steps) if (s < 1) bad(fmt::format("step count {} is not positive", s));
  for (auto b : o.batches) if (b < 1) bad(fmt::format("batch size {} is not positive", b));
  if (o.repetitions < 1) bad(fmt::format("repetitions must be >= 1, got {}", o.repetitions));
  if (o.warmup < 0) bad(fmt::format("warm-up runs must be >= 0, got {}", o.warmup));
  if (o.quality_samples < 0 || o.quality_samples == 1) bad(fmt::format("quality samples must be 0 or >= 2, got {}", o.quality_samples));
  if (o.quality_samples > 0 && o.reference_samples < 2) bad(fmt::format("reference samples must be >= 2, got {}", o.reference_samples));
  const auto sampler = parse_sampler(o.sampler);
  for (const auto& p : o.policies) make_policy(p);  // unknown policies and options fail before any timing
  for (auto steps : o.steps) {  // the sampler's own step-count rules
    if (sampler == SamplerKind::kDDIM) GaussianDiffusion::ddim(steps);
    else GaussianDiffusion(std::to_string(steps));
  }
  bool any_shapes10 = false, any_latent = false;
  for (const auto& spec : o.models) {
    if (spec == "shapes10") {
      embedded_model_dir();
      any_shapes10 = true;
    } else if (is_file(spec)) {
      any_latent |= DiTConfig::from_weights(*open_weights(spec)).in_channels != 3;
    } else {
      DiTConfig::preset(spec);  // names the unknown model and lists the presets
      if (!o.random_weights) {
        bad(fmt::format("model '{}' is a preset without weights: add --random-weights for speed-only rows, or give a "
                        "weight file", spec));
      }
      any_latent = true;
    }
  }
  if (o.quality_samples > 0 && !any_shapes10) bad("quality samples need the embedded shapes10 model in --models");
  if (!o.classifier.empty() && !(o.quality_samples > 0)) bad("--classifier is only used with --quality N");
  if (!o.vae.empty()) {
    if (!any_latent) bad(fmt::format("--vae '{}': no latent-space model in the grid needs a VAE", o.vae));
    VAEConfig::from_weights(*open_weights(o.vae));
  }
  if (o.quality_samples > 0) load_classifier(o);
}

}  // namespace

std::string embedded_model_dir() {
  std::vector<std::string> places;
  if (const char* env = std::getenv("DITCACHE_MODELS")) places.push_back(std::string(env) + "/shapes10");
  places.push_back(std::string(DITCACHE_SOURCE_MODELS_DIR) + "/shapes10");
  places.push_back(std::string(DITCACHE_INSTALL_MODELS_DIR) + "/shapes10");
  for (const auto& p : places) {
    if (is_file(p + "/dit.safetensors")) return p;
  }
  std::string list;
  for (const auto& p : places) list += (list.empty() ? "" : ", ") + p;
  throw Error(ErrorCode::kNotFound, fmt::format("the embedded shapes10 model (dit.safetensors) is in none of: {}", list));
}

std::vector<std::string> expand_policy_sweep(const std::string& spec) {
  if (spec.find('|') == std::string::npos) return {spec};
  const auto colon = spec.find(':');
  if (colon == std::string::npos) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("policy sweep '{}': '|' alternatives belong in option values "
                                                         "(e.g. toca:ratio=0.1|0.3)", spec));
  }
  std::vector<std::string> out = {spec.substr(0, colon + 1)};
  std::stringstream items(spec.substr(colon + 1));
  std::string item;
  bool first = true;
  while (std::getline(items, item, ',')) {
    const auto eq = item.find('=');
    if (eq == std::string::npos) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("policy sweep '{}': option '{}' is not key=value", spec, item));
    }
    std::vector<std::string> values;
    std::stringstream alternatives(item.substr(eq + 1));
    std::string v;
    while (std::getline(alternatives, v, '|')) values.push_back(v);
    if (values.empty() || std::any_of(values.begin(), values.end(), [](const std::string& s) { return s.empty(); })) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("policy sweep '{}': option '{}' has an empty alternative", spec, item));
    }
    std::vector<std::string> next;
    for (const auto& prefix : out) {
      for (const auto& value : values) next.push_back(prefix + (first ? "" : ",") + item.substr(0, eq + 1) + value);
    }
    out = std::move(next);
    first = false;
  }
  return out;
}

std::vector<BenchRow> run_bench(const BenchOptions& o) {
  validate(o);
  const auto dtype = parse_dtype(o.dtype, "ditcache-bench: dtype");
  std::vector<std::string> policies = o.policies;
  if (std::find(policies.begin(), policies.end(), "none") == policies.end()) policies.insert(policies.begin(), "none");
  std::stable_partition(policies.begin(), policies.end(), [](const std::string& p) { return p == "none"; });
  std::vector<c10::Device> devices;
  for (const auto& d : o.devices) devices.push_back(parse_device(d, "ditcache-bench: device"));

  const int64_t total = static_cast<int64_t>(o.models.size() * devices.size() * o.steps.size() * o.batches.size() * policies.size());
  int64_t cell = 0;
  std::vector<BenchRow> rows;
  std::optional<ShapesClassifier> classifier;
  std::optional<FeatureStats> reference;
  for (const auto& model_spec : o.models) {
    for (const auto& device : devices) {
      Model m = load_model(model_spec, o, device, dtype);
      const bool quality = m.shapes10 && o.quality_samples > 0;
      if (quality && !classifier) {
        classifier = load_classifier(o);
        reference = shapes_reference_stats(**classifier, o.reference_samples);
      }
      for (int64_t steps : o.steps) {
        for (int64_t batch : o.batches) {
          std::optional<RunResult> baseline;
          std::optional<BenchRow> baseline_row;
          for (const auto& policy : policies) {
            ++cell;
            auto status = [&](const std::string& what) {
              if (o.progress) {
                o.progress(fmt::format("[{}/{}] {} {} {} steps {} batch {}: {}", cell, total, m.name, device.str(), policy,
                                       steps, batch, what));
              }
            };
            BenchRow row;
            row.model = m.name;
            row.device = device.str();
            row.dtype = o.dtype;
            row.sampler = o.sampler;
            row.policy = make_policy(policy)->to_string();
            row.spec = policy;
            row.steps = steps;
            row.batch = batch;
            row.repetitions = o.repetitions;
            bench::reset_host_peak();
            bench::reset_device_peak(device);
            std::optional<RunResult> recorded;
            for (int w = 0; w < o.warmup; ++w) {
              status(fmt::format("warm-up {}/{}", w + 1, o.warmup));
              auto r = run_once(m, o, policy, steps, batch, o.seed, 0, w == 0, device);
              if (w == 0) recorded = std::move(r);
            }
            std::vector<double> walls, forwards;
            for (int rep = 0; rep < o.repetitions; ++rep) {
              status(fmt::format("run {}/{}", rep + 1, o.repetitions));
              const bool record = !recorded;  // no warm-up: the first timed run records (token counting is a few adds)
              auto r = run_once(m, o, policy, steps, batch, o.seed, 0, record, device);
              walls.push_back(r.wall_ms);
              forwards.push_back(r.forward_ms);
              if (record) recorded = std::move(r);
            }
            row.wall_ms = median(walls);
            row.wall_min_ms = *std::min_element(walls.begin(), walls.end());
            row.wall_max_ms = *std::max_element(walls.begin(), walls.end());
            row.forward_ms = median(forwards);
            row.peak_host_mb = bench::host_peak_mb();
            row.peak_device_mb = bench::device_peak_mb(device);
            const auto& s = recorded->summary;
            row.flops = s.flops;
            row.full_flops = s.full_flops;
            row.cache_mb = static_cast<double>(s.cache_bytes) / (1024.0 * 1024.0);
            row.recomputed = s.computed_share();
            // Token heat map: share of (steps x model rows) in which each token was recomputed.
            const double cfg_rows = static_cast<double>(batch * (o.guidance_scale > 1.0 ? 2 : 1));
            std::vector<at::Tensor> shares;
            for (const auto& [site, counts] : recorded->counts) {
              shares.push_back(counts / (cfg_rows * static_cast<double>(steps)));
              row.site_labels.push_back(fmt::format("L{} {}", site.layer, to_string(site.kind)));
            }
            if (!shares.empty()) row.token_share = at::stack(shares);
            if (!baseline) {
              baseline = recorded;
              row.flops_speedup = row.wall_speedup = 1.0;
            } else {
              row.flops_speedup = row.flops > 0 ? baseline->summary.full_flops / row.flops : kNaN;
              row.wall_speedup = baseline_row->wall_ms / row.wall_ms;
            }
            const bool images = recorded->images.defined();
            row.psnr = images ? psnr(recorded->images, baseline->images) : kNaN;
            row.ssim = images ? ssim(recorded->images, baseline->images) : kNaN;
            row.latent_rel_l2 = relative_l2(recorded->latents, baseline->latents);
            row.accuracy = row.frechet = row.inception = kNaN;
            if (quality) {
              status(fmt::format("quality set of {} images", o.quality_samples));
              at::Tensor labels;
              auto generated = quality_images(m, o, policy, steps, batch, device, labels);
              const auto q = evaluate_quality(**classifier, generated, labels, *reference);
              row.accuracy = q.accuracy;
              row.frechet = q.frechet;
              row.inception = q.inception;
              row.quality_count = q.count;
            }
            if (!baseline_row) baseline_row = row;
            rows.push_back(std::move(row));
          }
        }
      }
    }
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
namespace {

struct Column {
  const char* name;       // CSV / JSON key
  const char* header;     // Markdown header
  std::function<double(const BenchRow&)> value;
  const char* format;     // fmt spec for Markdown
};

const std::vector<Column>& numeric_columns() {
  static const std::vector<Column> columns = {
      {"wall_ms", "wall ms", [](const BenchRow& r) { return r.wall_ms; }, "{:.1f}"},
      {"wall_spread_pct", "spread", [](const BenchRow& r) { return 100.0 * (r.wall_max_ms - r.wall_min_ms) / r.wall_ms; }, "±{:.1f}%"},
      {"forward_ms", "forward ms", [](const BenchRow& r) { return r.forward_ms; }, "{:.1f}"},
      {"gflops", "GFLOPs", [](const BenchRow& r) { return r.flops / 1e9; }, "{:.4g}"},
      {"flops_speedup", "FLOPs ×", [](const BenchRow& r) { return r.flops_speedup; }, "{:.2f}"},
      {"wall_speedup", "wall ×", [](const BenchRow& r) { return r.wall_speedup; }, "{:.2f}"},
      {"peak_host_mb", "host MB", [](const BenchRow& r) { return r.peak_host_mb; }, "{:.0f}"},
      {"peak_device_mb", "device MB", [](const BenchRow& r) { return r.peak_device_mb; }, "{:.0f}"},
      {"cache_mb", "cache MB", [](const BenchRow& r) { return r.cache_mb; }, "{:.2f}"},
      {"recomputed_pct", "recomputed", [](const BenchRow& r) { return 100.0 * r.recomputed; }, "{:.1f}%"},
      {"psnr_db", "PSNR dB", [](const BenchRow& r) { return r.psnr; }, "{:.2f}"},
      {"ssim", "SSIM", [](const BenchRow& r) { return r.ssim; }, "{:.4f}"},
      {"latent_rel_l2", "latent rel L2", [](const BenchRow& r) { return r.latent_rel_l2; }, "{:.4f}"},
      {"accuracy_pct", "accuracy", [](const BenchRow& r) { return 100.0 * r.accuracy; }, "{:.1f}%"},
      {"frechet", "FD", [](const BenchRow& r) { return r.frechet; }, "{:.3f}"},
      {"inception", "IS", [](const BenchRow& r) { return r.inception; }, "{:.3f}"},
  };
  return columns;
}

std::string cell_text(double v, const char* format) {
  if (std::isnan(v)) return "–";
  if (std::isinf(v)) return v > 0 ? "∞" : "-∞";
  return fmt::format(fmt::runtime(format), v);
}

}  // namespace

std::string bench_markdown(const std::vector<BenchRow>& rows) {
  // Columns that are NaN in every row (e.g. device memory on a CPU-only grid) are left out.
  std::vector<const Column*> shown;
  for (const auto& c : numeric_columns()) {
    if (std::any_of(rows.begin(), rows.end(), [&](const BenchRow& r) { return !std::isnan(c.value(r)); })) shown.push_back(&c);
  }
  std::string out = "| model | device | policy | steps | batch |";
  std::string rule = "|---|---|---|---:|---:|";
  for (const auto* c : shown) {
    out += fmt::format(" {} |", c->header);
    rule += "---:|";
  }
  out += fmt::format("\n{}\n", rule);
  for (const auto& r : rows) {
    out += fmt::format("| {} | {} | {} | {} | {} |", r.model, r.device, r.spec, r.steps, r.batch);
    for (const auto* c : shown) out += fmt::format(" {} |", cell_text(c->value(r), c->format));
    out += "\n";
  }
  return out;
}

std::string bench_csv(const std::vector<BenchRow>& rows) {
  auto quote = [](const std::string& s) {
    if (s.find_first_of(",\"") == std::string::npos) return s;
    std::string q = "\"";
    for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return q + "\"";
  };
  std::string out = "model,device,dtype,sampler,policy,spec,steps,batch,repetitions";
  for (const auto& c : numeric_columns()) out += std::string(",") + c.name;
  out += ",quality_samples\n";
  for (const auto& r : rows) {
    out += fmt::format("{},{},{},{},{},{},{},{},{}", quote(r.model), r.device, r.dtype, r.sampler, quote(r.policy),
                       quote(r.spec), r.steps, r.batch, r.repetitions);
    for (const auto& c : numeric_columns()) {
      const double v = c.value(r);
      out += std::isnan(v) ? "," : std::isinf(v) ? (v > 0 ? ",inf" : ",-inf") : fmt::format(",{:.6g}", v);
    }
    out += fmt::format(",{}\n", r.quality_count);
  }
  return out;
}

std::string bench_json(const std::vector<BenchRow>& rows) {
  auto j = nlohmann::json::array();
  for (const auto& r : rows) {
    nlohmann::json o = {{"model", r.model},   {"device", r.device}, {"dtype", r.dtype},
                        {"sampler", r.sampler}, {"policy", r.policy}, {"spec", r.spec}, {"steps", r.steps},
                        {"batch", r.batch},   {"repetitions", r.repetitions}, {"quality_samples", r.quality_count}};
    for (const auto& c : numeric_columns()) {
      const double v = c.value(r);
      o[c.name] = std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
    }
    j.push_back(o);
  }
  return j.dump(2) + "\n";
}

at::Tensor plot_speedup_fidelity(const std::vector<BenchRow>& rows, const std::string& model) {
  std::vector<const BenchRow*> mine;
  std::set<std::string> cells;
  for (const auto& r : rows) {
    if (r.model != model) continue;
    mine.push_back(&r);
    cells.insert(fmt::format("{} s{} b{}", r.device, r.steps, r.batch));
  }
  if (mine.empty()) throw Error(ErrorCode::kInvalidArgument, fmt::format("plot: no rows of model '{}'", model));
  const bool images = std::any_of(mine.begin(), mine.end(), [](const BenchRow* r) { return !std::isnan(r->psnr); });
  // Series: one per policy name (and cell when the grid has several), points in speedup order.
  std::map<std::string, std::vector<const BenchRow*>> groups;
  for (const auto* r : mine) {
    if (policy_family(r->spec) == "none") continue;  // the reference itself: infinite fidelity
    std::string key = policy_family(r->spec);
    if (cells.size() > 1) key += fmt::format(" {} s{} b{}", r->device, r->steps, r->batch);
    groups[key].push_back(r);
  }
  std::vector<PlotSeries> series;
  for (auto& [name, members] : groups) {
    std::sort(members.begin(), members.end(), [](const BenchRow* a, const BenchRow* b) { return a->wall_speedup < b->wall_speedup; });
    PlotSeries s;
    s.label = name;
    for (const auto* r : members) {
      // Identical to the uncached output (infinite PSNR / SNR): drawn at the cap, labelled.
      const double y = images ? r->psnr : -20.0 * std::log10(r->latent_rel_l2);
      s.x.push_back(r->wall_speedup);
      s.y.push_back(std::min(y, kLosslessDb));
      const auto colon = r->spec.find(':');
      std::string label = members.size() > 1 && colon != std::string::npos ? r->spec.substr(colon + 1) : "";
      if (y >= kLosslessDb) label += label.empty() ? "lossless" : " (lossless)";
      s.point_labels.push_back(label);
    }
    series.push_back(std::move(s));
  }
  if (series.empty()) throw Error(ErrorCode::kInvalidArgument, fmt::format("plot: model '{}' has only the uncached row", model));
  ChartOptions chart;
  chart.title = fmt::format("{}: speedup vs fidelity to the uncached run", model);
  chart.x_label = "wall-clock speedup over uncached (x)";
  chart.y_label = images ? "PSNR vs uncached (dB)" : "latent SNR vs uncached (dB)";
  chart.width = 900;
  chart.height = 560;
  return render_chart(series, chart);
}

at::Tensor plot_token_heatmap(const BenchRow& row) {
  if (!row.token_share.defined()) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("heat map: row '{}' recorded no token counts", row.policy));
  }
  HeatmapOptions h;
  h.title = fmt::format("{} {}: share of steps in which each token was recomputed", row.model, row.spec);
  h.x_label = "token (row-major patch index)";
  h.y_label = "site";
  h.row_labels = row.site_labels;
  h.cell_width = row.token_share.size(1) <= 256 ? 2 : 1;
  h.cell_height = row.token_share.size(0) <= 24 ? 10 : 6;  // room for every row's label on small models
  h.v_min = 0.0;
  h.v_max = 1.0;
  h.colorbar_label = "share recomputed";
  return render_heatmap(row.token_share, h);
}

}  // namespace ditcache
