// Sharded Hugging Face checkpoints (index JSON + shards) as one WeightFile; open_checkpoint().
#include "ditcache/io/sharded_weights.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "ditcache/error.h"

namespace ditcache {

namespace {

namespace fs = std::filesystem;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

class ShardedWeightFile final : public WeightFile {
 public:
  explicit ShardedWeightFile(const std::string& index_path) : path_(index_path) {
    std::ifstream in(index_path);
    if (!fs::exists(index_path) || !in) {
      throw Error(ErrorCode::kNotFound, fmt::format("{}: checkpoint index not found or unreadable", index_path));
    }
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::ordered_json j;
    try {
      j = nlohmann::ordered_json::parse(ss.str());
    } catch (const std::exception& e) {
      throw Error(ErrorCode::kFormat, fmt::format("{}: checkpoint index is not valid JSON ({})", index_path, e.what()));
    }
    if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      throw Error(ErrorCode::kFormat,
                  fmt::format("{}: checkpoint index has no \"weight_map\" object (tensor name -> shard file)", index_path));
    }
    if (j.contains("metadata") && j["metadata"].is_object()) {
      for (const auto& [key, value] : j["metadata"].items()) {
        metadata_[key] = value.is_string() ? value.get<std::string>() : value.dump();
      }
    }
    const fs::path dir = fs::path(index_path).parent_path();
    std::map<std::string, size_t> shard_of_file;  // shard file name -> index into shards_
    for (const auto& [name, value] : j["weight_map"].items()) {
      if (!value.is_string()) {
        throw Error(ErrorCode::kFormat, fmt::format("{}: weight_map entry '{}' must be a shard file name, found {}",
                                                    index_path, name, value.dump()));
      }
      const std::string shard = value.get<std::string>();
      auto it = shard_of_file.find(shard);
      if (it == shard_of_file.end()) {
        const std::string shard_path = (dir / shard).string();
        if (!fs::exists(shard_path)) {
          throw Error(ErrorCode::kNotFound, fmt::format("{}: shard '{}' (holding tensor '{}') not found at {}", index_path,
                                                        shard, name, shard_path));
        }
        shards_.push_back(open_weights(shard_path));
        it = shard_of_file.emplace(shard, shards_.size() - 1).first;
      }
      const WeightFile& file = *shards_[it->second];
      if (!file.contains(name)) {
        throw Error(ErrorCode::kNotFound, fmt::format("{}: tensor '{}' is listed in shard '{}', which does not hold it",
                                                      index_path, name, shard));
      }
      names_.push_back(name);
      owner_.emplace(name, it->second);
    }
    if (!shards_.empty()) format_ = "sharded " + shards_.front()->format();
  }

  const std::string& path() const override { return path_; }
  std::string format() const override { return format_; }
  const std::vector<std::string>& names() const override { return names_; }
  bool contains(const std::string& name) const override { return owner_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const override { return shard(name).info(name); }
  at::Tensor load(const std::string& name) const override { return shard(name).load(name); }
  const std::map<std::string, std::string>& metadata() const override { return metadata_; }

 private:
  const WeightFile& shard(const std::string& name) const {
    auto it = owner_.find(name);
    if (it == owner_.end()) {
      throw Error(ErrorCode::kNotFound, fmt::format("{}: tensor '{}' not found in the checkpoint index", path_, name));
    }
    return *shards_[it->second];
  }

  std::string path_;
  std::string format_ = "sharded";
  std::vector<std::unique_ptr<WeightFile>> shards_;
  std::vector<std::string> names_;
  std::map<std::string, size_t> owner_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace

std::unique_ptr<WeightFile> open_sharded_weights(const std::string& index_path) {
  return std::make_unique<ShardedWeightFile>(index_path);
}

std::unique_ptr<WeightFile> open_checkpoint(const std::string& path) {
  if (ends_with(path, ".index.json")) return open_sharded_weights(path);
  if (fs::is_directory(path)) {
    static const char* kCandidates[] = {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                        "pytorch_model.bin.index.json"};
    for (const char* name : kCandidates) {
      const std::string candidate = (fs::path(path) / name).string();
      if (fs::exists(candidate)) return open_checkpoint(candidate);
    }
    throw Error(ErrorCode::kNotFound, fmt::format("{}: folder holds none of {}", path, fmt::join(kCandidates, ", ")));
  }
  return open_weights(path);
}

}  // namespace ditcache
