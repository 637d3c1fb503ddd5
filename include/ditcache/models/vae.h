#pragma once
/// \file The Stable Diffusion VAE decoder (diffusers `AutoencoderKL`, decoder half only), used by
/// DiT and PixArt-α to turn latents into images. Modules are registered under the diffusers names
/// (`post_quant_conv.weight`, `decoder.up_blocks.0.resnets.0.conv1.weight`, ...); load() also reads
/// the deprecated diffusers attention names and the original LDM/CompVis naming.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/pimpl.h>

#include "ditcache/io/state_dict.h"

namespace ditcache {

class WeightFile;

/// Architecture and latent scaling of an AutoencoderKL decoder (the fields of a diffusers
/// `config.json` that matter to decoding).
struct VAEConfig {
  /// Encoder-order channel counts; the decoder walks them in reverse.
  std::vector<int64_t> block_out_channels{128, 256, 512, 512};
  /// Each decoder up block holds layers_per_block + 1 resnets.
  int64_t layers_per_block = 2;
  /// Channels of the latent z.
  int64_t latent_channels = 4;
  /// Channels of the decoded image.
  int64_t out_channels = 3;
  /// Groups of every GroupNorm (eps is 1e-6 throughout).
  int64_t norm_num_groups = 32;
  /// decode_latents() divides z by this before decoding.
  double scaling_factor = 0.18215;
  /// decode_latents() adds this after the division (0 for SD; diffusers `shift_factor`).
  double shift_factor = 0.0;
  /// Whether the 1x1 `post_quant_conv` exists (false for SD3/Flux-style VAEs).
  bool use_post_quant_conv = true;
  /// Whether the mid block has its attention layer.
  bool mid_block_add_attention = true;

  /// The Stable Diffusion VAE (sd-vae-ft-ema / sd-vae-ft-mse).
  static VAEConfig sd();
  /// Reads a diffusers `config.json`. Irrelevant keys are ignored; a key of the wrong type or
  /// with an impossible value throws Error(kInvalidArgument) naming the key and the file; an
  /// unsupported activation or block type throws Error(kUnsupported); a missing file kNotFound,
  /// malformed JSON kFormat.
  static VAEConfig from_json_file(const std::string& path);
  /// Same as from_json_file, for JSON text; `origin` names the source in error messages.
  static VAEConfig from_json_string(const std::string& text, const std::string& origin = "<json>");
  /// The architecture a weight file describes (any naming load() accepts), read from tensor
  /// shapes; scaling_factor, shift_factor and norm_num_groups are copied from `base`. Throws
  /// Error(kNotFound) when the file holds no VAE decoder.
  static VAEConfig from_weights(const WeightFile& file, const VAEConfig& base = sd());
  /// Throws Error(kInvalidArgument) naming the first impossible field.
  void validate() const;
  /// Spatial upscaling of the decoder: 2^(number of blocks - 1) (8 for SD).
  int64_t upscale_factor() const;
};

/// Which tensor naming a VAE weight file uses.
enum class VAENaming {
  kDiffusers,            ///< current diffusers names (`to_q`, `to_out.0`)
  kDiffusersDeprecated,  ///< diffusers before 0.14 (`query`, `key`, `value`, `proj_attn`)
  kLdm,                  ///< original LDM/CompVis (`decoder.mid.block_1`, `decoder.up.{3-i}`)
};

/// Printable name of a VAENaming.
const char* to_string(VAENaming naming) noexcept;

namespace detail {
class VAEDecoderStackImpl;
}  // namespace detail

/// Decoder half of AutoencoderKL: `post_quant_conv` then `decoder.*` (conv_in, mid_block,
/// up_blocks, conv_norm_out, conv_out). Runs on whatever device and dtype it was moved to;
/// GroupNorm statistics and the attention softmax are computed in fp32 for fp16/bf16 modules.
class AutoencoderKLDecoderImpl : public torch::nn::Module {
 public:
  /// Builds a randomly initialised decoder; throws Error(kInvalidArgument) for a bad config.
  explicit AutoencoderKLDecoderImpl(const VAEConfig& config = VAEConfig::sd());

  /// Decodes latents that are already divided by the scaling factor: `[B, latent, h, w]` ->
  /// image `[B, out, f*h, f*w]` (f = upscale_factor(), 8 for SD) in roughly [-1, 1]. The input is
  /// moved to the module's device and dtype; the output has the module's dtype.
  at::Tensor decode(const at::Tensor& latents);
  /// Same as decode().
  at::Tensor forward(const at::Tensor& latents) { return decode(latents); }

  /// Loads the decoder weights from a VAE file or a full SD checkpoint, detecting the naming
  /// (see VAENaming) and the key prefix (e.g. `first_stage_model.`). Encoder, quant_conv and
  /// foreign keys are ignored; inside the decoder the load is strict. Throws
  /// Error(kShapeMismatch) naming the tensor when the file's shapes disagree with the config,
  /// and the strict loader's error for missing or unexpected decoder tensors.
  LoadReport load(const WeightFile& file);

  /// The naming and key prefix load() would use for `file`.
  static std::pair<VAENaming, std::string> detect_naming(const WeightFile& file);

  /// The configuration the module was built with.
  const VAEConfig& config() const { return config_; }

 private:
  VAEConfig config_;
  torch::nn::Conv2d post_quant_conv_{nullptr};
  std::shared_ptr<detail::VAEDecoderStackImpl> decoder_;
};

/// Module holder of AutoencoderKLDecoderImpl.
TORCH_MODULE(AutoencoderKLDecoder);

/// Decodes sampler latents: `decoder->decode(z / scaling_factor + shift_factor)`.
at::Tensor decode_latents(AutoencoderKLDecoder& decoder, const at::Tensor& z);

}  // namespace ditcache
