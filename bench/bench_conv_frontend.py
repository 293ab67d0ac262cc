#!/usr/bin/env python
"""The wav2vec2-large conv feature encoder (PESTalk's frozen front end) eager vs ``torch.compile``.

    python bench/bench_conv_frontend.py --seconds 10 --threads 1

Prints the best-of-N wall time of each, their ratio, the compile time and the largest output difference.
Random weights (speed does not depend on them). ``torch.compile`` needs a C++ compiler on the CPU.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model


def best_time(fn, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        fn(x)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # wav2vec2-large's front end: 7 conv layers of 512 channels with LayerNorm (feat_extract_norm="layer")
    config = Wav2Vec2Config(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True, num_hidden_layers=1)
    encoder = Wav2Vec2Model(config).feature_extractor.eval()
    x = torch.randn(1, int(args.seconds * 16000))
    eager = best_time(encoder, x, args.repeats)
    start = time.perf_counter()
    compiled = torch.compile(encoder)
    with torch.no_grad():
        diff = float((compiled(x) - encoder(x)).abs().max())
    compile_s = time.perf_counter() - start
    fast = best_time(compiled, x, args.repeats)
    print(f"conv front end, {args.seconds:g} s of audio, {args.threads} thread(s): eager {eager:.3f} s, "
          f"compiled {fast:.3f} s, ratio {fast / eager:.2f}, compile {compile_s:.1f} s, max |Δ| {diff:.1e}")


if __name__ == "__main__":
    main()
