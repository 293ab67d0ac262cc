"""Load test of the Space: N users send a short clip at the same moment to a locally launched ``space/app.py``.

    python bench/bench_space_load.py [--users 20] [--rounds 1] [--clip FILE] [--seconds 2]

The Space runs as its own process (``python space/app.py``, default model, default limits unless
``PESTALK_*`` variables say otherwise), exactly as on the Hub. After one warm-up request, ``--users``
threads, each with its own ``gradio_client.Client``, call ``/animate`` together (``--rounds`` times).
Printed: p50/p95/max latency of the answered requests, failures grouped by message (with the default
limits, 2 running + 16 waiting, a burst of 20 must see only "queue is full" refusals), requests per
minute, and the server's RSS at start and its peak (``VmHWM`` of the server process).

The clip defaults to the first ``--seconds`` of the LJSpeech clip that ships with the package.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _short_clip(seconds: float, folder: Path) -> Path:
    import soundfile as sf

    import pestalk_hf

    wav, rate = sf.read(Path(pestalk_hf.__file__).parent / "assets" / "demo_ljspeech_LJ001-0107.wav", dtype="float32")
    path = folder / "clip.wav"
    sf.write(path, wav[: int(seconds * rate)], rate)
    return path


def _kind(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if "queue is full" in text.lower():
        return "queue is full"
    return f"{type(error).__name__}: {text[:160]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clip", default=None, help="audio file to send (default: 2 s of the packaged clip)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of the default clip")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up on a request after this many s")
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    port = _free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(args.clip) if args.clip else _short_clip(args.seconds, Path(tmp))
        log = open(Path(tmp) / "server.log", "w")
        server = subprocess.Popen([sys.executable, str(ROOT / "space" / "app.py")], env=env, stdout=log,
                                  stderr=subprocess.STDOUT, cwd=ROOT)
        url = f"http://127.0.0.1:{port}/"
        try:
            deadline = time.monotonic() + 300
            while True:
                if server.poll() is not None:
                    raise SystemExit(f"the Space exited with {server.returncode}:\n"
                                     + (Path(tmp) / "server.log").read_text()[-3000:])
                try:
                    Client(url, verbose=False, download_files=False)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise SystemExit("the Space did not start within 300 s") from None
                    time.sleep(1)

            def call(client: Client) -> None:
                client.predict(handle_file(str(clip)), None, "", "auto", 1.0, "auto", False, 0.0, api_name="/animate")

            warm = Client(url, verbose=False, download_files=False)
            t0 = time.perf_counter()
            call(warm)
            print(f"warm-up request: {time.perf_counter() - t0:.2f} s", flush=True)
            rss_start = _status_kb(server.pid, "VmRSS") / 1024

            clients = [Client(url, verbose=False, download_files=False) for _ in range(args.users)]
            latencies: list[float] = []
            failures: Counter[str] = Counter()
            lock = threading.Lock()

            def user(client: Client, barrier: threading.Barrier) -> None:
                barrier.wait()
                start = time.perf_counter()
                try:
                    call(client)
                except Exception as error:  # noqa: BLE001 - every failure is counted by kind
                    with lock:
                        failures[_kind(error)] += 1
                    return
                with lock:
                    latencies.append(time.perf_counter() - start)

            t_all = time.perf_counter()
            for _ in range(args.rounds):
                barrier = threading.Barrier(args.users)
                threads = [threading.Thread(target=user, args=(c, barrier), daemon=True) for c in clients]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(args.timeout)
            wall = time.perf_counter() - t_all
            peak = _status_kb(server.pid, "VmHWM") / 1024
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
            log.close()

    total = args.users * args.rounds
    print(f"{total} requests ({args.users} users × {args.rounds} round(s)), {clip.name if args.clip else f'{args.seconds:g} s clip'}: "
          f"{len(latencies)} answered, {sum(failures.values())} failed, {wall:.1f} s wall, "
          f"{60 * len(latencies) / wall:.1f} answered/min")
    if latencies:
        q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [latencies[0]] * 19
        print(f"latency of answered requests: p50 {statistics.median(latencies):.2f} s, p95 {q[18]:.2f} s, "
              f"max {max(latencies):.2f} s")
    for kind, count in failures.most_common():
        print(f"  failure ×{count}: {kind}")
    other = sum(c for k, c in failures.items() if k != "queue is full")
    print(f"failures other than 'queue is full': {other}")
    print(f"server RSS: {rss_start:.0f} MB after warm-up, peak {peak:.0f} MB (VmHWM)")


if __name__ == "__main__":
    main()
