// sample_pixart: text-to-image with PixArt-α and the SD VAE, from C++.
//
//   sample_pixart --weights PixArt-XL-2-1024-MS.pth --vae sd-vae-ft-ema/diffusion_pytorch_model.safetensors \
//                 --t5 t5-v1_1-xxl/ --prompt "a small cactus with a happy face in the Sahara desert" \
//                 --aspect-ratio 9:16 --cache toca --output cactus.png
//
// Captions come from prompts through the native T5 encoder (`--t5`, a Hugging Face T5EncoderModel
// folder, index or file; the tokenizer's spiece.model beside it or `--tokenizer`), or as
// precomputed T5 embeddings (`--embeddings`, a safetensors file with 'y' [n, L, 4096] and 'mask'
// [n, L]; for --numerics diffusers also the negative prompt's 'negative_y' and 'negative_mask').
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <CLI/CLI.hpp>
#include <torch/cuda.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/cli_util.h"
#include "common/run_options.h"
#include "ditcache/ditcache.h"
#include "ditcache/models/pixart.h"
#include "ditcache/pipeline_pixart.h"

using namespace ditcache;
using namespace ditcache::cli;
namespace fs = std::filesystem;

namespace {

// --config: a preset name or a JSON file; without it, the architecture of the weights.
PixArtConfig resolve_config(const std::string& config_arg, const WeightFile* weights) {
  if (config_arg.empty()) return PixArtConfig::from_weights(*weights);
  const bool json = config_arg.size() > 5 && config_arg.compare(config_arg.size() - 5, 5, ".json") == 0;
  if (!json) return PixArtConfig::preset(config_arg);
  require_file(config_arg, "--config file");
  return PixArtConfig::from_json_file(config_arg);
}

// --aspect-ratio: "H:W" (PixArt's `--ar h:w`, height over width) or a number such as 0.57.
double parse_aspect(const std::string& text) {
  double value = 0;
  try {
    const auto colon = text.find(':');
    size_t used = 0;
    if (colon == std::string::npos) {
      value = std::stod(text, &used);
      if (used != text.size()) throw std::invalid_argument(text);
    } else {
      const std::string h = text.substr(0, colon), w = text.substr(colon + 1);
      size_t used_w = 0;
      const double hv = std::stod(h, &used), wv = std::stod(w, &used_w);
      if (used != h.size() || used_w != w.size() || !(wv > 0)) throw std::invalid_argument(text);
      value = hv / wv;
    }
  } catch (const std::exception&) {
    value = 0;
  }
  if (!(value > 0) || !std::isfinite(value)) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("--aspect-ratio '{}': expected H:W (height:width, e.g. 9:16 for a "
                                                         "landscape image) or a ratio such as 0.57",
                                                         text));
  }
  return value;
}

// The output path of image i of n: the path itself for one image, else "<stem>_<i><ext>".
std::string sample_path(const std::string& output, int64_t i, int64_t n) {
  if (n == 1) return output;
  const fs::path p(output);
  return (p.parent_path() / fmt::format("{}_{}{}", p.stem().string(), i, p.extension().string())).string();
}

std::vector<std::string> read_prompt_file(const std::string& path) {
  require_file(path, "--prompt-file");
  std::ifstream in(path);
  std::vector<std::string> prompts;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") != std::string::npos) prompts.push_back(line);
  }
  if (prompts.empty()) throw Error(ErrorCode::kInvalidArgument, fmt::format("--prompt-file '{}' holds no prompt (one per line)", path));
  return prompts;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Sample images with PixArt-α (+ the SD VAE) from prompts (T5) or T5 embeddings."};
  std::string weights, config_arg, vae_path, vae_config, embeddings, prompt_file, numerics_arg = "original";
  std::vector<std::string> prompts;
  std::string t5_path, tokenizer_path, aspect = "1:1";
  bool no_clean = false;
  std::string output, init_noise, save_latents;
  int64_t resolution = 0, height = 0, width = 0, seed = 0, random_captions = 0;
  int steps = 20;
  double guidance = 4.5;
  bool random_weights = false;
  cli::RunOptions run;
  app.add_option("--weights", weights, "PixArt-α weights: the original .pth (PixArt-XL-2-*.pth) or diffusers "
                                       "transformer/diffusion_pytorch_model.safetensors (not needed for --flops-only --config)");
  app.add_option("--transformer", weights, "alias of --weights");
  app.add_option("--config", config_arg, "preset (PixArt-XL-2-256, PixArt-XL-2-512, PixArt-XL-2-1024-MS) or config JSON; "
                                         "default: detected from the weights");
  app.add_flag("--random-weights", random_weights, "with --config: random weights (seeded by --seed), for speed-only runs");
  app.add_option("--random-captions", random_captions, "with --random-weights: N random caption embeddings of the model's full "
                                                       "text length (speed-only runs without T5)");
  app.add_option("--numerics", numerics_arg, "original (PixArt-alpha's inference script: null caption, its DPM-Solver) or "
                                             "diffusers (PixArtAlphaPipeline: empty negative prompt, DPMSolverMultistepScheduler)")
      ->capture_default_str();
  app.add_option("--vae", vae_path, "SD VAE weights (sd-vae-ft-ema diffusion_pytorch_model.safetensors); without it only "
                                    "latents are written (--save-latents)");
  app.add_option("--vae-config", vae_config, "the VAE's config.json (default: detected from the weights)");
  app.add_option("--embeddings", embeddings, "safetensors with the T5 output 'y' [n, L, C] and its 'mask' [n, L] (diffusers "
                                             "numerics with guidance > 1: also 'negative_y' [1, L, C] and 'negative_mask')");
  app.add_option("--prompt", prompts, "a text prompt (repeat for several images); needs --t5");
  app.add_option("--prompt-file", prompt_file, "a text file with one prompt per line; needs --t5");
  app.add_option("--t5", t5_path, "T5-v1.1-XXL encoder: a Hugging Face T5EncoderModel folder, its index JSON or a weights file");
  app.add_option("--tokenizer", tokenizer_path, "T5 spiece.model (or its folder); default: beside --t5");
  app.add_flag("--no-clean-caption", no_clean, "skip the caption cleaning (prompts are only lowercased and stripped)");
  app.add_option("--resolution", resolution, "256, 512 or 1024: the size class of the aspect-ratio bins (default: the model's "
                                             "training size)");
  app.add_option("--aspect-ratio", aspect, "height:width (9:16 is landscape: 768x1344 at 1024) or a ratio such as 0.57; the "
                                           "closest of PixArt's bins is used")->capture_default_str();
  app.add_option("--height", height, "pixel height (with --width; multiples of 16; overrides --resolution/--aspect-ratio)");
  app.add_option("--width", width, "pixel width (with --height)");
  app.add_option("--steps", steps, "DPM-Solver++ steps (model calls)")->capture_default_str();
  app.add_option("--guidance", guidance, "classifier-free guidance scale")->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  run.add_to(app);  // --cache, --cache-dtype, --cache-on-host, --device, --dtype, --threads, --trace, --flops-only, --quiet, --warmup
  app.add_option("--output", output, "PNG file (n > 1 images: <stem>_<i>.png); default sample.png");
  app.add_option("--init-noise", init_noise, "safetensors file whose tensor 'noise' [n, 4, h, w] is the initial noise");
  app.add_option("--save-latents", save_latents, "write the final latents to this safetensors file (tensor 'latents')");
  CLI11_PARSE(app, argc, argv);

  try {
    const auto numerics = parse_pixart_numerics(numerics_arg);
    if (!prompt_file.empty()) {
      const auto more = read_prompt_file(prompt_file);
      prompts.insert(prompts.end(), more.begin(), more.end());
    }
    if (!prompts.empty() && !embeddings.empty()) {
      throw Error(ErrorCode::kInvalidArgument, "--prompt/--prompt-file and --embeddings: give one source of captions, not both");
    }
    if (!prompts.empty() && t5_path.empty() && !run.flops_only) {
      throw Error(ErrorCode::kInvalidArgument, "--prompt needs --t5 (the T5-v1.1-XXL encoder folder or weights); or pass "
                                               "precomputed --embeddings");
    }
    auto setup = cli::resolve(run);
    const auto device = setup.device;
    const auto dtype = setup.dtype;
    const auto& policy = setup.policy;
    CacheContext& cache = *setup.cache;
    if (random_weights && (config_arg.empty() || !weights.empty())) {
      throw Error(ErrorCode::kInvalidArgument, "--random-weights needs --config and no --weights");
    }
    if (weights.empty() && !((run.flops_only || random_weights) && !config_arg.empty())) {
      throw Error(ErrorCode::kInvalidArgument, "--weights is required (except with --config and --flops-only or --random-weights)");
    }
    if (!weights.empty()) require_file(weights, "--weights file");
    if ((height > 0) != (width > 0) || height < 0 || width < 0) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("--height and --width go together and must be > 0, found {} x {}", height, width));
    }
    if (resolution != 0 && resolution != 256 && resolution != 512 && resolution != 1024) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("--resolution {}: expected 256, 512 or 1024 (PixArt's aspect-ratio "
                                                           "bins), or give --height and --width", resolution));
    }
    const double ratio = parse_aspect(aspect);

    // The architecture first (shapes only; no tensor is read yet): the default size is its own.
    std::unique_ptr<WeightFile> file = weights.empty() ? nullptr : open_weights(weights);
    const PixArtConfig config = resolve_config(config_arg, file.get());

    PixArtSampleOptions options;
    options.numerics = numerics;
    options.steps = steps;
    options.guidance = guidance;
    options.seed = static_cast<uint64_t>(seed);
    std::string size_note;
    if (height > 0) {
      options.height = height;
      options.width = width;
    } else {
      const int64_t base = resolution != 0 ? resolution : static_cast<int64_t>(config.input_size) * 8;
      if (std::abs(ratio - 1.0) < 1e-12 && resolution == 0) {
        options.height = options.width = base;  // square at the training size: no bin needed
        options.aspect_ratio = 1.0;
      } else {
        if (base != 256 && base != 512 && base != 1024) {
          throw Error(ErrorCode::kInvalidArgument,
                      fmt::format("--aspect-ratio {}: PixArt's aspect-ratio bins exist for 256, 512 and 1024 px, and '{}' trains "
                                  "at {} px: give --resolution 256, 512 or 1024, or --height and --width",
                                  aspect, config.name, base));
        }
        const auto bucket = pixart_aspect_bucket(base, ratio);
        options.height = bucket.height;
        options.width = bucket.width;
        // The original tells PixArtMS the bin's key; diffusers height / width.
        if (numerics == PixArtNumerics::kOriginal) options.aspect_ratio = bucket.ratio;
        size_note = fmt::format(" (aspect-ratio bin {})", bucket.key);
      }
    }
    if (!embeddings.empty()) {
      require_file(embeddings, "--embeddings file");
      auto efile = open_weights(embeddings);
      if (!efile->contains("y")) {
        throw Error(ErrorCode::kNotFound, fmt::format("--embeddings {}: no tensor 'y' (the T5 output [n, L, C]); it has: {}", embeddings,
                                                      fmt::join(efile->names(), ", ")));
      }
      options.y = efile->load("y").to(at::kFloat);
      if (efile->contains("mask")) options.mask = efile->load("mask");
      if (efile->contains("negative_y")) {
        if (numerics == PixArtNumerics::kDiffusers) {
          options.negative_y = efile->load("negative_y").to(at::kFloat);
          if (efile->contains("negative_mask")) options.negative_mask = efile->load("negative_mask");
        }
      } else if (numerics == PixArtNumerics::kDiffusers && pixart_uses_cfg(options) && !run.flops_only) {
        throw Error(ErrorCode::kNotFound,
                    fmt::format("--embeddings {}: --numerics diffusers with guidance {} needs the negative prompt's T5 output "
                                "'negative_y' [1, L, C] and its 'negative_mask' [1, L] (PixArtAlphaPipeline encodes \"\"); or "
                                "use --numerics original (the checkpoint's null caption) or --prompt with --t5",
                                embeddings, guidance));
      }
    }

    if (run.flops_only) {
      simulate_pixart(config, options, cache);
      const auto s = cache.summary();
      const auto latent = pixart_latent_size(config, options.height, options.width);
      const int64_t rows = cache.run_info().batch;
      std::cout << fmt::format("{} {} {} {} steps, {}x{} px{} (latent {}x{}), batch {}: {:.3f} TFLOPs of {:.3f} uncached, "
                               "FLOPs speedup {:.2f}x, tokens recomputed {:.1f}%\n",
                               config.name, to_string(numerics), policy->to_string(), cache.steps().size(), options.height,
                               options.width, size_note, latent[0], latent[1], rows, s.flops * 1e-12, s.full_flops * 1e-12,
                               s.flops_speedup(), 100 * s.computed_share());
      cli::report_dry_cache(run, cache, *policy, config.hidden_size, dtype,
                            static_cast<double>(rows) * config.in_channels * latent[0] * latent[1]);
      return 0;
    }
    if (random_captions != 0) {
      if (!random_weights || random_captions < 0 || !embeddings.empty() || !prompts.empty()) {
        throw Error(ErrorCode::kInvalidArgument, fmt::format("--random-captions {}: a positive count, with --random-weights and "
                                                             "without --prompt or --embeddings", random_captions));
      }
      auto generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed) + 1);
      const double scale = 1.0 / std::sqrt(static_cast<double>(config.caption_channels));
      options.y = at::randn({random_captions, config.model_max_length, config.caption_channels}, generator) * scale;
      options.mask = at::ones({random_captions, config.model_max_length}, at::kLong);
      if (numerics == PixArtNumerics::kDiffusers) {
        options.negative_y = at::randn({1, config.model_max_length, config.caption_channels}, generator) * scale;
        options.negative_mask = at::zeros({1, config.model_max_length}, at::kLong);
        options.negative_mask[0][0] = 1;  // the empty prompt: EOS only
      }
    }
    if (!options.y.defined() && prompts.empty()) {
      throw Error(ErrorCode::kInvalidArgument, "no captions: pass --prompt TEXT (or --prompt-file) with --t5, or --embeddings FILE "
                                               "(safetensors with the T5 output 'y' [n, L, C] and 'mask' [n, L])");
    }
    // The original convention's CFG needs the null caption, which diffusers files do not have.
    if (file && numerics == PixArtNumerics::kOriginal && pixart_uses_cfg(options) &&
        detect_pixart_checkpoint(*file).layout == PixArtLayout::kDiffusers) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("--numerics original needs the null caption y_embedder.y_embedding of the original .pth; '{}' is a "
                              "diffusers checkpoint, which has none: use --numerics diffusers (or the original .pth)",
                              weights));
    }
    if (vae_path.empty() && save_latents.empty()) {
      throw Error(ErrorCode::kInvalidArgument, "nothing to write: give --vae (for --output PNG) or --save-latents");
    }
    if (!vae_path.empty()) {
      if (output.empty()) output = "sample.png";
      if (fs::path(output).extension() != ".png") {
        throw Error(ErrorCode::kInvalidArgument, fmt::format("--output {}: expected a .png file", output));
      }
      const auto parent = fs::path(output).parent_path();
      if (!parent.empty() && !fs::is_directory(parent)) {
        throw Error(ErrorCode::kNotFound, fmt::format("--output {}: the folder '{}' does not exist", output, parent.string()));
      }
      require_file(vae_path, "--vae file");
      if (!vae_config.empty()) require_file(vae_config, "--vae-config file");
    } else if (!output.empty()) {
      throw Error(ErrorCode::kInvalidArgument, "--output needs --vae (without a decoder only --save-latents can be written)");
    }
    if (!init_noise.empty()) require_file(init_noise, "--init-noise file");

    // The text encoder first (and released before the backbone loads): a bad T5 or tokenizer
    // fails fast, and the 19 GB encoder and the backbone are never in memory together.
    if (!prompts.empty()) {
      if (!fs::exists(t5_path)) throw Error(ErrorCode::kNotFound, fmt::format("--t5 {}: no such file or folder", t5_path));
      if (tokenizer_path.empty()) tokenizer_path = fs::is_directory(t5_path) ? t5_path : fs::path(t5_path).parent_path().string();
      T5Tokenizer tokenizer(tokenizer_path);
      auto t5 = load_t5_encoder(t5_path);
      t5->eval();
      // T5 overflows in fp16: fp32 (as the original script runs it), or bf16 for a half-type run on CUDA.
      t5->to(device, dtype == at::kFloat ? at::kFloat : at::kBFloat16);
      auto text = encode_pixart_prompts(t5, tokenizer, prompts, numerics, config.model_max_length, !no_clean);
      options.y = text.y.cpu();
      options.mask = text.mask.cpu();
      if (text.negative_y.defined()) {
        options.negative_y = text.negative_y.cpu();
        options.negative_mask = text.negative_mask.cpu();
      }
    }

    at::manual_seed(static_cast<uint64_t>(seed));
    PixArt model(config);
    if (file) model->load(*file);
    model->eval();
    model->to(device, dtype);
    // A random-weights model never loaded a null caption: its random initial one serves.
    if (random_weights && numerics == PixArtNumerics::kOriginal) options.null_caption = model->null_caption();

    // The VAE loads before sampling, so a bad file fails fast.
    AutoencoderKLDecoder vae{nullptr};
    if (!vae_path.empty()) {
      auto vae_file = open_weights(vae_path);
      vae = AutoencoderKLDecoder(vae_config.empty() ? VAEConfig::from_weights(*vae_file) : VAEConfig::from_json_file(vae_config));
      vae->load(*vae_file);
      vae->eval();
      vae->to(device, dtype);
    }
    if (!init_noise.empty()) {
      auto noise_file = open_weights(init_noise);
      if (!noise_file->contains("noise")) {
        throw Error(ErrorCode::kNotFound, fmt::format("--init-noise {}: no tensor 'noise' [n, 4, h, w]", init_noise));
      }
      options.init_noise = noise_file->load("noise");
    }
    const auto timed = cli::timed_sample<PixArtSampleOptions>(run, setup, options, [&](const PixArtSampleOptions& o) { return sample_pixart(model, o); });
    const at::Tensor& latents = timed.latents;
    const double seconds = timed.seconds, forward_seconds = timed.forward_seconds;

    // Decode everything before writing anything, so a failure leaves no partial set of files.
    at::Tensor images;
    if (vae) {
      at::NoGradGuard no_grad;
      images = to_uint8_images(decode_latents(vae, latents));  // [n, H, W, 3]
    }
    if (!save_latents.empty()) {
      write_safetensors(save_latents, {{"latents", latents.cpu()}},
                        {{"weights", weights}, {"config", config.name}, {"numerics", to_string(numerics)},
                         {"height", std::to_string(options.height)}, {"width", std::to_string(options.width)}});
    }
    std::vector<std::string> written;
    if (images.defined()) {
      const int64_t n = images.size(0);
      for (int64_t i = 0; i < n; ++i) {
        written.push_back(sample_path(output, i, n));
        write_png(written.back(), images[i]);
      }
    }
    std::cout << fmt::format("{} images of {}x{} px{} with {} ({} numerics, {} steps, guidance {}) in {:.2f} s (model {:.2f} s){}{}\n",
                             latents.size(0), options.height, options.width, size_note, config.name, to_string(numerics), steps,
                             guidance, seconds, forward_seconds,
                             written.empty() ? "" : " -> " + fmt::format("{}", fmt::join(written, ", ")),
                             save_latents.empty() ? "" : ", latents -> " + save_latents);
    report_cache(run, cache, *policy);
  } catch (const Error& e) {
    std::cerr << "sample_pixart: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "sample_pixart: unexpected error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
