#!/usr/bin/env python3
"""Regenerates every committed test fixture under tests/fixtures/ from the reference Python
implementations. CI never runs this; it needs python3 with torch, safetensors, diffusers and timm,
and a checkout of facebookresearch/DiT for the original DiT numerics:

    pip install torch safetensors diffusers timm
    git clone https://github.com/facebookresearch/DiT /tmp/DiT
    python3 scripts/make_fixtures.py --dit-repo /tmp/DiT            # everything
    python3 scripts/make_fixtures.py --only io,vae                    # a subset (dit needs --dit-repo)
"""
import argparse
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "fixtures"))
fixtures = os.path.join(here, "..", "tests", "fixtures")

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--dit-repo", help="checkout of facebookresearch/DiT (models.py, diffusion/)")
ap.add_argument("--only", default="io,vae,dit", help="comma-separated subset of io, vae, dit")
args = ap.parse_args()

for part in args.only.split(","):
    if part == "io":
        import io_fixtures
        io_fixtures.make(os.path.join(fixtures, "io"))
    elif part == "vae":
        import vae_fixtures
        vae_fixtures.make(os.path.join(fixtures, "vae"))
    elif part == "dit":
        if not args.dit_repo:
            sys.exit("make_fixtures: the dit fixtures need --dit-repo (a checkout of facebookresearch/DiT)")
        sys.path.insert(0, args.dit_repo)
        import dit_fixtures
        dit_fixtures.make(os.path.join(fixtures, "dit"), args.dit_repo)
    else:
        sys.exit(f"make_fixtures: unknown part '{part}'; expected io, vae or dit")
    print(f"regenerated tests/fixtures/{part}")
