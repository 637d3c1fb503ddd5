// Fidelity and quality metrics on inputs with known answers.
#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ditcache/metrics/quality.h"
#include "test_util.h"

namespace ditcache {
namespace {

using test::expect_error;

TEST(Fidelity, PsnrSsimAndRelativeL2HaveTheirKnownValues) {
  auto a = at::rand({2, 3, 16, 16}) * 1.6 - 0.8;
  EXPECT_TRUE(std::isinf(psnr(a, a)));
  EXPECT_EQ(ssim(a, a), 1.0);
  EXPECT_EQ(relative_l2(a, a), 0.0);
  // +0.2 in [-1, 1] is +0.1 on [0, 1] pixels: MSE 0.01, PSNR 20 dB.
  EXPECT_NEAR(psnr(a + 0.2, a), 20.0, 1e-4);
  EXPECT_NEAR(relative_l2(2 * a, a), 1.0, 1e-6);
  const double noisy = ssim(a + 0.1 * at::randn_like(a), a);
  EXPECT_LT(noisy, 0.99);
  EXPECT_GT(noisy, 0.0);
  EXPECT_LT(ssim(at::rand_like(a) * 2 - 1, a), noisy) << "less alike images must score lower";
}

TEST(Fidelity, RejectsMismatchedShapes) {
  expect_error([] { psnr(at::zeros({1, 3, 8, 8}), at::zeros({1, 3, 8, 9})); }, ErrorCode::kShapeMismatch, "[1, 3, 8, 9]");
  expect_error([] { ssim(at::zeros({3, 8, 8}), at::zeros({3, 8, 8})); }, ErrorCode::kShapeMismatch, "[B, C, H, W]");
}

TEST(FrechetDistance, IsZeroForEqualStatisticsAndTheMeanShiftOtherwise) {
  auto f = at::randn({400, 6}, at::TensorOptions().dtype(at::kDouble));
  const auto s = feature_stats(f);
  EXPECT_NEAR(frechet_distance(s, s), 0.0, 1e-8);
  // Same covariance, mean moved by (1, 2, 0, ...): distance |shift|^2 = 5.
  auto shifted = f.clone();
  shifted.select(1, 0).add_(1.0);
  shifted.select(1, 1).add_(2.0);
  EXPECT_NEAR(frechet_distance(s, feature_stats(shifted)), 5.0, 1e-8);
  // Gaussians with covariances I and 4I in d dims: tr(I + 4I - 2 * 2I) = d.
  FeatureStats a{at::zeros({3}, at::kDouble), at::eye(3, at::kDouble), 10}, b{at::zeros({3}, at::kDouble), 4 * at::eye(3, at::kDouble), 10};
  EXPECT_NEAR(frechet_distance(a, b), 3.0, 1e-9);
  expect_error([&] { frechet_distance(s, a); }, ErrorCode::kShapeMismatch, "differ");
}

TEST(InceptionScore, CountsConfidentDistinctClasses) {
  EXPECT_NEAR(inception_score(at::eye(10, at::kDouble)), 10.0, 1e-6);          // confident, all classes
  EXPECT_NEAR(inception_score(at::full({5, 10}, 0.1, at::kDouble)), 1.0, 1e-9);  // no information
}

}  // namespace
}  // namespace ditcache
