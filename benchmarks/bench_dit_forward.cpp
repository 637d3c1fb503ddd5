// Uncached DiT forward time on random weights: the baseline every cache policy is measured
// against. Prints one Markdown row and, with --json, a JSON record.
//
//   bench_dit_forward --config DiT-XL/2 --batch 2 --threads 2 --reps 5
#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <thread>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/version.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "ditcache/ditcache.h"

int main(int argc, char** argv) {
  CLI::App app{"Time the uncached DiT forward pass (random weights)."};
  std::string config_name = "DiT-XL/2", device_name = "cpu", dtype_name = "fp32", json_path;
  int batch = 2, warmup = 1, reps = 5, threads = 0;
  app.add_option("--config", config_name, "DiT preset")->capture_default_str();
  app.add_option("--batch", batch, "batch size")->capture_default_str();
  app.add_option("--warmup", warmup, "untimed runs first")->capture_default_str();
  app.add_option("--reps", reps, "timed runs")->capture_default_str();
  app.add_option("--threads", threads, "intra-op threads (default: all cores)");
  app.add_option("--device", device_name, "cpu or cuda")->capture_default_str();
  app.add_option("--dtype", dtype_name, "fp32, fp16 or bf16")->capture_default_str();
  app.add_option("--json", json_path, "also write the result as JSON here");
  CLI11_PARSE(app, argc, argv);
  try {
    if (reps < 1 || batch < 1 || warmup < 0) throw ditcache::Error(ditcache::ErrorCode::kInvalidArgument, "--reps and --batch must be >= 1, --warmup >= 0");
    at::set_num_threads(threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    const auto dtype = dtype_name == "fp16" ? at::kHalf : dtype_name == "bf16" ? at::kBFloat16 : at::kFloat;
    if (dtype_name != "fp32" && dtype_name != "fp16" && dtype_name != "bf16") {
      throw ditcache::Error(ditcache::ErrorCode::kInvalidArgument, fmt::format("--dtype '{}': expected fp32, fp16 or bf16", dtype_name));
    }
    const c10::Device device(device_name);
    auto config = ditcache::DiTConfig::preset(config_name);
    at::manual_seed(0);
    ditcache::DiT model(config);
    model->eval();
    model->to(device, dtype);
    auto options = at::TensorOptions().device(device);
    auto x = at::randn({batch, config.in_channels, config.input_size, config.input_size}, options.dtype(dtype));
    auto t = at::full({batch}, 500, options.dtype(at::kLong));
    auto y = at::arange(batch, options.dtype(at::kLong)) % config.num_classes;
    at::NoGradGuard no_grad;
    std::vector<double> ms;
    for (int i = 0; i < warmup + reps; ++i) {
      const auto start = std::chrono::steady_clock::now();
      auto out = model->forward(x, t, y);
      out.sum().item<double>();  // waits for the device
      const double elapsed = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      if (i >= warmup) ms.push_back(elapsed);
    }
    std::sort(ms.begin(), ms.end());
    const double median = ms[ms.size() / 2];
    std::cout << fmt::format("| ditcache (LibTorch {}) | {} | {} | {} | {} | {:.1f} | {:.1f} | {:.1f} |\n", TORCH_VERSION,
                             config.name, batch, dtype_name, at::get_num_threads(), median, ms.front(), ms.back());
    if (!json_path.empty()) {
      nlohmann::json j = {{"impl", "ditcache"}, {"config", config.name}, {"batch", batch}, {"dtype", dtype_name},
                          {"threads", at::get_num_threads()}, {"median_ms", median}, {"min_ms", ms.front()},
                          {"max_ms", ms.back()}, {"reps", reps}};
      std::ofstream(json_path) << j.dump(2) << "\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_dit_forward: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
