// The PixArt-α sampling pipeline (models.md §2.3, §2.5): the CFG batch of PixArt-alpha's
// inference script or of diffusers' PixArtAlphaPipeline around DPM-Solver++ 2M.
#include "ditcache/pipeline_pixart.h"

#include <cmath>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/sampling/dpm_solver.h"
#include "ditcache/step_driver.h"
#include "ditcache/text/text_encoder.h"

namespace ditcache {

namespace {

Error invalid(const std::string& what) { return Error(ErrorCode::kInvalidArgument, "sample_pixart: " + what); }

// Caption embeddings as [rows, L, C], checked against the model; `what` names the option.
at::Tensor caption_rows(const PixArtConfig& config, const at::Tensor& y_in, const char* what) {
  at::Tensor y = y_in.dim() == 4 && y_in.size(1) == 1 ? y_in.squeeze(1) : y_in;
  if (y.dim() != 3 || y.size(0) < 1 || y.size(1) != config.model_max_length || y.size(2) != config.caption_channels ||
      !at::isFloatingType(y.scalar_type())) {
    throw Error(ErrorCode::kShapeMismatch,
                fmt::format("sample_pixart: caption embeddings {} must be floating point [n, {}, {}] ({} pads captions to "
                            "model_max_length {} tokens of caption_channels {}), found {} {}",
                            what, config.model_max_length, config.caption_channels, config.name, config.model_max_length,
                            config.caption_channels, c10::toString(y_in.scalar_type()), shape_string(y_in.sizes())));
  }
  return y;
}

// Checks a T5 mask: [n, L] of 0/1, each row a non-empty prefix of valid tokens.
void check_mask(const at::Tensor& mask, int64_t n, int64_t L, const char* what) {
  if (!mask.defined()) return;
  if (mask.dim() != 2 || mask.size(0) != n || mask.size(1) != L) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("sample_pixart: caption mask {} must be [{}, {}] (one row per caption), "
                                                       "found {}",
                                                       what, n, L, shape_string(mask.sizes())));
  }
  auto m = mask.to(at::kCPU).to(at::kDouble);
  if (!(m.eq(0) | m.eq(1)).all().item<bool>()) throw invalid(fmt::format("caption mask {} values must be 0 or 1", what));
  auto valid = m.ne(0);
  auto counts = valid.sum(1);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = counts[i].item<int64_t>();
    if (k == 0) throw invalid(fmt::format("caption mask {} row {} has no valid token (T5 masks include the EOS token)", what, i));
    if (!valid[i].narrow(0, 0, k).all().item<bool>()) {
      throw invalid(fmt::format("caption mask {} row {} is not a prefix of valid tokens (T5 masks are 1...1 0...0)", what, i));
    }
  }
}

struct Plan {
  int64_t n = 0, caption_tokens = 0;
  int64_t height = 0, width = 0;  // pixels
  std::vector<int64_t> latent;    // [h, w]
  bool cfg = false;
  DPMSolverSchedule schedule;
};

Plan plan_run(const PixArtConfig& config, const PixArtSampleOptions& o, bool need_y) {
  Plan p;
  if (need_y || o.y.defined()) {
    if (!o.y.defined()) {
      throw invalid(fmt::format("no caption embeddings: y must be [n, {}, {}] (the T5 output)", config.model_max_length,
                                config.caption_channels));
    }
    auto y = caption_rows(config, o.y, "y");
    p.n = y.size(0);
    p.caption_tokens = y.size(1);
    check_mask(o.mask, p.n, p.caption_tokens, "mask");
  } else {
    p.n = 1;
    p.caption_tokens = config.model_max_length;
  }
  if (!std::isfinite(o.guidance)) throw invalid(fmt::format("guidance must be a finite number, found {}", o.guidance));
  if (!(o.aspect_ratio >= 0) || !std::isfinite(o.aspect_ratio)) {
    throw invalid(fmt::format("aspect_ratio must be > 0 (height / width), or 0 for height / width, found {}", o.aspect_ratio));
  }
  p.cfg = pixart_uses_cfg(o);
  if (o.numerics == PixArtNumerics::kOriginal && (o.negative_y.defined() || o.negative_mask.defined())) {
    throw invalid("negative_y / negative_mask are the diffusers convention's negative prompt; the original convention uses the "
                  "checkpoint's null caption (set numerics to diffusers, or null_caption to replace the null caption)");
  }
  if (o.numerics == PixArtNumerics::kDiffusers && o.null_caption.defined()) {
    throw invalid("null_caption is the original convention's unconditional caption; the diffusers convention uses negative_y");
  }
  if (p.cfg && o.numerics == PixArtNumerics::kDiffusers && (need_y || o.negative_y.defined())) {
    if (!o.negative_y.defined()) {
      throw invalid(fmt::format("the diffusers convention with guidance {} > 1 needs negative_y: the negative prompt's T5 "
                                "output [1 or n, {}, {}] (PixArtAlphaPipeline encodes \"\"; see encode_pixart_prompts)",
                                o.guidance, config.model_max_length, config.caption_channels));
    }
    auto neg = caption_rows(config, o.negative_y, "negative_y");
    if (neg.size(0) != 1 && neg.size(0) != p.n) {
      throw Error(ErrorCode::kShapeMismatch, fmt::format("sample_pixart: negative_y has {} rows, expected 1 or n = {}", neg.size(0), p.n));
    }
    check_mask(o.negative_mask, neg.size(0), p.caption_tokens, "negative_mask");
  }
  p.schedule = dpm_solver_schedule(o.steps, o.numerics == PixArtNumerics::kOriginal ? DPMSolverConvention::kOriginal
                                                                                     : DPMSolverConvention::kDiffusers);
  p.latent = pixart_latent_size(config, o.height, o.width);
  p.height = p.latent[0] * 8;
  p.width = p.latent[1] * 8;
  return p;
}

// PixArt's aspect-ratio table at 1024 px (ASPECT_RATIO_1024_TEST of PixArt-alpha,
// ASPECT_RATIO_1024_BIN of diffusers); the 512 and 256 tables are it halved and quartered.
struct Bin {
  const char* key;
  int height, width;
};
constexpr Bin kAspectBins[] = {
    {"0.25", 512, 2048}, {"0.28", 512, 1856},  {"0.32", 576, 1792},  {"0.33", 576, 1728},  {"0.35", 576, 1664},
    {"0.4", 640, 1600},  {"0.42", 640, 1536},  {"0.48", 704, 1472},  {"0.5", 704, 1408},   {"0.52", 704, 1344},
    {"0.57", 768, 1344}, {"0.6", 768, 1280},   {"0.68", 832, 1216},  {"0.72", 832, 1152},  {"0.78", 896, 1152},
    {"0.82", 896, 1088}, {"0.88", 960, 1088},  {"0.94", 960, 1024},  {"1.0", 1024, 1024},  {"1.07", 1024, 960},
    {"1.13", 1088, 960}, {"1.21", 1088, 896},  {"1.29", 1152, 896},  {"1.38", 1152, 832},  {"1.46", 1216, 832},
    {"1.67", 1280, 768}, {"1.75", 1344, 768},  {"2.0", 1408, 704},   {"2.09", 1472, 704},  {"2.4", 1536, 640},
    {"2.5", 1600, 640},  {"3.0", 1728, 576},   {"4.0", 2048, 512}};

}  // namespace

const char* to_string(PixArtNumerics numerics) noexcept {
  return numerics == PixArtNumerics::kOriginal ? "original" : "diffusers";
}

PixArtNumerics parse_pixart_numerics(const std::string& text) {
  if (text == "original") return PixArtNumerics::kOriginal;
  if (text == "diffusers") return PixArtNumerics::kDiffusers;
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("PixArt numerics '{}' is not known; expected 'original' (PixArt-alpha's inference script) or "
                          "'diffusers' (PixArtAlphaPipeline)",
                          text));
}

bool pixart_uses_cfg(const PixArtSampleOptions& o) {
  return o.numerics == PixArtNumerics::kOriginal ? o.guidance != 1.0 : o.guidance > 1.0;
}

std::vector<int64_t> pixart_latent_size(const PixArtConfig& config, int64_t height, int64_t width) {
  if (height == 0 && width == 0) return {config.input_size, config.input_size};
  const int64_t unit = 8 * config.patch_size;
  if (height <= 0 || width <= 0 || height % unit != 0 || width % unit != 0) {
    throw invalid(fmt::format("height and width must be positive multiples of {} pixels (8 per latent pixel x patch size {}), "
                              "found {} x {}",
                              unit, config.patch_size, height, width));
  }
  return {height / 8, width / 8};
}

PixArtAspectBucket pixart_aspect_bucket(int64_t base, double ratio) {
  if (base != 256 && base != 512 && base != 1024) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("PixArt aspect-ratio bins exist for 256, 512 and 1024 pixels, not {}", base));
  }
  if (!(ratio > 0) || !std::isfinite(ratio)) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("aspect ratio (height / width) must be > 0, found {}", ratio));
  }
  const Bin* best = nullptr;
  double best_distance = 0;
  for (const auto& bin : kAspectBins) {
    const double distance = std::abs(std::stod(bin.key) - ratio);
    if (!best || distance < best_distance) {
      best = &bin;
      best_distance = distance;
    }
  }
  return {best->key, std::stod(best->key), best->height * base / 1024, best->width * base / 1024};
}

std::vector<std::string> pixart_aspect_keys() {
  std::vector<std::string> keys;
  for (const auto& bin : kAspectBins) keys.emplace_back(bin.key);
  return keys;
}

std::string pixart_caption(const std::string& prompt, PixArtNumerics numerics, bool clean) {
  std::string text = prompt;
  if (numerics == PixArtNumerics::kOriginal) {
    for (const char* flag : {"--aspect_ratio", "--ar", "--hw"}) text = text.substr(0, text.find(flag));
  }
  return preprocess_caption(text, clean);
}

PixArtCaptions encode_pixart_prompts(T5Encoder& encoder, const T5Tokenizer& tokenizer, const std::vector<std::string>& prompts,
                                     PixArtNumerics numerics, int64_t max_length, bool clean, const std::string& negative_prompt) {
  if (prompts.empty()) throw Error(ErrorCode::kInvalidArgument, "encode_pixart_prompts: no prompts given");
  std::vector<std::string> captions;
  for (const auto& p : prompts) captions.push_back(pixart_caption(p, numerics, clean));
  auto text = encode_captions(encoder, tokenizer, captions, max_length);
  PixArtCaptions out;
  out.y = text.y;
  out.mask = text.mask;
  if (numerics == PixArtNumerics::kDiffusers) {
    auto neg = encode_captions(encoder, tokenizer, {pixart_caption(negative_prompt, numerics, clean)}, max_length);
    out.negative_y = neg.y;
    out.negative_mask = neg.mask;
  }
  return out;
}

void simulate_pixart(const PixArtConfig& config, const PixArtSampleOptions& options, CacheContext& cache) {
  config.validate();
  const Plan p = plan_run(config, options, /*need_y=*/false);
  const int64_t rows = p.cfg ? 2 * p.n : p.n;
  const int64_t gh = p.latent[0] / config.patch_size, gw = p.latent[1] / config.patch_size;
  StepDriver::simulate(cache, backbone_info(config), pixart_run_shape(rows, p.cfg, gh, gw, p.caption_tokens), options.steps,
                       "dpm-solver++", options.progress);
}

at::Tensor sample_pixart(PixArt& model, const PixArtSampleOptions& options) {
  const auto& config = model->config();
  const Plan p = plan_run(config, options, /*need_y=*/true);
  const int64_t n = p.n, L = p.caption_tokens;
  const auto param = model->parameters().front();
  const auto device = param.device();
  const auto model_dtype = param.scalar_type();
  const bool original = options.numerics == PixArtNumerics::kOriginal;

  const std::vector<int64_t> shape = {n, config.in_channels, p.latent[0], p.latent[1]};
  at::Tensor z;
  if (options.init_noise) {
    const auto& noise = *options.init_noise;
    if (!noise.defined() || noise.sizes() != at::IntArrayRef(shape) || !at::isFloatingType(noise.scalar_type())) {
      throw Error(ErrorCode::kShapeMismatch,
                  fmt::format("sample_pixart: initial noise has shape {}, expected floating point {} ({} x {} pixels -> latent "
                              "{} x {})",
                              noise.defined() ? shape_string(noise.sizes()) : std::string("nothing"), shape_string(shape),
                              p.height, p.width, p.latent[0], p.latent[1]));
    }
    z = noise.to(at::kFloat).cpu();
  } else {
    auto generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
    z = at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat));  // [n, 4, h, w]
  }
  z = z.to(device);

  // The CFG batch: [uncond; cond] in both references.
  const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
  auto y = caption_rows(config, options.y, "y").to(f32);  // [n, L, C]
  auto mask = options.mask.defined() ? options.mask.to(device).to(at::kLong) : at::ones({n, L}, at::TensorOptions().dtype(at::kLong).device(device));
  PixArtInputs in;
  if (!p.cfg) {
    in.y = y;
    in.mask = mask;
  } else if (original) {
    at::Tensor null_y = options.null_caption;
    if (!null_y.defined()) {
      if (!model->has_null_caption()) {
        throw invalid(fmt::format("'{}' has no null caption (y_embedder.y_embedding: diffusers checkpoints drop it), which the "
                                  "original convention's CFG uses: load the original .pth, set null_caption, or use the "
                                  "diffusers convention with the empty prompt's encoding",
                                  config.name));
      }
      null_y = model->null_caption();
    }
    if (null_y.dim() != 2 || null_y.size(0) != L || null_y.size(1) != config.caption_channels) {
      throw Error(ErrorCode::kShapeMismatch, fmt::format("sample_pixart: null caption must be [{}, {}], found {}", L,
                                                         config.caption_channels, shape_string(null_y.sizes())));
    }
    in.y = at::cat({null_y.to(f32).unsqueeze(0).expand({n, L, config.caption_channels}), y}, 0);  // [2n, L, C]
    in.mask = mask;  // [n, L]: the model repeats the prompts' masks over both halves, as the original does
  } else {
    auto neg = caption_rows(config, options.negative_y, "negative_y").to(f32);
    auto neg_mask = options.negative_mask.defined() ? options.negative_mask.to(device).to(at::kLong)
                                                    : at::ones({neg.size(0), L}, at::TensorOptions().dtype(at::kLong).device(device));
    in.y = at::cat({neg.expand({n, L, config.caption_channels}), y}, 0);   // [2n, L, C]
    in.mask = at::cat({neg_mask.expand({n, L}), mask}, 0);                // [2n, L]: each half its own mask
  }
  // Casts the references apply on a reduced-precision model: values pass through its dtype.
  auto through_model_dtype = [&](const at::Tensor& t) { return t.to(model_dtype).to(at::kFloat); };
  if (config.micro_conditions) {
    const double ar = options.aspect_ratio > 0 ? options.aspect_ratio : static_cast<double>(p.height) / static_cast<double>(p.width);
    in.resolution = through_model_dtype(
        at::tensor({static_cast<float>(p.height), static_cast<float>(p.width)}, f32).view({1, 2}).expand({n, 2}));  // [n, 2]
    in.aspect_ratio = through_model_dtype(at::full({n, 1}, static_cast<float>(ar), f32));                          // [n, 1]
  }

  at::NoGradGuard no_grad;
  const int64_t rows = p.cfg ? 2 * n : n;
  const int64_t gh = p.latent[0] / config.patch_size, gw = p.latent[1] / config.patch_size;
  StepDriver driver(options.cache, model->info(), pixart_run_shape(rows, p.cfg, gh, gw, L), options.steps, "dpm-solver++", device,
                    {}, options.forward_seconds);
  const int64_t cin = config.in_channels;
  const auto& schedule = p.schedule;
  auto eps_fn = [&](const at::Tensor& x, int step) {
    in.x = p.cfg ? at::cat({x, x}, 0) : x;  // [rows, 4, h, w]
    auto t = at::full({rows}, schedule.model_timesteps[static_cast<size_t>(step)], f32);
    // The original casts the (fractional) model time to the model's dtype; diffusers' are integers.
    in.timestep = original ? through_model_dtype(t) : t;
    // [rows, 4, h, w] eps (the variance half unused)
    auto out = driver.step(step, [&](CacheContext* cache) { return model->forward(in, cache).narrow(1, 0, cin).contiguous(); });
    if (!p.cfg) return out;
    auto uncond = out.narrow(0, 0, n), cond = out.narrow(0, n, n);
    return uncond + (cond - uncond) * options.guidance;  // [n, 4, h, w]
  };
  return dpm_solver_sample(z, schedule, eps_fn, options.progress).contiguous();
}

}  // namespace ditcache
