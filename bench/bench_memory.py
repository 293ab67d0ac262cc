"""Peak memory of the offline path (file → audio → voiceprint → model → animation) against audio length.

    python bench/bench_memory.py [--minutes 1 10 60] [--model DIR] [--workdir DIR]
    python bench/bench_memory.py --hostile          # server-side cost of refusing the hostile uploads

For each length a speech-like WAV is generated (block by block, so the generator itself needs no
memory), then a **fresh process** loads the pipeline, warms it up on 2 s of audio, resets the kernel's
peak-RSS counter (``/proc/self/clear_refs``) and animates the file with ``pipe(path)``, i.e. exactly
what ``pestalk animate --max-seconds …`` does before writing files. Printed per length: the RSS with the model loaded
(the baseline), the peak RSS during the call, the peak *above* the baseline, wall time; then the ratio
of the longest to the shortest length's peak above baseline (bounded memory → close to 1 plus the
unavoidable O(N) part: the 16 kHz waveform itself, kept as int16 PCM at 115 MB per hour, and the frame features).

Issue 11's target: ≤ 1 GB above the weights at any length.

``--hostile`` measures the Space's side of issue 11's hostile uploads (``tests/hostile_payloads.py``, the
same files ``tests/test_security.py`` refuses): for each, a fresh process builds the Space's click handler
with the model, animates one 2 s clip (so lazy imports, the default head and the renderer are paid for),
resets the peak-RSS counter and hands the handler the upload, exactly as Gradio would after the upload
arrived. Printed: the message the visitor sees and the peak RSS above that warm baseline (target: none
adds more than 300 MB; the old code added 4.4 GB for the FLAC and 3.7 GB for the GLB).

The audio is synthetic but speech-like, so the VAD, the voiceprint and the model do real work on it:
voiced syllables (~4 per second) of a harmonic source with a random, gliding f0 (90–240 Hz) shaped by
two moving formants, unvoiced noise bursts, and pauses of 0.2–0.8 s, plus a faint noise floor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # --hostile uses tests/ (payloads, Space loader)

SR = 16000


def _syllable(rng: np.random.Generator) -> np.ndarray:
    """One voiced syllable: harmonics of a gliding f0 under two formant bumps, with an attack/decay."""
    n = int(rng.uniform(0.12, 0.32) * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(90, 240) * (1 + rng.uniform(-0.15, 0.15) * t / t[-1])
    phase = 2 * np.pi * np.cumsum(f0) / SR
    f1, f2 = rng.uniform(300, 900), rng.uniform(900, 2600)
    out = np.zeros(n)
    for k in range(1, 30):
        fk = k * f0.mean()
        if fk > SR / 2 - 500:
            break
        gain = np.exp(-((fk - f1) / 180) ** 2) + 0.6 * np.exp(-((fk - f2) / 300) ** 2) + 0.02
        out += gain / k**0.5 * np.sin(k * phase)
    envelope = np.minimum(1, t / 0.02) * np.minimum(1, (t[-1] - t) / 0.04)
    return out * envelope


def speech_like(seconds: float, seed: int = 0, block_seconds: float = 30.0):
    """Yield float32 blocks of speech-like audio, ``seconds`` long in total (see the module docstring)."""
    rng = np.random.default_rng(seed)
    total = int(seconds * SR)
    made = 0
    while made < total:
        pieces, length = [], 0
        while length < block_seconds * SR:
            r = rng.random()
            if r < 0.12:
                piece = np.zeros(int(rng.uniform(0.2, 0.8) * SR))  # pause
            elif r < 0.25:
                piece = rng.normal(0, 0.08, int(rng.uniform(0.04, 0.12) * SR))  # fricative burst
            else:
                piece = _syllable(rng) * rng.uniform(0.15, 0.35)
            pieces.append(piece)
            length += len(piece)
        block = np.concatenate(pieces)[: total - made]
        block = block + rng.normal(0, 1e-3, len(block))  # noise floor
        made += len(block)
        yield np.clip(block, -1, 1).astype(np.float32)


def write_speech(path: Path, seconds: float) -> Path:
    import soundfile as sf

    with sf.SoundFile(path, "w", SR, 1, subtype="PCM_16") as f:
        for block in speech_like(seconds):
            f.write(block)
    return path


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(path: str, model: str | None) -> None:
    """Runs in a fresh process: load, warm up, reset the peak counter, animate ``path``, print JSON."""
    from pestalk_hf.pipeline import load_pipeline

    pipe = load_pipeline(model)
    warm = np.concatenate(list(speech_like(2.0, seed=1)))
    pipe({"array": warm, "sampling_rate": SR})
    baseline = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    import soundfile as sf

    seconds = sf.info(path).duration  # the pipeline's default limit is 1 h; longer runs raise it
    t0 = time.perf_counter()
    anim = pipe(path, max_seconds=max(3600.0, seconds + 60))
    wall = time.perf_counter() - t0
    peak = _rss_kb("VmHWM")
    print(json.dumps({"baseline_mb": baseline / 1024, "peak_mb": peak / 1024, "wall_s": wall,
                      "frames": int(anim.weights.shape[0])}))


HOSTILE_TARGET_MB = 300.0


def _hostile_uploads(folder: Path) -> dict[str, tuple[str, Path]]:
    """name → (which Space input it is uploaded as, file): issue 11's points 1–2."""
    from tests.hostile_payloads import declaring_glb, glb_with, set_flac_total_samples, write_flac_bomb

    bomb = write_flac_bomb(folder / "bomb.flac")
    unknown = folder / "bomb_unknown_length.flac"
    unknown.write_bytes(set_flac_total_samples(bomb.read_bytes(), 0))  # the header no longer tells the length
    return {
        "FLAC 192 kHz × 8 ch × 600 s (954 KB)": ("speech", bomb),
        "same FLAC, length 0 in its header": ("speech", unknown),
        "GLB declaring 2 M vertices, no buffer": ("avatar", declaring_glb(folder, "huge0.glb", 2_000_000, False)),
        "GLB declaring 2 M vertices, 36 B buffer": ("avatar", declaring_glb(folder, "huge1.glb", 2_000_000, True)),
        "GLB image uri /dev/zero": ("avatar", glb_with(folder, "zero.glb", image_uri="/dev/zero")),
        "GLB image uri /proc/self/environ": ("avatar", glb_with(folder, "environ.glb",
                                                                   image_uri="/proc/self/environ")),
        "GLB buffer uri ../../etc/passwd": ("avatar", glb_with(folder, "passwd.glb",
                                                                  extra_buffer_uri="../../etc/passwd")),
    }


def hostile_child(field: str, path: str, model: str | None, workdir: str) -> None:
    """Runs in a fresh process: the Space's handler, warmed up on real work, then given one upload."""
    import soundfile as sf

    import pestalk_hf
    from tests.test_space import load_app

    app = load_app()
    limits = app.SpaceLimits()
    models = app.ModelCache(model or pestalk_hf.DEFAULT_MODEL, limits.max_models)
    animate = app.make_animate(models, app.WorkDirs(limits.output_ttl_seconds, workdir), limits)
    warm = Path(workdir) / "warm.wav"
    sf.write(warm, np.concatenate(list(speech_like(2.0, seed=1))), SR, subtype="PCM_16")
    animate(str(warm), None, "", "auto", 1.0, "auto", True, 1.0)  # the warm baseline: one real request
    baseline = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    speech, avatar = (path, None) if field == "speech" else (str(warm), path)
    t0 = time.perf_counter()
    try:
        animate(speech, avatar, "", "auto", 1.0, "auto", True, 1.0)
        outcome = "ACCEPTED (should have been refused)"
    except Exception as error:  # noqa: BLE001 — what the visitor sees is the measurement
        outcome = f"{type(error).__name__}: {getattr(error, 'message', error)}"
    wall = time.perf_counter() - t0
    print(json.dumps({"baseline_mb": baseline / 1024, "peak_mb": _rss_kb("VmHWM") / 1024, "wall_s": wall,
                      "outcome": outcome}))


def run_hostile(model: str | None, workdir: str | None, env: dict[str, str]) -> None:
    worst = 0.0
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        uploads = _hostile_uploads(Path(tmp))
        for name, (field, path) in uploads.items():
            work = Path(tmp) / f"work_{path.stem}"
            work.mkdir()
            cmd = [sys.executable, __file__, "--hostile-child", field, str(path), "--workdir", str(work)]
            proc = subprocess.run(cmd + (["--model", model] if model else []), capture_output=True, text=True,
                                  env=env)
            if proc.returncode != 0:
                print(f"{name}: FAILED (exit {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
                worst = float("inf")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            above = r["peak_mb"] - r["baseline_mb"]
            worst = max(worst, above)
            print(f"{name:42s} as {field:6s}: +{above:6.1f} MB above the warm server ({r['baseline_mb']:.0f} MB), "
                  f"{r['wall_s']:.2f} s → {r['outcome'][:110]}", flush=True)
    print(f"worst: +{worst:.1f} MB; target ≤ {HOSTILE_TARGET_MB:g} MB per upload: "
          f"{'met' if worst <= HOSTILE_TARGET_MB else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 60])
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded model)")
    parser.add_argument("--workdir", default=None, help="where the generated WAVs go (default: a temp dir)")
    parser.add_argument("--hostile", action="store_true",
                        help="instead: the Space's peak memory while refusing issue 11's hostile uploads")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hostile-child", nargs=2, default=None, metavar=("FIELD", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.model)
        return
    if args.hostile_child:
        hostile_child(*args.hostile_child, args.model, args.workdir)
        return

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    if args.hostile:
        run_hostile(args.model, args.workdir, env)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        results = {}
        for minutes in args.minutes:
            path = write_speech(Path(tmp) / f"speech_{minutes:g}min.wav", minutes * 60)
            cmd = [sys.executable, __file__, "--child", str(path)] + (["--model", args.model] if args.model else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(f"{minutes:g} min: FAILED (exit {proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["above_mb"] = r["peak_mb"] - r["baseline_mb"]
            results[minutes] = r
            path.unlink()
            print(f"{minutes:6g} min: model loaded {r['baseline_mb']:7.0f} MB | peak {r['peak_mb']:7.0f} MB | "
                  f"peak above model {r['above_mb']:7.0f} MB | {r['wall_s']:7.1f} s "
                  f"(RTF {r['wall_s'] / (minutes * 60):.3f}) | {r['frames']} frames", flush=True)
        if len(results) >= 2:
            short, long = min(results), max(results)
            ratio = results[long]["above_mb"] / max(results[short]["above_mb"], 1.0)
            print(f"peak above model, {long:g} min / {short:g} min: {ratio:.2f}× for {long / short:g}× the audio; "
                  f"target ≤ 1024 MB above the model at any length: "
                  f"{'met' if max(r['above_mb'] for r in results.values()) <= 1024 else 'NOT met'}")


if __name__ == "__main__":
    main()
