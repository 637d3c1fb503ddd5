// ditcache-bench: the benchmark grid runner, in the manner of llama-bench. Comma lists on every
// axis; each cell timed over repetitions after warm-up; a Markdown table on stdout, CSV and JSON
// files, a speedup-vs-fidelity plot per model and a token heat map per cached row.
//
//   ditcache-bench                                   # the embedded shapes10 model, none/fora/toca/random
//   ditcache-bench -p "none;toca:ratio=0.1|0.3|0.5" --quality 500 -o out/bench
//   ditcache-bench -m DiT-XL/2 --random-weights -s 50 -b 1 -r 1 -p "none;fora;toca"
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "common/cli_util.h"
#include "ditcache/bench.h"
#include "ditcache/image.h"
#include "ditcache/log.h"

using namespace ditcache;

namespace {

// "DiT-XL/2" -> "DiT-XL-2", "toca:ratio=0.3,interval=3" -> "toca-ratio-0.3-interval-3".
std::string slug(const std::string& text) {
  std::string out;
  for (char c : text) out += std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ? c : '-';
  return out;
}

// Whether a model has rows besides the uncached reference (what the speedup plot draws).
bool has_cached_rows(const std::vector<BenchRow>& rows, const std::string& model) {
  return std::any_of(rows.begin(), rows.end(), [&](const BenchRow& r) { return r.model == model && r.spec != "none"; });
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ditcache-bench: time models x policies x steps x batch sizes x devices, with FLOPs, memory, fidelity "
               "and (embedded model) sample quality."};
  BenchOptions o;
  std::string models = "shapes10", steps = "50", batches = "10", devices = "cpu", out_dir = "bench-out";
  std::vector<std::string> policy_args;
  int threads = 0;
  bool quiet = false;
  app.add_option("-m,--models", models, "comma list: shapes10 (embedded), weight files, or presets with --random-weights")->capture_default_str();
  app.add_option("-p,--policies", policy_args,
                 "policy specs, ';'-separated or repeated (options keep their commas); '|' sweeps a value: "
                 "toca:ratio=0.1|0.3 [default: none;fora;toca;random]");
  app.add_option("-s,--steps", steps, "comma list of sampling step counts")->capture_default_str();
  app.add_option("-b,--batch", batches, "comma list of images per run")->capture_default_str();
  app.add_option("-d,--devices", devices, "comma list: cpu, cuda, cuda:N")->capture_default_str();
  app.add_option("-r,--reps", o.repetitions, "timed repetitions per row")->capture_default_str();
  app.add_option("--warmup", o.warmup, "untimed runs first (0: none; the first run, timed or not, records outputs and token counts)")->capture_default_str();
  app.add_option("--sampler", o.sampler, "ddim or ddpm")->capture_default_str();
  app.add_option("--cfg-scale", o.guidance_scale, "classifier-free guidance (<= 1: off)")->capture_default_str();
  app.add_option("--dtype", o.dtype, "fp32, fp16 or bf16")->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the noise (and of random weights)")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads (0: LibTorch's default)")->capture_default_str();
  app.add_flag("--random-weights", o.random_weights, "preset models get seeded random weights (speed-only rows)");
  app.add_option("--vae", o.vae, "SD VAE weights for latent models: image PSNR/SSIM");
  app.add_option("--quality", o.quality_samples, "shapes10: images per row for accuracy / Frechet distance / IS (0: off)")->capture_default_str();
  app.add_option("--reference", o.reference_samples, "real images behind the Frechet reference statistics")->capture_default_str();
  app.add_option("--classifier", o.classifier, "shapes10 classifier weights (default: the embedded one)");
  app.add_option("-o,--output-dir", out_dir, "where bench.{md,csv,json} and the PNG plots go")->capture_default_str();
  app.add_flag("-q,--quiet", quiet, "no progress line");
  CLI11_PARSE(app, argc, argv);

  try {
    cli::set_threads(threads);
    cli::require_writable_dir(out_dir, "--output-dir");
    o.models = cli::split(models, ',', "--models");
    o.steps = cli::parse_int_list(steps, "--steps");
    o.batches = cli::parse_int_list(batches, "--batch");
    o.devices = cli::split(devices, ',', "--devices");
    o.policies.clear();
    if (policy_args.empty()) policy_args = {"none;fora;toca;random"};
    for (const auto& arg : policy_args) {
      for (const auto& spec : cli::split(arg, ';', "--policies")) {
        for (const auto& expanded : expand_policy_sweep(spec)) o.policies.push_back(expanded);
      }
    }
    const auto start = std::chrono::steady_clock::now();
    if (!quiet) {
      o.progress = [&](const std::string& line) {
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        std::fprintf(stderr, "\r\033[K%6.0fs %s", s, line.c_str());
        std::fflush(stderr);
      };
    }
    auto rows = run_bench(o);
    if (!quiet) std::fprintf(stderr, "\r\033[K");

    const auto table = bench_markdown(rows);
    std::string command;
    for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
    cli::write_text_file(out_dir + "/bench.md", fmt::format("`{}` ({} threads)\n\n{}", command, at::get_num_threads(), table));
    cli::write_text_file(out_dir + "/bench.csv", bench_csv(rows));
    cli::write_text_file(out_dir + "/bench.json", bench_json(rows));
    std::vector<std::string> written = {"bench.md", "bench.csv", "bench.json"};
    std::vector<std::string> seen;
    for (const auto& row : rows) {
      if (std::find(seen.begin(), seen.end(), row.model) == seen.end() && has_cached_rows(rows, row.model)) {
        seen.push_back(row.model);
        const auto name = fmt::format("speedup_fidelity_{}.png", slug(row.model));
        write_png(out_dir + "/" + name, plot_speedup_fidelity(rows, row.model));
        written.push_back(name);
      }
      if (row.spec != "none" && row.token_share.defined()) {
        const auto name = fmt::format("heatmap_{}_{}_s{}_b{}_{}.png", slug(row.model), slug(row.spec), row.steps,
                                      row.batch, slug(row.device));
        write_png(out_dir + "/" + name, plot_token_heatmap(row));
        written.push_back(name);
      }
    }
    std::cout << table;
    std::fprintf(stderr, "wrote %zu files to %s/ in %.0fs (%d threads)\n", written.size(), out_dir.c_str(),
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), at::get_num_threads());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nditcache-bench: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
