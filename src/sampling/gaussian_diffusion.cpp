// DiT's Gaussian diffusion (diffusion/gaussian_diffusion.py, respace.py; models.md §1.5).
#include "ditcache/sampling/gaussian_diffusion.h"

#include <cfenv>
#include <cmath>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"

namespace ditcache {

namespace {

// Python's round(): half to even (the default floating-point rounding mode).
int64_t round_half_even(double v) {
  std::fesetround(FE_TONEAREST);
  return static_cast<int64_t>(std::nearbyint(v));
}

int64_t parse_count(const std::string& text, const std::string& respacing) {
  size_t used = 0;
  long long value = -1;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || value < 1) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("timestep respacing '{}': '{}' is not a positive step count", respacing, text));
  }
  return value;
}

// The coefficient of respaced step k as a scalar in the latents' dtype (DiT's _extract_into_tensor
// casts its float64 tables to float32 before multiplying).
at::Scalar coef(const std::vector<double>& table, int64_t k) {
  return static_cast<double>(static_cast<float>(table.at(static_cast<size_t>(k))));
}

}  // namespace

std::vector<int64_t> space_timesteps(int64_t num_train_steps, const std::string& respacing) {
  if (respacing.rfind("ddim", 0) == 0) {
    const int64_t desired = parse_count(respacing.substr(4), respacing);
    for (int64_t stride = 1; stride < num_train_steps; ++stride) {
      if ((num_train_steps + stride - 1) / stride == desired) {
        std::vector<int64_t> steps;
        for (int64_t t = 0; t < num_train_steps; t += stride) steps.push_back(t);
        return steps;
      }
    }
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("timestep respacing '{}': no integer stride gives exactly {} of {} steps", respacing,
                            desired, num_train_steps));
  }
  std::vector<int64_t> counts;
  size_t start = 0;
  while (start <= respacing.size()) {
    const size_t comma = respacing.find(',', start);
    counts.push_back(parse_count(respacing.substr(start, comma - start), respacing));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  const int64_t sections = static_cast<int64_t>(counts.size());
  const int64_t size_per = num_train_steps / sections, extra = num_train_steps % sections;
  std::set<int64_t> kept;
  int64_t start_idx = 0;
  for (int64_t i = 0; i < sections; ++i) {
    const int64_t size = size_per + (i < extra ? 1 : 0);
    if (size < counts[i]) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("timestep respacing '{}': cannot take {} steps from a section of {}", respacing,
                              counts[i], size));
    }
    const double stride = counts[i] <= 1 ? 1.0 : static_cast<double>(size - 1) / static_cast<double>(counts[i] - 1);
    double cur = 0.0;
    for (int64_t j = 0; j < counts[i]; ++j) {
      kept.insert(start_idx + round_half_even(cur));
      cur += stride;
    }
    start_idx += size;
  }
  return {kept.begin(), kept.end()};
}

GaussianDiffusion::GaussianDiffusion(const std::string& respacing, int64_t num_train_steps) : respacing_(respacing) {
  if (num_train_steps < 2) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("diffusion: num_train_steps must be >= 2, got {}", num_train_steps));
  }
  // Linear schedule, numpy.linspace(beta_start, beta_end, T) in float64.
  const double scale = 1000.0 / static_cast<double>(num_train_steps);
  const double b0 = scale * 0.0001, b1 = scale * 0.02;
  std::vector<double> base_acp(static_cast<size_t>(num_train_steps));
  double acp = 1.0;
  for (int64_t i = 0; i < num_train_steps; ++i) {
    const double step = (b1 - b0) / static_cast<double>(num_train_steps - 1);
    const double beta = i == num_train_steps - 1 ? b1 : b0 + static_cast<double>(i) * step;
    acp *= 1.0 - beta;
    base_acp[static_cast<size_t>(i)] = acp;
  }
  // Respacing: betas recomputed between the kept steps.
  timestep_map_ = space_timesteps(num_train_steps, respacing);
  double last = 1.0;
  for (int64_t t : timestep_map_) {
    betas_.push_back(1.0 - base_acp[static_cast<size_t>(t)] / last);
    last = base_acp[static_cast<size_t>(t)];
  }
  acp = 1.0;
  for (double beta : betas_) {
    alphas_cumprod_prev_.push_back(acp);
    acp *= 1.0 - beta;
    alphas_cumprod_.push_back(acp);
  }
  for (size_t k = 0; k < betas_.size(); ++k) {
    const double a = alphas_cumprod_[k], ap = alphas_cumprod_prev_[k], b = betas_[k];
    posterior_variance_.push_back(b * (1.0 - ap) / (1.0 - a));
    posterior_mean_coef1_.push_back(b * std::sqrt(ap) / (1.0 - a));
    posterior_mean_coef2_.push_back((1.0 - ap) * std::sqrt(1.0 - b) / (1.0 - a));
  }
  // log variance clipped: the first entry (0 at k = 0) is replaced by the second.
  for (size_t k = 0; k < posterior_variance_.size(); ++k) {
    const double v = (k == 0 && posterior_variance_.size() > 1) ? posterior_variance_[1] : posterior_variance_[k];
    posterior_log_variance_clipped_.push_back(std::log(v));
  }
}

GaussianDiffusion GaussianDiffusion::ddim(int64_t steps, int64_t num_train_steps) {
  if (steps < 1 || steps > num_train_steps) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("DDIM: step count must be in [1, {}], got {}", num_train_steps, steps));
  }
  for (int64_t stride = 1; stride < num_train_steps; ++stride) {
    if ((num_train_steps + stride - 1) / stride == steps) return GaussianDiffusion(fmt::format("ddim{}", steps), num_train_steps);
  }
  return GaussianDiffusion(std::to_string(steps), num_train_steps);
}

GaussianDiffusion GaussianDiffusion::for_run(int64_t steps, const std::string& respacing, bool ddim_stride,
                                            int64_t num_train_steps) {
  if (respacing.empty()) {
    if (steps < 1) throw Error(ErrorCode::kInvalidArgument, fmt::format("steps must be >= 1 (or a respacing given), found {}", steps));
    return ddim_stride ? ddim(steps, num_train_steps) : GaussianDiffusion(std::to_string(steps), num_train_steps);
  }
  GaussianDiffusion out(respacing, num_train_steps);
  if (steps != 0 && steps != out.num_steps()) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("respacing '{}' gives {} steps, found steps = {} (0 takes the respacing's count)", respacing,
                            out.num_steps(), steps));
  }
  return out;
}

std::vector<double> GaussianDiffusion::sampling_timesteps() const {
  std::vector<double> out;
  for (auto k = timestep_map_.rbegin(); k != timestep_map_.rend(); ++k) out.push_back(static_cast<double>(*k));
  return out;
}

at::Tensor GaussianDiffusion::split_eps(const at::Tensor& x, const at::Tensor& model_output, at::Tensor* var_values) const {
  const int64_t C = x.size(1);
  if (model_output.size(1) == 2 * C) {
    if (var_values) *var_values = model_output.narrow(1, C, C);
    return model_output.narrow(1, 0, C);
  }
  if (model_output.size(1) == C) return model_output;
  throw Error(ErrorCode::kShapeMismatch,
              fmt::format("diffusion step: model output has {} channels, expected {} (eps) or {} (eps and variance) for "
                          "latents {}", model_output.size(1), C, 2 * C, shape_string(x.sizes())));
}

at::Tensor GaussianDiffusion::predict_x0(const at::Tensor& x, const at::Tensor& eps, int64_t k) const {
  const double a = alphas_cumprod_.at(static_cast<size_t>(k));
  return x * static_cast<double>(static_cast<float>(std::sqrt(1.0 / a))) -
         eps * static_cast<double>(static_cast<float>(std::sqrt(1.0 / a - 1.0)));
}

at::Tensor GaussianDiffusion::ddpm_step(const at::Tensor& x, const at::Tensor& model_output, int64_t k,
                                        const at::Tensor& noise, bool clip_denoised) const {
  at::Tensor var_values;
  auto eps = split_eps(x, model_output, &var_values);
  auto x0 = predict_x0(x, eps, k);
  if (clip_denoised) x0 = x0.clamp(-1, 1);
  auto mean = x0 * coef(posterior_mean_coef1_, k) + x * coef(posterior_mean_coef2_, k);
  if (k == 0) return mean;
  at::Tensor log_variance;
  const auto min_log = coef(posterior_log_variance_clipped_, k);
  if (var_values.defined()) {
    // Learned range: interpolate between the posterior's (min) and beta's (max) log variance.
    const auto max_log = static_cast<double>(static_cast<float>(std::log(betas_.at(static_cast<size_t>(k)))));
    auto frac = (var_values + 1) / 2;
    log_variance = frac * max_log + (1 - frac) * min_log;
  } else {
    log_variance = at::full_like(x, min_log);
  }
  return mean + at::exp(0.5 * log_variance) * noise;
}

at::Tensor GaussianDiffusion::ddim_step(const at::Tensor& x, const at::Tensor& model_output, int64_t k,
                                        const at::Tensor& noise, double eta, bool clip_denoised) const {
  auto eps_model = split_eps(x, model_output, nullptr);
  auto x0 = predict_x0(x, eps_model, k);
  if (clip_denoised) x0 = x0.clamp(-1, 1);
  // DiT re-derives eps from x0 (identical up to rounding to the model's eps).
  const double a = alphas_cumprod_.at(static_cast<size_t>(k)), ap = alphas_cumprod_prev_.at(static_cast<size_t>(k));
  auto eps = (x * static_cast<double>(static_cast<float>(std::sqrt(1.0 / a))) - x0) /
             static_cast<double>(static_cast<float>(std::sqrt(1.0 / a - 1.0)));
  const double sigma = eta * std::sqrt((1.0 - ap) / (1.0 - a)) * std::sqrt(1.0 - a / ap);
  auto out = x0 * std::sqrt(ap) + eps * std::sqrt(1.0 - ap - sigma * sigma);
  if (k > 0 && sigma > 0) out = out + sigma * noise;
  return out;
}

namespace {

// A per-sample coefficient [B, 1, 1, 1] gathered from a schedule table at steps k [B].
at::Tensor gather_coef(const std::vector<double>& table, const at::Tensor& k, const at::Tensor& like) {
  auto values = at::tensor(table, at::TensorOptions().dtype(at::kDouble)).to(at::kFloat).to(like.device());
  auto out = values.index_select(0, k.to(like.device()));
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = like.size(0);
  return out.view(shape).to(like.scalar_type());
}

// log N(x; mean, exp(log_scale)^2) integrated over x's 8-bit bin in [-1, 1] (DiT's
// discretized_gaussian_log_likelihood with the tanh approximation of the normal CDF).
at::Tensor discretized_gaussian_log_likelihood(const at::Tensor& x, const at::Tensor& mean, const at::Tensor& log_scale) {
  auto cdf = [](const at::Tensor& v) {
    return 0.5 * (1.0 + at::tanh(std::sqrt(2.0 / 3.14159265358979323846) * (v + 0.044715 * at::pow(v, 3))));
  };
  auto centered = x - mean;
  auto inv_std = at::exp(-log_scale);
  auto cdf_plus = cdf(inv_std * (centered + 1.0 / 255.0));
  auto cdf_min = cdf(inv_std * (centered - 1.0 / 255.0));
  auto log_cdf_plus = at::log(cdf_plus.clamp_min(1e-12));
  auto log_one_minus_cdf_min = at::log((1.0 - cdf_min).clamp_min(1e-12));
  auto log_delta = at::log((cdf_plus - cdf_min).clamp_min(1e-12));
  return at::where(x < -0.999, log_cdf_plus, at::where(x > 0.999, log_one_minus_cdf_min, log_delta));
}

}  // namespace

void GaussianDiffusion::check_training_inputs(const at::Tensor& x0, const at::Tensor& k, const at::Tensor& noise) const {
  if (!x0.defined() || x0.dim() < 2 || !noise.defined() || noise.sizes() != x0.sizes()) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("diffusion training: x0 {} and noise {} must have one shape [B, ...]",
                                                       x0.defined() ? shape_string(x0.sizes()) : "undefined",
                                                       noise.defined() ? shape_string(noise.sizes()) : "undefined"));
  }
  if (!k.defined() || k.dim() != 1 || k.size(0) != x0.size(0) || at::isFloatingType(k.scalar_type())) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("diffusion training: steps k must be integers [{}], got {} {}",
                                                       x0.size(0), k.defined() ? shape_string(k.sizes()) : "undefined",
                                                       k.defined() ? c10::toString(k.scalar_type()) : ""));
  }
  const int64_t lo = k.min().item<int64_t>(), hi = k.max().item<int64_t>();
  if (lo < 0 || hi >= num_steps()) {
    throw Error(ErrorCode::kInvalidArgument, fmt::format("diffusion training: steps k in [{}, {}], expected [0, {})", lo,
                                                         hi, num_steps()));
  }
}

at::Tensor GaussianDiffusion::q_sample(const at::Tensor& x0, const at::Tensor& k, const at::Tensor& noise) const {
  check_training_inputs(x0, k, noise);
  std::vector<double> sqrt_acp, sqrt_one_minus;
  for (double a : alphas_cumprod_) {
    sqrt_acp.push_back(std::sqrt(a));
    sqrt_one_minus.push_back(std::sqrt(1.0 - a));
  }
  return gather_coef(sqrt_acp, k, x0) * x0 + gather_coef(sqrt_one_minus, k, x0) * noise;
}

GaussianDiffusion::Loss GaussianDiffusion::training_loss(const at::Tensor& model_output, const at::Tensor& x0,
                                                         const at::Tensor& x_t, const at::Tensor& k,
                                                         const at::Tensor& noise) const {
  check_training_inputs(x0, k, noise);
  if (x_t.sizes() != x0.sizes() || model_output.dim() != x0.dim() || model_output.size(0) != x0.size(0) ||
      model_output.sizes().slice(2) != x0.sizes().slice(2)) {
    throw Error(ErrorCode::kShapeMismatch, fmt::format("diffusion training: x_t {} and model output {} do not fit x0 {}",
                                                       shape_string(x_t.sizes()), shape_string(model_output.sizes()),
                                                       shape_string(x0.sizes())));
  }
  at::Tensor var_values;
  auto eps = split_eps(x_t, model_output, &var_values);
  Loss loss;
  loss.mse = (noise - eps).pow(2).flatten(1).mean(1);
  if (!var_values.defined()) {
    loss.vb = at::zeros_like(loss.mse);
    loss.loss = loss.mse;
    return loss;
  }
  std::vector<double> sqrt_recip, sqrt_recipm1, log_betas;
  for (size_t i = 0; i < alphas_cumprod_.size(); ++i) {
    sqrt_recip.push_back(std::sqrt(1.0 / alphas_cumprod_[i]));
    sqrt_recipm1.push_back(std::sqrt(1.0 / alphas_cumprod_[i] - 1.0));
    log_betas.push_back(std::log(betas_[i]));
  }
  // The bound trains only the variance: the mean comes from the detached eps.
  auto frozen_eps = eps.detach();
  auto pred_x0 = gather_coef(sqrt_recip, k, x_t) * x_t - gather_coef(sqrt_recipm1, k, x_t) * frozen_eps;
  auto c1 = gather_coef(posterior_mean_coef1_, k, x_t), c2 = gather_coef(posterior_mean_coef2_, k, x_t);
  auto model_mean = c1 * pred_x0 + c2 * x_t;
  auto min_log = gather_coef(posterior_log_variance_clipped_, k, x_t), max_log = gather_coef(log_betas, k, x_t);
  auto frac = (var_values + 1) / 2;
  auto model_log_var = frac * max_log + (1 - frac) * min_log;
  auto true_mean = c1 * x0 + c2 * x_t;
  auto true_log_var = min_log;
  auto kl = 0.5 * (-1.0 + model_log_var - true_log_var + at::exp(true_log_var - model_log_var) +
                   (true_mean - model_mean).pow(2) * at::exp(-model_log_var));
  const double ln2 = std::log(2.0);
  auto kl_bits = kl.flatten(1).mean(1) / ln2;
  auto nll_bits = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var).flatten(1).mean(1) / ln2;
  loss.vb = at::where(k.to(kl_bits.device()) == 0, nll_bits, kl_bits);
  loss.loss = loss.mse + loss.vb;
  return loss;
}

}  // namespace ditcache
