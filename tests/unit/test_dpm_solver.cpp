// DPM-Solver++ 2M (sampling/dpm_solver.h) against tests/fixtures/pixart/pixart_dpm_solver.safetensors:
// time grids and per-step coefficients of diffusers' DPMSolverMultistepScheduler and of
// PixArt-alpha's own DPM-Solver (scripts/fixtures/pixart_fixtures.py; the latter checked there
// against PixArt-alpha's dpm_solver.py), and whole loops on an analytic noise model.
#include <cmath>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/sampling/dpm_solver.h"
#include "test_util.h"

namespace ditcache {
namespace {

std::unique_ptr<WeightFile> tables() { return open_weights(test::fixture("pixart/pixart_dpm_solver.safetensors")); }

std::vector<int> steps_of(const WeightFile& f, const std::string& convention) {
  return nlohmann::json::parse(f.metadata().at(convention + "_steps")).get<std::vector<int>>();
}

at::Tensor floats(const std::vector<float>& v) { return at::tensor(v, at::TensorOptions().dtype(at::kFloat)); }

// max |a - b| / max(|b|, 1e-30) over finite entries; infinite entries must agree exactly.
double max_relative(const at::Tensor& a, const at::Tensor& b) {
  auto x = a.to(at::kDouble), y = b.to(at::kDouble);
  auto finite = at::isfinite(y);
  EXPECT_TRUE(at::equal(finite, at::isfinite(x)));
  EXPECT_TRUE(at::equal(x.masked_select(finite.logical_not()), y.masked_select(finite.logical_not())));
  auto xf = x.masked_select(finite), yf = y.masked_select(finite);
  if (xf.numel() == 0) return 0;
  return ((xf - yf).abs() / yf.abs().clamp_min(1e-30)).max().item<double>();
}

// The analytic stand-in for a noise model used by the fixture: tanh(x) (0.5 + t / 2000).
at::Tensor analytic_eps(const at::Tensor& x, double t) { return at::tanh(x) * (0.5 + t / 2000.0); }

class DPMSolverGrids : public ::testing::TestWithParam<const char*> {};

TEST_P(DPMSolverGrids, MatchTheReference) {
  const std::string name = GetParam();
  const auto convention = parse_dpm_solver_convention(name);
  auto f = tables();
  double worst_table = 0, worst_coef = 0;
  for (int steps : steps_of(*f, name)) {
    SCOPED_TRACE(name + " " + std::to_string(steps) + " steps");
    const auto s = dpm_solver_schedule(steps, convention);
    const std::string k = name + "." + std::to_string(steps) + ".";
    ASSERT_EQ(s.num_steps, steps);
    ASSERT_EQ(s.model_timesteps.size(), static_cast<size_t>(steps));
    auto model_time = f->load(k + "model_time").narrow(0, 0, steps);  // the original's table has S + 1 points
    EXPECT_TRUE(at::equal(at::tensor(s.model_timesteps, at::TensorOptions().dtype(at::kDouble)), model_time))
        << "model times";
    EXPECT_TRUE(at::equal(floats(s.grid), f->load(k + (convention == DPMSolverConvention::kOriginal ? "t" : "sigmas"))));
    worst_table = std::max({worst_table, max_relative(floats(s.alpha), f->load(k + "alpha")),
                            max_relative(floats(s.sigma), f->load(k + "sigma")),
                            max_relative(floats(s.lambda), f->load(k + "lambda"))});
    std::vector<int64_t> order(s.order.begin(), s.order.end());
    EXPECT_TRUE(at::equal(at::tensor(order, at::TensorOptions().dtype(at::kLong)), f->load(k + "order")));
    auto coef = at::stack({floats(s.coef_x), floats(s.coef_m), floats(s.coef_d), floats(s.inv_r)}, 1);  // [S, 4]
    worst_coef = std::max(worst_coef, max_relative(coef, f->load(k + "coef")));
  }
  // Computed with the references' own float32 tensor operations: equal up to an ulp or so.
  EXPECT_LE(worst_table, 1e-6);
  EXPECT_LE(worst_coef, 1e-6);
  RecordProperty("max_relative_table", ::testing::PrintToString(worst_table));
  RecordProperty("max_relative_coef", ::testing::PrintToString(worst_coef));
}

TEST_P(DPMSolverGrids, AnalyticLoopMatchesTheReference) {
  const std::string name = GetParam();
  const auto convention = parse_dpm_solver_convention(name);
  auto f = tables();
  const auto x_init = f->load("x_init");
  for (int steps : steps_of(*f, name)) {
    SCOPED_TRACE(name + " " + std::to_string(steps) + " steps");
    const auto s = dpm_solver_schedule(steps, convention);
    std::vector<int64_t> seen;
    auto x = dpm_solver_sample(
        x_init, s, [&](const at::Tensor& xt, int i) { return analytic_eps(xt, s.model_timesteps[static_cast<size_t>(i)]); },
        [&](int64_t done, int64_t total) {
          EXPECT_EQ(total, steps);
          seen.push_back(done);
        });
    auto expected = f->load(name + "." + std::to_string(steps) + ".x_final");
    const double err = (x - expected).abs().max().item<double>() / expected.abs().max().item<double>();
    EXPECT_LE(err, 1e-6) << "max |x - x_ref| / max |x_ref|";
    EXPECT_EQ(seen.size(), static_cast<size_t>(steps));
  }
}

INSTANTIATE_TEST_SUITE_P(Conventions, DPMSolverGrids, ::testing::Values("original", "diffusers"));

TEST(DPMSolver, KnownTwentyStepGrids) {
  const auto d = dpm_solver_schedule(20, DPMSolverConvention::kDiffusers);
  const std::vector<double> expected = {999, 949, 899, 849, 799, 749, 699, 649, 599, 549,
                                        500, 450, 400, 350, 300, 250, 200, 150, 100, 50};
  EXPECT_EQ(d.model_timesteps, expected);
  EXPECT_EQ(d.order.front(), 1);
  EXPECT_EQ(d.order.back(), 1);  // the last step goes to sigma 0, first order
  EXPECT_EQ(d.grid.back(), 0.f);
  EXPECT_TRUE(std::isinf(d.lambda.back()));
  EXPECT_FLOAT_EQ(d.coef_x.back(), 0.f);   // x_S = the data prediction
  EXPECT_FLOAT_EQ(d.coef_m.back(), -1.f);

  const auto o = dpm_solver_schedule(20, DPMSolverConvention::kOriginal);
  EXPECT_NEAR(o.model_timesteps[0], 999.0, 1e-3);
  EXPECT_NEAR(o.model_timesteps[1], 949.05, 1e-3);  // fractional model times
  EXPECT_NEAR(o.model_timesteps[19], 49.95, 1e-3);
  EXPECT_FLOAT_EQ(o.grid.front(), 1.f);
  EXPECT_NEAR(o.grid.back(), 0.001, 1e-9);
  EXPECT_EQ(o.order.front(), 1);
  EXPECT_EQ(o.order.back(), 2);  // lower_order_final only below 10 steps
  EXPECT_EQ(dpm_solver_schedule(9, DPMSolverConvention::kOriginal).order.back(), 1);
  EXPECT_EQ(dpm_solver_schedule(10, DPMSolverConvention::kOriginal).order.back(), 2);
  // Both conventions start from pure noise at the same alpha (t = 999 / t = 1).
  EXPECT_NEAR(o.alpha.front(), d.alpha.front(), 1e-6);
}

TEST(DPMSolver, UpdatesFollowTheFormulas) {
  const auto s = dpm_solver_schedule(5, DPMSolverConvention::kOriginal);
  auto x = at::randn({2, 3});
  auto eps = at::randn({2, 3});
  auto m0 = dpm_solver_data_prediction(s, 1, x, eps);
  EXPECT_TRUE(at::allclose(m0, (x - s.sigma[1] * eps) / s.alpha[1]));
  auto m1 = at::randn({2, 3});
  // Second order: x' = cx x - cm m0 - cm/2 (m0 - m1) / r0, with the schedule's h from lambda.
  const double h = s.lambda[2] - s.lambda[1], h0 = s.lambda[1] - s.lambda[0];
  const double cx = s.sigma[2] / s.sigma[1], cm = s.alpha[2] * std::expm1(-h);
  auto expected = cx * x - cm * m0 - 0.5 * cm * (h / h0) * (m0 - m1);
  EXPECT_TRUE(at::allclose(dpm_solver_update(s, 1, x, m0, m1), expected, 1e-5, 1e-5));
  // First order (step 0) ignores m1.
  EXPECT_TRUE(at::equal(dpm_solver_update(s, 0, x, m0, at::Tensor()), dpm_solver_update(s, 0, x, m0, m1)));
}

TEST(DPMSolver, BadInputsAreClearErrors) {
  test::expect_error([] { dpm_solver_schedule(0, DPMSolverConvention::kDiffusers); }, ErrorCode::kInvalidArgument,
                     "steps must be in 1..1000, found 0");
  test::expect_error([] { dpm_solver_schedule(1001, DPMSolverConvention::kOriginal); }, ErrorCode::kInvalidArgument,
                     "steps must be in 1..1000, found 1001");
  test::expect_error([] { dpm_solver_schedule(1, DPMSolverConvention::kOriginal); }, ErrorCode::kInvalidArgument,
                     "steps must be >= 2");
  EXPECT_EQ(dpm_solver_schedule(1, DPMSolverConvention::kDiffusers).order, std::vector<int>{1});
  test::expect_error([] { parse_dpm_solver_convention("karras"); }, ErrorCode::kInvalidArgument,
                     "convention 'karras' is not known");
  const auto s = dpm_solver_schedule(4, DPMSolverConvention::kDiffusers);
  auto x = at::zeros({1, 2});
  test::expect_error([&] { dpm_solver_update(s, 1, x, x, at::Tensor()); }, ErrorCode::kInvalidArgument,
                     "step 1 is second order and needs the previous step's data prediction");
  test::expect_error([&] { dpm_solver_update(s, 4, x, x, x); }, ErrorCode::kInvalidArgument, "step 4 is outside the schedule's 0..3");
  test::expect_error([&] { dpm_solver_sample(x, s, [](const at::Tensor&, int) { return at::zeros({3}); }); },
                     ErrorCode::kShapeMismatch, "noise prediction of step 0 has shape [3], expected x's [1, 2]");
}

}  // namespace
}  // namespace ditcache
