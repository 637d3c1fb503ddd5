// Fidelity and quality metrics (include/ditcache/metrics/quality.h).
#include "ditcache/metrics/quality.h"

#include <cmath>
#include <limits>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/data/shapes.h"
#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"

namespace ditcache {

namespace {

void check_pair(const at::Tensor& a, const at::Tensor& b, const char* what, bool images) {
  if (!a.defined() || !b.defined() || a.sizes() != b.sizes() || (images && a.dim() != 4)) {
    throw Error(ErrorCode::kShapeMismatch,
                fmt::format("{}: the two inputs have shapes {} and {}; expected equal{} shapes", what,
                            a.defined() ? shape_string(a.sizes()) : "undefined",
                            b.defined() ? shape_string(b.sizes()) : "undefined", images ? " [B, C, H, W]" : ""));
  }
}

at::Tensor unit_range(const at::Tensor& x) { return ((x.to(at::kCPU, at::kDouble) + 1.0) / 2.0).clamp(0.0, 1.0); }

// Symmetric PSD square root through the eigendecomposition (negative round-off eigenvalues -> 0).
at::Tensor sqrt_psd(const at::Tensor& m) {
  auto [values, vectors] = at::linalg_eigh(m);
  return at::matmul(vectors * values.clamp_min(0).sqrt().unsqueeze(0), vectors.transpose(0, 1));
}

}  // namespace

double psnr(const at::Tensor& a, const at::Tensor& b) {
  check_pair(a, b, "psnr", true);
  const double mse = (unit_range(a) - unit_range(b)).pow(2).mean().item<double>();
  return mse == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(1.0 / mse);
}

double ssim(const at::Tensor& a, const at::Tensor& b) {
  check_pair(a, b, "ssim", true);
  const int64_t C = a.size(1);
  const int64_t size = std::min<int64_t>({11, a.size(2), a.size(3)});
  auto coords = at::arange(size, at::TensorOptions().dtype(at::kDouble)) - static_cast<double>(size - 1) / 2.0;
  auto g = at::exp(-coords.pow(2) / (2 * 1.5 * 1.5));
  g = g / g.sum();
  auto window = at::outer(g, g).expand({C, 1, size, size}).contiguous();  // depthwise
  auto x = unit_range(a), y = unit_range(b);
  auto filt = [&](const at::Tensor& v) {
    return at::conv2d(v, window, at::Tensor(), at::IntArrayRef{1, 1}, at::IntArrayRef{0, 0}, at::IntArrayRef{1, 1}, C);
  };
  auto mx = filt(x), my = filt(y);
  auto sxx = filt(x * x) - mx * mx, syy = filt(y * y) - my * my, sxy = filt(x * y) - mx * my;
  const double c1 = 0.01 * 0.01, c2 = 0.03 * 0.03;
  auto map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2));
  return map.mean().item<double>();
}

double relative_l2(const at::Tensor& a, const at::Tensor& b) {
  check_pair(a, b, "relative_l2", false);
  auto x = a.to(at::kCPU, at::kDouble), y = b.to(at::kCPU, at::kDouble);
  const double denom = y.norm().item<double>();
  const double diff = (x - y).norm().item<double>();
  return denom > 0 ? diff / denom : (diff == 0 ? 0.0 : std::numeric_limits<double>::infinity());
}

FeatureStats feature_stats(const at::Tensor& features) {
  if (features.dim() != 2 || features.size(0) < 2) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("feature statistics need features [n >= 2, d], got {}",
                                                       shape_string(features.sizes())));
  }
  auto f = features.to(at::kCPU, at::kDouble);
  FeatureStats s;
  s.count = f.size(0);
  s.mean = f.mean(0);
  auto centered = f - s.mean.unsqueeze(0);
  s.cov = at::matmul(centered.transpose(0, 1), centered) / static_cast<double>(s.count - 1);
  return s;
}

double frechet_distance(const FeatureStats& a, const FeatureStats& b) {
  if (!a.mean.defined() || !b.mean.defined() || a.mean.sizes() != b.mean.sizes()) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("frechet_distance: feature sizes {} and {} differ",
                                                       a.mean.defined() ? shape_string(a.mean.sizes()) : "undefined",
                                                       b.mean.defined() ? shape_string(b.mean.sizes()) : "undefined"));
  }
  auto root_a = sqrt_psd(a.cov);
  auto middle = at::matmul(at::matmul(root_a, b.cov), root_a);
  middle = (middle + middle.transpose(0, 1)) / 2;  // symmetric up to round-off
  const double trace_root = at::linalg_eigvalsh(middle).clamp_min(0).sqrt().sum().item<double>();
  const double mean_term = (a.mean - b.mean).pow(2).sum().item<double>();
  return mean_term + a.cov.trace().item<double>() + b.cov.trace().item<double>() - 2.0 * trace_root;
}

double inception_score(const at::Tensor& probabilities) {
  if (probabilities.dim() != 2) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("inception_score: probabilities must be [n, classes], got {}",
                                                       shape_string(probabilities.sizes())));
  }
  auto p = probabilities.to(at::kCPU, at::kDouble).clamp_min(1e-12);
  auto marginal = p.mean(0, true);
  auto kl = (p * (p.log() - marginal.log())).sum(1);
  return std::exp(kl.mean().item<double>());
}

namespace {

// Features and probabilities of images in batches of 500 on the classifier's device.
std::pair<at::Tensor, at::Tensor> classify(ShapesClassifierImpl& classifier, const at::Tensor& images) {
  at::NoGradGuard no_grad;
  const auto param = classifier.parameters().front();
  std::vector<at::Tensor> features, probs;
  for (int64_t start = 0; start < images.size(0); start += 500) {
    auto batch = images.narrow(0, start, std::min<int64_t>(500, images.size(0) - start)).to(param.device(), param.scalar_type());
    auto f = classifier.features(batch);
    features.push_back(f.to(at::kCPU, at::kDouble));
    probs.push_back(at::softmax(classifier.head->forward(f), 1).to(at::kCPU, at::kDouble));
  }
  return {at::cat(features), at::cat(probs)};
}

}  // namespace

FeatureStats shapes_reference_stats(ShapesClassifierImpl& classifier, int64_t count) {
  if (count < 2) throw Error(ErrorCode::kInvalidArgument, fmt::format("reference statistics need >= 2 images, got {}", count));
  return feature_stats(classify(classifier, shapes_batch(kShapesReferenceSeed, 0, count).images).first);
}

QualityReport evaluate_quality(ShapesClassifierImpl& classifier, const at::Tensor& images, const at::Tensor& labels,
                               const FeatureStats& reference) {
  if (images.dim() != 4 || labels.dim() != 1 || labels.size(0) != images.size(0) || images.size(0) < 2) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("evaluate_quality: images {} and labels {} (need [n >= 2, 3, H, W] "
                                                       "and [n])", shape_string(images.sizes()), shape_string(labels.sizes())));
  }
  auto [features, probs] = classify(classifier, images.clamp(-1.0, 1.0));
  QualityReport r;
  r.count = images.size(0);
  r.accuracy = (probs.argmax(1) == labels.to(at::kCPU, at::kLong)).to(at::kDouble).mean().item<double>();
  r.frechet = frechet_distance(feature_stats(features), reference);
  r.inception = inception_score(probs);
  return r;
}

}  // namespace ditcache
