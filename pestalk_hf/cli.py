"""The ``pestalk`` command: speech → animation files an animator can open.

Exit codes (stable, for scripts):
    0  every input was animated and written
    1  some inputs failed (each is reported; the others were written)
    2  usage error: bad arguments, unknown emotion/speaker/format, unusable model, avatar, device or
       output folder

Errors are one-line messages, never tracebacks. Every input gets its own output names (``good.wav``
and ``good.flac`` in one run become ``good_wav.*`` and ``good_flac.*``), so no file written in a run is
overwritten by the same run; a failure of one input (bad audio, a write error) is reported, leaves no
file of that input behind, and the batch goes on to a summary line. Temporary files of ours that a
killed run left in the output folder (``.good.mp4.k3j9x2ab.mp4``: see :data:`STALE_TEMP_PATTERN`) are
removed when the next run starts, if they are older than that run.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import stat
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac", ".mp4", ".mov", ".webm", ".opus"}
FORMATS = ("csv", "json", "npz", "glb", "mp4", "png")
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # --dtype → torch dtype name
#: Temp names of our atomic writers (:func:`pestalk_hf.exporters.atomic_write`/``atomic_path``:
#: ``tempfile.mkstemp(prefix=".<stem>.<fmt>.", suffix=".tmp" | ".mp4" | ".png")``, 8 random characters).
STALE_TEMP_PATTERN = re.compile(
    r"^\.(?P<target>.+\.(?:" + "|".join(FORMATS) + r"))\.[a-z0-9_]{8}(?:\.tmp|\.mp4|\.png)$"
)
#: A temp file counts as stale only when it was last written this long before the run started: a
#: concurrent run writing into the same folder touches its temp files every few frames.
STALE_TEMP_MIN_AGE_S = 60.0

ANIMATE_EPILOG = """\
formats:
  csv   Live Link Face CSV (iPhone app layout: Timecode, BlendshapeCount, 52 capitalised ARKit
        names, head/eye rotations) — import into Unreal Engine / MetaHuman
  json  weights per frame + fps, names, emotion probabilities and the retrieved style
  npz   numpy arrays (weights (T, 52), names, fps)
  glb   the avatar with a 30 fps morph-target animation — Blender, three.js, any glTF viewer
  mp4   the rendered head with your audio (H.264 + AAC, 30 fps)
  png   a plot of the upper- and lower-face curves

examples:
  pestalk animate speech.wav -o out/
  pestalk animate clips/ -o out/ --format csv,glb --emotion happy --intensity 0.8
  pestalk animate talk.mp3 -o out/ --speaker-style spk03 --blinks --smoothing 1.5
  pestalk animate speech.wav -o out/ --avatar my_character.glb --format glb,mp4
"""


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _smoothing(text: str) -> float:
    from .postprocess import check_smoothing

    try:
        return check_smoothing(float(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err) if "smoothing" in str(err) else
                                         f"expected a number of frames, got {text!r}") from None


def _parse_formats(text: str) -> list[str]:
    if text.strip() == "all":
        return list(FORMATS)
    formats = [f.strip().lower() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"unknown format(s) {unknown or text!r}; choose from {', '.join(FORMATS)} or 'all'")
    return formats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pestalk",
        description="PESTalk: speech → 52 ARKit facial blendshapes at 30 fps, with emotion and personal style.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "animate", help="animate speech files", epilog=ANIMATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Animate one or more speech files (or folders of them) and write animation files.",
    )
    p.add_argument("inputs", nargs="+", type=Path, help="audio/video files or folders (searched for audio files)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--format", type=_parse_formats, default=list(FORMATS), metavar="LIST",
                   help="comma-separated formats or 'all' (default: all): " + ",".join(FORMATS))
    p.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded default model)")
    p.add_argument("--avatar", type=Path, default=None, help="ARKit-rigged .glb for glb/mp4 (default: our procedural head)")
    p.add_argument("--emotion", default=None, help="force an emotion (see `pestalk info`); default: read from the voice")
    p.add_argument("--intensity", type=float, default=None, help="0 = neutral style, 1 = as retrieved, up to 2")
    p.add_argument("--speaker-style", default=None, help="use this library speaker's style (see `pestalk info`)")
    p.add_argument("--style-top-k", type=int, default=None, help="soft style retrieval over the k nearest entries")
    p.add_argument("--smoothing", type=_smoothing, default=0.0,
                   help="Gaussian smoothing sigma in frames, 0–60 (default 0)")
    p.add_argument("--blinks", action="store_true", help="add procedural eye blinks")
    p.add_argument("--no-rest-in-silence", dest="rest_in_silence", action="store_false",
                   help="keep the model's lower face in pauses (default: eased to the model's silence pose "
                        "in quiet stretches of at least 0.15 s)")
    p.add_argument("--max-seconds", type=_positive_seconds, default=3600.0,
                   help="refuse longer inputs (seconds > 0; default 3600)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cpu)")
    p.add_argument("--int8", action="store_true",
                   help="dynamic int8 quantisation of fp32 weights: ~2–3× faster on CPU, features move ~5%%")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32",
                   help="weights' precision (default fp32). bf16: the usual GPU choice; on CPUs ~2× faster "
                        "with AVX512-BF16/AMX, far slower without; fp16: GPUs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    i = sub.add_parser("info", help="show a model's emotions and style-library speakers")
    i.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded default model)")
    i.add_argument("--json", action="store_true", help="machine-readable output")

    s = sub.add_parser("say", help="synthesise a test sentence with eSpeak NG (for demos; no network)")
    s.add_argument("text", help="what to say")
    s.add_argument("-o", "--output", type=Path, required=True, help="output .wav path")
    s.add_argument("--voice", default="en-us", help="eSpeak NG voice (default en-us)")

    from .live.cli import add_live_parser  # `pestalk live` lives in pestalk_hf.live (optional extra: [live])

    add_live_parser(sub)
    return parser


def collect_inputs(paths: list[Path]) -> list[Path]:
    """Files as given; folders expanded to the audio/video files inside (sorted, recursive)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
            if not found:
                raise FileNotFoundError(f"no audio files in folder {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return files


def _unique_stems(files: list[Path]) -> list[str]:
    """Output stems, one per input and all distinct (compared case-insensitively, as on macOS/Windows).

    The file stem; when several inputs of different types share it, the extension is added
    (``good_wav``, ``good_flac``) and, if that is not enough (same name and type in different folders), the parent folder
    (``a_good_wav``); a number (``_2``) settles anything left, including a clash with another input's
    plain stem.
    """
    def key(name: str) -> str:
        return name.casefold()

    def clashing(names: list[str]) -> set[str]:
        counts: dict[str, int] = {}
        for name in names:
            counts[key(name)] = counts.get(key(name), 0) + 1
        return {k for k, n in counts.items() if n > 1}

    stems = [f.stem for f in files]
    suffixes: dict[str, set[str]] = {}
    for stem, f in zip(stems, files):
        suffixes.setdefault(key(stem), set()).add(f.suffix.lower())
    stems = [f"{s}_{f.suffix.lstrip('.').lower()}" if len(suffixes[key(s)]) > 1 and f.suffix else s
             for s, f in zip(stems, files)]
    clash = clashing(stems)
    stems = [f"{f.parent.name}_{s}" if key(s) in clash and f.parent.name else s for s, f in zip(stems, files)]
    used: set[str] = set()
    out: list[str] = []
    for stem in stems:
        candidate, n = stem, 1
        while key(candidate) in used:
            n += 1
            candidate = f"{stem}_{n}"
        used.add(key(candidate))
        out.append(candidate)
    return out


def _check_device(device: str | None) -> None:
    """``--device`` must name a device this machine has: ``cuda`` without a GPU is a usage error."""
    if device is None:
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r} is not a torch device (use cpu, cuda, cuda:0, mps)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA GPU is available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ValueError(f"--device {device}: no Apple MPS device is available on this machine")
    elif dev.type != "cpu":
        raise ValueError(f"--device {device}: unsupported device type {dev.type!r} (use cpu, cuda or mps)")


def _check_output_folder(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise ValueError(f"the output path {path} exists and is not a folder")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot create the output folder {path}: {parent} is not a folder")
            break


def remove_stale_temp_files(folder: Path, run_started: float, min_age: float = STALE_TEMP_MIN_AGE_S) -> list[Path]:
    """Remove temp files of ours that a killed run left in ``folder`` (not in sub-folders).

    Only plain files (not links) whose name matches :data:`STALE_TEMP_PATTERN` and whose last write is
    more than ``min_age`` seconds before ``run_started`` (a ``time.time()``); anything else in the folder
    is never touched. Returns the removed paths; files that cannot be removed are left alone.
    """
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        if not STALE_TEMP_PATTERN.match(path.name):
            continue
        try:
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode) or st.st_mtime >= run_started - min_age:
                continue
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _snapshot(paths: list[Path]) -> dict[Path, tuple[int, int] | None]:
    """(inode, mtime) of each path that exists now, so files this run replaces can be told apart."""
    out: dict[Path, tuple[int, int] | None] = {}
    for path in paths:
        try:
            st = path.stat()
            out[path] = (st.st_ino, st.st_mtime_ns)
        except OSError:
            out[path] = None
    return out


def _remove_new(before: dict[Path, tuple[int, int] | None]) -> None:
    """Remove the files of one input that this run wrote before the input failed."""
    for path, old in before.items():
        try:
            st = path.stat()
        except OSError:
            continue
        if old is None or old != (st.st_ino, st.st_mtime_ns):
            try:
                path.unlink()
            except OSError:
                pass


def _load(model: str | None, device: str | None, int8: bool = False, dtype: str = "fp32", default: str | None = None):
    """The pipeline on ``model``, or on ``default`` (an embedded model folder; DEFAULT_MODEL if None)."""
    import torch

    from . import DEFAULT_MODEL
    from .pipeline import load_pipeline

    default = default or DEFAULT_MODEL
    path = model or default
    if model is None and not (Path(default) / "config.json").exists():
        raise FileNotFoundError(f"the embedded default model is missing at {default}; pass --model")
    try:
        return load_pipeline(path, device=device or "cpu", int8=int8, dtype=getattr(torch, DTYPES[dtype]))
    except Exception as error:  # corrupt safetensors, wrongly typed config fields, missing files, ...
        message = _one_line(error)
        if isinstance(error, ValueError) and "int8" in message:
            raise ValueError(message) from None
        raise ValueError(f"cannot load the model {path}: {type(error).__name__}: {message}"[:2000]) from None


def cmd_animate(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .audio import AudioError
    from .avatar import load_avatar

    run_started = time.time()
    try:
        files = collect_inputs(args.inputs)
        _check_output_folder(args.output)
        _check_device(args.device)
        avatar = load_avatar(args.avatar, external_files=True) if args.avatar is not None else None
        pipe = _load(args.model, args.device, args.int8, args.dtype)
        params = dict(
            emotion=args.emotion, intensity=args.intensity, speaker_style=args.speaker_style,
            style_top_k=args.style_top_k, smoothing=args.smoothing, blinks=args.blinks, max_seconds=args.max_seconds,
            rest_in_silence=args.rest_in_silence,
        )
        pipe._sanitize_parameters(**params)  # unknown emotion/speaker → usage error before any work
    except (ValueError, TypeError, OSError) as err:  # FileNotFoundError is an OSError
        print(f"pestalk: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    try:
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        print(f"pestalk: error: cannot create the output folder {args.output}: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    stale = remove_stale_temp_files(args.output, run_started)
    if stale and not args.quiet:
        print(f"pestalk: removed {len(stale)} temporary file(s) left in {args.output} by an interrupted run",
              file=sys.stderr)

    failures = 0
    written_this_run: set[Path] = set()
    bar = tqdm(list(zip(files, _unique_stems(files))), desc="animating", unit="file", disable=args.quiet)
    for path, stem in bar:
        bar.set_postfix_str(path.name)
        targets = [args.output / f"{stem}.{fmt}" for fmt in dict.fromkeys(args.format)]
        before = _snapshot(targets)
        try:
            if written_this_run.intersection(targets):  # cannot happen with _unique_stems; never overwrite
                raise RuntimeError(f"output name {stem!r} was already written in this run")
            animation = pipe(str(path), **params)
            written = animation.save(args.output, stem, formats=args.format, avatar=avatar)
        except Exception as err:  # one input's failure (audio, a write error, a bug) never ends the batch
            failures += 1
            _remove_new(before)
            if isinstance(err, AudioError):
                reason = _one_line(err)
            elif isinstance(err, OSError):
                reason = f"cannot write the outputs: {_one_line(err)}"
            else:
                reason = f"failed ({type(err).__name__}: {_one_line(err)})"
            tqdm.write(f"pestalk: {path}: {reason}", file=sys.stderr)
            continue
        written_this_run.update(written.values())
        style = animation.style or {}
        top = max(animation.emotion_probabilities.items(), key=lambda kv: kv[1])
        tqdm.write(
            f"{path.name}: {animation.num_frames} frames ({animation.duration:.2f} s), emotion {top[0]} "
            f"({top[1]:.0%}), style {style.get('speaker')}/{style.get('emotion')} → "
            + ", ".join(p.name for p in written.values())
        )
    done = len(files) - failures
    if failures:
        print(f"pestalk: {failures} of {len(files)} input(s) failed; {done} written to {args.output}", file=sys.stderr)
        return EXIT_SOME_FAILED
    print(f"pestalk: {done} of {len(files)} input(s) written to {args.output}")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from transformers import AutoConfig

    from . import DEFAULT_MODEL

    try:
        config = AutoConfig.from_pretrained(args.model or DEFAULT_MODEL)
        info = {
            "model": args.model or DEFAULT_MODEL,
            "emotions": [str(e) for e in config.emotions],
            "library_speakers": [str(s) for s in config.style_speakers],
            "voiceprint_backend": config.voiceprint_backend,
            "fps": config.fps,
            "sampling_rate": config.sampling_rate,
        }
    except Exception as err:  # missing/corrupt config.json, wrongly typed fields, not a PESTalk config
        print(f"pestalk: error: cannot read model config: {type(err).__name__}: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"model:             {info['model']}")
        print(f"emotions:          {', '.join(info['emotions'])}")
        print(f"library speakers:  {', '.join(info['library_speakers']) or '(none)'}")
        print(f"voiceprints:       {info['voiceprint_backend']}")
        print(f"output:            52 ARKit blendshapes at {info['fps']} fps from {info['sampling_rate']} Hz audio")
    return EXIT_OK


def cmd_say(args: argparse.Namespace) -> int:
    import soundfile as sf

    from .data.espeak import VoiceSettings, synthesize

    if not args.text.strip():
        print("pestalk: error: nothing to say", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = synthesize(args.text, VoiceSettings(voice=args.voice))
    except (ValueError, RuntimeError) as err:
        print(f"pestalk: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    sf.write(tmp, result.waveform, result.sampling_rate, format="WAV", subtype="PCM_16")
    tmp.replace(args.output)
    print(f"wrote {args.output} ({len(result.waveform) / result.sampling_rate:.2f} s)")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"animate": cmd_animate, "info": cmd_info, "say": cmd_say, "live": cmd_live}[args.command]
    return handler(args)


def cmd_live(args: argparse.Namespace) -> int:
    from .live.cli import cmd_live as run_live

    return run_live(args)


if __name__ == "__main__":
    sys.exit(main())
