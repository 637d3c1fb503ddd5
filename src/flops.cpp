#include "ditcache/flops.h"

namespace ditcache::flops {

double attention(int64_t rows, int64_t queries, int64_t keys, int64_t hidden, int64_t heads) {
  const double B = static_cast<double>(rows), n = static_cast<double>(queries), N = static_cast<double>(keys);
  const double C = static_cast<double>(hidden), H = static_cast<double>(heads), d = C / H;
  return 2 * B * n * C * C          // q projection
         + 2 * B * N * C * 2 * C    // k and v projections
         + B * H * n * d            // q scaling
         + 2 * B * H * n * N * d    // Q Kᵀ
         + 5 * B * H * n * N        // softmax
         + 2 * B * H * n * N * d    // P V
         + 2 * B * n * C * C;       // output projection
}

double mlp(int64_t rows, int64_t tokens, int64_t hidden, int64_t mlp_hidden) {
  const double B = static_cast<double>(rows), n = static_cast<double>(tokens);
  const double C = static_cast<double>(hidden), M = static_cast<double>(mlp_hidden);
  return 2 * 2 * B * n * C * M + 6 * B * n * M;
}

double layer_norm(int64_t rows, int64_t tokens, int64_t hidden) {
  return static_cast<double>(rows) * static_cast<double>(tokens) * static_cast<double>(hidden);
}

double ada_ln(int64_t rows, int64_t hidden, int64_t chunks) {
  const double B = static_cast<double>(rows), C = static_cast<double>(hidden);
  return B * C + static_cast<double>(chunks) * B * C * C;
}

}  // namespace ditcache::flops
