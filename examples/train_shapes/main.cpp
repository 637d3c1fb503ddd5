// train_shapes: trains the embedded demo models on the procedural shapes10 data
// (docs/embedded-model.md): the class-conditional pixel-space DiT, with DiT's objective (eps MSE
// plus the variational bound for the learned sigma), AdamW and an EMA of the weights; and the
// small CNN classifier behind the project's accuracy / Frechet-distance metrics.
//
//   train_shapes dit --config models/shapes10/dit-config.json --steps 6000 --output models/shapes10/dit.safetensors
//   train_shapes classifier --steps 1500 --output models/shapes10/classifier.safetensors
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/cuda.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize.h>

#include "common/cli_util.h"
#include "ditcache/ditcache.h"
#include "ditcache/plot.h"

using namespace ditcache;

namespace {

struct TrainOptions {
  int64_t steps = 6000, batch = 32, warmup = 200, log_every = 50, checkpoint_every = 250;
  double lr = 1e-3, min_lr_ratio = 0.1, ema = 0.999, weight_decay = 0.0, grad_clip = 1.0;
  uint64_t seed = 0, data_seed = 1;
  int threads = 0;
  double time_budget = 0;  // seconds; > 0: fix the step count from the measured speed (see train())
  std::string output, log_path, samples_path, checkpoint, device = "cpu";
  c10::Device device_ = c10::kCPU;  // parsed from `device`
  bool resume = false;
  bool ema_warmup = false;  // decay min(ema, (1 + s) / (10 + s)) at step s
};

// What a checkpoint must agree on to be resumed: the data and noise streams (batch, seed, data
// seed), the peak learning rate and the EMA (decay and warm-up), in this order.
constexpr const char* kRunIdentityNames = "batch, seed, data seed, lr, ema, ema-warmup";
at::Tensor run_identity(const TrainOptions& o) {
  return at::tensor(std::vector<double>{static_cast<double>(o.batch), static_cast<double>(o.seed),
                                        static_cast<double>(o.data_seed), o.lr, o.ema, o.ema_warmup ? 1.0 : 0.0},
                    at::TensorOptions().dtype(at::kDouble));
}

std::string join_values(const at::Tensor& values) {
  auto v = values.contiguous();
  return fmt::format("{}", fmt::join(std::vector<double>(v.data_ptr<double>(), v.data_ptr<double>() + v.numel()), ", "));
}

// A train_shapes checkpoint (a LibTorch archive), with an error that names the file.
torch::serialize::InputArchive load_checkpoint(const std::string& path, c10::Device device) {
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path, device);
  } catch (const c10::Error& e) {
    throw Error(ErrorCode::kFormat, fmt::format("checkpoint '{}' is not a train_shapes checkpoint (a LibTorch archive): {}",
                                                path, e.what_without_backtrace()));
  }
  return archive;
}

// Loads the module stored under `key` of a checkpoint. Module::load replaces each tensor with the
// stored one whatever its shape, so the shapes are compared afterwards: a checkpoint of another
// architecture must not slip in.
void load_module(torch::nn::Module& module, torch::serialize::InputArchive& archive, const std::string& key,
                 const std::string& path) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> shapes;
  for (const auto& item : module.named_parameters()) shapes.emplace_back(item.key(), item.value().sizes().vec());
  try {
    torch::serialize::InputArchive stored;
    archive.read(key, stored);
    module.load(stored);
  } catch (const c10::Error& err) {
    throw Error(ErrorCode::kFormat, fmt::format("checkpoint '{}': its {} does not fit this model (another --config?): {}",
                                                path, key, err.what_without_backtrace()));
  }
  size_t i = 0;  // named_parameters() keeps its order
  for (const auto& item : module.named_parameters()) {
    const auto& [name, sizes] = shapes[i++];
    if (item.value().sizes() != at::IntArrayRef(sizes)) {
      throw Error(ErrorCode::kShapeMismatch,
                  fmt::format("checkpoint '{}' holds another architecture (another --config?): {} {} is [{}], the "
                              "config's is [{}]", path, key, name, fmt::join(item.value().sizes(), ", "),
                              fmt::join(sizes, ", ")));
    }
  }
}

// Linear warm-up, then cosine decay to min_lr_ratio * lr.
double learning_rate(const TrainOptions& o, int64_t steps, int64_t step) {
  if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
  const double progress = static_cast<double>(step - o.warmup) / static_cast<double>(std::max<int64_t>(1, steps - o.warmup));
  return o.lr * (o.min_lr_ratio + (1.0 - o.min_lr_ratio) * 0.5 * (1.0 + std::cos(3.14159265358979 * progress)));
}

std::vector<std::pair<std::string, at::Tensor>> named_tensors(torch::nn::Module& module, at::ScalarType dtype) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : module.named_parameters()) out.emplace_back(item.key(), item.value().detach().to(at::kCPU, dtype).contiguous());
  for (const auto& item : module.named_buffers()) out.emplace_back(item.key(), item.value().detach().to(at::kCPU, dtype).contiguous());
  return out;
}

// The shared loop: `loss_of(batch, generator)` returns the scalar loss of one batch; the EMA of the
// parameters is what gets saved. Checkpoints (model, EMA, optimizer, step) make it resumable with
// the same result: the data and the noise of step s depend only on (seed, s).
void train(torch::nn::Module& model, const TrainOptions& o,
           const std::function<at::Tensor(const ShapesBatch&, at::Generator&)>& loss_of, const std::string& what,
           torch::nn::Module& ema_model) {
  auto params = model.parameters();
  auto ema_params = ema_model.parameters();
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(o.lr).weight_decay(o.weight_decay));
  int64_t start_step = 0;
  if (o.resume && std::filesystem::exists(o.checkpoint)) {
    if (o.time_budget > 0) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("--time-budget with --resume: {} exists, and a budget would change the learning-rate "
                              "schedule of a run already under way; resume with --steps instead", o.checkpoint));
    }
    auto archive = load_checkpoint(o.checkpoint, o.device_);
    at::Tensor step, identity;
    try {
      archive.read("step", step);
      archive.read("run", identity);
    } catch (const c10::Error& err) {
      throw Error(ErrorCode::kFormat, fmt::format("checkpoint '{}' has no step and run record: {}", o.checkpoint,
                                                  err.what_without_backtrace()));
    }
    start_step = step.item<int64_t>();
    // The step count may grow (a continued run); what defines the data and noise streams may not.
    const auto expected = run_identity(o);
    if (!at::equal(identity, expected)) {  // false for a different length too
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("--resume: {} was written with {} = {}; this run has {}{}", o.checkpoint, kRunIdentityNames,
                              join_values(identity), join_values(expected),
                              identity.sizes() != expected.sizes() ? " (a checkpoint of an older train_shapes)" : ""));
    }
    load_module(model, archive, "model", o.checkpoint);
    load_module(ema_model, archive, "ema", o.checkpoint);
    try {
      torch::serialize::InputArchive stored;
      archive.read("optimizer", stored);
      optimizer.load(stored);
    } catch (const c10::Error& err) {
      throw Error(ErrorCode::kFormat, fmt::format("checkpoint '{}': its optimizer state does not fit this {}: {}",
                                                  o.checkpoint, what, err.what_without_backtrace()));
    }
    std::fprintf(stderr, "resumed %s from %s at step %lld\n", what.c_str(), o.checkpoint.c_str(), static_cast<long long>(start_step));
  } else {
    at::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) ema_params[i].copy_(params[i]);
  }
  std::ofstream log(o.log_path, start_step > 0 ? std::ios::app : std::ios::trunc);
  if (!log) throw Error(ErrorCode::kIo, fmt::format("cannot write the loss log '{}'", o.log_path));
  if (start_step == 0) log << "step,loss,lr,seconds\n";
  const auto start = std::chrono::steady_clock::now();
  const auto seconds_since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  // The next batch is rendered on another thread while the current step runs (data depends only on
  // the step index, so this changes no number).
  const auto render = [&o](int64_t step) {
    auto b = shapes_batch(o.data_seed, step * o.batch, o.batch);
    return ShapesBatch{b.images.to(o.device_, /*non_blocking=*/false), b.labels.to(o.device_)};
  };
  std::future<ShapesBatch> next = std::async(std::launch::async, render, start_step);
  at::Tensor loss_sum = at::zeros({}, at::TensorOptions().dtype(at::kDouble).device(o.device_));
  int64_t loss_count = 0;
  int64_t steps = o.steps;
  // --time-budget: after the warm-up window, fix the run's length to what fits in the budget at the
  // measured speed (the cosine schedule runs to that step count; the log and the final message
  // name it, so `--steps N` repeats the run exactly).
  const int64_t probe_from = start_step + 20, probe_to = start_step + 120;
  std::chrono::steady_clock::time_point probe_start;
  for (int64_t step = start_step; step < steps; ++step) {
    auto batch = next.get();
    if (step + 1 < steps) next = std::async(std::launch::async, render, step + 1);
    auto generator = at::make_generator<at::CPUGeneratorImpl>(o.seed * 1000003ULL + static_cast<uint64_t>(step));
    const double lr = learning_rate(o, steps, step);
    for (auto& group : optimizer.param_groups()) static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    optimizer.zero_grad();
    auto loss = loss_of(batch, generator);
    loss.backward();
    if (o.grad_clip > 0) torch::nn::utils::clip_grad_norm_(params, o.grad_clip);
    optimizer.step();
    {
      at::NoGradGuard no_grad;
      // Without the warm-up the EMA keeps ema^steps of the initialisation (6 % after 5600 steps at
      // 0.9995: enough to spoil the samples of a short run).
      const double decay = o.ema_warmup ? std::min(o.ema, (1.0 + step) / (10.0 + step)) : o.ema;
      at::_foreach_mul_(ema_params, decay);
      at::_foreach_add_(ema_params, params, 1.0 - decay);
    }
    loss_sum += loss.detach().to(at::kDouble);
    ++loss_count;
    if (o.time_budget > 0 && step + 1 == probe_from) {
      if (o.device_.is_cuda()) torch::cuda::synchronize(o.device_.index());
      probe_start = std::chrono::steady_clock::now();
    }
    if (o.time_budget > 0 && step + 1 == probe_to) {
      if (o.device_.is_cuda()) torch::cuda::synchronize(o.device_.index());
      const double per_step = seconds_since(probe_start) / static_cast<double>(probe_to - probe_from);
      const double left = o.time_budget - seconds_since(start);
      const int64_t fit = probe_to + static_cast<int64_t>(std::max(0.0, left) / per_step);
      const int64_t fixed = std::max<int64_t>(probe_to, std::min<int64_t>(o.steps, fit / o.log_every * o.log_every));
      steps = std::min(steps, fixed);
      std::fprintf(stderr, "%s: %.1f ms a step; --time-budget %.0f s: training %lld steps (repeat with --steps %lld)\n",
                   what.c_str(), 1e3 * per_step, o.time_budget, static_cast<long long>(steps), static_cast<long long>(steps));
    }
    const bool last = step + 1 == steps;
    if ((step + 1) % o.log_every == 0 || last) {
      const double mean_loss = loss_sum.item<double>() / static_cast<double>(loss_count);
      const double seconds = seconds_since(start);
      log << fmt::format("{},{:.6f},{:.3g},{:.1f}\n", step + 1, mean_loss, lr, seconds) << std::flush;
      std::fprintf(stderr, "%s step %lld/%lld loss %.4f lr %.2e %.0fs\n", what.c_str(), static_cast<long long>(step + 1),
                   static_cast<long long>(steps), mean_loss, lr, seconds);
      loss_sum.zero_();
      loss_count = 0;
    }
    if (!o.checkpoint.empty() && ((step + 1) % o.checkpoint_every == 0 || last)) {
      torch::serialize::OutputArchive archive, m, e, opt;
      model.save(m);
      ema_model.save(e);
      optimizer.save(opt);
      archive.write("model", m);
      archive.write("ema", e);
      archive.write("optimizer", opt);
      archive.write("step", at::tensor(step + 1));
      archive.write("run", run_identity(o));
      archive.save_to(o.checkpoint + ".tmp");
      std::filesystem::rename(o.checkpoint + ".tmp", o.checkpoint);
    }
  }
  if (next.valid()) next.get();
}

// The loss log as a chart (log-scale loss would hide the early drop; the first point is skipped
// because it averages the untrained warm-up steps).
at::Tensor plot_loss(const std::string& csv_path, const std::string& title) {
  std::ifstream in(csv_path);
  if (!in) throw Error(ErrorCode::kNotFound, fmt::format("loss log '{}' cannot be read", csv_path));
  std::string line;
  std::getline(in, line);
  if (line.rfind("step,loss", 0) != 0) {
    throw Error(ErrorCode::kFormat, fmt::format("{}: header '{}', expected 'step,loss,lr,seconds'", csv_path, line));
  }
  PlotSeries series;
  series.label = "loss (mean of each logging window)";
  series.markers = false;
  while (std::getline(in, line)) {
    std::stringstream fields(line);
    std::string step, loss;
    if (!std::getline(fields, step, ',') || !std::getline(fields, loss, ',')) {
      throw Error(ErrorCode::kFormat, fmt::format("{}: bad line '{}'", csv_path, line));
    }
    try {
      series.x.push_back(std::stod(step));
      series.y.push_back(std::stod(loss));
    } catch (const std::exception&) {
      throw Error(ErrorCode::kFormat, fmt::format("{}: line '{}' has no numeric step and loss", csv_path, line));
    }
  }
  if (series.x.size() < 3) throw Error(ErrorCode::kFormat, fmt::format("{}: fewer than 3 logged points", csv_path));
  series.x.erase(series.x.begin());
  series.y.erase(series.y.begin());
  ChartOptions chart;
  chart.title = title;
  chart.x_label = "optimizer step";
  chart.y_label = "training loss";
  chart.y_min = 0.0;
  return render_chart({series}, chart);
}

void add_common(CLI::App& app, TrainOptions& o) {
  app.add_option("--steps", o.steps, "optimizer steps")->capture_default_str();
  app.add_option("--batch", o.batch, "images per step")->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate (AdamW; linear warm-up, cosine decay)")->capture_default_str();
  app.add_option("--warmup", o.warmup, "warm-up steps")->capture_default_str();
  app.add_option("--ema", o.ema, "EMA decay of the saved weights")->capture_default_str();
  app.add_flag("--ema-warmup", o.ema_warmup, "EMA decay min(--ema, (1+step)/(10+step)): no pull toward the initialisation in short runs");
  app.add_option("--grad-clip", o.grad_clip, "gradient norm clip (0: off)")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the initialisation and the per-step noise")->capture_default_str();
  app.add_option("--data-seed", o.data_seed, "seed of the shapes10 training stream")->capture_default_str();
  app.add_option("--threads", o.threads, "CPU threads (0: LibTorch's default)")->capture_default_str();
  app.add_option("--device", o.device, "cpu, cuda or cuda:N (on CUDA, float32 matrix products use TF32)")->capture_default_str();
  app.add_option("--time-budget", o.time_budget,
                 "seconds: measure the speed over steps 20-120, then train as many steps as fit (at most --steps; "
                 "the cosine schedule ends there); the log names the count, which --steps repeats")->capture_default_str();
  app.add_option("--output", o.output, "weights to write (safetensors)")->required();
  app.add_option("--log", o.log_path, "loss log (CSV: step,loss,lr,seconds); default OUTPUT.loss.csv");
  app.add_option("--checkpoint", o.checkpoint, "resumable checkpoint; default OUTPUT.ckpt");
  app.add_flag("--resume", o.resume, "continue from --checkpoint when it exists");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Train the embedded shapes10 models: the class-conditional DiT and the metric classifier."};
  app.require_subcommand(1);
  TrainOptions dit_opts, cls_opts;
  cls_opts.steps = 1500;
  cls_opts.batch = 64;
  cls_opts.lr = 2e-3;
  cls_opts.warmup = 50;
  cls_opts.ema = 0.99;
  std::string config_path, samples_path;
  double class_dropout = 0.1;
  int width = 32;
  auto* dit_cmd = app.add_subcommand("dit", "train the pixel-space class-conditional DiT");
  add_common(*dit_cmd, dit_opts);
  dit_cmd->add_option("--config", config_path, "DiT config JSON (in_channels 3, num_classes 10)")->required();
  dit_cmd->add_option("--class-dropout", class_dropout, "probability of the null label (for guidance)")->capture_default_str();
  std::string init_weights;
  dit_cmd->add_option("--init-weights", init_weights,
                      "start from these DiT weights (e.g. the shipped EMA) instead of DiT's initialisation; a fresh "
                      "optimizer and schedule (ignored when --resume finds a checkpoint)");
  dit_cmd->add_option("--samples", samples_path, "write a DDIM-50, guidance-4 sample grid (10 per class) of the EMA model");
  auto* cls_cmd = app.add_subcommand("classifier", "train the shapes10 classifier (accuracy and Frechet-distance features)");
  add_common(*cls_cmd, cls_opts);
  cls_cmd->add_option("--width", width, "channels of the first conv (features: 4 x width)")->capture_default_str();
  std::string data_grid;
  uint64_t grid_seed = kShapesReferenceSeed;
  auto* data_cmd = app.add_subcommand("dataset", "write a grid of shapes10 images (10 per class, one class per column)");
  data_cmd->add_option("--output", data_grid, "PNG to write")->required();
  data_cmd->add_option("--data-seed", grid_seed, "stream seed (default: the held-out reference stream)");
  std::string export_ckpt, export_out, export_which = "ema";
  auto* export_cmd = app.add_subcommand("export", "write the EMA weights of a DiT training checkpoint (e.g. mid-run) as safetensors");
  export_cmd->add_option("--config", config_path, "the DiT config JSON the checkpoint was trained with")->required();
  export_cmd->add_option("--checkpoint", export_ckpt, "checkpoint written by 'train_shapes dit'")->required();
  export_cmd->add_option("--output", export_out, "safetensors to write")->required();
  export_cmd->add_option("--weights", export_which, "ema (the EMA, as training writes) or model (the raw weights)")
      ->check(CLI::IsMember({"ema", "model"}))->capture_default_str();
  std::string loss_log, loss_png, loss_title = "shapes10 DiT training loss";
  auto* plot_cmd = app.add_subcommand("plot-loss", "draw a loss log (step,loss,lr,seconds CSV) as a PNG line chart");
  plot_cmd->add_option("--log", loss_log, "the CSV train_shapes wrote")->required();
  plot_cmd->add_option("--output", loss_png, "PNG to write")->required();
  plot_cmd->add_option("--title", loss_title, "chart title")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    if (plot_cmd->parsed()) {
      write_png(loss_png, plot_loss(loss_log, loss_title));
      std::fprintf(stderr, "wrote %s\n", loss_png.c_str());
      return 0;
    }
    if (export_cmd->parsed()) {
      const DiTConfig config = DiTConfig::from_json_file(config_path);
      DiT ema(config);
      cli::require_file(export_ckpt, "--checkpoint");
      auto archive = load_checkpoint(export_ckpt, c10::kCPU);
      load_module(*ema, archive, export_which, export_ckpt);
      at::Tensor step;
      archive.read("step", step);
      write_safetensors(export_out, named_tensors(*ema, at::kHalf),
                        {{"ditcache.model", "dit"}, {"ditcache.config", config.to_json()}, {"ditcache.dataset", "shapes10"},
                         {"ditcache.training_step", std::to_string(step.item<int64_t>())}});
      std::fprintf(stderr, "wrote %s (%s at step %lld)\n", export_out.c_str(), export_which.c_str(),
                   static_cast<long long>(step.item<int64_t>()));
      return 0;
    }
    if (data_cmd->parsed()) {
      write_png(data_grid, make_grid(to_uint8_images(shapes_batch(grid_seed, 0, 100).images), kShapesClasses, 2, 255));
      std::fprintf(stderr, "wrote %s\n", data_grid.c_str());
      return 0;
    }

    const bool is_dit = dit_cmd->parsed();
    TrainOptions& o = is_dit ? dit_opts : cls_opts;
    if (o.steps < 1 || o.batch < 1 || o.lr <= 0 || o.ema < 0 || o.ema >= 1 || o.warmup < 1 || o.grad_clip < 0) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("bad training options: steps {} batch {} lr {} ema {} warmup {} grad-clip {} (need steps, "
                              "batch, warmup >= 1, lr > 0, 0 <= ema < 1, grad-clip >= 0)", o.steps, o.batch, o.lr, o.ema,
                              o.warmup, o.grad_clip));
    }
    if (is_dit && !(class_dropout >= 0 && class_dropout < 1)) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("--class-dropout {}: expected [0, 1)", class_dropout));
    }
    if (o.data_seed == kShapesReferenceSeed) {
      throw Error(ErrorCode::kInvalidArgument, fmt::format("--data-seed {}: that is the held-out reference stream the "
                                                           "metrics compare against; train on another", o.data_seed));
    }
    if (o.time_budget < 0 || (o.time_budget > 0 && o.warmup < 120)) {
      throw Error(ErrorCode::kInvalidArgument,
                  fmt::format("--time-budget {} with --warmup {}: expected a budget >= 0 and, with a budget, a warm-up of "
                              ">= 120 steps (the speed is measured inside the warm-up, before the schedule's length "
                              "matters)", o.time_budget, o.warmup));
    }
    o.device_ = parse_device(o.device, "--device");
    if (o.device_.is_cuda()) at::globalContext().setFloat32MatmulPrecision("high");
    if (o.log_path.empty()) o.log_path = o.output + ".loss.csv";
    if (o.checkpoint.empty()) o.checkpoint = o.output + ".ckpt";
    cli::set_threads(o.threads);
    std::string command;
    for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
    at::manual_seed(o.seed);

    if (is_dit) {
      DiTConfig config = DiTConfig::from_json_file(config_path);
      if (config.in_channels != 3 || config.num_classes != kShapesClasses || config.input_size != 32) {
        throw Error(ErrorCode::kInvalidArgument,
                    fmt::format("{}: shapes10 needs in_channels 3, input_size 32 and num_classes {}; got {}, {} and {}",
                                config_path, kShapesClasses, config.in_channels, config.input_size, config.num_classes));
      }
      DiT model(config), ema(config);
      init_dit_weights(*model);
      if (!init_weights.empty()) {
        cli::require_file(init_weights, "--init-weights file");
        model->load(*open_weights(init_weights));  // strict: the architecture must be the config's
      }
      model->to(o.device_);
      ema->to(o.device_);
      model->train();
      const GaussianDiffusion diffusion("1000");
      auto loss_of = [&](const ShapesBatch& batch, at::Generator& gen) {
        const int64_t B = batch.images.size(0);
        // Random draws come from the step's CPU generator on every device (the same numbers).
        auto drop = (at::rand({B}, gen) < class_dropout).to(o.device_);
        auto y = at::where(drop, at::full_like(batch.labels, config.num_classes), batch.labels);
        auto k = at::randint(0, 1000, {B}, gen, at::TensorOptions().dtype(at::kLong)).to(o.device_);
        auto noise = at::randn(batch.images.sizes(), gen, at::TensorOptions().dtype(at::kFloat)).to(o.device_);
        auto x_t = diffusion.q_sample(batch.images, k, noise);
        return diffusion.training_loss(model->forward(x_t, k, y), batch.images, x_t, k, noise).loss.mean();
      };
      train(*model, dit_opts, loss_of, "dit", *ema);
      ema->eval();
      write_safetensors(o.output, named_tensors(*ema, at::kHalf),
                        {{"ditcache.model", "dit"}, {"ditcache.config", config.to_json()},
                         {"ditcache.dataset", "shapes10"}, {"ditcache.training_command", command}});
      std::fprintf(stderr, "wrote %s\n", o.output.c_str());
      if (!samples_path.empty()) {
        DiTSampleOptions sample;
        for (int r = 0; r < 10; ++r)
          for (int c = 0; c < kShapesClasses; ++c) sample.class_labels.push_back(c);
        sample.sampler = SamplerKind::kDDIM;
        sample.steps = 50;
        sample.guidance_scale = 4.0;
        auto images = to_uint8_images(sample_dit(ema, sample));
        write_png(samples_path, make_grid(images, kShapesClasses, 2, 255));
        std::fprintf(stderr, "wrote %s\n", samples_path.c_str());
      }
    } else {
      ShapesClassifier model(kShapesClasses, width), ema(kShapesClasses, width);
      model->to(o.device_);
      ema->to(o.device_);
      model->train();
      auto loss_of = [&](const ShapesBatch& batch, at::Generator& gen) {
        // Light augmentation: generated samples are a little blurrier and noisier than renders.
        auto noise = at::randn(batch.images.sizes(), gen, at::TensorOptions().dtype(at::kFloat)).to(o.device_) * 0.05;
        return at::cross_entropy_loss(model->forward(batch.images + noise), batch.labels);
      };
      train(*model, cls_opts, loss_of, "classifier", *ema);
      ema->eval();
      at::NoGradGuard no_grad;
      auto held_out = shapes_batch(kShapesReferenceSeed, 0, 2000);
      const double accuracy =
          (ema->forward(held_out.images.to(o.device_)).argmax(1).cpu() == held_out.labels).to(at::kFloat).mean().item<double>();
      write_safetensors(o.output, named_tensors(*ema, at::kFloat),
                        {{"ditcache.model", "shapes-classifier"}, {"ditcache.dataset", "shapes10"},
                         {"ditcache.held_out_accuracy", fmt::format("{:.4f}", accuracy)},
                         {"ditcache.training_command", command}});
      std::fprintf(stderr, "wrote %s (held-out accuracy %.2f%% on 2000 reference images)\n", o.output.c_str(), 100 * accuracy);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_shapes: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
