"""Audio sources of ``pestalk live``: a microphone, a file played at real-time speed, PCM on a TCP socket.

Every source delivers 16 kHz mono float32 blocks to a callback, ``deliver(samples, arrival)``, from its own
thread (PortAudio's callback thread for the microphone), where ``arrival`` is the ``time.monotonic()`` at
which the block's *last* sample became available. The callback must return at once (the session only
puts the block into a bounded queue): a source never waits on the model or on a receiver.

When a source ends it calls ``on_end(reason)`` once: ``None`` for a normal end (the file is over, the
TCP client closed), or a one-line reason (the input device stopped delivering). Problems found before
the session starts (no microphone, PortAudio missing, port in use) raise :class:`SourceError` from
:meth:`AudioSource.open`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import SAMPLING_RATE, load_audio

Deliver = Callable[[np.ndarray, float], None]
OnEnd = Callable[["str | None"], None]

#: A TCP client's sample rate must lie in this range (hostile input: a rate sets buffer sizes).
TCP_RATE_RANGE = (8000, 192000)
#: The microphone is considered gone when PortAudio delivers nothing for this long.
DEVICE_SILENCE_TIMEOUT_S = 2.0


class SourceError(RuntimeError):
    """An audio source cannot be opened or used (message: one line, says what to do)."""


class _Resampler:
    """Streaming resampler to 16 kHz (soxr keeps its state across blocks, so no clicks at block edges)."""

    def __init__(self, rate: int) -> None:
        self.rate = int(rate)
        self._stream = None
        if self.rate != SAMPLING_RATE:
            import soxr

            self._stream = soxr.ResampleStream(self.rate, SAMPLING_RATE, 1, dtype="float32")

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        block = np.ascontiguousarray(block, dtype=np.float32).reshape(-1)
        if self._stream is None:
            return block
        return self._stream.resample_chunk(block, last=last)


class AudioSource:
    """Base class. ``open()`` checks and reserves the input; ``start()`` begins delivering; ``stop()`` ends it."""

    name = "source"
    #: True when the source delivers at the speed of real time by itself (a microphone, a network peer).
    realtime = True

    def __init__(self, *, block_seconds: float = 0.1) -> None:
        if not 0.005 <= float(block_seconds) <= 1.0:
            raise ValueError(f"the audio block must be 5–1000 ms, got {block_seconds * 1000:g} ms")
        self.block_seconds = float(block_seconds)
        self._deliver: Deliver | None = None
        self._on_end: OnEnd | None = None
        self._ended = threading.Event()
        self._stop = threading.Event()

    def open(self) -> None:  # noqa: B027 - optional hook
        """Check the input exists and reserve it; raise :class:`SourceError` with a clear message."""

    def start(self, deliver: Deliver, on_end: OnEnd) -> None:
        self._deliver, self._on_end = deliver, on_end

    def _start_thread(self, deliver: Deliver, on_end: OnEnd, ready: bool, thread_name: str) -> None:
        """``start`` of a source that delivers from its own thread (``self._run``): open first unless ``ready``."""
        AudioSource.start(self, deliver, on_end)
        if not ready:
            self.open()
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _end(self, reason: str | None = None) -> None:
        if not self._ended.is_set():
            self._ended.set()
            if self._on_end is not None:
                self._on_end(reason)

    def describe(self) -> str:
        return self.name


# ------------------------------------------------------------------------------------------------
# A file at real-time speed
# ------------------------------------------------------------------------------------------------


class FileSource(AudioSource):
    """An audio file decoded with :func:`pestalk_hf.audio.load_audio`, delivered block by block at ``speed``×
    real time on an absolute schedule (block k is due at ``t0 + end_k / 16000 / speed``), so the pace
    does not drift however long the file is."""

    name = "file"

    def __init__(self, path: str | Path, *, block_seconds: float = 0.1, speed: float = 1.0,
                 max_seconds: float | None = 3600.0) -> None:
        super().__init__(block_seconds=block_seconds)
        if not (np.isfinite(speed) and 0.1 <= speed <= 100.0):
            raise ValueError(f"file playback speed must be 0.1–100, got {speed!r}")
        self.path, self.speed, self.max_seconds = Path(path), float(speed), max_seconds
        self.audio: np.ndarray | None = None
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        from ..audio import AudioError

        try:
            self.audio = load_audio(str(self.path), max_seconds=self.max_seconds)
        except FileNotFoundError:
            raise SourceError(f"no such audio file: {self.path}") from None
        except AudioError as error:
            raise SourceError(f"cannot use {self.path}: {' '.join(str(error).split())}") from None

    def start(self, deliver: Deliver, on_end: OnEnd) -> None:
        self._start_thread(deliver, on_end, self.audio is not None, "pestalk-live-file")

    def _run(self) -> None:
        audio, block = self.audio, max(1, int(round(self.block_seconds * SAMPLING_RATE)))
        t0 = time.monotonic()
        for start in range(0, len(audio), block):
            end = min(start + block, len(audio))
            due = t0 + end / SAMPLING_RATE / self.speed
            # wait on the stop event rather than sleep: stop() ends the source within a block
            while (wait := due - time.monotonic()) > 0:
                if self._stop.wait(wait):
                    self._end(None)
                    return
            if self._stop.is_set():
                break
            self._deliver(audio[start:end], time.monotonic())
        self._end(None)

    def describe(self) -> str:
        return f"file {self.path.name} ({len(self.audio) / SAMPLING_RATE:.1f} s)" if self.audio is not None else "file"


# ------------------------------------------------------------------------------------------------
# A microphone (PortAudio through sounddevice)
# ------------------------------------------------------------------------------------------------


def import_sounddevice():
    """``sounddevice``, or a :class:`SourceError` that says what to install."""
    try:
        import sounddevice
    except ImportError:
        raise SourceError("microphone input needs the 'sounddevice' package: pip install 'pestalk-hf[live]' "
                          "(or use --file / --tcp)") from None
    except OSError:  # sounddevice is installed but libportaudio is not
        raise SourceError("microphone input needs the PortAudio library, which was not found: on Debian/Ubuntu "
                          "apt-get install libportaudio2, on macOS brew install portaudio "
                          "(or use --file / --tcp)") from None
    return sounddevice


def list_input_devices() -> list[dict[str, Any]]:
    """``[{"index", "name", "channels", "default_samplerate", "default"}]`` of the input devices PortAudio sees."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except Exception as error:  # noqa: BLE001 - PortAudio errors are not one class
        raise SourceError(f"cannot list audio devices: {' '.join(str(error).split())}") from None
    return [{"index": i, "name": d["name"], "channels": int(d["max_input_channels"]),
             "default_samplerate": float(d["default_samplerate"]), "default": i == default_in}
            for i, d in enumerate(devices) if d["max_input_channels"] > 0]


class MicrophoneSource(AudioSource):
    """The default input device, or one named by (part of) its name or its index (``--input-device``).

    Opened at the device's own sample rate, mono, and resampled to 16 kHz with soxr on the callback
    thread (a few µs per block). If the device stops delivering for :data:`DEVICE_SILENCE_TIMEOUT_S`
    (unplugged, driver error), or PortAudio ends the stream, the source ends with that reason.
    """

    name = "microphone"

    def __init__(self, device: str | int | None = None, *, block_seconds: float = 0.1) -> None:
        super().__init__(block_seconds=block_seconds)
        self.device = device
        self.device_name = "default input"
        self.rate = 0
        self._stream = None
        self._last_callback = 0.0
        self._watchdog: threading.Thread | None = None

    def open(self) -> None:
        sd = import_sounddevice()
        device = self.device
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        no_mic = SourceError("no microphone found (no default input device); name one with --input-device "
                             "(see --list-devices), or use --file / --tcp")
        try:
            if device is None and sd.default.device[0] < 0:  # PortAudio sees no input device at all
                raise no_mic
            if isinstance(device, int) and device not in [d["index"] for d in list_input_devices()]:
                raise ValueError(f"no input device has the index {device}")
            info = sd.query_devices(device, "input")
        except SourceError:
            raise
        except ValueError as error:  # no match, or no default input device
            if device is None:
                raise no_mic from None
            names = ", ".join(f"{d['index']}: {d['name']}" for d in list_input_devices()) or "none"
            raise SourceError(f"no input device matches {self.device!r} ({' '.join(str(error).split())}); "
                              f"input devices: {names}") from None
        except Exception as error:  # noqa: BLE001 - PortAudio host errors
            raise SourceError(f"cannot query the audio devices: {' '.join(str(error).split())}") from None
        self.device_name, self.rate = str(info["name"]), int(round(info["default_samplerate"]))
        self._resample = _Resampler(self.rate)
        try:
            self._stream = sd.InputStream(
                device=info["index"], channels=1, samplerate=self.rate, dtype="float32",
                blocksize=max(1, int(round(self.block_seconds * self.rate))),
                callback=self._callback, finished_callback=self._finished,
            )
        except Exception as error:  # noqa: BLE001 - sd.PortAudioError and friends
            raise SourceError(f"cannot open the input device {self.device_name!r}: {' '.join(str(error).split())}") from None

    def _callback(self, indata, frames, time_info, status) -> None:  # PortAudio thread: never block here
        self._last_callback = time.monotonic()
        block = self._resample(indata[:, 0])
        if len(block):
            self._deliver(block, self._last_callback)

    def _finished(self) -> None:
        if not self._stop.is_set():
            self._end(f"the input device {self.device_name!r} stopped (unplugged or failed)")

    def start(self, deliver: Deliver, on_end: OnEnd) -> None:
        super().start(deliver, on_end)
        if self._stream is None:
            self.open()
        self._last_callback = time.monotonic()
        try:
            self._stream.start()
        except Exception as error:  # noqa: BLE001
            raise SourceError(f"cannot start the input device {self.device_name!r}: {' '.join(str(error).split())}") from None
        self._watchdog = threading.Thread(target=self._watch, name="pestalk-live-mic-watchdog", daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            silent_for = time.monotonic() - self._last_callback
            if not self._stream.active or silent_for > DEVICE_SILENCE_TIMEOUT_S:
                if not self._stop.is_set():
                    self._end(f"the input device {self.device_name!r} stopped delivering audio "
                              f"({silent_for:.1f} s without a block: unplugged or failed)")
                return

    def stop(self) -> None:
        super().stop()
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001 - a vanished device may fail to close; nothing to do
                pass
        self._end(None)

    def describe(self) -> str:
        return f"microphone {self.device_name!r} ({self.rate} Hz)"


# ------------------------------------------------------------------------------------------------
# 16-bit PCM on a local TCP socket
# ------------------------------------------------------------------------------------------------


class TcpPcmSource(AudioSource):
    """Listen on ``host:port`` (default loopback) for one client sending raw 16-bit little-endian PCM.

    ``rate`` and ``channels`` describe the stream (channels are averaged to mono; other rates are
    resampled). The session ends when the client closes the connection. Anything the client sends is
    only ever read into fixed-size buffers.
    """

    name = "tcp"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, rate: int = SAMPLING_RATE, channels: int = 1,
                 block_seconds: float = 0.1) -> None:
        super().__init__(block_seconds=block_seconds)
        if not TCP_RATE_RANGE[0] <= int(rate) <= TCP_RATE_RANGE[1]:
            raise ValueError(f"--tcp-rate must be {TCP_RATE_RANGE[0]}–{TCP_RATE_RANGE[1]} Hz, got {rate}")
        if not 1 <= int(channels) <= 8:
            raise ValueError(f"--tcp-channels must be 1–8, got {channels}")
        self.host, self.port, self.rate, self.channels = host, int(port), int(rate), int(channels)
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        try:
            server = socket.create_server((self.host, self.port), backlog=1)
        except OSError as error:
            if getattr(error, "errno", None) == 98 or "in use" in str(error).lower():
                raise SourceError(f"cannot listen for PCM on {self.host}:{self.port}: the port is in use") from None
            raise SourceError(f"cannot listen for PCM on {self.host}:{self.port}: {error.strerror or error}") from None
        server.settimeout(0.2)  # accept() wakes up to see stop()
        self._server = server
        self.port = server.getsockname()[1]

    def start(self, deliver: Deliver, on_end: OnEnd) -> None:
        self._start_thread(deliver, on_end, self._server is not None, "pestalk-live-tcp")

    def _run(self) -> None:
        conn = None
        while conn is None and not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                break
        if conn is None:
            self._end(None)
            return
        resample = _Resampler(self.rate)
        frame_bytes = 2 * self.channels
        block = max(frame_bytes, int(round(self.block_seconds * self.rate)) * frame_bytes)
        pending = b""
        conn.settimeout(0.2)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(block)
                except (TimeoutError, socket.timeout):
                    continue
                except OSError as error:
                    self._end(f"the PCM client's connection failed: {error.strerror or error}")
                    return
                if not data:
                    break
                pending += data
                usable = len(pending) - len(pending) % frame_bytes
                if usable < block and len(pending) < block:
                    continue
                pcm = np.frombuffer(pending[:usable], dtype="<i2").reshape(-1, self.channels)
                pending = pending[usable:]
                mono = pcm.astype(np.float32).mean(axis=1) / 32768.0
                out = resample(mono)
                if len(out):
                    self._deliver(out, time.monotonic())
            if pending and len(pending) >= frame_bytes:
                usable = len(pending) - len(pending) % frame_bytes
                mono = np.frombuffer(pending[:usable], dtype="<i2").reshape(-1, self.channels).astype(np.float32).mean(1)
                out = resample(mono / 32768.0, last=True)
                if len(out):
                    self._deliver(out, time.monotonic())
        self._end(None)

    def stop(self) -> None:
        super().stop()
        if self._server is not None:
            self._server.close()

    def describe(self) -> str:
        return f"16-bit PCM on tcp://{self.host}:{self.port} ({self.rate} Hz, {self.channels} ch)"
