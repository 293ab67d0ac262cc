"""``pestalk live``: the ``live`` subcommand (parser and handler; :mod:`pestalk_hf.cli` delegates here).

Exit codes, as ``pestalk animate``:
    0  the session ran and ended normally (source over, ``--seconds`` reached, Ctrl-C); recordings written
    1  the session ran but something failed on the way: an output could not be opened or stopped, the
       input device vanished, the model failed, a recording could not be written (each is reported;
       what could be written was)
    2  usage error: bad arguments, no usable source (no microphone, PortAudio missing, port in use,
       unreadable file), no output at all, unusable model or device
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

LIVE_EPILOG = """\
outputs (any number at once):
  --livelink HOST:PORT   Live Link Face packets (Unreal Engine / MetaHuman; the app's default port is 11111)
  --vmc HOST:PORT        VMC protocol over OSC (VSeeFace 39539, VNyan, Warudo, VMagicMirror …)
  --websocket HOST:PORT  JSON frames for web apps; --web also serves a three.js page on it
  --record FILE          a .csv (Live Link Face CSV) or .json recording written when the session ends

examples:
  pestalk live --livelink 127.0.0.1:11111                 # talk to a MetaHuman
  pestalk live --vmc 127.0.0.1:39539 --vmc-names vrm0     # drive a VTuber avatar
  pestalk live --web                                       # then open http://127.0.0.1:8765/
  pestalk live --file speech.wav --web --record take.csv   # a file at real-time speed
  pestalk live --livelink 127.0.0.1:11111 --streaming-mode lookahead   # ~0.13 s behind (streaming fine-tune)

streaming modes:
  offline-window (default)  the offline model on a sliding window: full quality, ~0.4-0.5 s behind the voice
  lookahead                 bounded look-ahead (--lookahead-frames, default 2 = 67 ms; 10 ms blocks): ~0.13 s
                            behind (p95 0.14 s on 2 cores). Without --model it runs the embedded streaming
                            fine-tune; measured on real speech against the offline model: jaw correlation
                            0.92 -> 0.89 (GRID s1), 0.73 -> 0.65 (GRID new speakers), emotion 58 -> 43 % (EmoDB)
"""


def _port_spec(what: str):
    def parse(text: str) -> tuple[str, int]:
        from .outputs import parse_host_port

        try:
            return parse_host_port(text, what=what)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return parse


def _seconds(text: str) -> float:
    from ..cli import _positive_seconds

    return _positive_seconds(text)


def _lookahead_frames(text: str) -> int:
    from .session import MAX_LOOKAHEAD_FRAMES

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of frames, got {text!r}") from None
    if not 0 <= value <= MAX_LOOKAHEAD_FRAMES:
        raise argparse.ArgumentTypeError(f"must be 0-{MAX_LOOKAHEAD_FRAMES} frames (1/30 s each), got {text!r}")
    return value


def add_live_parser(sub) -> argparse.ArgumentParser:
    """Add the ``live`` subcommand to ``sub`` (the ``add_subparsers`` object of :func:`pestalk_hf.cli.build_parser`)."""
    from ..cli import DTYPES

    p = sub.add_parser("live", help="animate a microphone / file / PCM stream in real time and send the frames "
                       "to Unreal Live Link, VMC apps, a web page", epilog=LIVE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("input (default: the default microphone)")
    one = src.add_mutually_exclusive_group()
    one.add_argument("--file", type=Path, default=None, help="an audio file, played at real-time speed")
    one.add_argument("--tcp", type=_port_spec("--tcp"), default=None, metavar="[HOST:]PORT",
                     help="listen for one client sending 16-bit little-endian PCM (default host 127.0.0.1)")
    one.add_argument("--input-device", default=None, metavar="NAME|INDEX",
                     help="microphone by (part of) its name or index (see --list-devices)")
    src.add_argument("--tcp-rate", type=int, default=16000, help="sample rate of the --tcp stream (default 16000)")
    src.add_argument("--tcp-channels", type=int, default=1, help="channels of the --tcp stream (default 1)")
    src.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    src.add_argument("--speed", type=float, default=1.0, help="--file playback speed (default 1 = real time)")

    out = p.add_argument_group("outputs")
    out.add_argument("--livelink", type=_port_spec("--livelink"), action="append", default=[], metavar="HOST:PORT",
                     help="send Live Link Face packets here (repeatable)")
    out.add_argument("--livelink-subject", default="PESTalk", help="Live Link subject name (default PESTalk)")
    out.add_argument("--vmc", type=_port_spec("--vmc"), action="append", default=[], metavar="HOST:PORT",
                     help="send VMC protocol (OSC) here (repeatable)")
    out.add_argument("--vmc-names", default="arkit", metavar="MAP",
                     help="VMC blend-shape names: arkit (jawOpen), perfectsync (JawOpen), vrm0 (A, Blink_L, Joy…), "
                          "vrm1 (aa, blinkLeft, happy…) or a JSON file {name: ARKit name or {ARKit name: weight}}")
    out.add_argument("--websocket", type=_port_spec("--websocket"), default=None, metavar="[HOST:]PORT",
                     help="serve JSON frames on ws://HOST:PORT/ws")
    out.add_argument("--web", action="store_true",
                     help="serve the three.js page (default head) on the WebSocket port (default 127.0.0.1:8765)")
    out.add_argument("--record", type=Path, action="append", default=[], metavar="FILE",
                     help="write the session to FILE.csv (Live Link Face CSV) or FILE.json when it ends (repeatable)")

    m = p.add_argument_group("model and timing")
    m.add_argument("--model", default=None, help="model folder or Hub id (default: the embedded default model)")
    m.add_argument("--device", default=None, help="torch device (default: cpu)")
    m.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (CPU)")
    m.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="weights' precision (default fp32)")
    m.add_argument("--emotion", default=None, help="force an emotion (default: read from the voice)")
    m.add_argument("--intensity", type=float, default=None, help="0 = neutral style, 1 = as retrieved, up to 2")
    m.add_argument("--speaker-style", default=None, help="use this library speaker's style")
    m.add_argument("--style-top-k", type=int, default=None, help="soft style retrieval over the k nearest entries")
    m.add_argument("--no-rest-in-silence", dest="rest_in_silence", action="store_false",
                   help="keep the model's own mouth in pauses (default: eased to the model's silence pose once "
                        "0.15 s of quiet have passed, judged against the stream's own levels)")
    from .session import DEFAULT_CHUNK_MS, DEFAULT_LOOKAHEAD_FRAMES, MAX_LOOKAHEAD_FRAMES, STREAMING_MODES

    m.add_argument("--streaming-mode", choices=STREAMING_MODES, default=STREAMING_MODES[0],
                   help="how the model streams. offline-window (default): the offline model re-run on the last "
                        "--context-seconds, frames --lookahead-seconds old (full quality, ~0.4-0.5 s behind). "
                        "lookahead: the model's bounded look-ahead mode, every layer sees at most "
                        "--lookahead-frames ahead (~0.13 s behind; without --model the embedded streaming "
                        "fine-tune, whose lip-sync is close to the offline model's but whose emotion reading "
                        "is weaker, see the README)")
    m.add_argument("--chunk-ms", type=float, default=None,  # range checked by the source
                   help="audio block size in ms, 5-1000 (default " + ", ".join(
                       f"{v:g} in {k}" for k, v in DEFAULT_CHUNK_MS.items()) + ")")
    m.add_argument("--context-seconds", type=int, default=None,
                   help="offline-window: audio context per model run, whole seconds >= 2 (default 2)")
    m.add_argument("--lookahead-seconds", type=float, default=None,
                   help="offline-window: audio after a frame the model waits for (default 0.3)")
    m.add_argument("--lookahead-frames", type=_lookahead_frames, default=None, metavar="L",
                   help=f"lookahead: frames (1/30 s) of audio after a frame each layer may read, "
                        f"0-{MAX_LOOKAHEAD_FRAMES} (default: the model's own if saved in the streaming mode, "
                        f"else {DEFAULT_LOOKAHEAD_FRAMES}); frames leave in chunks of L + 1")
    m.add_argument("--no-pace", action="store_true", help="send each burst of frames at once instead of at 30 fps")
    m.add_argument("--seconds", type=_seconds, default=None, help="end the session after this many seconds")
    m.add_argument("-q", "--quiet", action="store_true", help="no status line")
    return p


def _message(text: str) -> None:
    print(f"\rpestalk: {text}\033[K", file=sys.stderr, flush=True)


def cmd_live(args: argparse.Namespace) -> int:
    from ..cli import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, _check_device, _load, _one_line
    from .outputs import LiveLinkOutput, VmcOutput, WebSocketOutput
    from .session import DEFAULT_CHUNK_MS, EmotionMeter, LiveSession, default_model, make_animator, open_outputs
    from .sources import FileSource, MicrophoneSource, SourceError, TcpPcmSource, list_input_devices

    def usage(text: str) -> int:
        print(f"pestalk: error: {text}", file=sys.stderr)
        return EXIT_USAGE

    if args.list_devices:
        try:
            devices = list_input_devices()
        except SourceError as error:
            return usage(str(error))
        for d in devices:
            print(f"{'*' if d['default'] else ' '} {d['index']:3d}  {d['name']}  "
                  f"({d['channels']} ch, {d['default_samplerate']:.0f} Hz)")
        if not devices:
            print("no input devices")
        return EXIT_OK

    web = args.websocket or (("127.0.0.1", 8765) if args.web else None)
    if not (args.livelink or args.vmc or web or args.record):
        return usage("nothing to send the frames to: give --livelink, --vmc, --websocket/--web or --record")
    for path in args.record:
        if path.suffix.lower() not in (".csv", ".json"):
            return usage(f"--record {path}: the file must end in .csv (Live Link Face CSV) or .json")
        if path.exists() and path.is_dir():
            return usage(f"--record {path} is a folder")
    # each mode's own timing options: one given to the other mode is a mistake, not something to ignore
    offline = {"--context-seconds": args.context_seconds, "--lookahead-seconds": args.lookahead_seconds}
    wrong = ([k for k, v in offline.items() if v is not None] if args.streaming_mode == "lookahead"
             else ["--lookahead-frames"] if args.lookahead_frames is not None else [])
    if wrong:
        other = "offline-window" if args.streaming_mode == "lookahead" else "lookahead"
        return usage(f"{', '.join(wrong)} is for --streaming-mode {other} (this session uses {args.streaming_mode})")
    block = (args.chunk_ms if args.chunk_ms is not None else DEFAULT_CHUNK_MS[args.streaming_mode]) / 1000.0
    try:
        if args.file is not None:
            source = FileSource(args.file, block_seconds=block, speed=args.speed)
        elif args.tcp is not None:
            source = TcpPcmSource(*args.tcp, rate=args.tcp_rate, channels=args.tcp_channels, block_seconds=block)
        else:
            source = MicrophoneSource(args.input_device, block_seconds=block)
        outputs = [LiveLinkOutput(h, p, subject=args.livelink_subject) for h, p in args.livelink]
        outputs += [VmcOutput(h, p, mapping=args.vmc_names) for h, p in args.vmc]
        _check_device(args.device)
        source.open()  # no microphone, PortAudio missing, port in use, bad file: a usage error, before the model
        pipe = _load(args.model, args.device, args.int8, args.dtype, default=default_model(args.streaming_mode))
        _, forward, _ = pipe._sanitize_parameters(emotion=args.emotion, intensity=args.intensity,
                                                  speaker_style=args.speaker_style, style_top_k=args.style_top_k)
        forward.pop("return_silence_pose")  # an offline pass's flag: a stream rests by RestInSilenceStream
        timing = {"lookahead_frames": args.lookahead_frames, "context_seconds": args.context_seconds,
                  "lookahead_seconds": args.lookahead_seconds}  # only the mode's own are set (checked above)
        timing = {k: v for k, v in timing.items() if v is not None}  # the rest: make_animator's defaults
        animator = make_animator(model=pipe.model, voiceprint_backend=pipe.voiceprint_backend,
                                 mode=args.streaming_mode, forward=forward, rest_in_silence=args.rest_in_silence,
                                 **timing)
    except SourceError as error:
        return usage(str(error))
    except (ValueError, TypeError, OSError) as error:
        if "source" in locals():
            source.stop()
        return usage(_one_line(error))
    cfg = pipe.model.config
    if web is not None:
        outputs.append(WebSocketOutput(*web, fps=cfg.fps, subject=args.livelink_subject,
                                       emotions=tuple(cfg.emotions), serve_page=args.web))
    opened, failed = open_outputs(outputs, _message)
    if not opened and not args.record:
        source.stop()
        return usage("no output could be opened: " + "; ".join(failed))
    meter = EmotionMeter(pipe.model)
    session = LiveSession(animator=animator, source=source, outputs=opened, recordings=args.record, fps=cfg.fps,
                          emotion_meter=meter, emotions=tuple(cfg.emotions), pace=not args.no_pace, message=_message)
    if not args.quiet:
        print(f"pestalk: live ({args.streaming_mode} mode, {block * 1000:g} ms blocks) from {source.describe()} → "
              + ", ".join([o.describe() for o in opened] + [str(p) for p in args.record]) + " (Ctrl-C ends)",
              file=sys.stderr)
    status = None if args.quiet or not sys.stderr.isatty() else (
        lambda line: print(f"\r{line}\033[K", end="", file=sys.stderr, flush=True))
    result = session.run(seconds=args.seconds, status=status)
    if status is not None:
        print(file=sys.stderr)
    for problem in result.problems:
        print(f"pestalk: {problem}", file=sys.stderr)
    s = result.stats
    if not args.quiet:
        emotion = result.emotion
        top = f", emotion {max(emotion, key=emotion.get)} ({max(emotion.values()):.0%})" if emotion else ""
        lat = session.latency(last=10**9)
        print(f"pestalk: {result.reason}: {s.samples_in / 16000:.1f} s of audio, {s.frames} frames"
              + (f", median latency {lat * 1000:.0f} ms" if lat is not None else "")
              + f", {s.dropped_chunks} dropped / {s.merged_chunks} merged chunks{top}"
              + "".join(f"; wrote {p}" for p in result.recordings), file=sys.stderr)
    return EXIT_OK if result.ok and not failed else EXIT_SOME_FAILED
