"""Where ``pestalk live`` sends frames: Live Link Face (UDP), VMC (OSC/UDP), WebSocket (+ the three.js page).

Each output runs behind its own :class:`OutputWorker` thread with a bounded queue, so a slow, absent or
failing receiver never holds up the model thread (nor, through it, the audio thread):

* the model hands a burst of new frames to :meth:`OutputWorker.submit`, which only appends them (and
  drops the oldest beyond ``max_queue``, counted as ``dropped``);
* the worker sends the burst paced at the frame rate (frame j of a burst ``j / fps`` after the burst
  arrived), so a receiver sees a steady 30 fps rather than three frames at once every 100 ms; when the
  next burst arrives the rest of the old one goes out at once (the added delay is below one burst);
* frames older than ``max_age`` seconds of latency are not sent (counted as ``stale``): a receiver
  that was stalled resumes on the present, not on a backlog;
* UDP sockets are unconnected: an absent receiver costs nothing and is not an error; an unreachable
  network is reported once and the output keeps trying.

Latency is measured per frame when the datagram / WebSocket message has been handed to the socket:
``sent − captured``, where ``captured`` is when the frame's audio sample was captured (audio clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .protocols import (
    VmcMapping,
    encode_livelink_packet,
    encode_vmc_bundle,
    livelink_values,
    new_device_id,
    ws_frame,
    ws_hello,
    ws_status,
)

Warn = Callable[[str], None]
WEB_DIR = Path(__file__).resolve().parent / "web"
#: Latency samples kept per output (a 4-hour session at 30 fps); older ones are dropped.
MAX_LATENCY_SAMPLES = 432_000


class OutputError(RuntimeError):
    """An output cannot be opened (unresolvable host, port in use, missing package); one-line message."""


@dataclass(frozen=True)
class Frame:
    """One animation frame on the audio clock.

    Attributes:
        index: frame number since the session started (30 fps).
        time: ``index / fps`` seconds of audio.
        weights: ``(52,)`` float32 in [0, 1], internal ARKit order.
        captured: ``time.monotonic()`` at which the audio sample at :attr:`time` was captured.
    """

    index: int
    time: float
    weights: np.ndarray
    captured: float


@dataclass
class OutputStats:
    """Counters of one output (updated by its worker; read by the status line and the benchmark)."""

    sent: int = 0
    dropped: int = 0  # queue full: the oldest frames were discarded
    stale: int = 0  # older than max_age when their turn came
    errors: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=MAX_LATENCY_SAMPLES))


def parse_host_port(text: str, *, default_host: str = "127.0.0.1", what: str = "address") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (→ ``default_host``); ``[v6]:PORT`` for IPv6. ValueError otherwise."""
    text = str(text).strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise ValueError(f"{what} {text!r}: expected HOST:PORT with a port number") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"{what} {text!r}: the port must be 0–65535")
    return host, number


class Output:
    """Base class: ``open()`` (may raise :class:`OutputError`), ``send(frame)`` on the worker thread, ``close()``."""

    name = "output"

    def __init__(self) -> None:
        self.stats = OutputStats()
        self.warn: Warn = lambda message: None
        self._warned: set[str] = set()

    def open(self) -> None:  # noqa: B027 - optional hook
        pass

    def send(self, frame: Frame) -> None:
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def record_sent(self, frame: Frame) -> None:
        self.stats.sent += 1
        self.stats.latencies.append(time.monotonic() - frame.captured)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warn(message)

    def describe(self) -> str:
        return self.name


class _UdpOutput(Output):
    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host, self.port = host, int(port)
        self._sock: socket.socket | None = None
        self._addr = None

    def open(self) -> None:
        if not 1 <= self.port <= 65535:
            raise OutputError(f"{self.name}: the port must be 1–65535, got {self.port}")
        try:
            family, _, _, _, addr = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0]
        except (socket.gaierror, UnicodeError) as error:
            raise OutputError(f"{self.name}: cannot resolve the host {self.host!r} ({error})") from None
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)  # a full send buffer drops the datagram, never waits
        self._addr = addr

    def _sendto(self, frame: Frame, data: bytes) -> None:
        try:
            self._sock.sendto(data, self._addr)
        except BlockingIOError:
            self.stats.dropped += 1
            return
        except OSError as error:
            self.stats.errors += 1
            self.warn_once(f"send:{error.errno}", f"{self.describe()}: cannot send ({error.strerror or error}); "
                           "the session goes on and keeps trying")
            return
        self.record_sent(frame)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    def describe(self) -> str:
        return f"{self.name} udp://{self.host}:{self.port}"


class LiveLinkOutput(_UdpOutput):
    """Live Link Face datagrams (:func:`pestalk_hf.live.protocols.encode_livelink_packet`) to Unreal."""

    name = "livelink"

    def __init__(self, host: str, port: int = 11111, *, subject: str = "PESTalk", device_id: str | None = None,
                 fps: int = 30) -> None:
        super().__init__(host, port)
        self.subject, self.device_id, self.fps = subject, device_id or new_device_id(), int(fps)
        encode_livelink_packet(np.zeros(61), frame=0, subject=self.subject, device_id=self.device_id)  # validate now

    def send(self, frame: Frame) -> None:
        values = livelink_values(frame.weights[None])[0]
        self._sendto(frame, encode_livelink_packet(values, frame=frame.index, subject=self.subject,
                                                   device_id=self.device_id, fps=self.fps))


class VmcOutput(_UdpOutput):
    """VMC protocol bundles (``/VMC/Ext/Blend/Val`` × names, ``/VMC/Ext/Blend/Apply``); port 39539 is VSeeFace's."""

    name = "vmc"

    def __init__(self, host: str, port: int = 39539, *, mapping: VmcMapping | str = "arkit") -> None:
        super().__init__(host, port)
        self.mapping = mapping if isinstance(mapping, VmcMapping) else VmcMapping.named(mapping)

    def open(self) -> None:
        try:
            import pythonosc  # noqa: F401
        except ImportError:
            raise OutputError("vmc: needs the 'python-osc' package: pip install 'pestalk-hf[live]'") from None
        super().open()

    def send(self, frame: Frame) -> None:
        values = self.mapping(frame.weights[None])[0]
        self._sendto(frame, encode_vmc_bundle(self.mapping.names, values.tolist()))


# ------------------------------------------------------------------------------------------------
# WebSocket + the three.js page
# ------------------------------------------------------------------------------------------------

_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".glb": "model/gltf-binary", ".txt": "text/plain; charset=utf-8"}


def web_files() -> dict[str, Path]:
    """URL path → file of the page shipped in the package (a fixed list: nothing else is ever served)."""
    files = {"/": WEB_DIR / "index.html", "/index.html": WEB_DIR / "index.html"}
    for path in sorted((WEB_DIR / "vendor").rglob("*")):
        if path.is_file():
            files["/" + path.relative_to(WEB_DIR).as_posix()] = path
    return files


def default_head_glb() -> bytes:
    """The default head (our procedural head, 52 ARKit morph targets named in ARKit order) as GLB bytes."""
    from ..avatar import default_avatar

    return default_avatar().document.copy().to_glb_bytes()


class WebSocketOutput(Output):
    """A WebSocket server (``ws://HOST:PORT/ws``) that also serves the three.js page on ``http://HOST:PORT/``.

    Runs an asyncio loop on its own thread. Every client gets the hello message, then every frame, through
    its own bounded queue (a slow client loses its oldest frames, counted in ``dropped``; it never slows the
    others). A client that closes is forgotten; the session goes on.
    """

    name = "websocket"
    MAX_CLIENTS = 16
    CLIENT_QUEUE = 90  # 3 s of frames

    def __init__(self, host: str = "127.0.0.1", port: int = 8765, *, fps: float = 30, subject: str = "PESTalk",
                 emotions: tuple[str, ...] = (), serve_page: bool = True) -> None:
        super().__init__()
        self.host, self.port, self.fps, self.subject = host, int(port), fps, subject
        self.emotions, self.serve_page = tuple(emotions), serve_page
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self._clients: dict[object, asyncio.Queue] = {}
        self._glb: bytes | None = None
        self._files = web_files() if serve_page else {}
        self.clients_seen = 0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def open(self) -> None:
        try:
            import websockets.asyncio.server  # noqa: F401
        except ImportError:
            raise OutputError("websocket: needs the 'websockets' package: pip install 'pestalk-hf[live]'") from None
        if self.serve_page:
            self._glb = default_head_glb()
        ready: dict[str, object] = {}
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._start(ready))
            except OSError as error:
                ready["error"] = error
            finally:
                started.set()
            if "error" in ready:
                loop.close()
                return
            loop.run_forever()
            # close() has shut the server down; finish whatever tasks are left before closing the loop
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=run, name="pestalk-live-websocket", daemon=True)
        self._thread.start()
        started.wait(10)
        error = ready.get("error")
        if error is not None:
            if getattr(error, "errno", None) == 98 or "in use" in str(error).lower():
                raise OutputError(f"websocket: cannot listen on {self.host}:{self.port}: the port is in use")
            raise OutputError(f"websocket: cannot listen on {self.host}:{self.port}: {getattr(error, 'strerror', None) or error}")

    async def _start(self, ready: dict) -> None:
        from websockets.asyncio.server import serve

        self._server = await serve(self._handle, self.host, self.port, process_request=self._http,
                                   max_size=4096, ping_interval=20, ping_timeout=20)
        self.port = self._server.sockets[0].getsockname()[1]

    def _http(self, connection, request):
        """Plain HTTP GETs get the page, the head and three.js; ``/ws`` upgrades go on to the WebSocket."""
        path = request.path.split("?", 1)[0]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            if path != "/ws":
                return connection.respond(404, "WebSocket endpoint is /ws\n")
            if len(self._clients) >= self.MAX_CLIENTS:
                return connection.respond(503, "too many clients\n")
            return None
        if path == "/head.glb" and self._glb is not None:
            body, kind = self._glb, ".glb"
        elif path in self._files:
            file = self._files[path]
            body, kind = file.read_bytes(), file.suffix
        else:
            return connection.respond(404, "not found\n")
        response = connection.respond(200, "")
        headers = response.headers
        for key in ("Content-Type", "Content-Length"):
            del headers[key]
        headers["Content-Type"] = _CONTENT_TYPES.get(kind, "application/octet-stream")
        headers["Content-Length"] = str(len(body))
        headers["Cache-Control"] = "no-cache"
        return dataclasses.replace(response, body=body)

    async def _handle(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        queue: asyncio.Queue = asyncio.Queue(maxsize=self.CLIENT_QUEUE)
        self._clients[ws] = queue
        self.clients_seen += 1
        peer = "%s:%s" % tuple(ws.remote_address[:2]) if ws.remote_address else "?"
        self.warn(f"websocket: client {peer} connected")
        try:
            await ws.send(ws_hello(self.fps, self.subject, self.emotions))
            while True:
                frame, message = await queue.get()
                await ws.send(message)
                if frame is not None:
                    self.record_sent(frame)
        except ConnectionClosed:
            pass
        finally:
            self._clients.pop(ws, None)
            self.warn(f"websocket: client {peer} left")

    def _broadcast(self, frame: Frame | None, message: str) -> None:  # on the loop thread
        for queue in self._clients.values():
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                    self.stats.dropped += 1
            queue.put_nowait((frame, message))

    def send(self, frame: Frame) -> None:
        if self._loop is not None and self._clients:
            message = ws_frame(frame.index, frame.time, frame.weights)
            self._loop.call_soon_threadsafe(self._broadcast, frame, message)

    def send_status(self, status: dict) -> None:
        """Broadcast a status message (emotion so far, latency, drops); thread-safe."""
        if self._loop is not None and self._clients:
            self._loop.call_soon_threadsafe(self._broadcast, None, ws_status(status))

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()  # closes the client connections too (close code 1001, going away)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 3)

    def close(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            # let queued frames reach the clients (at most half a second), then shut down and stop the loop
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline and any(not q.empty() for q in list(self._clients.values())):
                time.sleep(0.02)
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)

    def describe(self) -> str:
        return f"websocket ws://{self.host}:{self.port}/ws" + (f" (page {self.url})" if self.serve_page else "")


# ------------------------------------------------------------------------------------------------
# The worker
# ------------------------------------------------------------------------------------------------


class OutputWorker:
    """Runs one :class:`Output` on its own thread behind a bounded, paced queue (see the module docstring)."""

    def __init__(self, output: Output, *, fps: float = 30, max_queue: int = 90, max_age: float = 2.0,
                 pace: bool = True) -> None:
        self.output, self.fps, self.max_queue, self.max_age, self.pace = output, float(fps), int(max_queue), max_age, pace
        self._queue: deque[tuple[Frame, float]] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self.failed: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"pestalk-live-{output.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, frames: list[Frame]) -> None:
        """Queue a burst of frames; never blocks (beyond a lock held for microseconds)."""
        if not frames:
            return
        now = time.monotonic()
        with self._cond:
            if self._queue:  # the previous burst is not out yet: send its rest at once
                self._queue = deque((f, now) for f, _ in self._queue)
            for j, frame in enumerate(frames):
                self._queue.append((frame, now + j / self.fps if self.pace else now))
            while len(self._queue) > self.max_queue:
                self._queue.popleft()
                self.output.stats.dropped += 1
            self._cond.notify()

    def _run(self) -> None:
        stats = self.output.stats
        while True:
            with self._cond:
                while True:
                    if self._queue:
                        wait = self._queue[0][1] - time.monotonic()
                        if wait <= 0 or self._closing:
                            frame, _ = self._queue.popleft()
                            break
                        self._cond.wait(wait)
                    elif self._closing:
                        return
                    else:
                        self._cond.wait()
            if time.monotonic() - frame.captured > self.max_age and not self._closing:
                stats.stale += 1
                continue
            try:
                self.output.send(frame)
            except Exception as error:  # noqa: BLE001 - one output's bug never ends the session
                stats.errors += 1
                self.failed = f"{self.output.describe()}: {type(error).__name__}: {' '.join(str(error).split())}"
                self.output.warn(f"{self.failed}; this output stops, the others go on")
                with self._cond:
                    self._queue.clear()
                    self._closing = True
                return

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (without pacing), then stop the thread and close the output."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.output.close()
