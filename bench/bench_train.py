#!/usr/bin/env python
"""Training throughput of PESTalk on this machine: samples/s and seconds of audio per second.

    python bench/bench_train.py                       # small (default model) + paper size, fp32 + bf16
    python bench/bench_train.py --cases small --precisions no --steps 5

Cases: ``small`` = the model section of ``configs/default_small.yaml`` (the embedded default model);
``paper`` = paper-size encoders built locally with random weights (wav2vec2-large shape: hidden 1024,
24 layers, 16 heads, FFN 4096, conv 512×7; no download) and the paper-size heads of
``PESTalkModel.from_sub_models_pretrained``. Each step is a full training step (forward with labels,
backward, AdamW, clipping) on a random batch; the first step is a warm-up and not timed. bf16 uses
the same autocast Accelerate applies for ``mixed_precision="bf16"``. One line per case.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch
import yaml

from pestalk_hf import PESTalkConfig, PESTalkModel
from pestalk_hf.training import TrainingConfig, build_model

ROOT = Path(__file__).resolve().parents[1]


def paper_encoder() -> dict:
    """wav2vec2-large-sized sub-config (the shape of both checkpoints the paper uses)."""
    return dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                conv_dim=(512,) * 7, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                feat_extract_norm="layer", do_stable_layer_norm=True, num_conv_pos_embeddings=128,
                num_conv_pos_embedding_groups=16, mask_time_prob=0.0, layerdrop=0.0)


def build(case: str, style_speakers: int = 8) -> PESTalkModel:
    speakers = [f"s{i}" for i in range(style_speakers)]
    if case == "small":
        doc = yaml.safe_load((ROOT / "configs" / "default_small.yaml").read_text())
        return build_model(TrainingConfig(dataset="-", output_dir="-", model={**doc["model"], "style_speakers": speakers}))
    if case == "paper":
        return PESTalkModel(PESTalkConfig(
            content_encoder_config=paper_encoder(), emotion_encoder_config=paper_encoder(), feature_size=256,
            freq_hidden_size=256, freq_num_blocks=4, freq_num_heads=4, decoder_hidden_size=256, decoder_num_heads=4,
            decoder_num_layers=2, decoder_ffn_dim=1024, style_dim=128, voiceprint_dim=256, style_speakers=speakers))
    raise ValueError(f"unknown case {case!r}; use 'small' or 'paper'")


def bench(case: str, precision: str, batch_size: int, seconds: float, steps: int) -> dict:
    torch.manual_seed(0)
    model = build(case).train()
    cfg = model.config
    n = int(seconds * cfg.sampling_rate)
    t = cfg.num_frames(n)
    batch = dict(
        input_values=torch.randn(batch_size, n) * 0.1,
        attention_mask=torch.ones(batch_size, n, dtype=torch.long),
        voiceprint=torch.nn.functional.normalize(torch.randn(batch_size, cfg.voiceprint_dim), dim=-1),
        labels=torch.rand(batch_size, t, cfg.num_blendshapes),
        emotion_labels=torch.randint(0, cfg.num_emotions, (batch_size,)),
        speaker_ids=torch.randint(0, cfg.num_style_speakers, (batch_size,)),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext())
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        if i:
            times.append(time.perf_counter() - t0)
    per_step = sum(times) / len(times)
    return {"case": case, "precision": precision, "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "trainable_M": round(sum(p.numel() for p in params) / 1e6, 1), "batch": batch_size, "clip_s": seconds,
            "s_per_step": round(per_step, 3), "samples_per_s": round(batch_size / per_step, 3),
            "audio_s_per_s": round(batch_size * seconds / per_step, 3), "threads": torch.get_num_threads(),
            "loss": round(loss.item(), 4)}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", nargs="+", default=["small", "paper"], choices=["small", "paper"])
    p.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=["no", "bf16"])
    p.add_argument("--steps", type=int, default=2, help="timed steps per case (after one warm-up step)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (1 is fastest on a shared CPU)")
    p.add_argument("--small-batch", type=int, default=8)
    p.add_argument("--paper-batch", type=int, default=2)
    p.add_argument("--seconds", type=float, default=2.5, help="clip length of the random batch")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for case in args.cases:
        for precision in args.precisions:
            batch = args.small_batch if case == "small" else args.paper_batch
            row = bench(case, precision, batch, args.seconds, args.steps)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
