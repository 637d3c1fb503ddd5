// The training side of the embedded model: shapes10 data, DiT's objective against the original
// code, and DiT's initialisation.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "ditcache/data/shapes.h"
#include "ditcache/io/weights.h"
#include "ditcache/models/dit.h"
#include "ditcache/sampling/gaussian_diffusion.h"
#include "test_util.h"

namespace ditcache {
namespace {

using test::expect_error;
using test::fixture;

TEST(Shapes10, RendersDeterministicImagesInRange) {
  auto a = render_shape(3, 42), b = render_shape(3, 42), c = render_shape(3, 43);
  ASSERT_EQ(a.sizes(), (at::IntArrayRef{3, 32, 32}));
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(at::equal(a, c));
  EXPECT_GE(a.min().item<float>(), -1.0f);
  EXPECT_LE(a.max().item<float>(), 1.0f);
  EXPECT_GT((a.max() - a.min()).item<float>(), 1.0f) << "foreground and background must contrast";
}

TEST(Shapes10, BatchesCycleLabelsAndSlicesAreReproducible) {
  auto whole = shapes_batch(5, 0, 20);
  ASSERT_EQ(whole.images.sizes(), (at::IntArrayRef{20, 3, 32, 32}));
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(whole.labels[i].item<int64_t>(), i % kShapesClasses);
  auto slice = shapes_batch(5, 7, 3);
  EXPECT_TRUE(at::equal(slice.images, whole.images.narrow(0, 7, 3)));
  EXPECT_FALSE(at::equal(shapes_batch(6, 0, 2).images, whole.images.narrow(0, 0, 2)));
  EXPECT_EQ(shapes_class_names().size(), static_cast<size_t>(kShapesClasses));
}

TEST(Shapes10, RejectsBadLabelsSizesAndSlices) {
  expect_error([] { render_shape(10, 0); }, ErrorCode::kInvalidArgument, "label 10 is out of range");
  expect_error([] { render_shape(-1, 0); }, ErrorCode::kInvalidArgument, "label -1");
  expect_error([] { render_shape(0, 0, 4); }, ErrorCode::kInvalidArgument, "image size 4");
  expect_error([] { shapes_batch(0, 0, 0); }, ErrorCode::kInvalidArgument, "count=0");
}

// q_sample and the loss terms against DiT's GaussianDiffusion.training_losses on fixed inputs
// (t = 0 exercises the decoder NLL, t > 0 the KL; scripts/fixtures/training_fixtures.py).
TEST(DiTTrainingLoss, MatchesTheOriginalTrainingLosses) {
  auto file = open_weights(fixture("dit/dit_training_loss.safetensors"));
  const GaussianDiffusion diffusion("1000");
  auto x0 = file->load("x0"), noise = file->load("noise"), t = file->load("t"), out = file->load("model_output");
  auto x_t = diffusion.q_sample(x0, t, noise);
  DITCACHE_EXPECT_CLOSE(x_t, file->load("x_t"), 1e-5);
  auto loss = diffusion.training_loss(out, x0, x_t, t, noise);
  DITCACHE_EXPECT_CLOSE(loss.mse, file->load("mse"), 1e-5);
  DITCACHE_EXPECT_CLOSE(loss.vb, file->load("vb"), 1e-4);
  DITCACHE_EXPECT_CLOSE(loss.loss, file->load("loss"), 1e-4);
}

TEST(DiTTrainingLoss, TheBoundTrainsOnlyTheVarianceChannels) {
  const GaussianDiffusion diffusion("1000");
  auto x0 = at::rand({2, 3, 4, 4}) * 2 - 1, noise = at::randn({2, 3, 4, 4});
  auto t = at::tensor(std::vector<int64_t>{0, 300});
  auto out = at::cat({noise + 0.1 * at::randn_like(noise), at::zeros_like(noise)}, 1).set_requires_grad(true);
  auto x_t = diffusion.q_sample(x0, t, noise);
  diffusion.training_loss(out, x0, x_t, t, noise).vb.sum().backward();
  EXPECT_EQ(out.grad().narrow(1, 0, 3).abs().max().item<float>(), 0.0f) << "the mean must be frozen in the bound";
  EXPECT_GT(out.grad().narrow(1, 3, 3).abs().max().item<float>(), 0.0f);
  // Perfect eps: no MSE; a model without learned sigma has no bound term.
  auto eps_only = diffusion.training_loss(noise, x0, x_t, t, noise);
  EXPECT_EQ(eps_only.mse.abs().max().item<float>(), 0.0f);
  EXPECT_EQ(eps_only.vb.abs().max().item<float>(), 0.0f);
}

TEST(DiTInit, AdaLNZeroMakesTheFreshModelOutputZero) {
  DiTConfig config = DiTConfig::from_json(R"({"depth": 2, "hidden_size": 32, "num_heads": 2, "input_size": 8,
                                             "in_channels": 3, "num_classes": 10})");
  at::manual_seed(0);
  DiT model(config);
  init_dit_weights(*model);
  at::NoGradGuard no_grad;
  auto out = model->forward(at::randn({2, 3, 8, 8}), at::tensor(std::vector<int64_t>{5, 900}),
                            at::tensor(std::vector<int64_t>{1, 10}));
  EXPECT_EQ(out.abs().max().item<float>(), 0.0f);
  EXPECT_EQ(model->blocks[0]->as<DiTBlockImpl>()->ada_linear->weight.abs().max().item<float>(), 0.0f);
  EXPECT_GT(model->blocks[0]->as<DiTBlockImpl>()->attn->qkv->weight.abs().max().item<float>(), 0.0f);
  const auto bound = std::sqrt(6.0 / (32 + 96));  // Xavier-uniform of the [96, 32] qkv weight
  EXPECT_LE(model->blocks[0]->as<DiTBlockImpl>()->attn->qkv->weight.abs().max().item<double>(), bound);
}

}  // namespace
}  // namespace ditcache
