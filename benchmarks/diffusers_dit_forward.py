"""The same measurement as bench_dit_forward, on diffusers' DiTTransformer2DModel in PyTorch: an
uncached DiT forward on random weights, same config, batch, dtype and thread count."""
import argparse
import json
import time

import torch
from diffusers import DiTTransformer2DModel

SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}

ap = argparse.ArgumentParser()
ap.add_argument("--config", default="DiT-XL/2")
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--warmup", type=int, default=1)
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--json")
a = ap.parse_args()
size, rest = a.config.removeprefix("DiT-").split("/")
patch, _, res = rest.partition("-")
depth, hidden, heads = SIZES[size]
latent = int(res or 256) // 8
torch.set_num_threads(a.threads)
torch.manual_seed(0)
model = DiTTransformer2DModel(num_attention_heads=heads, attention_head_dim=hidden // heads, in_channels=4,
                              out_channels=8, num_layers=depth, sample_size=latent, patch_size=int(patch),
                              num_embeds_ada_norm=1000).eval()
x = torch.randn(a.batch, 4, latent, latent)
t = torch.full((a.batch,), 500)
y = torch.arange(a.batch) % 1000
times = []
with torch.no_grad():
    for i in range(a.warmup + a.reps):
        start = time.perf_counter()
        model(x, timestep=t, class_labels=y).sample.sum().item()
        if i >= a.warmup:
            times.append((time.perf_counter() - start) * 1000)
times.sort()
median = times[len(times) // 2]
print(f"| diffusers {__import__('diffusers').__version__} (PyTorch {torch.__version__}) | {a.config} | {a.batch} | fp32 | "
      f"{torch.get_num_threads()} | {median:.1f} | {times[0]:.1f} | {times[-1]:.1f} |")
if a.json:
    json.dump({"impl": "diffusers", "config": a.config, "batch": a.batch, "threads": torch.get_num_threads(),
               "median_ms": median, "min_ms": times[0], "max_ms": times[-1], "reps": a.reps}, open(a.json, "w"), indent=2)
