#pragma once
/// \file Sharded checkpoints (Hugging Face `*.index.json` + shards) behind the WeightFile
/// interface, and open_checkpoint(), which accepts a weight file, an index or a model folder.

#include <memory>
#include <string>

#include "ditcache/io/weights.h"

namespace ditcache {

/// Opens a sharded checkpoint from its index JSON (`model.safetensors.index.json`,
/// `pytorch_model.bin.index.json`, or any `{"weight_map": {tensor: shard file}}`); shard paths
/// are relative to the index's folder and each shard is opened with open_weights() (safetensors
/// or torch zip-pickle, lazily). names() follows the index's weight_map order; tensors a shard
/// holds but the index does not list are not visible. metadata() holds the index's "metadata"
/// entries as strings (e.g. "total_size"). Throws Error(kNotFound) naming a missing index, a
/// missing shard file, or a tensor the index assigns to a shard that does not hold it;
/// Error(kFormat) for malformed JSON or a weight_map that is missing or not tensor -> file strings.
std::unique_ptr<WeightFile> open_sharded_weights(const std::string& index_path);

/// Opens what a user points at: a path ending in ".index.json" -> open_sharded_weights(); a folder
/// -> the first of model.safetensors, model.safetensors.index.json, pytorch_model.bin,
/// pytorch_model.bin.index.json found in it (Error(kNotFound) listing them when none is); any
/// other file -> open_weights().
std::unique_ptr<WeightFile> open_checkpoint(const std::string& path);

}  // namespace ditcache
