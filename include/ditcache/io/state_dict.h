#pragma once
/// \file Strict loading of a weight file into a LibTorch module, through an optional key map
/// (rename, concatenate fused tensors, reshape, ignore). Every missing, unexpected or mis-shaped
/// tensor is reported by name with expected and found shapes, all in one Error.

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace torch { namespace nn { class Module; } }

namespace ditcache {

class WeightFile;

/// How the tensors of a file map onto a module's parameter and buffer names. Without an entry a
/// module name N is read from file key `prefix + N` unchanged.
class KeyMap {
 public:
  /// Module tensor `module_key` is file tensor `file_key`.
  KeyMap& rename(const std::string& module_key, const std::string& file_key);
  /// Module tensor `module_key` is the concatenation of file tensors along `dim` (fused qkv).
  KeyMap& concat(const std::string& module_key, const std::vector<std::string>& file_keys, int64_t dim);
  /// Module tensor `module_key` is file tensor `file_key` reshaped to the module's shape when the
  /// element counts agree (1x1 conv weights [C,C,1,1] stored for Linear [C,C], or the reverse).
  KeyMap& reshape(const std::string& module_key, const std::string& file_key);
  /// File keys starting with `prefix` are known and deliberately unused (e.g. a VAE's encoder).
  KeyMap& ignore_prefix(const std::string& prefix);
  /// File key that is known and deliberately unused (e.g. diffusers' per-block copies).
  KeyMap& ignore(const std::string& file_key);
  /// Module tensor that may be absent from the file; it keeps its initialised value (e.g. DiT's
  /// fixed pos_embed, which diffusers files omit).
  KeyMap& optional(const std::string& module_key);

  struct Entry {
    enum class Kind { kRename, kConcat, kReshape } kind = Kind::kRename;
    std::vector<std::string> file_keys;
    int64_t dim = 0;
  };
  /// The entry for a module key, if any.
  const Entry* find(const std::string& module_key) const;
  bool is_optional(const std::string& module_key) const;
  bool is_ignored(const std::string& file_key) const;

 private:
  std::map<std::string, Entry> entries_;
  std::vector<std::string> ignored_prefixes_;
  std::vector<std::string> ignored_keys_;
  std::vector<std::string> optional_;
};

/// The file-key prefixes under which a checkpoint's tensors may sit, in the order every detector
/// tries them (load_state_dict, DiT and PixArt detection): "" (a bare state dict), "state_dict."
/// (PixArt's `.pth`, Lightning), "ema." then "model." (a training checkpoint holding both: the EMA
/// weights are the ones to sample with), "module." (DataParallel).
const std::vector<std::string>& checkpoint_prefixes();

/// Options of load_state_dict.
struct LoadOptions {
  /// Prefix of every file key (e.g. "state_dict." for PixArt's wrapped `.pth`, "ema." for DiT
  /// training checkpoints). std::nullopt: the first of checkpoint_prefixes() under which a module
  /// tensor is found.
  std::optional<std::string> prefix;
  /// Report file tensors that nothing consumed as errors (strict) or only log them.
  bool strict = true;
};

/// What load_state_dict did.
struct LoadReport {
  std::string prefix;                  ///< the file-key prefix used
  std::vector<std::string> loaded;     ///< module keys filled from the file
  std::vector<std::string> defaulted;  ///< optional module keys absent from the file
};

/// Copies every parameter and buffer of `module` from `file` (converted to the module tensor's
/// dtype and device). Throws one Error(kShapeMismatch / kNotFound) listing every missing,
/// unexpected and mis-shaped tensor, e.g. "tensor 'blocks.3.mlp.fc1.weight': shape [1152, 4608],
/// expected [4608, 1152]". Nothing is modified when it throws.
LoadReport load_state_dict(torch::nn::Module& module, const WeightFile& file, const KeyMap& map = {},
                           const LoadOptions& options = {});

/// "[1152, 4608]".
std::string shape_string(at::IntArrayRef shape);

}  // namespace ditcache
