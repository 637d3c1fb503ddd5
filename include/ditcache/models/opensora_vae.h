#pragma once
/// \file The OpenSora 1.2 video VAE (`OpenSoraVAE_V1_2`, a `VideoAutoencoderPipeline`), decode
/// path only: a causal 3-D temporal VAE decoder (MAGVIT-v2 style, 4x in time, no spatial scaling)
/// followed by the SD-style spatial AutoencoderKL decoder (vae.h) applied frame by frame. Modules
/// are registered under the checkpoint's names (`spatial_vae.module.decoder.conv_in.weight`,
/// `temporal_vae.decoder.conv1.conv.weight`, `scale`, `shift`, ...).
/// Reference: ../shared/reference/models.md §4.2.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include "ditcache/io/state_dict.h"
#include "ditcache/models/vae.h"

namespace ditcache {

class WeightFile;

/// Architecture of the temporal VAE decoder (the fields of the reference's `VAE_Temporal_SD`
/// that matter to decoding). Level i has filters * channel_multipliers[i] channels.
struct OpenSoraTemporalVAEConfig {
  /// Channels of the decoded video, i.e. of the spatial VAE's latent (`in_out_channels`).
  int64_t out_channels = 4;
  /// Channels of z, the input of `post_quant_conv` (`embed_dim`).
  int64_t latent_channels = 4;
  /// Output channels of `post_quant_conv` and input of `decoder.conv1` (`latent_embed_dim`).
  int64_t latent_embed_dim = 4;
  /// Base channel count.
  int64_t filters = 128;
  /// Residual blocks in the decoder's bottom stack and in every level.
  int64_t num_res_blocks = 4;
  /// Per-level channel multipliers, encoder order (the decoder walks them in reverse).
  std::vector<int64_t> channel_multipliers{1, 2, 2, 4};
  /// Whether level i+1 -> i doubles the frame count (one entry fewer than the multipliers).
  std::vector<bool> temporal_downsample{false, true, true};
  /// Groups of every GroupNorm (eps 1e-5 throughout).
  int64_t num_groups = 32;

  /// The released OpenSora-VAE-v1.2 temporal VAE.
  static OpenSoraTemporalVAEConfig release();
  /// Reads the reference's JSON spelling (`in_out_channels`, `embed_dim`, `latent_embed_dim`,
  /// `filters`, `num_res_blocks`, `channel_multipliers`, `temporal_downsample`, `num_groups`;
  /// `type` is ignored, `activation_fn` must be "swish"). Missing keys keep the release values;
  /// a key of the wrong type throws Error(kInvalidArgument) naming the key and `origin`, malformed
  /// JSON Error(kFormat). Validated.
  static OpenSoraTemporalVAEConfig from_json_string(const std::string& text, const std::string& origin = "<json>");
  /// Throws Error(kInvalidArgument) naming the first impossible field with expected and found.
  void validate() const;
  /// Channels of level i (filters * channel_multipliers[i]).
  int64_t level_channels(size_t i) const;
  /// Frames emitted per latent frame: 2^(number of true temporal_downsample entries), 4 here.
  int64_t time_upsample_factor() const;
};

/// Configuration of the whole OpenSora 1.2 VAE pipeline.
struct OpenSoraVAEConfig {
  /// The spatial 2-D VAE (the SDXL VAE, same architecture as SD's). Its scaling_factor is the
  /// pipeline's hard-coded 0.18215, not the SDXL config's 0.13025.
  VAEConfig spatial = VAEConfig::sd();
  /// The temporal 3-D VAE.
  OpenSoraTemporalVAEConfig temporal;
  /// Pixel frames per temporal chunk (17 <-> 5 latent frames).
  int64_t micro_frame_size = 17;
  /// Frames per spatial-decoder call (memory bound only; decoding is strictly per frame).
  int64_t micro_batch_size = 4;
  /// Per-channel latent denormalisation z * scale + shift (initial values of the `shift` and
  /// `scale` buffers; load() overwrites them from the file when it has them).
  std::vector<double> shift{-0.10, 0.34, 0.27, 0.98};
  std::vector<double> scale{3.85, 2.32, 2.33, 3.06};

  /// The released `hpcai-tech/OpenSora-VAE-v1.2`.
  static OpenSoraVAEConfig release();
  /// The architecture a checkpoint describes, read from tensor shapes (spatial: see
  /// VAEConfig::from_weights; temporal: channels, res-block count and levels from the decoder's
  /// tensors, the filters/multiplier split as their greatest common divisor). What shapes cannot
  /// tell (GroupNorm groups, micro sizes) comes from the file's `__metadata__` entries
  /// `spatial_vae_config`, `temporal_vae_config`, `micro_frame_size`, `micro_batch_size` when
  /// present, else from `base`; shift and scale from the `scale`/`shift` tensors when present.
  /// Metadata that contradicts the shapes throws Error(kFormat) naming the field; a file without
  /// a temporal or spatial decoder throws Error(kNotFound) saying which tensor was expected.
  /// The result is validated.
  static OpenSoraVAEConfig from_weights(const WeightFile& file, const OpenSoraVAEConfig& base = release());
  /// Throws Error(kInvalidArgument) naming the first impossible field with expected and found
  /// (including spatial.latent_channels != temporal.out_channels and shift/scale sizes).
  void validate() const;

  /// Latent frames per temporal chunk: ceil(micro_frame_size / time factor) (5).
  int64_t micro_latent_frames() const;
  /// Latent frame count of a video of `num_frames` pixel frames (models.md §4.2): 5 per full
  /// 17-frame chunk plus ceil(remainder / 4); 51 -> 15, 1 -> 1. Throws for num_frames < 1.
  int64_t latent_frames(int64_t num_frames) const;
  /// The smallest pixel frame count with `latent_frames` latent frames (17 per full chunk plus
  /// 4(r-1)+1 for a partial chunk of r); the inverse of latent_frames() on the counts a causal
  /// encoder produces: 15 -> 51, 9 -> 30, 1 -> 1. Throws for latent_frames < 1.
  int64_t pixel_frames(int64_t latent_frames) const;
  /// Spatial upscaling (8).
  int64_t upscale_factor() const { return spatial.upscale_factor(); }
};

namespace detail {
class OpenSoraTemporalDecoderStackImpl;
}  // namespace detail

/// The temporal VAE's decode half: `post_quant_conv` (causal 1x1x1) and `decoder` (causal 3-D
/// convs, residual blocks, depth-to-time upsampling). Runs on whatever device and dtype it was
/// moved to; GroupNorm statistics are computed in fp32 for fp16/bf16 modules.
class OpenSoraTemporalDecoderImpl : public torch::nn::Module {
 public:
  /// Builds a randomly initialised decoder; throws Error(kInvalidArgument) for a bad config.
  explicit OpenSoraTemporalDecoderImpl(const OpenSoraTemporalVAEConfig& config = OpenSoraTemporalVAEConfig::release());

  /// Decodes ONE chunk (GroupNorm statistics span the whole input): z `[B, latent, T, h, w]` ->
  /// `[B, out, n, h, w]`. The decoder emits T * time_upsample_factor() frames, of which the first
  /// (factor - n mod factor) mod factor are dropped; `num_frames` must be consistent with T
  /// (Error(kInvalidArgument) otherwise). The input is moved to the module's device and dtype.
  at::Tensor decode(const at::Tensor& z, int64_t num_frames);

  /// The configuration the module was built with.
  const OpenSoraTemporalVAEConfig& config() const { return config_; }

 private:
  OpenSoraTemporalVAEConfig config_;
  std::shared_ptr<torch::nn::Module> post_quant_conv_;
  std::shared_ptr<detail::OpenSoraTemporalDecoderStackImpl> decoder_;
};

/// Module holder of OpenSoraTemporalDecoderImpl.
TORCH_MODULE(OpenSoraTemporalDecoder);

/// The OpenSora 1.2 VAE pipeline, decode path: latents `[B, 4, T_lat, h, w]` (normalised, as the
/// sampler produces them) -> video `[B, 3, F, 8h, 8w]` in roughly [-1, 1], unclamped.
/// Children: `spatial_vae.module` (AutoencoderKLDecoder), `temporal_vae`
/// (OpenSoraTemporalDecoder), buffers `scale` and `shift` `[1, C, 1, 1, 1]`. Runs on whatever
/// device and dtype it was moved to; the output has the module's dtype. (The SDXL spatial VAE
/// overflows in fp16: use fp32 or bf16.)
class OpenSoraVAEImpl : public torch::nn::Module {
 public:
  /// Builds a randomly initialised pipeline; throws Error(kInvalidArgument) for a bad config.
  explicit OpenSoraVAEImpl(const OpenSoraVAEConfig& config = OpenSoraVAEConfig::release());

  /// The whole decode: spatial_decode(temporal_decode(z, num_frames)). `num_frames` is the pixel
  /// frame count of the video (51 for 15 latent frames); it must satisfy
  /// config().latent_frames(num_frames) == T_lat, else Error(kInvalidArgument).
  at::Tensor decode(const at::Tensor& z, int64_t num_frames);
  /// decode(z, config().pixel_frames(T_lat)).
  at::Tensor decode(const at::Tensor& z);
  /// Same as decode(z, num_frames).
  at::Tensor forward(const at::Tensor& z, int64_t num_frames) { return decode(z, num_frames); }

  /// z * scale + shift, per channel, in the module's dtype and on its device.
  at::Tensor denormalize(const at::Tensor& z);
  /// Denormalises z and runs the temporal decoder chunk by chunk (micro_latent_frames() latent
  /// frames per chunk, chunk k decoded with min(micro_frame_size, frames left) frames): returns
  /// the spatial latents `[B, 4, F, h, w]`.
  at::Tensor temporal_decode(const at::Tensor& z, int64_t num_frames);
  /// Decodes spatial latents `[B, 4, F, h, w]` frame by frame (micro_batch_size frames per
  /// call) as spatial_vae.decode(x / scaling_factor): `[B, 3, F, 8h, 8w]`.
  at::Tensor spatial_decode(const at::Tensor& x_z);

  /// Loads the released checkpoint layout (`spatial_vae.module.*`, `temporal_vae.*`, `scale`,
  /// `shift`; an outer prefix such as `module.` is detected). Encoder and quant_conv tensors
  /// are ignored; the decoders are loaded strictly (every missing, unexpected or mis-shaped
  /// tensor is named, with expected and found shapes, in one Error(kShapeMismatch), and nothing
  /// is modified); `scale`/`shift` keep their config values when absent. A file without the
  /// temporal (or spatial) decoder throws Error(kNotFound) naming the tensor that was expected.
  LoadReport load(const WeightFile& file);

  /// The configuration the module was built with.
  const OpenSoraVAEConfig& config() const { return config_; }
  /// The spatial (per-frame) decoder.
  AutoencoderKLDecoder& spatial() { return spatial_; }
  /// The temporal decoder.
  OpenSoraTemporalDecoder& temporal() { return temporal_; }

 private:
  void check_latents(const at::Tensor& z, int64_t num_frames) const;

  OpenSoraVAEConfig config_;
  AutoencoderKLDecoder spatial_{nullptr};
  OpenSoraTemporalDecoder temporal_{nullptr};
  at::Tensor scale_, shift_;
};

/// Module holder of OpenSoraVAEImpl.
TORCH_MODULE(OpenSoraVAE);

}  // namespace ditcache
