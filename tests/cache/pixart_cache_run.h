#pragma once
// The tiny PixArt-α of tests/fixtures/pixart (original layout, with its null caption) driven step by
// step through a CacheContext, without the sampling pipeline: a CFG batch [cond; uncond] of two
// prompts (3 and 8 valid caption tokens of 8, the conditional masks repeated over both halves as
// the original does), a 16 x 16 latent (8 x 8 = 64 tokens, four 4 x 4 blocks for ToCa's s4), and a
// plain guided update x <- x - 0.05 * eps so every step sees new inputs.
#include <memory>
#include <string>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "ditcache/cache/context.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/pixart.h"
#include "ditcache/step_driver.h"
#include "test_util.h"

namespace ditcache::test {

inline PixArt load_tiny_pixart() {
  auto config = PixArtConfig::from_json_file(fixture("pixart/pixart_tiny_base_config.json"));
  config.model_max_length = 8;
  PixArt model(config);
  model->load(*open_weights(fixture("pixart/pixart_tiny_base_original.pth")));
  model->eval();
  return model;
}

struct TinyPixArtRun {
  PixArt model{nullptr};
  static constexpr int64_t kPrompts = 2, kGrid = 8, kCaption = 8;
  at::Tensor x0, y, mask;  // [2, 4, 16, 16], [4, 8, 32] (cond; null caption), [2, 8]

  TinyPixArtRun() {
    model = load_tiny_pixart();
    auto gen = at::make_generator<at::CPUGeneratorImpl>(11);
    x0 = at::randn({kPrompts, 4, 2 * kGrid, 2 * kGrid}, gen);
    auto cond = at::randn({kPrompts, kCaption, 32}, gen);
    auto null = model->null_caption().unsqueeze(0).expand({kPrompts, kCaption, 32});
    y = at::cat({cond, null}, 0);
    mask = at::zeros({kPrompts, kCaption});
    mask[0].narrow(0, 0, 3).fill_(1);
    mask[1].fill_(1);
  }

  int64_t rows() const { return 2 * kPrompts; }
  int64_t tokens() const { return kGrid * kGrid; }
  RunShape shape(bool cfg = true) const { return pixart_run_shape(rows(), cfg, kGrid, kGrid, kCaption); }
  RunInfo run_info(int steps, bool cfg = true) const {
    return make_run_info(model->info(), shape(cfg), steps, "dpm-solver");
  }

  /// The latents after `steps` steps (timesteps 999 -> 0), every forward through `cache` when given,
  /// driven by a StepDriver as the pipelines drive it.
  at::Tensor sample(CacheContext* cache, int steps, bool cfg = true) {
    at::NoGradGuard no_grad;
    StepDriver driver(cache, model->info(), shape(cfg), steps, "dpm-solver", x0.device());
    auto x = x0;
    for (int step = 0; step < steps; ++step) {
      const double t = 999.0 * (1.0 - static_cast<double>(step) / steps);
      PixArtInputs in;
      in.x = at::cat({x, x}, 0);
      in.timestep = at::full({rows()}, t);
      in.y = y;
      in.mask = mask;
      auto eps = driver.step(step, [&](CacheContext* c) { return model->forward(in, c).narrow(1, 0, 4); });
      auto halves = eps.chunk(2, 0);
      x = x - 0.05 * (halves[1] + 4.5 * (halves[0] - halves[1]));
    }
    return x;
  }

  /// The FLOPs-only count of the same run (StepDriver::simulate).
  RunSummary simulate(CacheContext& cache, int steps) const {
    StepDriver::simulate(cache, model->info(), shape(), steps, "dpm-solver");
    return cache.summary();
  }
};

}  // namespace ditcache::test
