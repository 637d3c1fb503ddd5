#!/usr/bin/env python3
"""Regenerates every committed test fixture under tests/fixtures/ from the reference Python
implementations. CI never runs this; it needs python3 with torch, safetensors, diffusers and timm,
a checkout of facebookresearch/DiT for the original DiT numerics, and one of Shenyi-Z/ToCa for the
official ToCa runs; the t5 part needs transformers, sentencepiece and protobuf (and diffusers,
beautifulsoup4, ftfy for the caption-cleaning cases):

    pip install torch safetensors diffusers timm transformers sentencepiece protobuf beautifulsoup4 ftfy
    git clone https://github.com/facebookresearch/DiT /tmp/DiT
    git clone https://github.com/Shenyi-Z/ToCa /tmp/ToCa
    python3 scripts/make_fixtures.py --dit-repo /tmp/DiT --toca-repo /tmp/ToCa   # everything
    python3 scripts/make_fixtures.py --only io,vae,t5                 # a subset (dit needs --dit-repo)
    python3 scripts/make_fixtures.py --only pixart                    # PixArt-α (diffusers only)
"""
import argparse
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "fixtures"))
fixtures = os.path.join(here, "..", "tests", "fixtures")

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--dit-repo", help="checkout of facebookresearch/DiT (models.py, diffusion/)")
ap.add_argument("--toca-repo", help="checkout of Shenyi-Z/ToCa (DiT-ToCa/, PixArt-alpha-ToCa/) for the ToCa parity runs")
ap.add_argument("--only", default="io,vae,dit,toca,t5,pixart",
                help="comma-separated subset of io, vae, dit, toca, t5, pixart")
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
        import training_fixtures
        dit_fixtures.make(os.path.join(fixtures, "dit"), args.dit_repo)
        training_fixtures.make(os.path.join(fixtures, "dit"))
    elif part == "toca":
        if not args.toca_repo:
            sys.exit("make_fixtures: the toca fixtures need --toca-repo (a checkout of Shenyi-Z/ToCa)")
        import toca_fixtures
        import toca_pixart_fixtures
        toca_fixtures.make(os.path.join(fixtures, "toca"), args.toca_repo)          # DiT-ToCa
        toca_pixart_fixtures.make(os.path.join(fixtures, "toca"), args.toca_repo)   # PixArt-alpha-ToCa
    elif part == "t5":
        import t5_fixtures
        t5_fixtures.make(os.path.join(fixtures, "t5"))
    elif part == "pixart":
        import pixart_fixtures
        pixart_fixtures.make(os.path.join(fixtures, "pixart"))
    else:
        sys.exit(f"make_fixtures: unknown part '{part}'; expected io, vae, dit, toca, t5 or pixart")
    print(f"regenerated tests/fixtures/{part}")
