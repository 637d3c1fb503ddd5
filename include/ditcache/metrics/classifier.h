#pragma once
/// \file The shapes10 classifier: a small CNN trained on the same procedural data as the embedded
/// DiT (docs/embedded-model.md). Its class probabilities and pooled features are the project's
/// stand-ins for the Inception network of FID and IS (metrics/quality.h).

#include <string>

#include <ATen/Tensor.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace ditcache {

class WeightFile;

/// conv3x3(3->w) ReLU conv3x3(w->w) ReLU maxpool2, conv3x3(w->2w) ReLU maxpool2,
/// conv3x3(2w->4w) ReLU, global average pool -> features [B, 4w], linear -> logits [B, classes].
class ShapesClassifierImpl : public torch::nn::Module {
 public:
  explicit ShapesClassifierImpl(int num_classes = 10, int width = 32);
  /// images [B, 3, H, W] in [-1, 1] -> pooled features [B, 4 * width].
  at::Tensor features(const at::Tensor& images);
  /// images -> logits [B, num_classes].
  at::Tensor forward(const at::Tensor& images);
  /// Loads weights written by train_shapes (metadata "ditcache.model" = "shapes-classifier"),
  /// strictly; a DiT or foreign file is an Error(kFormat) naming the file.
  void load(const WeightFile& file);

  int num_classes() const { return num_classes_; }
  int width() const { return width_; }
  int feature_dim() const { return 4 * width_; }

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, conv3{nullptr}, conv4{nullptr};
  torch::nn::Linear head{nullptr};

 private:
  int num_classes_, width_;
};
TORCH_MODULE(ShapesClassifier);

/// Reads the classifier's architecture from a weight file (conv1's and head's shapes) and loads it.
ShapesClassifier load_shapes_classifier(const std::string& path);

}  // namespace ditcache
