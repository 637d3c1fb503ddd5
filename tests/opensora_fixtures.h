#pragma once
// The tiny STDiT3 of the shared OpenSora fixtures (../shared/fixtures/opensora/), and a cached
// rflow run of it with the reference's CFG batch (captions, masks and initial noise of
// rflow_tiny_sampling.safetensors; 32x48 px, 17 frames).
#include <memory>
#include <string>

#include <ATen/ATen.h>

#include "ditcache/cache/context.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/stdit3.h"
#include "ditcache/step_driver.h"
#include "ditcache/sampling/rflow.h"
#include "test_util.h"

namespace ditcache::test {

#define DITCACHE_REQUIRE_TINY_VIDEO()                                                                   \
  do {                                                                                                  \
    DITCACHE_REQUIRE_SHARED_FIXTURE(::ditcache::test::shared_fixture("opensora/stdit3_tiny_weights.safetensors")); \
    DITCACHE_REQUIRE_SHARED_FIXTURE(::ditcache::test::shared_fixture("opensora/rflow_tiny_sampling.safetensors")); \
  } while (0)

inline std::string tiny_stdit3_weights() { return shared_fixture("opensora/stdit3_tiny_weights.safetensors"); }

/// The tiny STDiT3 with the fixture's weights, in eval mode (config read from the file).
inline STDiT3 load_tiny_stdit3() {
  auto file = open_weights(tiny_stdit3_weights());
  STDiT3 model(STDiT3Config::from_weights(*file));
  model->load(*file);
  model->eval();
  return model;
}

struct TinyVideoRun {
  STDiT3 model{nullptr};
  std::unique_ptr<WeightFile> fixture;
  int64_t n = 0, frames = 0;
  static constexpr int64_t kGridH = 2, kGridW = 3;  // 4x6 latent, patch 2

  TinyVideoRun() {
    model = load_tiny_stdit3();
    fixture = open_weights(shared_fixture("opensora/rflow_tiny_sampling.safetensors"));
    n = fixture->load("z_init").size(0);
    frames = fixture->load("z_init").size(2);
  }

  int64_t tokens() const { return frames * kGridH * kGridW; }

  /// The latents after `steps` rflow steps with guidance 7, every forward through `cache` (if any).
  at::Tensor sample(CacheContext* cache, int steps) {
    RFlowSchedule s;
    s.num_steps = steps;
    s.height = 32;
    s.width = 48;
    s.num_frames = 17;
    STDiT3Inputs in;
    in.y = fixture->load("model_y");
    in.mask = fixture->load("model_mask");
    in.fps = fixture->load("fps");
    in.height = 32;
    in.width = 48;
    StepDriver driver(cache, model->info(), stdit3_run_shape(2 * n, true, frames, kGridH, kGridW, in.y.size(1)), steps, "rflow",
                      at::kCPU);
    at::NoGradGuard no_grad;
    return rflow_sample(fixture->load("z_init"), rflow_timesteps(s), 1000, 7.0, [&](const at::Tensor& z, const at::Tensor& t, int step) {
      in.x = z;
      in.timestep = t;
      return driver.step(step, [&](CacheContext* c) { return model->forward(in, c).narrow(1, 0, 4); });
    });
  }
};

}  // namespace ditcache::test
