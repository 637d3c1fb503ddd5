// Builds a DiT-S/8 from a preset, runs one forward pass and a two-step DDIM loop, and checks the
// shapes: proof that the installed headers and library are complete and usable.
#include <iostream>

#include <ditcache/ditcache.h>

int main() {
  auto config = ditcache::DiTConfig::preset("DiT-S/8-256");
  config.depth = 1;
  ditcache::DiT model(config);
  model->eval();
  ditcache::DiTSampleOptions options;
  options.class_labels = {3};
  options.sampler = ditcache::SamplerKind::kDDIM;
  options.respacing = "ddim2";
  auto latents = ditcache::sample_dit(model, options);
  if (latents.sizes() != at::IntArrayRef({1, 4, 32, 32})) {
    std::cerr << "unexpected latent shape " << latents.sizes() << "\n";
    return 1;
  }
  try {
    ditcache::DiTConfig::preset("DiT-Q/3");
    return 1;
  } catch (const ditcache::Error& e) {
    std::cout << "consumer ok: " << latents.sizes() << "; error path ok\n";
  }
  return 0;
}
