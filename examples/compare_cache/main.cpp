// compare_cache: the main job. Samples a grid of every class uncached and with a cache policy
// (ToCa by default) from the same noise, writes both grids and a side-by-side PNG, and prints the
// wall-clock speedup, FLOPs speedup, fidelity to the uncached grid (PSNR / SSIM) and, on the
// embedded shapes10 model, the classifier's accuracy on both grids.
//
//   compare_cache                                   # embedded shapes10 DiT, toca, out/
//   compare_cache --cache fora:interval=3 --per-class 4 --output-dir out/fora
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <optional>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "common/cli_util.h"
#include "ditcache/bench.h"
#include "ditcache/ditcache.h"
#include "ditcache/plot.h"

using namespace ditcache;

namespace {

struct Run {
  at::Tensor images;  // [n, 3, H, W] in [-1, 1]
  double seconds = 0;
  RunSummary summary;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Sample every class uncached and with a cache policy from the same noise; compare speed and fidelity."};
  std::string weights, vae_path, cache_spec = "toca", out_dir = "out", sampler = "ddim", classifier_path;
  int64_t per_class = 2, steps = 50;
  double cfg_scale = 4.0;
  uint64_t seed = 0;
  int threads = 0;
  bool quiet = false;
  app.add_option("--weights", weights, "DiT weights (default: the embedded shapes10 model)");
  app.add_option("--vae", vae_path, "SD VAE weights, for a latent-space DiT");
  app.add_option("--cache", cache_spec, "the policy to compare with uncached (docs/caching.md)")->capture_default_str();
  app.add_option("--per-class", per_class, "images per class (grid rows); ImageNet models: classes 0..9")->capture_default_str();
  app.add_option("--steps", steps, "sampling steps")->capture_default_str();
  app.add_option("--sampler", sampler, "ddim or ddpm")->capture_default_str();
  app.add_option("--cfg-scale", cfg_scale, "classifier-free guidance")->capture_default_str();
  app.add_option("--seed", seed, "noise seed (both runs)")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0: all cores)")->capture_default_str();
  app.add_option("--classifier", classifier_path, "shapes10 classifier (default: the embedded one, with the embedded model)");
  app.add_option("--output-dir", out_dir, "where uncached.png, cached.png and side_by_side.png go")->capture_default_str();
  app.add_flag("--quiet", quiet, "no progress bar");
  CLI11_PARSE(app, argc, argv);

  try {
    if (per_class < 1 || per_class > 100) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("--per-class {} is out of range [1, 100]", per_class));
    }
    cli::set_threads(threads, /*all_cores=*/true);
    const auto policy = make_policy(cache_spec)->to_string();  // a bad spec fails before any sampling
    const bool embedded = weights.empty();
    if (embedded) weights = embedded_model_dir() + "/dit.safetensors";
    cli::require_file(weights, "--weights file");
    std::optional<ShapesClassifier> classifier;
    if (embedded || !classifier_path.empty()) {
      classifier = load_shapes_classifier(classifier_path.empty() ? embedded_model_dir() + "/classifier.safetensors" : classifier_path);
    }
    cli::require_writable_dir(out_dir, "--output-dir");
    auto file = open_weights(weights);
    DiT model(DiTConfig::from_weights(*file));
    model->load(*file);
    model->eval();
    const auto& config = model->config();
    const bool pixel = config.in_channels == 3;
    AutoencoderKLDecoder vae{nullptr};
    if (!pixel) {
      if (vae_path.empty()) throw Error(ErrorCode::kInvalidArgument, fmt::format("{} is a latent model: give --vae", weights));
      auto vae_file = open_weights(vae_path);
      vae = AutoencoderKLDecoder(VAEConfig::from_weights(*vae_file));
      vae->load(*vae_file);
      vae->eval();
    }
    const int64_t classes = std::min<int64_t>(config.num_classes, 10);
    DiTSampleOptions options;
    for (int64_t r = 0; r < per_class; ++r)
      for (int64_t c = 0; c < classes; ++c) options.class_labels.push_back(c);
    options.sampler = parse_sampler(sampler);
    options.steps = steps;
    options.guidance_scale = cfg_scale;
    options.seed = seed;

    auto run = [&](const std::string& spec) {
      CacheContext cache(make_policy(spec));
      options.cache = &cache;
      const auto start = std::chrono::steady_clock::now();
      if (!quiet) options.progress = [&](int64_t done, int64_t total) { cli::progress_bar(done, total, start); };
      if (!quiet) std::fprintf(stderr, "%s:\n", spec.c_str());
      Run r;
      auto latents = sample_dit(model, options);
      at::NoGradGuard no_grad;
      r.images = (pixel ? latents : decode_latents(vae, latents)).clamp(-1.0, 1.0);
      r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      r.summary = cache.summary();
      return r;
    };
    const Run base = run("none");
    const Run cached = run(cache_spec);

    auto grid = [&](const at::Tensor& images) { return make_grid(to_uint8_images(images), classes, 2, 255); };
    write_png(out_dir + "/uncached.png", grid(base.images));
    write_png(out_dir + "/cached.png", grid(cached.images));
    const int scale = base.images.size(-1) <= 64 ? 3 : 1;
    write_png(out_dir + "/side_by_side.png",
              side_by_side({grid(base.images), grid(cached.images)},
                           {fmt::format("uncached {:.1f} s", base.seconds),
                            fmt::format("{} {:.1f} s ({:.2f}x)", cache_spec, cached.seconds, base.seconds / cached.seconds)},
                           12, scale));

    std::cout << fmt::format("{}: {} images ({} per class), {} {} steps, guidance {}\n", config.name,
                             options.class_labels.size(), per_class, sampler, steps, cfg_scale);
    std::cout << fmt::format("uncached: {:.2f} s, {:.1f} GFLOPs\n", base.seconds, base.summary.flops * 1e-9);
    std::cout << fmt::format("{}: {:.2f} s, {:.1f} GFLOPs, tokens recomputed {:.1f}%, cache {:.1f} MiB\n", policy,
                             cached.seconds, cached.summary.flops * 1e-9, 100 * cached.summary.computed_share(),
                             cached.summary.cache_bytes / 1048576.0);
    std::cout << fmt::format("wall speedup {:.2f}x, FLOPs speedup {:.2f}x, PSNR {:.2f} dB, SSIM {:.4f} vs uncached\n",
                             base.seconds / cached.seconds, base.summary.full_flops / cached.summary.flops,
                             psnr(cached.images, base.images), ssim(cached.images, base.images));
    if (classifier) {
      at::NoGradGuard no_grad;
      auto labels = at::tensor(options.class_labels, at::TensorOptions().dtype(at::kLong));
      auto accuracy = [&](const at::Tensor& images) {
        return 100.0 * ((*classifier)->forward(images).argmax(1) == labels).to(at::kFloat).mean().item<double>();
      };
      std::cout << fmt::format("class accuracy (shapes10 classifier): uncached {:.0f}%, {} {:.0f}%\n", accuracy(base.images),
                               cache_spec, accuracy(cached.images));
    }
    std::cout << fmt::format("wrote {0}/uncached.png, {0}/cached.png, {0}/side_by_side.png\n", out_dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compare_cache: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
