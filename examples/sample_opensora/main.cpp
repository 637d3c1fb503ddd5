// sample_opensora: text-to-video with OpenSora 1.2's STDiT3 and its video VAE, from C++.
//
//   sample_opensora --weights OpenSora-STDiT-v3/model.safetensors --vae OpenSora-VAE-v1.2/model.safetensors \
//                   --t5 t5-v1_1-xxl/ --prompt "a red panda eating bamboo" --resolution 240p --aspect-ratio 9:16 \
//                   --frames 51 --cache toca --output sample.mp4
//
// Captions come from prompts through the native T5 encoder (`--t5`, a Hugging Face T5EncoderModel
// folder, index or file; the tokenizer's spiece.model beside it or `--tokenizer`), or as
// precomputed T5 embeddings (`--embeddings`, a safetensors file with 'y' [n, L, 4096] and 'mask' [n, L]).
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
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
#include "ditcache/models/stdit3.h"
#include "ditcache/pipeline_opensora.h"
#include "ditcache/video.h"

using namespace ditcache;
using namespace ditcache::cli;
namespace fs = std::filesystem;

namespace {

// OpenSora's aspect-ratio buckets (opensora/datasets/aspect.py, v1.2): "H:W" names, ratio keys
// H/W, and per resolution the (height, width) of each key.
const std::vector<std::pair<std::string, std::string>> kAspectNames = {
    {"3:8", "0.38"},  {"9:21", "0.43"}, {"12:25", "0.48"}, {"1:2", "0.50"}, {"9:17", "0.53"}, {"27:50", "0.54"},
    {"9:16", "0.56"}, {"5:8", "0.62"},  {"2:3", "0.67"},   {"3:4", "0.75"}, {"1:1", "1.00"},  {"4:3", "1.33"},
    {"3:2", "1.50"},  {"16:9", "1.78"}, {"17:9", "1.89"},  {"2:1", "2.00"}};
const std::vector<std::string> kRatioKeys = {"0.38", "0.43", "0.48", "0.50", "0.53", "0.54", "0.56", "0.62", "0.67",
                                             "0.75", "1.00", "1.33", "1.50", "1.78", "1.89", "2.00", "2.08"};
using Sizes = std::vector<std::pair<int, int>>;
const std::map<std::string, Sizes> kResolutions = {
    {"144p", {{117, 312}, {125, 291}, {133, 277}, {135, 270}, {139, 262}, {141, 260}, {144, 256}, {151, 241}, {156, 234},
              {166, 221}, {192, 192}, {221, 165}, {235, 156}, {256, 144}, {263, 139}, {271, 135}, {277, 132}}},
    {"240p", {{196, 522}, {210, 490}, {222, 462}, {226, 452}, {232, 438}, {236, 436}, {240, 426}, {252, 404}, {262, 393},
              {276, 368}, {320, 320}, {370, 278}, {392, 262}, {426, 240}, {440, 232}, {452, 226}, {462, 222}}},
    {"360p", {{294, 784}, {314, 732}, {332, 692}, {340, 680}, {350, 662}, {352, 652}, {360, 640}, {380, 608}, {392, 588},
              {416, 554}, {480, 480}, {554, 416}, {588, 392}, {640, 360}, {660, 350}, {678, 340}, {692, 332}}},
    {"480p", {{392, 1046}, {420, 980}, {444, 925}, {452, 904}, {466, 880}, {470, 870}, {480, 854}, {506, 810}, {522, 784},
              {554, 738}, {640, 640}, {740, 555}, {784, 522}, {854, 480}, {880, 466}, {906, 454}, {924, 444}}},
    {"720p", {{588, 1568}, {628, 1466}, {666, 1388}, {678, 1356}, {698, 1318}, {706, 1306}, {720, 1280}, {758, 1212},
              {784, 1176}, {832, 1110}, {960, 960}, {1108, 832}, {1176, 784}, {1280, 720}, {1320, 698}, {1358, 680},
              {1386, 666}}}};

// --resolution and --aspect-ratio -> (height, width) pixels.
std::pair<int64_t, int64_t> bucket_size(const std::string& resolution, const std::string& aspect) {
  auto res = kResolutions.find(resolution);
  if (res == kResolutions.end()) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("--resolution '{}' is not known; expected 144p, 240p, 360p, 480p or 720p (or --height/--width)", resolution));
  }
  std::string key = aspect;
  for (const auto& [name, value] : kAspectNames) {
    if (name == aspect) key = value;
  }
  for (size_t i = 0; i < kRatioKeys.size(); ++i) {
    if (kRatioKeys[i] == key) return {res->second[i].first, res->second[i].second};
  }
  std::string names;
  for (const auto& [name, value] : kAspectNames) names += (names.empty() ? "" : ", ") + name;
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("--aspect-ratio '{}' is not known; expected OpenSora's H:W names ({}; \"9:16\" is landscape, "
                          "H/W = 0.56) or a ratio key such as 0.56 or 2.08",
                          aspect, names));
}

// --config: a preset name or a JSON file; without it, the architecture of the weights.
STDiT3Config resolve_config(const std::string& config_arg, const WeightFile* weights) {
  if (config_arg.empty()) return STDiT3Config::from_weights(*weights);
  const bool json = config_arg.size() > 5 && config_arg.compare(config_arg.size() - 5, 5, ".json") == 0;
  if (!json) return STDiT3Config::preset(config_arg);
  require_file(config_arg, "--config file");
  std::ifstream in(config_arg);
  std::stringstream text;
  text << in.rdbuf();
  return STDiT3Config::from_json(text.str(), config_arg);
}

// The output path of sample i of n: the path itself for one sample, else "<stem>_<i><ext>".
std::string sample_path(const std::string& output, int64_t i, int64_t n) {
  if (n == 1) return output;
  const fs::path p(output);
  return (p.parent_path() / fmt::format("{}_{}{}", p.stem().string(), i, p.extension().string())).string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Sample videos with OpenSora 1.2 (STDiT3 + the OpenSora video VAE) from prompts (T5) or T5 embeddings."};
  std::string weights, config_arg, vae_path, embeddings, resolution = "240p", aspect = "9:16";
  std::vector<std::string> prompts;
  std::string t5_path, tokenizer_path;
  double aesthetic_score = 6.5;
  bool no_clean = false;
  std::string output, init_noise, save_latents;
  std::string shift_dtype = "auto";
  int64_t height = 0, width = 0, frames = 51, seed = 0;
  int steps = 30;
  double fps = 24, guidance = 7.0;
  bool random_weights = false;
  cli::RunOptions run;
  int64_t random_captions = 0;
  app.add_option("--weights", weights, "STDiT3 weights (OpenSora-STDiT-v3 model.safetensors; not needed for --flops-only --config)");
  app.add_option("--config", config_arg, "preset name (STDiT3-XL/2, STDiT3-3B/2) or config JSON; default: detected from the weights");
  app.add_flag("--random-weights", random_weights, "with --config: random weights (seeded by --seed), for speed-only runs");
  app.add_option("--random-captions", random_captions, "with --random-weights: N random caption embeddings of the model's full "
                                                       "text length (speed-only runs without T5)");
  app.add_option("--vae", vae_path, "OpenSora VAE v1.2 weights (safetensors); without it only latents are written (--save-latents)");
  app.add_option("--embeddings", embeddings, "safetensors with the T5 output 'y' [n, L, C] and its mask 'mask' [n, L]; one video per row");
  app.add_option("--prompt", prompts, "a text prompt (repeat for several videos); needs --t5");
  app.add_option("--t5", t5_path, "T5-v1.1-XXL encoder: a Hugging Face T5EncoderModel folder, its index JSON or a weights file");
  app.add_option("--tokenizer", tokenizer_path, "T5 spiece.model (or its folder); default: beside --t5");
  app.add_option("--aes", aesthetic_score, "aesthetic score appended to prompts as OpenSora 1.2 does (negative: none)")
      ->capture_default_str();
  app.add_flag("--no-clean-caption", no_clean, "skip the caption cleaning (prompts are only lowercased and stripped)");
  app.add_option("--resolution", resolution, "144p, 240p, 360p, 480p or 720p (with --aspect-ratio)")->capture_default_str();
  app.add_option("--aspect-ratio", aspect, "OpenSora's H:W name (9:16 is landscape: 240p -> 240x426; 1:1, 16:9, ...) or a key such as 0.56")
      ->capture_default_str();
  app.add_option("--height", height, "pixel height (with --width; overrides --resolution/--aspect-ratio)");
  app.add_option("--width", width, "pixel width (with --height)");
  app.add_option("--frames", frames, "pixel frames: 1 (an image) or >= 17 (51 = 2 s)")->capture_default_str();
  app.add_option("--fps", fps, "frames per second (the model is told 120 for an image)")->capture_default_str();
  app.add_option("--steps", steps, "sampling steps")->capture_default_str();
  app.add_option("--guidance", guidance, "classifier-free guidance scale")->capture_default_str();
  app.add_option("--seed", seed, "random seed")->capture_default_str();
  app.add_option("--shift-dtype", shift_dtype, "dtype of the timestep shift's size arguments: fp32, bf16 (the released bf16 "
                                               "config) or auto (bf16 with --dtype bf16)")->capture_default_str();
  run.add_to(app);  // --cache, --cache-dtype, --cache-on-host, --device, --dtype, --threads, --trace, --flops-only, --quiet, --warmup
  app.add_option("--output", output, "FILE.mp4, FILE.gif or a folder of PNG frames (n > 1 videos: <stem>_<i>); default sample.mp4 "
                                     "(sample.gif without FFmpeg)");
  app.add_option("--init-noise", init_noise, "safetensors file whose tensor 'noise' [n, 4, T_lat, h, w] is the initial noise");
  app.add_option("--save-latents", save_latents, "write the final latents to this safetensors file (tensor 'latents')");
  CLI11_PARSE(app, argc, argv);

  try {
    if (!prompts.empty() && !embeddings.empty()) {
      throw Error(ErrorCode::kInvalidArgument, "--prompt and --embeddings: give one source of captions, not both");
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
    if (shift_dtype != "auto" && shift_dtype != "fp32" && shift_dtype != "bf16") {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("--shift-dtype '{}': expected auto, fp32 or bf16", shift_dtype));
    }
    if (random_weights && (config_arg.empty() || !weights.empty())) {
      throw Error(ErrorCode::kInvalidArgument, "--random-weights needs --config and no --weights");
    }
    if (weights.empty() && !((run.flops_only || random_weights) && !config_arg.empty())) {
      throw Error(ErrorCode::kInvalidArgument, "--weights is required (except with --config and --flops-only or --random-weights)");
    }
    if ((height > 0) != (width > 0) || height < 0 || width < 0) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("--height and --width go together and must be > 0, found {} x {}", height, width));
    }
    const auto [bucket_h, bucket_w] = height > 0 ? std::pair<int64_t, int64_t>{height, width} : bucket_size(resolution, aspect);

    STDiT3SampleOptions options;
    options.height = bucket_h;
    options.width = bucket_w;
    options.num_frames = frames;
    options.fps = fps;
    options.steps = steps;
    options.guidance = guidance;
    options.seed = static_cast<uint64_t>(seed);
    options.bf16_time_shift = shift_dtype == "bf16" || (shift_dtype == "auto" && dtype == at::kBFloat16);
    if (!embeddings.empty()) {
      require_file(embeddings, "--embeddings file");
      auto file = open_weights(embeddings);
      if (!file->contains("y")) {
        throw Error(ErrorCode::kNotFound, fmt::format("--embeddings {}: no tensor 'y' (the T5 output [n, L, C]); it has: {}", embeddings,
                                                      fmt::join(file->names(), ", ")));
      }
      options.y = file->load("y").to(at::kFloat);
      if (file->contains("mask")) options.mask = file->load("mask");
    }

    if (run.flops_only) {
      const auto probe = config_arg.empty() ? open_weights(weights) : nullptr;  // shapes only, no tensor read
      const STDiT3Config config = resolve_config(config_arg, probe.get());
      simulate_stdit3(config, options, cache);
      const auto s = cache.summary();
      const auto latent = opensora_latent_size(frames, bucket_h, bucket_w);
      std::cout << fmt::format("{} {} {} steps, {}x{} px, {} frames (latent {}x{}x{}), batch {}: {:.3f} TFLOPs of {:.3f} uncached, "
                               "FLOPs speedup {:.2f}x, tokens recomputed {:.1f}%\n",
                               config.name, policy->to_string(), cache.steps().size(), bucket_h, bucket_w, frames, latent[0],
                               latent[1], latent[2], cache.run_info().batch, s.flops * 1e-12, s.full_flops * 1e-12,
                               s.flops_speedup(), 100 * s.computed_share());
      const int64_t rows = cache.run_info().batch;
      cli::report_dry_cache(run, cache, *policy, config.hidden_size, dtype,
                            static_cast<double>(rows) * config.in_channels * latent[0] * latent[1] * latent[2]);
      return 0;
    }
    if (random_captions != 0) {
      if (!random_weights || random_captions < 0 || !embeddings.empty() || !prompts.empty()) {
        throw Error(ErrorCode::kInvalidArgument, fmt::format("--random-captions {}: a positive count, with --random-weights and "
                                                             "without --prompt or --embeddings", random_captions));
      }
      const auto config = resolve_config(config_arg, nullptr);
      auto generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(seed) + 1);
      options.y = at::randn({random_captions, config.model_max_length, config.caption_channels}, generator) /
                  std::sqrt(static_cast<double>(config.caption_channels));
      options.mask = at::ones({random_captions, config.model_max_length}, at::kLong);
    }
    if (options.y.defined() == false && embeddings.empty() && prompts.empty()) {
      throw Error(ErrorCode::kInvalidArgument, "no captions: pass --prompt TEXT with --t5, or --embeddings FILE (safetensors with the "
                                               "T5 output 'y' [n, L, C] and 'mask' [n, L])");
    }
    // The text encoder first (and released before the video model loads): a bad T5 or tokenizer
    // fails fast, and the 19 GB encoder and the backbone are never in memory together.
    if (!prompts.empty()) {
      if (!fs::exists(t5_path)) throw Error(ErrorCode::kNotFound, fmt::format("--t5 {}: no such file or folder", t5_path));
      if (tokenizer_path.empty()) tokenizer_path = fs::is_directory(t5_path) ? t5_path : fs::path(t5_path).parent_path().string();
      T5Tokenizer tokenizer(tokenizer_path);
      auto t5 = load_t5_encoder(t5_path);
      // T5 overflows in fp16: fp32, or bf16 when the video model runs in a half type on CUDA.
      t5->to(device, dtype == at::kFloat ? at::kFloat : at::kBFloat16);
      std::vector<std::string> captions;
      for (const auto& p : prompts) captions.push_back(opensora_caption(p, aesthetic_score, !no_clean));
      auto text = encode_captions(t5, tokenizer, captions, kOpenSoraMaxTextLength);
      options.y = text.y.cpu();
      options.mask = text.mask.cpu();
    }
    if (vae_path.empty() && save_latents.empty()) {
      throw Error(ErrorCode::kInvalidArgument, "nothing to write: give --vae (for --output) or --save-latents");
    }
    if (!vae_path.empty()) {
      if (output.empty()) output = mp4_supported() ? "sample.mp4" : "sample.gif";
      // Check the output before the long run: its format, and that its folder exists.
      if (video_format_of(output) == VideoFormat::kMP4 && !mp4_supported()) {
        throw Error(ErrorCode::kUnsupported, fmt::format("--output {}: ditcache was built without FFmpeg; write .gif or a folder of PNG "
                                                         "frames instead", output));
      }
      const auto parent = fs::path(output).parent_path();
      if (!parent.empty() && !fs::is_directory(parent)) {
        throw Error(ErrorCode::kNotFound, fmt::format("--output {}: the folder '{}' does not exist", output, parent.string()));
      }
      require_file(vae_path, "--vae file");
    } else if (!output.empty()) {
      throw Error(ErrorCode::kInvalidArgument, "--output needs --vae (without a decoder only --save-latents can be written)");
    }
    if (!random_weights) require_file(weights, "--weights file");

    std::unique_ptr<WeightFile> file = random_weights ? nullptr : open_weights(weights);
    const STDiT3Config config = resolve_config(config_arg, file.get());
    at::manual_seed(static_cast<uint64_t>(seed));
    STDiT3 model(config);
    if (file) model->load(*file);
    model->eval();
    model->to(device, dtype);

    // The VAE loads before sampling, so a bad file fails fast.
    OpenSoraVAE vae{nullptr};
    if (!vae_path.empty()) {
      auto vae_file = open_weights(vae_path);
      vae = OpenSoraVAE(OpenSoraVAEConfig::from_weights(*vae_file));
      vae->load(*vae_file);
      vae->eval();
      vae->to(device, dtype);
    }

    if (!init_noise.empty()) {
      require_file(init_noise, "--init-noise file");
      auto noise_file = open_weights(init_noise);
      if (!noise_file->contains("noise")) {
        throw Error(ErrorCode::kNotFound, fmt::format("--init-noise {}: no tensor 'noise' [n, 4, T_lat, h, w]", init_noise));
      }
      options.init_noise = noise_file->load("noise");
    }
    const auto timed = cli::timed_sample<STDiT3SampleOptions>(run, setup, options, [&](const STDiT3SampleOptions& o) { return sample_stdit3(model, o); });
    const at::Tensor& latents = timed.latents;
    const double seconds = timed.seconds, forward_seconds = timed.forward_seconds;

    if (!save_latents.empty()) {
      write_safetensors(save_latents, {{"latents", latents.cpu()}},
                        {{"weights", weights}, {"config", config.name}, {"height", std::to_string(bucket_h)},
                         {"width", std::to_string(bucket_w)}, {"num_frames", std::to_string(frames)}});
    }
    std::vector<std::string> written;
    if (vae) {
      at::NoGradGuard no_grad;
      const int64_t n = latents.size(0);
      for (int64_t i = 0; i < n; ++i) {
        auto video = vae->decode(latents.narrow(0, i, 1), frames);  // [1, 3, F, H, W]
        const auto path = sample_path(output, i, n);
        write_video(path, video[0].permute({1, 0, 2, 3}).to(at::kFloat), fps);  // [F, 3, H, W]
        written.push_back(path);
      }
    }
    std::cout << fmt::format("{} videos of {}x{} px, {} frames with {} ({} steps, guidance {}) in {:.2f} s (model {:.2f} s){}{}\n",
                             latents.size(0), bucket_h, bucket_w, frames, config.name, steps, guidance, seconds, forward_seconds,
                             written.empty() ? "" : " -> " + fmt::format("{}", fmt::join(written, ", ")),
                             save_latents.empty() ? "" : ", latents -> " + save_latents);
    report_cache(run, cache, *policy);
  } catch (const Error& e) {
    std::cerr << "sample_opensora: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "sample_opensora: unexpected error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
