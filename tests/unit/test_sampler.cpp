// The Sampler interface (sampling/sampler.h): every built-in sampler, driven step by step as a
// pipeline loop drives it, reproduces the existing path bit for bit (at::equal):
// - ddpm / ddim: GaussianDiffusion::ddpm_step / ddim_step in DiT's loop order with the same
//   generator draws, and sample_dit itself on the tiny DiT of tests/fixtures/dit/;
// - dpm-solver++ (both conventions): the loop dpm_solver_sample ran before it became a Sampler
//   loop, on the analytic noise model of tests/fixtures/pixart/pixart_dpm_solver.safetensors (and
//   within 1e-6 of the reference's final x stored there);
// - rflow: rflow_sample's former loop (guidance, then the Euler update), on an analytic velocity
//   and on the tiny STDiT3 of ../shared/fixtures/opensora/.
// Also: the registry, refusals with messages naming sampler, expected and found, and repeat runs.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/dit.h"
#include "ditcache/pipeline.h"
#include "ditcache/sampling/dpm_solver.h"
#include "ditcache/sampling/gaussian_diffusion.h"
#include "ditcache/sampling/rflow.h"
#include "ditcache/sampling/sampler.h"
#include "opensora_fixtures.h"
#include "test_util.h"

namespace ditcache {
namespace {

at::Generator seeded(uint64_t seed) { return at::make_generator<at::CPUGeneratorImpl>(seed); }

// An analytic stand-in for DiT: eps = tanh(x)(0.5 + t/2000), followed by C learned-sigma channels
// in [-1, 1] when `learned_sigma`.
at::Tensor analytic_dit(const at::Tensor& x, double t, bool learned_sigma) {
  auto eps = at::tanh(x) * (0.5 + t / 2000.0);
  return learned_sigma ? at::cat({eps, at::sin(3.0 * x) * 0.9}, 1) : eps;
}

// Drives `sampler` as a pipeline loop does; returns the final x.
template <class ModelFn>
at::Tensor drive(Sampler& sampler, at::Tensor x, const ModelFn& model) {
  for (int i = 0; i < sampler.num_steps(); ++i) x = sampler.step(i, x, model(x, sampler.model_timestep(i)));
  return x;
}

// --------------------------------------------------------------------------------- DDPM and DDIM
// DiT's sample loop as src/pipeline.cpp runs it: the initial noise, then per respaced step k =
// S-1..0 the model, one draw of the batch's shape (DDIM included), the update.
at::Tensor dit_reference_loop(const GaussianDiffusion& d, bool ddim, double eta, bool clip, bool learned_sigma,
                              uint64_t seed, at::Generator* left_over = nullptr) {
  auto generator = seeded(seed);
  auto x = at::randn({2, 3, 4, 4}, generator, at::TensorOptions().dtype(at::kFloat));
  for (int64_t k = d.num_steps() - 1; k >= 0; --k) {
    auto out = analytic_dit(x, static_cast<double>(d.model_timestep(k)), learned_sigma);
    auto noise = at::randn(x.sizes(), generator, at::TensorOptions().dtype(at::kFloat));
    x = ddim ? d.ddim_step(x, out, k, noise, eta, clip) : d.ddpm_step(x, out, k, noise, clip);
  }
  if (left_over) *left_over = generator;
  return x;
}

at::Tensor dit_sampler_loop(Sampler& sampler, bool learned_sigma, uint64_t seed, at::Generator* left_over = nullptr) {
  auto generator = seeded(seed);
  auto x = at::randn({2, 3, 4, 4}, generator, at::TensorOptions().dtype(at::kFloat));
  sampler.set_generator(generator);
  x = drive(sampler, x, [&](const at::Tensor& xt, double t) { return analytic_dit(xt, t, learned_sigma); });
  if (left_over) *left_over = generator;
  return x;
}

struct GaussianCase {
  const char* name;
  std::string respacing;
  double eta;
  bool clip, learned_sigma;
};

class GaussianSamplers : public ::testing::TestWithParam<GaussianCase> {};

TEST_P(GaussianSamplers, StepByStepEqualsDiTsLoopBitForBit) {
  const auto c = GetParam();
  const bool ddim = std::string(c.name) == "ddim";
  SamplerOptions o;
  o.respacing = c.respacing;
  o.clip_denoised = c.clip;
  if (ddim) o.eta = c.eta;
  auto sampler = make_sampler(c.name, o);
  const GaussianDiffusion d(c.respacing);
  ASSERT_EQ(sampler->num_steps(), d.num_steps());
  EXPECT_TRUE(sampler->step_index_counts_down());
  for (int i = 0; i < sampler->num_steps(); ++i) {
    const int64_t k = d.num_steps() - 1 - i;
    EXPECT_EQ(sampler->model_timestep(i), static_cast<double>(d.model_timestep(k))) << i;
    EXPECT_EQ(sampler->step_index(i), k);
  }
  at::Generator ref_rest, rest;
  const auto expected = dit_reference_loop(d, ddim, c.eta, c.clip, c.learned_sigma, 7, &ref_rest);
  const auto x = dit_sampler_loop(*sampler, c.learned_sigma, 7, &rest);
  EXPECT_TRUE(at::equal(x, expected)) << "max |diff| " << (x - expected).abs().max().item<double>();
  // The same number of draws: the streams go on alike.
  EXPECT_TRUE(at::equal(at::randn({5}, rest), at::randn({5}, ref_rest)));
  // The same object runs again (step 0 starts over) with the same result.
  EXPECT_TRUE(at::equal(dit_sampler_loop(*sampler, c.learned_sigma, 7), expected));
  EXPECT_FALSE(at::equal(dit_sampler_loop(*sampler, c.learned_sigma, 8), expected));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GaussianSamplers,
    ::testing::Values(GaussianCase{"ddpm", "10", 0.0, false, true}, GaussianCase{"ddpm", "10", 0.0, false, false},
                      GaussianCase{"ddpm", "7", 0.0, true, true}, GaussianCase{"ddim", "ddim5", 0.0, false, true},
                      GaussianCase{"ddim", "ddim5", 0.5, false, true}, GaussianCase{"ddim", "10,4", 1.0, true, false}),
    [](const ::testing::TestParamInfo<GaussianCase>& info) {
      return std::string(info.param.name) + "_" + std::to_string(info.index);
    });

TEST(GaussianSamplers, StepCountsAndRespacingsAsTheDiTPipelineBuildsThem) {
  SamplerOptions o;
  o.steps = 50;
  EXPECT_EQ(make_sampler("ddim", o)->model_timesteps(), GaussianDiffusion::ddim(50).sampling_timesteps());
  EXPECT_EQ(make_sampler("ddim", o)->model_timestep(0), 980);  // ddim50: stride 20
  EXPECT_EQ(make_sampler("ddpm", o)->model_timesteps(), GaussianDiffusion("50").sampling_timesteps());
  o.steps = 37;  // no stride gives 37: even spacing, as GaussianDiffusion::ddim
  EXPECT_EQ(make_sampler("ddim", o)->model_timesteps(), GaussianDiffusion("37").sampling_timesteps());
  o.steps = 0;
  o.respacing = "ddim25";
  EXPECT_EQ(make_sampler("ddim", o)->num_steps(), 25);
  o.steps = 25;  // agreeing with the respacing is fine
  EXPECT_EQ(make_sampler("ddpm", o)->num_steps(), 25);
}

TEST(GaussianSamplers, DdimAtEtaZeroNeedsNoGenerator) {
  SamplerOptions o;
  o.respacing = "ddim5";
  auto with = make_sampler("ddim", o), without = make_sampler("ddim", o);
  EXPECT_FALSE(with->needs_generator());
  with->set_generator(seeded(3));
  EXPECT_TRUE(with->draws_noise());
  EXPECT_FALSE(without->draws_noise());
  auto x = at::randn({2, 3, 4, 4}, seeded(1));
  auto model = [](const at::Tensor& xt, double t) { return analytic_dit(xt, t, true); };
  EXPECT_TRUE(at::equal(drive(*with, x, model), drive(*without, x, model)));  // the draw is unused at eta 0
}

// The tiny DiT of tests/fixtures/dit/ through sample_dit and through the Sampler loop a pipeline
// would run (CFG batch [cond; uncond], int64 timesteps, forward_with_cfg).
DiT tiny_dit() {
  auto file = open_weights(test::fixture("dit/dit_tiny_original.safetensors"));
  DiT model(DiTConfig::from_weights(*file));  // both paths run this one model: its config need not be the fixture's
  model->load(*file);
  model->eval();
  return model;
}

at::Tensor dit_pipeline_loop(DiT& model, Sampler& sampler, const std::vector<int64_t>& labels, double scale, uint64_t seed) {
  const auto& config = model->config();
  const auto n = static_cast<int64_t>(labels.size());
  auto generator = seeded(seed);
  auto z = at::randn({n, config.in_channels, config.input_size, config.input_size}, generator,
                     at::TensorOptions().dtype(at::kFloat));
  auto y_labels = labels;
  y_labels.insert(y_labels.end(), labels.size(), config.num_classes);
  auto x = at::cat({z, z}, 0);  // [2n, C, H, W]: cond then uncond
  auto y = at::tensor(y_labels, at::TensorOptions().dtype(at::kLong));
  at::NoGradGuard no_grad;
  sampler.set_generator(generator);
  x = drive(sampler, x, [&](const at::Tensor& xt, double t) {
    auto tt = at::full({xt.size(0)}, static_cast<int64_t>(t), at::TensorOptions().dtype(at::kLong));
    return model->forward_with_cfg(xt, tt, y, scale).to(at::kFloat);
  });
  return x.narrow(0, 0, n).contiguous();
}

TEST(GaussianSamplers, TinyDiTLoopEqualsSampleDit) {
  auto model = tiny_dit();
  struct Run {
    const char* sampler;
    SamplerKind kind;
    std::string respacing;
    double eta;
  };
  for (const auto& r : {Run{"ddpm", SamplerKind::kDDPM, "10", 0.0}, Run{"ddim", SamplerKind::kDDIM, "ddim5", 0.0},
                        Run{"ddim", SamplerKind::kDDIM, "ddim5", 0.5}}) {
    SCOPED_TRACE(std::string(r.sampler) + " " + r.respacing);
    DiTSampleOptions o;
    o.class_labels = {1, 7};
    o.sampler = r.kind;
    o.respacing = r.respacing;
    o.ddim_eta = r.eta;
    o.guidance_scale = 4.0;
    o.seed = 11;
    SamplerOptions so;
    so.respacing = r.respacing;
    if (r.kind == SamplerKind::kDDIM) so.eta = r.eta;
    auto sampler = make_sampler(r.sampler, so);
    EXPECT_TRUE(at::equal(dit_pipeline_loop(model, *sampler, o.class_labels, 4.0, 11), sample_dit(model, o)));
  }
}

// ------------------------------------------------------------------------------------ DPM-Solver++
std::unique_ptr<WeightFile> dpm_tables() { return open_weights(test::fixture("pixart/pixart_dpm_solver.safetensors")); }

// The fixture's analytic noise model: tanh(x)(0.5 + t/2000).
at::Tensor analytic_eps(const at::Tensor& x, double t) { return at::tanh(x) * (0.5 + t / 2000.0); }

// dpm_solver_sample's loop before it drove the Sampler (the data prediction, then the update with
// the previous step's data prediction).
at::Tensor dpm_reference_loop(const at::Tensor& x_init, const DPMSolverSchedule& s) {
  at::Tensor x = x_init.to(at::kFloat), previous;
  for (int i = 0; i < s.num_steps; ++i) {
    auto e = analytic_eps(x, s.model_timesteps[static_cast<size_t>(i)]).to(at::kFloat);
    auto m = dpm_solver_data_prediction(s, i, x, e);
    x = dpm_solver_update(s, i, x, m, previous);
    previous = m;
  }
  return x;
}

class DPMSolverSamplers : public ::testing::TestWithParam<const char*> {};

TEST_P(DPMSolverSamplers, StepByStepEqualsTheFixtureLoopsBitForBit) {
  const std::string name = GetParam();
  const auto convention = parse_dpm_solver_convention(name);
  auto f = dpm_tables();
  const auto x_init = f->load("x_init");
  for (int steps : nlohmann::json::parse(f->metadata().at(name + "_steps")).get<std::vector<int>>()) {
    SCOPED_TRACE(name + " " + std::to_string(steps) + " steps");
    SamplerOptions o;
    o.steps = steps;
    o.convention = convention;
    auto sampler = make_sampler("dpm-solver++", o);
    const auto s = dpm_solver_schedule(steps, convention);
    EXPECT_EQ(sampler->model_timesteps(), s.model_timesteps);
    EXPECT_FALSE(sampler->step_index_counts_down());
    const auto expected = dpm_reference_loop(x_init, s);
    const auto x = drive(*sampler, x_init, analytic_eps);
    EXPECT_TRUE(at::equal(x, expected)) << "max |diff| " << (x - expected).abs().max().item<double>();
    EXPECT_TRUE(at::equal(drive(*sampler, x_init, analytic_eps), expected)) << "second run";
    EXPECT_TRUE(at::equal(dpm_solver_sample(x_init, s, [&](const at::Tensor& xt, int i) {
                            return analytic_eps(xt, s.model_timesteps[static_cast<size_t>(i)]);
                          }),
                          expected));
    const auto reference = f->load(name + "." + std::to_string(steps) + ".x_final");
    DITCACHE_EXPECT_CLOSE(x, reference, 1e-6);
    // Learned-sigma channels after the noise prediction are ignored.
    auto with_sigma = make_sampler("dpm-solver++", o);
    const auto x2 = drive(*with_sigma, x_init, [](const at::Tensor& xt, double t) {
      return at::cat({analytic_eps(xt, t), at::full_like(xt, 7.0)}, 1);
    });
    EXPECT_TRUE(at::equal(x2, expected));
  }
}

INSTANTIATE_TEST_SUITE_P(Conventions, DPMSolverSamplers, ::testing::Values("original", "diffusers"));

TEST(DPMSolverSamplers, AnAbandonedRunRestartsCleanly) {
  SamplerOptions o;
  o.steps = 6;
  auto sampler = make_sampler("dpm-solver++", o);
  auto x = at::randn({1, 4, 3, 3}, seeded(2));
  const auto full = drive(*sampler, x, analytic_eps);
  // Half a run with another input leaves multistep state behind; step 0 forgets it.
  auto y = at::randn({1, 4, 3, 3}, seeded(5));
  for (int i = 0; i < 3; ++i) y = sampler->step(i, y, analytic_eps(y, sampler->model_timestep(i)));
  EXPECT_EQ(sampler->steps_done(), 3);
  EXPECT_TRUE(at::equal(drive(*sampler, x, analytic_eps), full));
  sampler->reset();
  EXPECT_EQ(sampler->steps_done(), 0);
  test::expect_error([&] { sampler->step(1, x, x); }, ErrorCode::kInvalidArgument, "step 1 called before step 0");
}

// ----------------------------------------------------------------------------------- rectified flow
// rflow_sample's loop before it drove the Sampler: the CFG batch, guidance, then z + v dt.
template <class VelocityFn>
at::Tensor rflow_reference_loop(const at::Tensor& z0, const std::vector<float>& timesteps, int num_timesteps, double scale,
                                const VelocityFn& velocity) {
  auto z = z0;
  const int64_t n = z.size(0);
  const auto total = static_cast<int64_t>(timesteps.size());
  for (int64_t i = 0; i < total; ++i) {
    auto t = at::full({2 * n}, timesteps[static_cast<size_t>(i)], z.options().dtype(at::kFloat));
    auto v = velocity(at::cat({z, z}, 0), t, static_cast<int>(i));
    auto halves = v.chunk(2, 0);
    auto guided = halves[1] + scale * (halves[0] - halves[1]);
    const float next = i + 1 < total ? timesteps[static_cast<size_t>(i + 1)] : 0.0f;
    const float dt = (timesteps[static_cast<size_t>(i)] - next) / static_cast<float>(num_timesteps);
    z = z + guided.to(z.scalar_type()) * dt;
  }
  return z;
}

// An analytic velocity of a [cond; uncond] batch: the halves differ, so guidance matters.
at::Tensor analytic_velocity(const at::Tensor& z_in, const at::Tensor& t) {
  const auto n = z_in.size(0) / 2;
  auto scale = (t.view({-1, 1, 1, 1, 1}) / 1000.0).to(z_in.scalar_type());
  auto cond = -at::tanh(z_in.narrow(0, 0, n)) * scale.narrow(0, 0, n);
  auto uncond = -0.5 * z_in.narrow(0, n, n) * scale.narrow(0, n, n);
  return at::cat({cond, uncond}, 0);  // [2n, C, T, h, w]
}

RFlowSchedule video_schedule(int steps) {
  RFlowSchedule s;
  s.num_steps = steps;
  s.height = 32;
  s.width = 48;
  s.num_frames = 17;
  return s;
}

TEST(RFlowSampler, StepByStepEqualsRflowSamplesLoopBitForBit) {
  for (auto dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    const auto z0 = at::randn({2, 4, 3, 4, 6}, seeded(4)).to(dtype);
    SamplerOptions o;
    o.steps = 7;
    o.rflow = video_schedule(30);  // its num_steps is not read
    auto sampler = make_sampler("rflow", o);
    const auto timesteps = rflow_timesteps(video_schedule(7));
    ASSERT_EQ(sampler->num_steps(), 7);
    for (size_t i = 0; i < timesteps.size(); ++i) EXPECT_EQ(sampler->model_timestep(static_cast<int>(i)), timesteps[i]);
    auto velocity = [](const at::Tensor& z, const at::Tensor& t, int) { return analytic_velocity(z, t); };
    const auto expected = rflow_reference_loop(z0, timesteps, 1000, 7.0, velocity);
    // The pipeline's loop: the CFG batch, guidance (rflow_guidance), the sampler's update.
    auto guided_loop = [&] {
      return drive(*sampler, z0, [&](const at::Tensor& z, double t) {
        auto tt = at::full({2 * z.size(0)}, t, at::TensorOptions().dtype(at::kFloat));
        return rflow_guidance(analytic_velocity(at::cat({z, z}, 0), tt), 7.0);
      });
    };
    const auto z = guided_loop();
    EXPECT_EQ(z.scalar_type(), dtype);
    EXPECT_TRUE(at::equal(z, expected));
    EXPECT_TRUE(at::equal(guided_loop(), expected)) << "second run";
    EXPECT_TRUE(at::equal(rflow_sample(z0, timesteps, 1000, 7.0, velocity), expected));
  }
}

TEST(RFlowSampler, TinySTDiT3LoopEqualsRflowSamplesLoop) {
  DITCACHE_REQUIRE_TINY_VIDEO();
  test::TinyVideoRun run;
  STDiT3Inputs in;
  in.y = run.fixture->load("model_y");
  in.mask = run.fixture->load("model_mask");
  in.fps = run.fixture->load("fps");
  in.height = 32;
  in.width = 48;
  auto velocity = [&](const at::Tensor& z, const at::Tensor& t, int) {
    in.x = z;
    in.timestep = t;
    return run.model->forward(in);  // [2n, 8, T, h, w]: velocity, then the unused learned-sigma half
  };
  at::NoGradGuard no_grad;
  const auto z0 = run.fixture->load("z_init");
  const auto timesteps = rflow_timesteps(video_schedule(5));
  const auto expected = rflow_reference_loop(z0, timesteps, 1000, 7.0, [&](const at::Tensor& z, const at::Tensor& t, int i) {
    return velocity(z, t, i).narrow(1, 0, 4);
  });
  SamplerOptions o;
  o.steps = 5;
  o.rflow = video_schedule(5);
  auto sampler = make_sampler("rflow", o);
  const auto z = drive(*sampler, z0, [&](const at::Tensor& zt, double t) {
    auto tt = at::full({2 * zt.size(0)}, t, at::TensorOptions().dtype(at::kFloat));
    return rflow_guidance(velocity(at::cat({zt, zt}, 0), tt, 0), 7.0);  // [n, 8, ...]: the sampler takes channels 0..3
  });
  EXPECT_TRUE(at::equal(z, expected));
  EXPECT_TRUE(at::equal(run.sample(nullptr, 5), expected));
}

TEST(RFlowSampler, AnOracleVelocityLandsOnTheData) {
  // x_t = (1 - t/T) x0 + (t/T) eps has the constant velocity x0 - eps: Euler is exact for any grid.
  const auto x0 = at::randn({1, 4, 2, 3, 3}, seeded(9)), eps = at::randn({1, 4, 2, 3, 3}, seeded(10));
  for (int steps : {1, 4, 30}) {
    auto sampler = make_rflow_sampler(rflow_timesteps(video_schedule(steps)));
    const auto x = drive(*sampler, eps, [&](const at::Tensor&, double) { return x0 - eps; });
    DITCACHE_EXPECT_CLOSE(x, x0, 1e-5);
  }
}

// ------------------------------------------------------------------------- registry and refusals
TEST(SamplerRegistry, ListsTheBuiltInsWithTheirPredictions) {
  std::vector<std::string> names;
  for (const auto& info : registered_samplers()) {
    names.push_back(info.name);
    EXPECT_FALSE(info.summary.empty()) << info.name;
    EXPECT_EQ(info.prediction, info.name == "rflow" ? Prediction::kVelocity : Prediction::kEpsilon) << info.name;
  }
  for (const char* expected : {"ddim", "ddpm", "dpm-solver++", "rflow"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  }
  SamplerOptions o;
  o.steps = 20;
  o.rflow = video_schedule(20);
  auto rflow = make_sampler("rflow", o);
  EXPECT_EQ(rflow->name(), "rflow");
  EXPECT_EQ(rflow->prediction(), Prediction::kVelocity);
  EXPECT_FALSE(rflow->draws_noise());
  EXPECT_STREQ(to_string(Prediction::kEpsilon), "epsilon");
}

// A sampler registered from outside the library: plain Euler on an epsilon model's x0 (a toy).
class ToySampler final : public Sampler {
 public:
  explicit ToySampler(int steps) : Sampler("toy", Prediction::kEpsilon, std::vector<double>(static_cast<size_t>(steps), 500.0)) {}

 protected:
  at::Tensor advance(int, const at::Tensor& x, const at::Tensor& model_output) override {
    return x - 0.1 * predicted(x, model_output);
  }
};

TEST(SamplerRegistry, ApplicationsRegisterTheirOwn) {
  static const bool once = [] {
    register_sampler("toy", Prediction::kEpsilon, "a toy for the registry test", [](const SamplerOptions& o) {
      o.expect_only("toy", {});
      return std::make_unique<ToySampler>(o.steps);
    });
    return true;
  }();
  (void)once;
  SamplerOptions o;
  o.steps = 3;
  auto toy = make_sampler("toy", o);
  EXPECT_EQ(toy->num_steps(), 3);
  auto x = at::ones({1, 2, 2, 2});
  EXPECT_TRUE(at::allclose(drive(*toy, x, [](const at::Tensor& xt, double) { return xt; }), x * std::pow(0.9, 3)));
  test::expect_error([] { register_sampler("toy", Prediction::kEpsilon, "again", {}); }, ErrorCode::kInvalidArgument,
                     "sampler 'toy' is already registered");
  test::expect_error([] { register_sampler("bad name", Prediction::kEpsilon, "", {}); }, ErrorCode::kInvalidArgument,
                     "sampler name 'bad name'");
  o.eta = 0.1;
  test::expect_error([&] { make_sampler("toy", o); }, ErrorCode::kInvalidArgument,
                     "sampler 'toy' takes no option 'eta'; its options: steps");
}

TEST(SamplerRefusals, AModelOfAnotherPredictionIsRefusedByName) {
  SamplerOptions o;
  o.steps = 10;
  o.rflow = video_schedule(10);
  auto rflow = make_sampler("rflow", o);
  test::expect_error([&] { check_sampler_prediction(*rflow, Prediction::kEpsilon, "DiT"); }, ErrorCode::kUnsupported,
                     "sampler 'rflow' expects the model to predict velocity, but DiT predicts epsilon; samplers for epsilon: "
                     "ddim, ddpm, dpm-solver++");
  SamplerOptions d;
  d.steps = 10;
  auto ddim = make_sampler("ddim", d);
  test::expect_error([&] { check_sampler_prediction(*ddim, Prediction::kVelocity, "STDiT3"); }, ErrorCode::kUnsupported,
                     "sampler 'ddim' expects the model to predict epsilon, but STDiT3 predicts velocity; samplers for velocity: rflow");
  check_sampler_prediction(*ddim, Prediction::kEpsilon, "DiT");  // fits: no throw
}

TEST(SamplerRefusals, BadNamesOptionsAndValuesNameTheSampler) {
  // {sampler, a change to 10-step options, the message fragment}
  struct Case {
    std::string sampler;
    std::function<void(SamplerOptions&)> change;
    std::string fragment;
  };
  const auto video = video_schedule(10);
  const std::vector<Case> cases = {
      {"euler", [](SamplerOptions&) {}, "sampler 'euler' is not known; known: ddim, ddpm, dpm-solver++, rflow"},
      {"ddpm", [](SamplerOptions& o) { o.eta = 0.5; },
       "sampler 'ddpm' takes no option 'eta'; its options: steps, respacing, clip_denoised"},
      {"dpm-solver++", [](SamplerOptions& o) { o.eta = 0.5; },
       "sampler 'dpm-solver++' takes no option 'eta'; its options: steps, convention"},
      {"ddim", [](SamplerOptions& o) { o.convention = DPMSolverConvention::kDiffusers; },
       "sampler 'ddim' takes no option 'convention'; its options: steps, respacing, eta, clip_denoised"},
      {"dpm-solver++", [&](SamplerOptions& o) { o.rflow = video; }, "sampler 'dpm-solver++' takes no option 'rflow'"},
      {"ddim", [](SamplerOptions& o) { o.eta = 2.0; }, "sampler 'ddim': eta must be in [0, 1], found 2"},
      {"ddim", [](SamplerOptions& o) { o.steps = 25; o.respacing = "ddim50"; },
       "sampler 'ddim': respacing 'ddim50' gives 50 steps, found steps = 25"},
      {"ddpm", [](SamplerOptions& o) { o.respacing = "ddim999"; }, "sampler 'ddpm': timestep respacing 'ddim999'"},
      {"ddpm", [](SamplerOptions& o) { o.steps = 0; }, "sampler 'ddpm': steps must be >= 1 (or a respacing given), found 0"},
      {"dpm-solver++", [](SamplerOptions& o) { o.steps = 0; },
       "sampler 'dpm-solver++': DPM-Solver: steps must be in 1..1000, found 0"},
      {"dpm-solver++", [](SamplerOptions& o) { o.steps = 1; },
       "sampler 'dpm-solver++': DPM-Solver (original): steps must be >= 2"},
      {"rflow", [](SamplerOptions&) {}, "sampler 'rflow': needs the rflow option"},
      {"rflow", [&](SamplerOptions& o) { o.rflow = video; o.rflow->num_frames = 5; },
       "sampler 'rflow': rflow schedule: num_frames must be 1 (an image) or >= 17"},
      {"rflow", [&](SamplerOptions& o) { o.rflow = video; o.steps = 0; },
       "sampler 'rflow': rflow schedule: num_steps must be >= 1, found 0"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.sampler + ": " + c.fragment);
    SamplerOptions o;
    o.steps = 10;
    c.change(o);
    test::expect_error([&] { make_sampler(c.sampler, o); }, ErrorCode::kInvalidArgument, c.fragment);
  }
  test::expect_error([] { make_rflow_sampler({}); }, ErrorCode::kInvalidArgument, "sampler 'rflow': no timesteps");
  DPMSolverSchedule broken = dpm_solver_schedule(4, DPMSolverConvention::kDiffusers);
  broken.model_timesteps.pop_back();
  test::expect_error([&] { make_dpm_solver_sampler(broken); }, ErrorCode::kInvalidArgument,
                     "sampler 'dpm-solver++': the schedule of 4 steps has 3 model timesteps");
}

TEST(SamplerRefusals, StepsOutOfOrderShapesAndMissingGenerators) {
  SamplerOptions o;
  o.steps = 4;
  auto ddpm = make_sampler("ddpm", o);
  auto x = at::zeros({2, 4, 3, 3});
  EXPECT_TRUE(ddpm->needs_generator());
  test::expect_error([&] { ddpm->step(0, x, x); }, ErrorCode::kInvalidArgument,
                     "sampler 'ddpm': draws noise every step and needs a generator; call set_generator() first");
  o.eta = 0.3;
  auto ddim = make_sampler("ddim", o);
  test::expect_error([&] { ddim->step(0, x, x); }, ErrorCode::kInvalidArgument, "sampler 'ddim': draws noise every step");

  ddpm->set_generator(seeded(0));
  test::expect_error([&] { ddpm->step(2, x, x); }, ErrorCode::kInvalidArgument,
                     "sampler 'ddpm': step 2 called before step 0; a run calls steps 0..3 in order");
  ddpm->step(0, x, x);
  test::expect_error([&] { ddpm->step(2, x, x); }, ErrorCode::kInvalidArgument, "step 2 called after step 0");
  for (int i = 1; i < 4; ++i) ddpm->step(i, x, x);
  test::expect_error([&] { ddpm->step(4, x, x); }, ErrorCode::kInvalidArgument, "step 4 called after step 3");
  test::expect_error([&] { ddpm->model_timestep(4); }, ErrorCode::kInvalidArgument,
                     "sampler 'ddpm': call 4 is outside the run's 0..3");
  test::expect_error([&] { ddpm->step(0, x, at::zeros({2, 3, 3, 3})); }, ErrorCode::kShapeMismatch,
                     "sampler 'ddpm': the noise prediction of step 0 has shape [2, 3, 3, 3], expected x's [2, 4, 3, 3] "
                     "(or [2, 8, 3, 3] with learned-sigma channels)");
  SamplerOptions r;
  r.steps = 3;
  r.rflow = video_schedule(3);
  auto rflow = make_sampler("rflow", r);
  test::expect_error([&] { rflow->step(0, x, at::zeros({1, 4, 3, 3})); }, ErrorCode::kShapeMismatch,
                     "sampler 'rflow': the velocity of step 0 has shape [1, 4, 3, 3], expected x's [2, 4, 3, 3]");
  test::expect_error([&] { rflow_guidance(at::zeros({3, 4}), 7.0); }, ErrorCode::kShapeMismatch,
                     "rflow guidance: the velocity batch has shape [3, 4], expected [2n, ...]");
}

}  // namespace
}  // namespace ditcache
