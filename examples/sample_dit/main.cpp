// sample_dit: class-conditional ImageNet-style sampling with a DiT checkpoint, from C++.
//
//   sample_dit --weights DiT-XL-2-256x256.pt --vae sd-vae-ft-ema/diffusion_pytorch_model.safetensors \
//              --labels 207,360,387,974 --steps 250 --cfg-scale 4 --output samples.png
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>
#include <cmath>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Context.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "ditcache/ditcache.h"
#include "common/cli_util.h"

using namespace ditcache;
using namespace ditcache::cli;

namespace {

// --config: a preset name or a JSON file; without it, the architecture of the weights.
DiTConfig resolve_config(const std::string& config_arg, const WeightFile* weights) {
  if (config_arg.empty()) return DiTConfig::from_weights(*weights);
  const bool json = config_arg.size() > 5 && config_arg.compare(config_arg.size() - 5, 5, ".json") == 0;
  return json ? DiTConfig::from_json_file(config_arg) : DiTConfig::preset(config_arg);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Sample images from a DiT checkpoint (original .pt or diffusers safetensors)."};
  std::string weights, config_arg, numerics = "original", vae_path, vae_config, labels_arg = "207,360,387,974,88,979,417,279";
  std::string sampler = "ddpm", respacing, device_arg = "cpu", dtype_arg = "fp32", output = "samples.png";
  std::string init_noise, save_latents;
  int64_t steps = 250, seed = 0, image_size = 0;
  int threads = 0, grid_rows = 0;
  double cfg_scale = 4.0, eta = 0.0;
  bool quiet = false, flops_only = false, random_weights = false;
  std::string cache_spec = "none", trace_path;
  app.add_option("--weights", weights, "DiT checkpoint: DiT-XL-2-256x256.pt / -512x512.pt or diffusers safetensors (not needed for --flops-only --config)");
  app.add_option("--config", config_arg, "preset name (e.g. DiT-XL/2-512) or JSON file; default: detected from the weights");
  app.add_option("--numerics", numerics, "original (facebookresearch/DiT) or diffusers (DiTPipeline)")->capture_default_str();
  app.add_option("--vae", vae_path, "SD VAE weights (diffusers safetensors/.bin or an LDM checkpoint); without it only latents are written");
  app.add_option("--vae-config", vae_config, "diffusers VAE config.json (default: from the weights' shapes)");
  app.add_option("--labels", labels_arg, "comma-separated class ids, one image each")->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_option("--steps", steps, "sampling steps")->capture_default_str();
  app.add_option("--sampler", sampler, "ddpm or ddim")->capture_default_str();
  app.add_option("--respacing", respacing, "DiT respacing string, overrides --steps (e.g. 250, ddim50, 10,20)");
  app.add_option("--eta", eta, "DDIM eta")->capture_default_str();
  app.add_option("--cfg-scale", cfg_scale, "classifier-free guidance scale (<= 1 disables guidance)")->capture_default_str();
  app.add_option("--image-size", image_size, "image size in pixels: sets the latent size (image / 8) of a detected config, must match a given one");
  app.add_option("--device", device_arg, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--dtype", dtype_arg, "fp32 (cpu, cuda), fp16 or bf16 (cuda)")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (default: all cores)");
  app.add_option("--output", output, "PNG grid of the samples")->capture_default_str();
  app.add_option("--grid-rows", grid_rows, "images per grid row (default: about sqrt(n))");
  app.add_option("--init-noise", init_noise, "safetensors file whose tensor 'noise' [n, 4, h, w] is the initial noise");
  app.add_option("--save-latents", save_latents, "write the final latents to this safetensors file (tensor 'latents')");
  app.add_option("--cache", cache_spec, "cache policy POLICY[:k=v,...]: none, fora, toca, random (docs/caching.md)")->capture_default_str();
  app.add_option("--trace", trace_path, "write a JSON trace: per step and layer each site's action and selected tokens");
  app.add_flag("--flops-only", flops_only, "run the cache schedule and the FLOPs counter without computing tensors");
  app.add_flag("--random-weights", random_weights, "with --config: random weights (seeded by --seed), for speed-only runs");
  app.add_flag("--quiet", quiet, "no progress bar");
  CLI11_PARSE(app, argc, argv);

  try {
    const auto device = parse_device(device_arg, "--device");
    const auto dtype = parse_dtype(dtype_arg, "--dtype");
    if (device.is_cpu() && dtype != at::kFloat) {
      throw Error(ErrorCode::kUnsupported, fmt::format("--dtype {} on the CPU: only fp32 is supported there", dtype_arg));
    }
    set_threads(threads, /*all_cores=*/true);
    auto policy = std::shared_ptr<CachePolicy>(make_policy(cache_spec));
    CacheContext cache(policy, !trace_path.empty());
    if (random_weights && (config_arg.empty() || !weights.empty())) {
      throw Error(ErrorCode::kInvalidArgument, "--random-weights needs --config and no --weights");
    }
    if (weights.empty() && !((flops_only || random_weights) && !config_arg.empty())) {
      throw Error(ErrorCode::kInvalidArgument, "--weights is required (except with --config and --flops-only or --random-weights)");
    }
    DiTSampleOptions options;
    options.class_labels = parse_int_list(labels_arg);
    options.sampler = parse_sampler(sampler);
    options.steps = steps;
    options.respacing = respacing;
    options.guidance_scale = cfg_scale;
    options.ddim_eta = eta;
    options.seed = static_cast<uint64_t>(seed);
    if (flops_only) {
      // No weights needed: the architecture comes from --config (or the weights' shapes).
      const auto probe = config_arg.empty() ? open_weights(weights) : nullptr;  // shapes only, no tensor read
      DiTConfig config = resolve_config(config_arg, probe.get());
      simulate_dit(config, options, cache);
      const auto s = cache.summary();
      std::cout << fmt::format("{} {} {} steps, batch {}: {:.3f} TFLOPs of {:.3f} uncached, FLOPs speedup {:.2f}x, tokens recomputed {:.1f}%\n",
                               config.name, policy->to_string(), cache.steps().size(), cache.run_info().batch, s.flops * 1e-12,
                               s.full_flops * 1e-12, s.flops_speedup(), 100 * s.computed_share());
      if (!trace_path.empty()) write_text_file(trace_path, cache.trace_json());
      return 0;
    }
    if (!random_weights) require_file(weights, "--weights file");
    if (!vae_path.empty()) require_file(vae_path, "--vae file");

    std::unique_ptr<WeightFile> file = random_weights ? nullptr : open_weights(weights);
    DiTConfig config = resolve_config(config_arg, file.get());
    config.numerics = parse_dit_numerics(numerics);
    // Pixel-space models (3 input channels, e.g. the embedded shapes10 DiT) sample images directly.
    const bool pixel = config.in_channels == 3;
    if (pixel && !vae_path.empty()) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("--vae: '{}' is a pixel-space model (3 input channels); it "
                                                           "needs no VAE", config.name));
    }
    if (!pixel && vae_path.empty() && save_latents.empty()) {
      throw Error(ErrorCode::kInvalidArgument, "nothing to write: give --vae (for --output PNG) or --save-latents");
    }
    const int64_t px = pixel ? 1 : 8;  // image pixels per latent pixel
    if (config_arg.empty() && image_size != 0 && !pixel) {
      // Detected configs: diffusers files do not record the latent size, so --image-size sets it
      // (a stored pos_embed of another size is still caught by the strict load).
      if (image_size % (8 * config.patch_size) != 0) {
        throw Error(ErrorCode::kInvalidArgument, fmt::format("--image-size {} is not a multiple of {} (8 x patch size)",
                                                             image_size, 8 * config.patch_size));
      }
      config.input_size = static_cast<int>(image_size / 8);
    }
    if (image_size != 0 && image_size != config.input_size * px) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("--image-size {}: the model '{}' makes {} px images ({} {}x{})", image_size, config.name,
                              config.input_size * px, pixel ? "pixel space" : "latent", config.input_size, config.input_size));
    }
    at::manual_seed(static_cast<uint64_t>(seed));
    DiT model(config);
    if (file) model->load(*file);
    model->eval();
    model->to(device, dtype);

    if (!init_noise.empty()) {
      require_file(init_noise, "--init-noise file");
      auto noise_file = open_weights(init_noise);
      const std::string name = noise_file->contains("noise") ? "noise" : noise_file->names().empty() ? "noise" : noise_file->names().front();
      if (!noise_file->contains(name)) throw Error(ErrorCode::kNotFound, fmt::format("{}: no tensor 'noise'", init_noise));
      options.init_noise = noise_file->load(name);
    }
    options.cache = &cache;
    const auto start = std::chrono::steady_clock::now();
    if (!quiet) options.progress = [&](int64_t done, int64_t total) { progress_bar(done, total, start); };
    auto latents = sample_dit(model, options);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    if (!save_latents.empty()) write_safetensors(save_latents, {{"latents", latents.cpu()}}, {{"weights", weights}});
    auto write_grid = [&](const at::Tensor& images) {
      const int64_t n = images.size(0);
      const int64_t nrow = grid_rows > 0 ? grid_rows : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
      write_png(output, make_grid(images, nrow));
    };
    if (pixel) write_grid(to_uint8_images(latents));
    if (!vae_path.empty()) {
      auto vae_file = open_weights(vae_path);
      VAEConfig vc = vae_config.empty() ? VAEConfig::from_weights(*vae_file) : VAEConfig::from_json_file(vae_config);
      AutoencoderKLDecoder vae(vc);
      vae->load(*vae_file);
      vae->eval();
      vae->to(device, dtype);
      at::NoGradGuard no_grad;
      write_grid(to_uint8_images(decode_latents(vae, latents)));
    }
    if (!trace_path.empty()) write_text_file(trace_path, cache.trace_json());
    const auto s = cache.summary();
    std::cout << fmt::format("{} images of {} with {} ({} steps, cfg {}) in {:.2f} s{}{}\n", options.class_labels.size(),
                             config.name, sampler, respacing.empty() ? std::to_string(steps) : respacing, cfg_scale, seconds,
                             vae_path.empty() && !pixel ? "" : " -> " + output, save_latents.empty() ? "" : ", latents -> " + save_latents);
    std::cout << fmt::format("cache {}: {:.3f} TFLOPs of {:.3f} uncached (FLOPs speedup {:.2f}x), tokens recomputed {:.1f}%, "
                             "cache memory {:.1f} MiB, wall {:.2f} s\n",
                             policy->to_string(), s.flops * 1e-12, s.full_flops * 1e-12, s.flops_speedup(),
                             100 * s.computed_share(), s.cache_bytes / 1048576.0, seconds);
  } catch (const Error& e) {
    std::cerr << "sample_dit: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "sample_dit: unexpected error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
