"""Inference speed and memory of PESTalk on this machine's CPU.

Prints one line per case: config, audio length, dtype, real-time factor (wall / audio seconds; < 1 is
faster than real time) and peak resident memory above the loaded weights. Each case runs in a fresh
subprocess so peaks do not mix. Random weights (speed does not depend on their values).

    python bench/bench_inference.py                 # the README table (tiny/small/paper; 10 s, 60 s; fp32, bf16)
    python bench/bench_inference.py --quick         # tiny + small only
    python bench/bench_inference.py --case paper --seconds 600 --dtype fp32   # one case
    (--dtype int8: dynamic int8 quantisation of the Linear layers, the CPU fast path)

Paper-size encoders: both wav2vec2-large (24 layers, 1024 hidden). The paper's two checkpoints are
fine-tuned from the same wav2vec2 with the conv feature encoder frozen, so their conv weights are equal
and PESTalk computes the conv features once; ``--distinct-conv`` measures the case where they differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

CASES = ("tiny", "small", "paper", "ref")  # ref: two plain wav2vec2-large run whole (the baseline of the issue)


def wav2vec2_large() -> dict:
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(
        hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
        conv_dim=(512,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True,
        num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
    ).to_dict()


def small_encoder() -> dict:
    from pestalk_hf.modeling.configuration_pestalk import tiny_wav2vec2_config

    cfg = tiny_wav2vec2_config(hidden_size=192, num_layers=4, num_heads=4)
    cfg.update(conv_dim=(128,) * 7, intermediate_size=512, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=8)
    return cfg


def build(case: str, distinct_conv: bool = False):
    import torch

    from pestalk_hf import PESTalkConfig, PESTalkModel

    if case == "tiny":
        config = PESTalkConfig()
    elif case == "small":
        config = PESTalkConfig(content_encoder_config=small_encoder(), emotion_encoder_config=small_encoder(),
                               freq_hidden_size=96, decoder_hidden_size=128, decoder_ffn_dim=256)
    elif case == "paper":
        config = PESTalkConfig(
            content_encoder_config=wav2vec2_large(), emotion_encoder_config=wav2vec2_large(),
            freq_hidden_size=256, freq_num_blocks=4, freq_num_heads=4, decoder_hidden_size=256,
            decoder_ffn_dim=1024, voiceprint_dim=512,
        )
    else:
        raise ValueError(case)
    torch.manual_seed(0)
    model = PESTalkModel(config).eval()
    if not distinct_conv:
        model.emotion_extractor.temporal.wav2vec2.feature_extractor.load_state_dict(
            model.content_encoder.stream.wav2vec2.feature_extractor.state_dict()
        )
    return model


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_reference(seconds: float) -> dict:
    """Two plain wav2vec2-large encoders on the whole clip: the yardstick PESTalk's paper size is compared
    with in the same run (machine load changes absolute numbers several-fold; ratios hold)."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    encoders = [Wav2Vec2Model(Wav2Vec2Config(**wav2vec2_large())).eval() for _ in range(2)]
    audio = torch.randn(1, int(seconds * 16000)) * 0.1
    with torch.inference_mode():
        for enc in encoders:
            enc(audio[:, :16000])
        start = time.perf_counter()
        for enc in encoders:
            enc(audio)
        wall = time.perf_counter() - start
    return {"case": "ref", "params_M": round(sum(p.numel() for e in encoders for p in e.parameters()) / 1e6, 1),
            "seconds": seconds, "dtype": "fp32", "distinct_conv": True, "wall_s": round(wall, 2),
            "rtf": round(wall / seconds, 3), "weights_MB": 0, "peak_above_weights_MB": 0,
            "threads": torch.get_num_threads()}


def run_case(case: str, seconds: float, dtype: str, distinct_conv: bool) -> dict:
    import torch

    if case == "ref":
        return run_reference(seconds)
    from pestalk_hf.pipeline import quantize_int8

    model = build(case, distinct_conv)
    n_params = sum(p.numel() for p in model.parameters())
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32}[dtype]
    model.to(torch_dtype)
    if dtype == "int8":
        model = quantize_int8(model)
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        model.animate(torch.randn(16000, generator=gen).to(torch_dtype) * 0.1)  # warm-up
        audio = (torch.randn(int(seconds * 16000), generator=gen) * 0.1).to(torch_dtype)
        base = rss_bytes()
        peak = [base]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], rss_bytes())
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        model.animate(audio)
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        feature_error = None if dtype == "fp32" else feature_rel_error(model, build(case, distinct_conv), audio[:160000])
    return {
        "case": case, "params_M": round(n_params / 1e6, 1), "seconds": seconds, "dtype": dtype,
        "distinct_conv": distinct_conv, "wall_s": round(wall, 2), "rtf": round(wall / seconds, 3),
        "weights_MB": round(base / 2**20), "peak_above_weights_MB": round((peak[0] - base) / 2**20),
        "threads": torch.get_num_threads(), "feature_rel_error": feature_error,
    }


def feature_rel_error(model, reference, audio) -> float:
    """How far a reduced-precision model's encoder features (E and C, the decoders' inputs) are from the
    fp32 model's on the same audio: ‖Δ‖ / ‖fp32‖ over both. Blendshapes would say nothing here: with
    random weights the zero-initialised output layers make them constant."""
    import torch

    mask = torch.ones(1, reference.config.num_frames(audio.shape[-1]), dtype=torch.bool)
    got = model.encode(audio[None].to(model.dtype), mask)
    want = reference.encode(audio[None].float(), mask)
    num = sum((g.float() - w).pow(2).sum() for g, w in zip(got, want))
    return round(float((num / sum(w.pow(2).sum() for w in want)).sqrt()), 4)


def spawn(case: str, seconds: float, dtype: str, distinct_conv: bool) -> dict:
    cmd = [sys.executable, __file__, "--case", case, "--seconds", str(seconds), "--dtype", dtype, "--json"]
    if distinct_conv:
        cmd.append("--distinct-conv")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        return {"case": case, "seconds": seconds, "dtype": dtype, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(r: dict) -> str:
    if "error" in r:
        return f"{r['case']:<6} {r['seconds']:>6.0f} s  {r['dtype']:<5} ERROR {r['error']}"
    conv = " distinct-conv" if r["distinct_conv"] and r["case"] != "ref" else ""
    if r["case"] == "ref":
        return f"ref    {r['params_M']:>6.1f}M {r['seconds']:>6.0f} s  fp32  RTF {r['rtf']:>6.3f}  wall {r['wall_s']:>7.2f} s  (two plain wav2vec2-large, whole clip)"
    err = "" if r.get("feature_rel_error") is None else f"  features vs fp32: rel. error {r['feature_rel_error']:.4f}"
    return (f"{r['case']:<6} {r['params_M']:>6.1f}M {r['seconds']:>6.0f} s  {r['dtype']:<5} RTF {r['rtf']:>6.3f}  "
            f"wall {r['wall_s']:>7.2f} s  peak +{r['peak_above_weights_MB']:>5} MB above {r['weights_MB']} MB{conv}{err}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dtype", choices=("fp32", "bf16", "int8"), default="fp32")
    parser.add_argument("--distinct-conv", action="store_true")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.case:
        result = run_case(args.case, args.seconds, args.dtype, args.distinct_conv)
        print(json.dumps(result) if args.json else fmt(result))
        return
    plan = [(c, s, d, False) for c in ("tiny", "small") for s in (10, 60) for d in ("fp32", "bf16")]
    if not args.quick:
        plan += [("ref", 10, "fp32", True), ("paper", 10, "fp32", False), ("paper", 60, "fp32", False), ("paper", 10, "int8", False),
                 ("paper", 60, "int8", False), ("paper", 10, "fp32", True), ("paper", 10, "bf16", False), ("paper", 60, "bf16", False),
                 ("paper", 600, "fp32", False)]
    results = []
    for case in plan:
        results.append(spawn(*case))
        print(fmt(results[-1]), flush=True)
    ref = next((r for r in results if r.get("case") == "ref" and "rtf" in r), None)
    if ref:
        for r in results:
            if r.get("case") == "paper" and "rtf" in r:
                print(f"ratio paper {r['seconds']:.0f} s {r['dtype']}{' distinct-conv' if r['distinct_conv'] else ''} / "
                      f"two plain wav2vec2-large on 10 s (per audio second): {r['rtf'] / ref['rtf']:.2f}")


if __name__ == "__main__":
    main()
