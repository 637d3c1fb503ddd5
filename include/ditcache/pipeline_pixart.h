#pragma once
/// \file The PixArt-α sampling pipeline: T5 caption embeddings in, image latents out (models.md
/// §2.3, §2.5). DPM-Solver++ 2M (sampling/dpm_solver.h) with classifier-free guidance over the
/// PixArt backbone, batched as either reference batches it; the SD VAE (models/vae.h) and the T5
/// encoder are separate components that callers compose (encode_pixart_prompts helps with T5).

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "ditcache/cache/context.h"
#include "ditcache/models/pixart.h"
#include "ditcache/models/t5.h"
#include "ditcache/text/tokenizer.h"

namespace ditcache {

/// Which reference's sampling conventions (models.md §2.3). They give different images.
enum class PixArtNumerics {
  /// PixArt-alpha scripts/inference.py (DPM-Solver path): the uncond caption is the checkpoint's
  /// null caption `y_embedder.y_embedding`, masked with the *prompt's* mask (so it is truncated to
  /// the prompt's length); CFG batch [uncond; cond], run unless guidance == 1; PixArt-alpha's own
  /// DPM-Solver grid (fractional model times); PixArtMS is told the aspect-ratio bin's key.
  kOriginal,
  /// diffusers PixArtAlphaPipeline: the uncond caption is the T5 encoding of the negative prompt
  /// ("" -> just EOS) with its own mask; CFG batch [negative; cond] only when guidance > 1;
  /// DPMSolverMultistepScheduler (integer timesteps, last step to sigma 0); PixArtMS is told
  /// height / width.
  kDiffusers,
};
/// "original" / "diffusers"; parse_pixart_numerics throws Error(kInvalidArgument) on anything else.
const char* to_string(PixArtNumerics numerics) noexcept;
PixArtNumerics parse_pixart_numerics(const std::string& text);

/// What to sample and how.
struct PixArtSampleOptions {
  /// Caption embeddings [n, L, caption_channels] (or [n, 1, L, caption_channels]): the T5 output
  /// for n prompts, L = the model's model_max_length (120 for the releases). One image per row.
  at::Tensor y;
  /// The T5 attention mask [n, L] (0/1, a non-empty prefix of valid tokens); undefined: all valid.
  at::Tensor mask;
  /// kDiffusers with CFG: the negative prompt's T5 output [1 or n, L, caption_channels] (for
  /// PixArtAlphaPipeline's default, the encoding of "") and its mask [1 or n, L] (undefined: all
  /// valid). Unused without CFG; an error with kOriginal, which uses the null caption.
  at::Tensor negative_y, negative_mask;
  /// kOriginal: the null caption [L, caption_channels] to use instead of the model's (for a model
  /// whose file has none: diffusers checkpoints drop it, random-weight models never loaded one).
  at::Tensor null_caption;
  PixArtNumerics numerics = PixArtNumerics::kOriginal;
  /// Image size in pixels, multiples of 8 x patch size (16); 0: the model's training size
  /// (input_size x 8). The latent is [4, height / 8, width / 8].
  int64_t height = 0, width = 0;
  /// PixArtMS only: the aspect-ratio micro-condition; 0: height / width (what diffusers passes).
  /// The original script passes its bin's key (e.g. 0.57 for 768 x 1344; pixart_aspect_bucket).
  double aspect_ratio = 0;
  int steps = 20;          ///< model calls (DPM-Solver steps; the original needs >= 2)
  double guidance = 4.5;   ///< classifier-free guidance scale
  uint64_t seed = 0;
  /// Initial noise [n, 4, height / 8, width / 8], replacing the seed's draw.
  std::optional<at::Tensor> init_noise;
  /// Called after every step with (steps done, total steps).
  std::function<void(int64_t, int64_t)> progress;
  /// The cache context every forward runs through; none: uncached, no FLOPs or telemetry.
  CacheContext* cache = nullptr;
  /// When set, receives the seconds spent inside the model's forward passes (on CUDA the device
  /// is synchronised around each forward).
  double* forward_seconds = nullptr;
};

/// Whether a run of `options` batches an unconditional half (kOriginal: guidance != 1; kDiffusers:
/// guidance > 1), as the references decide it.
bool pixart_uses_cfg(const PixArtSampleOptions& options);

/// The latent size {h, w} of a height x width pixel image for `config`: {height / 8, width / 8}
/// (0 x 0: the training size). Throws Error(kInvalidArgument) unless both are positive
/// multiples of 8 x patch size.
std::vector<int64_t> pixart_latent_size(const PixArtConfig& config, int64_t height, int64_t width);

/// One of PixArt's aspect-ratio bins: `key` as the reference writes it ("0.57"), its value, and
/// the pixel size.
struct PixArtAspectBucket {
  std::string key;
  double ratio = 1.0;  ///< height / width of the key
  int64_t height = 0, width = 0;
};

/// The bin of PixArt's aspect-ratio table for a `base` of 256, 512 or 1024 pixels whose key is
/// closest to `ratio` = height / width (ties: the first key), as the original's
/// prepare_prompt_ar (ASPECT_RATIO_{256,512,1024}_TEST) and diffusers' resolution binning
/// (ASPECT_RATIO_*_BIN, the same tables) choose it: ratio 1 -> 1024 x 1024, 9/16 -> "0.57" 768 x
/// 1344 at base 1024. Throws Error(kInvalidArgument) for another base or a ratio <= 0.
PixArtAspectBucket pixart_aspect_bucket(int64_t base, double ratio);
/// The table's keys in ascending order ("0.25" .. "4.0").
std::vector<std::string> pixart_aspect_keys();

/// PixArt's prompt preprocessing before T5: kOriginal cuts the prompt at the first "--aspect_ratio",
/// "--ar" or "--hw" (its size flags, as prepare_prompt_ar does) and strips it; then both apply the
/// caption cleaning twice (`clean`, the reference default) or only lowercase and strip.
std::string pixart_caption(const std::string& prompt, PixArtNumerics numerics = PixArtNumerics::kOriginal,
                           bool clean = true);

/// Caption embeddings as a run needs them.
struct PixArtCaptions {
  at::Tensor y, mask;                    ///< [n, L, d] float32, [n, L] int64
  at::Tensor negative_y, negative_mask;  ///< kDiffusers only: [1, L, d], [1, L] of `negative_prompt`
};

/// Preprocesses `prompts` (pixart_caption) and encodes them with T5 to `max_length` tokens; with
/// kDiffusers also the negative prompt ("" by default, as PixArtAlphaPipeline), preprocessed the
/// same way. Results are on the encoder's device. Throws Error(kInvalidArgument) for no prompts.
PixArtCaptions encode_pixart_prompts(T5Encoder& encoder, const T5Tokenizer& tokenizer, const std::vector<std::string>& prompts,
                                     PixArtNumerics numerics, int64_t max_length = kPixArtMaxTextLength, bool clean = true,
                                     const std::string& negative_prompt = "");

/// Runs the DPM-Solver++ 2M loop of `options.numerics` and returns the latents [n, 4, h, w]
/// (float32, on the model's device). Each step is one forward of the CFG batch (2n rows, or n
/// without CFG) on the first `in_channels` output channels (eps; the variance half is unused),
/// guidance eps = u + scale (c − u) in float32, then the solver update in float32. PixArtMS gets
/// resolution (height, width) and the aspect ratio per row; on a reduced-precision model those
/// (and, kOriginal, the model time) are rounded to its dtype first, as both references' casts do.
/// The initial noise comes from a CPU generator seeded with `seed` (torch.randn(shape,
/// generator=torch.Generator().manual_seed(seed)), what PixArtAlphaPipeline draws with a CPU
/// generator), so CPU and CUDA runs start alike. With a cache context every forward is bracketed
/// by begin_step / end_step ({i, i}: steps count up) after begin_run(pixart_run_info(..., rows,
/// cfg, ..., "dpm-solver++")); a kReuseOutput step reuses the stored noise prediction of the last
/// computed step. Same options -> bit-identical output on the same device. Throws
/// Error(kInvalidArgument) or Error(kShapeMismatch) naming the option that is wrong, with what
/// was expected and found.
at::Tensor sample_pixart(PixArt& model, const PixArtSampleOptions& options);

/// FLOPs-only: runs the whole schedule of `options` through `cache` in dry mode (no weights, no
/// tensors), so its telemetry and FLOPs summary equal those of a real run of `config`. Only the
/// shapes matter: n and L come from `options.y` when it is defined, else n = 1 and L =
/// config.model_max_length; init_noise and the captions' values are ignored.
void simulate_pixart(const PixArtConfig& config, const PixArtSampleOptions& options, CacheContext& cache);

}  // namespace ditcache
