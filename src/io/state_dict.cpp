#include "ditcache/io/state_dict.h"

#include <algorithm>
#include <set>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>

#include "ditcache/error.h"
#include "ditcache/io/weights.h"
#include "ditcache/log.h"

#include <spdlog/spdlog.h>

namespace ditcache {

std::string shape_string(at::IntArrayRef shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

KeyMap& KeyMap::rename(const std::string& module_key, const std::string& file_key) {
  entries_[module_key] = Entry{Entry::Kind::kRename, {file_key}, 0};
  return *this;
}
KeyMap& KeyMap::concat(const std::string& module_key, const std::vector<std::string>& file_keys, int64_t dim) {
  entries_[module_key] = Entry{Entry::Kind::kConcat, file_keys, dim};
  return *this;
}
KeyMap& KeyMap::reshape(const std::string& module_key, const std::string& file_key) {
  entries_[module_key] = Entry{Entry::Kind::kReshape, {file_key}, 0};
  return *this;
}
KeyMap& KeyMap::ignore_prefix(const std::string& prefix) {
  ignored_prefixes_.push_back(prefix);
  return *this;
}
KeyMap& KeyMap::ignore(const std::string& file_key) {
  ignored_keys_.push_back(file_key);
  return *this;
}
KeyMap& KeyMap::optional(const std::string& module_key) {
  optional_.push_back(module_key);
  return *this;
}
const KeyMap::Entry* KeyMap::find(const std::string& module_key) const {
  auto it = entries_.find(module_key);
  return it == entries_.end() ? nullptr : &it->second;
}
bool KeyMap::is_optional(const std::string& module_key) const {
  return std::find(optional_.begin(), optional_.end(), module_key) != optional_.end();
}
bool KeyMap::is_ignored(const std::string& file_key) const {
  if (std::find(ignored_keys_.begin(), ignored_keys_.end(), file_key) != ignored_keys_.end()) return true;
  return std::any_of(ignored_prefixes_.begin(), ignored_prefixes_.end(),
                     [&](const std::string& p) { return file_key.compare(0, p.size(), p) == 0; });
}

namespace {

// The file keys a module key reads, without the prefix.
std::vector<std::string> sources_of(const KeyMap& map, const std::string& module_key) {
  if (const auto* e = map.find(module_key)) return e->file_keys;
  return {module_key};
}

// Shape a mapped tensor will have, computed from metadata only (no tensor data is read).
std::vector<int64_t> mapped_shape(const KeyMap::Entry* e, const std::vector<const TensorInfo*>& infos,
                                  at::IntArrayRef target) {
  if (!e || e->kind == KeyMap::Entry::Kind::kRename) return infos[0]->shape;
  if (e->kind == KeyMap::Entry::Kind::kReshape) {
    int64_t numel = 1;
    for (auto d : infos[0]->shape) numel *= d;
    int64_t want = 1;
    for (auto d : target) want *= d;
    return numel == want ? target.vec() : infos[0]->shape;
  }
  auto shape = infos[0]->shape;  // concat: the first part's shape, summed along dim
  const auto dim = static_cast<size_t>(e->dim);
  if (dim >= shape.size()) return shape;
  for (size_t i = 1; i < infos.size(); ++i) {
    if (infos[i]->shape.size() != shape.size()) return infos[i]->shape;
    shape[dim] += infos[i]->shape[dim];
  }
  return shape;
}

std::string detect_prefix(const WeightFile& file, const std::vector<std::string>& probe_keys) {
  for (const auto& candidate : checkpoint_prefixes()) {
    for (const auto& key : probe_keys) {
      if (file.contains(candidate + key)) return candidate;
    }
  }
  return "";
}

}  // namespace

const std::vector<std::string>& checkpoint_prefixes() {
  static const std::vector<std::string> kPrefixes = {"", "state_dict.", "ema.", "model.", "module."};
  return kPrefixes;
}

LoadReport load_state_dict(torch::nn::Module& module, const WeightFile& file, const KeyMap& map,
                           const LoadOptions& options) {
  // Every parameter and buffer by its dotted name, as the reference checkpoints spell them.
  std::vector<std::pair<std::string, at::Tensor>> targets;
  for (const auto& item : module.named_parameters(true)) targets.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(true)) targets.emplace_back(item.key(), item.value());

  std::vector<std::string> probe;
  for (const auto& t : targets) {
    for (const auto& s : sources_of(map, t.first)) probe.push_back(s);
  }
  LoadReport report;
  report.prefix = options.prefix ? *options.prefix : detect_prefix(file, probe);
  const std::string& prefix = report.prefix;

  // Pass 1: check everything from metadata, collecting every problem before touching the module.
  std::vector<std::string> problems;
  std::set<std::string> consumed;
  for (const auto& [key, tensor] : targets) {
    const auto* entry = map.find(key);
    std::vector<const TensorInfo*> infos;
    bool missing = false;
    for (const auto& source : sources_of(map, key)) {
      if (!file.contains(prefix + source)) {
        missing = true;
        if (!map.is_optional(key)) {
          problems.push_back(fmt::format("missing tensor '{}'{} (expected shape {})", prefix + source,
                                         source == key ? "" : fmt::format(" for '{}'", key),
                                         shape_string(tensor.sizes())));
        }
        continue;
      }
      consumed.insert(prefix + source);
      infos.push_back(&file.info(prefix + source));
    }
    if (missing) {
      if (map.is_optional(key)) report.defaulted.push_back(key);
      continue;
    }
    const auto shape = mapped_shape(entry, infos, tensor.sizes());
    if (at::IntArrayRef(shape) != tensor.sizes()) {
      const auto& named = infos.size() == 1 ? infos[0]->name : key;
      problems.push_back(fmt::format("tensor '{}': shape {}, expected {}", named, shape_string(shape),
                                     shape_string(tensor.sizes())));
    }
  }
  std::vector<std::string> unexpected;
  for (const auto& name : file.names()) {
    if (name.compare(0, prefix.size(), prefix) != 0) continue;  // outside the loaded sub-dict
    if (consumed.count(name) || map.is_ignored(name.substr(prefix.size()))) continue;
    unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    if (options.strict) {
      for (const auto& name : unexpected) {
        problems.push_back(fmt::format("unexpected tensor '{}' of shape {}", name,
                                       shape_string(file.info(name).shape)));
      }
    } else {
      logger()->info("{}: {} tensors not used by the model", file.path(), unexpected.size());
    }
  }
  if (!problems.empty()) {
    constexpr size_t kShown = 20;
    std::string message = fmt::format("{}: {} problem(s) loading weights into the model:", file.path(),
                                      problems.size());
    for (size_t i = 0; i < std::min(problems.size(), kShown); ++i) message += "\n  " + problems[i];
    if (problems.size() > kShown) message += fmt::format("\n  ... and {} more", problems.size() - kShown);
    throw Error(ErrorCode::kShapeMismatch, message);
  }

  // Pass 2: read and copy (file dtype -> module dtype and device).
  at::NoGradGuard no_grad;
  for (auto& [key, tensor] : targets) {
    const auto* entry = map.find(key);
    if (std::find(report.defaulted.begin(), report.defaulted.end(), key) != report.defaulted.end()) continue;
    std::vector<at::Tensor> parts;
    for (const auto& source : sources_of(map, key)) parts.push_back(file.load(prefix + source));
    at::Tensor value = parts[0];
    if (entry && entry->kind == KeyMap::Entry::Kind::kConcat) value = at::cat(parts, entry->dim);
    if (entry && entry->kind == KeyMap::Entry::Kind::kReshape) value = value.reshape(tensor.sizes());
    tensor.copy_(value.to(tensor.scalar_type()));
    report.loaded.push_back(key);
  }
  return report;
}

}  // namespace ditcache
