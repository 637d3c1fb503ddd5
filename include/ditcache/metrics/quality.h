#pragma once
/// \file Sample-quality and fidelity metrics: PSNR, SSIM and relative L2 between a cached and an
/// uncached run on the same seeds; and, through a classifier's features and probabilities, the
/// stand-ins of FID and IS (Fréchet distance of feature statistics, inception-style score) plus
/// class accuracy of class-conditional samples.

#include <cstdint>

#include <ATen/Tensor.h>

#include "ditcache/metrics/classifier.h"

namespace ditcache {

/// PSNR (dB) of `a` against `b`, both [B, C, H, W] in [-1, 1]: 10 log10(1 / MSE) with the MSE
/// of [0, 1]-scaled pixels over the whole set. +infinity when they are identical. Throws
/// Error(kShapeMismatch) when the shapes differ.
double psnr(const at::Tensor& a, const at::Tensor& b);

/// Mean SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, valid
/// positions, per channel) of `a` against `b`, both [B, C, H, W] in [-1, 1], on [0, 1]-scaled
/// pixels, in float64. Exactly 1 for identical images. Images smaller than 11 px use a window
/// of their size.
double ssim(const at::Tensor& a, const at::Tensor& b);

/// ||a - b|| / ||b|| over the whole tensors (0 when identical); for latents.
double relative_l2(const at::Tensor& a, const at::Tensor& b);

/// Mean and covariance of features [n, d] (float64; covariance with the n - 1 normalisation).
struct FeatureStats {
  at::Tensor mean, cov;
  int64_t count = 0;
};
FeatureStats feature_stats(const at::Tensor& features);

/// Fréchet distance between two Gaussians: |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)),
/// the trace of the square root from the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric, so
/// no complex parts to discard). Throws Error(kShapeMismatch) for different feature sizes.
double frechet_distance(const FeatureStats& a, const FeatureStats& b);

/// exp(E_x KL(p(y|x) || p(y))) of class probabilities [n, classes].
double inception_score(const at::Tensor& probabilities);

/// The quality of a set of class-conditional samples under the shapes10 classifier.
struct QualityReport {
  double accuracy = 0;        ///< share of samples classified as the class they were generated for
  double frechet = 0;         ///< Fréchet distance to the reference features
  double inception = 0;       ///< inception-style score of the classifier's probabilities
  int64_t count = 0;
};

/// Features of `count` held-out real shapes10 images (the reference stream, never trained on).
FeatureStats shapes_reference_stats(ShapesClassifierImpl& classifier, int64_t count);

/// Classifies `images` [n, 3, 32, 32] (clamped to [-1, 1], as a PNG shows them) generated for `labels` [n] and compares their
/// features to `reference`. Runs in batches of 500 on the classifier's device.
QualityReport evaluate_quality(ShapesClassifierImpl& classifier, const at::Tensor& images, const at::Tensor& labels,
                               const FeatureStats& reference);

}  // namespace ditcache
