// The shapes10 classifier (include/ditcache/metrics/classifier.h).
#include "ditcache/metrics/classifier.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "ditcache/error.h"
#include "ditcache/io/state_dict.h"
#include "ditcache/io/weights.h"

namespace ditcache {

namespace {
torch::nn::Conv2d conv3x3(int in, int out) { return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, 3).padding(1)); }
}  // namespace

ShapesClassifierImpl::ShapesClassifierImpl(int num_classes, int width) : num_classes_(num_classes), width_(width) {
  if (num_classes < 2 || width < 1) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("shapes classifier: need >= 2 classes and width >= 1, got {} and {}", num_classes, width));
  }
  conv1 = register_module("conv1", conv3x3(3, width));
  conv2 = register_module("conv2", conv3x3(width, width));
  conv3 = register_module("conv3", conv3x3(width, 2 * width));
  conv4 = register_module("conv4", conv3x3(2 * width, 4 * width));
  head = register_module("head", torch::nn::Linear(4 * width, num_classes));
}

at::Tensor ShapesClassifierImpl::features(const at::Tensor& images) {
  if (images.dim() != 4 || images.size(1) != 3) {
    throw Error(ErrorCode::kShapeMismatch,
                fmt::format("shapes classifier: images have shape {}, expected [B, 3, H, W]", shape_string(images.sizes())));
  }
  auto x = at::relu(conv2->forward(at::relu(conv1->forward(images))));
  x = at::max_pool2d(x, 2);
  x = at::max_pool2d(at::relu(conv3->forward(x)), 2);
  x = at::relu(conv4->forward(x));
  return x.mean({2, 3});  // [B, 4w]
}

at::Tensor ShapesClassifierImpl::forward(const at::Tensor& images) { return head->forward(features(images)); }

void ShapesClassifierImpl::load(const WeightFile& file) {
  const auto& meta = file.metadata();
  const auto it = meta.find("ditcache.model");
  if (it == meta.end() || it->second != "shapes-classifier") {
    throw Error(ErrorCode::kFormat, fmt::format("{}: not a shapes classifier (metadata ditcache.model is '{}', expected "
                                                "'shapes-classifier')", file.path(), it == meta.end() ? "" : it->second));
  }
  load_state_dict(*this, file, {}, LoadOptions{std::string(), true});
}

ShapesClassifier load_shapes_classifier(const std::string& path) {
  auto file = open_weights(path);
  for (const char* name : {"conv1.weight", "head.weight"}) {
    if (!file->contains(name)) {
      throw Error(ErrorCode::kFormat, fmt::format("{}: no tensor '{}'; not a shapes classifier", path, name));
    }
  }
  const auto head = file->info("head.weight").shape;
  if (head.size() != 2 || head[0] < 2 || head[1] < 4 || head[1] % 4 != 0) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: head.weight has shape {}, expected [classes >= 2, 4 * width >= 4]", path,
                                                shape_string(head)));
  }
  ShapesClassifier model(static_cast<int>(head[0]), static_cast<int>(head[1] / 4));
  model->load(*file);
  model->eval();
  return model;
}

}  // namespace ditcache
