"""PESTalk Gradio Space: speech → an animated ARKit head (3D view, video, curves, downloads).

Run locally with one command (from the project root, after ``pip install -e .``)::

    python space/app.py                      # embedded default model
    PESTALK_MODEL=path/or/hub-id python space/app.py
    PESTALK_SPACE_MODELS=org/a,org/b python space/app.py   # Hub ids visitors may pick in the model box

On the Hugging Face Hub the same file runs unchanged (``hub_scripts/push_space.py`` assembles the
Space). This module is UI, input validation and temp-file hygiene only; the model, exporters and
renderer live in :mod:`pestalk_hf`.

Why the limits look like they do (see :class:`SpaceLimits`): a free CPU Space has 2 cores, and one
request (inference + offscreen render + H.264) keeps one core busy for several seconds, so the queue
runs at most ``concurrency_limit`` requests at a time and refuses new ones beyond ``queue_size``
instead of letting latency grow without bound. Audio is capped in seconds (the cost driver) and
uploads in bytes (so nobody streams gigabytes into the cache); the seconds are checked against the
file's header before decoding (:func:`pestalk_hf.audio.load_audio`), so a small, highly compressed
upload declaring hours of 8-channel audio costs no memory.

The model box loads only the model the operator started the Space with and the Hub ids the operator
lists in ``PESTALK_SPACE_MODELS`` (comma-separated): never a folder on the server, and the answer to
anything else is the same whether or not such a folder exists.
"""

from __future__ import annotations

import atexit
import html
import logging
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr

import pestalk_hf
from pestalk_hf.audio import AudioError, load_audio
from pestalk_hf.avatar import Avatar, default_avatar, load_avatar
from pestalk_hf.pipeline import AudioToBlendshapePipeline, load_pipeline

LOG = logging.getLogger("pestalk_space")

AUTO = "auto"
TITLE = "PESTalk: speech → emotional 3D facial animation"
DESCRIPTION = (
    "Upload or record speech. PESTalk reads the emotion from the voice, retrieves a personalised "
    "speaking style from its ⟨speaker × emotion⟩ library, and drives the 52 ARKit blendshapes of a "
    "head at 30 fps. Bring your own ARKit-rigged GLB, or use the default head."
)


@dataclass(frozen=True)
class SpaceLimits:
    """What one Space process accepts and how much work it runs at once.

    Attributes:
        max_audio_seconds: longer clips are refused with a message (inference and render cost grow
            linearly with length).
        max_file_size: upload limit enforced by Gradio before the file reaches the app ("20mb").
        concurrency_limit: animation requests running at the same time (one per CPU core).
        queue_size: requests that may wait; more are refused with "queue is full".
        output_ttl_seconds: how long a request's working folder lives after the answer was sent
            (Gradio copies outputs into its own cache as soon as the function returns).
        cache_sweep: ``(every, older_than)`` seconds for Gradio's own cache (uploads, output copies).
        video_size: edge in pixels of the rendered MP4 (shown at that size, not upscaled).
        max_models: loaded models kept in memory (LRU) when users pick another model.
    """

    max_audio_seconds: float = 30.0
    max_file_size: str = "20mb"
    concurrency_limit: int = 2
    queue_size: int = 16
    output_ttl_seconds: float = 60.0
    cache_sweep: tuple[int, int] = (600, 1800)
    video_size: int = 512
    max_models: int = 2

    def __post_init__(self) -> None:
        if not self.max_audio_seconds > 0:
            raise ValueError(f"max_audio_seconds must be positive, got {self.max_audio_seconds}")
        if self.concurrency_limit < 1 or self.queue_size < 1 or self.max_models < 1:
            raise ValueError("concurrency_limit, queue_size and max_models must be ≥ 1")
        if self.video_size < 16 or self.video_size % 2:
            raise ValueError(f"video_size must be an even number ≥ 16 (H.264 yuv420p), got {self.video_size}")

    @classmethod
    def from_env(cls) -> SpaceLimits:
        """Defaults, overridden by ``PESTALK_MAX_SECONDS``, ``PESTALK_MAX_FILE_SIZE``, ``PESTALK_CONCURRENCY``,
        ``PESTALK_QUEUE_SIZE`` (so a bigger Space is tuned with Space variables, not code edits)."""
        defaults = cls()

        def number(name: str, kind: type, default: float) -> Any:
            value = os.environ.get(name)
            if value is None:
                return default
            try:
                return kind(value)
            except ValueError:
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"{name} must be {what}, got {value!r}") from None

        return cls(
            max_audio_seconds=number("PESTALK_MAX_SECONDS", float, defaults.max_audio_seconds),
            max_file_size=os.environ.get("PESTALK_MAX_FILE_SIZE", defaults.max_file_size),
            concurrency_limit=number("PESTALK_CONCURRENCY", int, defaults.concurrency_limit),
            queue_size=number("PESTALK_QUEUE_SIZE", int, defaults.queue_size),
        )


def launch_kwargs(limits: SpaceLimits) -> dict[str, Any]:
    """Arguments for ``demo.launch`` that belong to the limits (upload size); add host/port yourself."""
    return {"max_file_size": limits.max_file_size, "show_error": True, "css": SPACE_CSS}


# Messages next to the inputs and the one error panel are plain HTML blocks styled here: a red box
# that stays until the input changes (not a toast that vanishes after 10 s).
SPACE_CSS = """
.pestalk-msg { border-radius: 6px; padding: 8px 12px; margin: 2px 0 6px 0; font-size: 0.95em; line-height: 1.35; }
.pestalk-msg.ok { background: #ecfdf3; color: #05603a; border: 1px solid #a6f4c5; }
.pestalk-msg.bad { background: #fef3f2; color: #912018; border: 1px solid #fda29b; }
.pestalk-msg.bad strong { color: #7a271a; }
#curves_caption p { margin: 0; font-size: 0.9em; color: var(--body-text-color-subdued); }
"""


# ------------------------------------------------------------------------------------ temp files


class WorkDirs:
    """One private folder per request under ``root``; removed after the answer, and ``root`` at exit.

    Gradio copies returned files into its cache right after the handler returns, so a request's
    folder is only needed for ``ttl`` seconds more; a failed request's folder goes at once.
    """

    def __init__(self, ttl: float, root: str | Path | None = None) -> None:
        self.ttl = ttl
        if root is None:
            self.root = Path(tempfile.mkdtemp(prefix="pestalk_space_"))
        else:
            self.root = Path(root)
            self.root.mkdir(parents=True, exist_ok=True)
        atexit.register(self.close)

    def new(self) -> Path:
        return Path(tempfile.mkdtemp(dir=self.root))

    def discard(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def release(self, path: Path) -> None:
        """Remove ``path`` after ``ttl`` seconds (a daemon timer: never blocks shutdown)."""
        timer = threading.Timer(self.ttl, self.discard, args=(path,))
        timer.daemon = True
        timer.start()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------------- model cache


ALLOWED_MODELS_ENV = "PESTALK_SPACE_MODELS"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def allowed_models_from_env(value: str | None = None) -> tuple[str, ...]:
    """The operator's allow-list of Hub model ids (``PESTALK_SPACE_MODELS``, comma-separated).

    Only Hub ids (``org/name``) are accepted: a local folder, ``..`` or a URL is an operator error
    (``ValueError`` at start), because visitors must never reach files of the server.
    """
    value = os.environ.get(ALLOWED_MODELS_ENV, "") if value is None else value
    ids = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    bad = [i for i in ids if not _HUB_ID.match(i) or ".." in i]
    if bad:
        raise ValueError(f"{ALLOWED_MODELS_ENV} may only list Hub model ids like 'org/name', not {bad}")
    return ids


class ModelCache:
    """Pipelines by model id (LRU, thread-safe): the default loads at start, others on demand.

    ``get`` accepts the default (an empty box, or the default's own id) and the ids in ``allowed``
    (Hub ids), nothing else, and answers every other request with one message that does not depend on
    the server's files.
    """

    def __init__(self, default: str, max_models: int, allowed: tuple[str, ...] | list[str] = ()) -> None:
        self.default = default
        self.max_models = max_models
        self.allowed = tuple(allowed)
        self._pipes: OrderedDict[str, AudioToBlendshapePipeline] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str | None) -> AudioToBlendshapePipeline:
        key = (model or "").strip() or self.default
        if key != self.default and key not in self.allowed:
            offered = ", ".join(self.allowed) if self.allowed else "only the default model (leave the box empty)"
            raise ValueError(f"cannot load model {key[:200]!r}: this Space offers {offered}")
        with self._lock:
            if key in self._pipes:
                self._pipes.move_to_end(key)
                return self._pipes[key]
        # Loaded outside the lock: a visitor's slow Hub download must not stall everyone else's
        # requests on models already in memory (two simultaneous first loads just both load).
        pipe = _load_checked(key)
        with self._lock:
            pipe = self._pipes.setdefault(key, pipe)
            self._pipes.move_to_end(key)
            while len(self._pipes) > self.max_models:
                self._pipes.popitem(last=False)
        return pipe


def _load_checked(model: str) -> AudioToBlendshapePipeline:
    """Load a PESTalk pipeline; anything else (other architectures, missing repos) → ValueError.

    The config is read first so that a Hub id of some unrelated large model fails fast instead of
    downloading its weights. Remote code is never trusted: the Space runs its own model code. Only
    the default and allow-listed Hub ids get here (:meth:`ModelCache.get`); the reasons of a failure
    go to the log, visitors get a message without server paths.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model)
    except Exception as error:  # OSError (missing/offline), ValueError (unknown model_type), ...
        LOG.warning("cannot load model %r: %s", model, error)
        raise ValueError(f"cannot load model {model!r}: it is not available right now") from None
    if not isinstance(config, pestalk_hf.PESTalkConfig):
        raise ValueError(f"model {model!r} is a {type(config).__name__}, not a PESTalk model")
    return load_pipeline(model)


# ------------------------------------------------------------------------------------- the app


def build_demo(
    model: str | None = None,
    *,
    limits: SpaceLimits | None = None,
    allow_model_choice: bool = True,
    workdir: str | Path | None = None,
    allowed_models: tuple[str, ...] | list[str] | None = None,
) -> gr.Blocks:
    """The Space's Blocks, queue configured; call ``.launch(**launch_kwargs(limits))``.

    Args:
        model: folder or Hub id of the model loaded at start (default: the embedded default model).
        limits: request limits (default: :meth:`SpaceLimits.from_env`).
        allow_model_choice: show the "model" box that lets a visitor pick another allowed model.
        workdir: where the per-request folders go (default: a fresh temporary folder, removed at exit).
        allowed_models: Hub ids a visitor may pick (default: ``PESTALK_SPACE_MODELS``); never folders.
    """
    limits = limits or SpaceLimits.from_env()
    allowed = allowed_models_from_env() if allowed_models is None else allowed_models_from_env(",".join(allowed_models))
    models = ModelCache(model or pestalk_hf.DEFAULT_MODEL, limits.max_models, allowed)
    config = models.get(None).model.config  # load now: a broken model fails at start, not per click
    workdirs = WorkDirs(limits.output_ttl_seconds, workdir)
    animate = make_animate(models, workdirs, limits)

    with gr.Blocks(title="PESTalk", delete_cache=limits.cache_sweep) as demo:
        gr.Markdown(f"# {TITLE}\n{DESCRIPTION}\n\nLimits: speech up to {limits.max_audio_seconds:g} s, "
                    f"uploads up to {limits.max_file_size}.")
        with gr.Row():
            with gr.Column(scale=1):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Speech",
                                 elem_id="speech")
                # checked as soon as a file arrives; the message stays until the input changes
                speech_status = gr.HTML("", elem_id="speech_status")
                avatar = gr.File(label="Avatar: an ARKit-rigged .glb (empty = the default head)",
                                 file_types=[".glb"], elem_id="avatar")
                avatar_status = gr.HTML("", elem_id="avatar_status")
                model_box = gr.Textbox(label="Model: a Hub id this Space offers (empty = the default)",
                                       value="", visible=allow_model_choice, elem_id="model")
                with gr.Row():
                    # custom values pass through to the pipeline, which names the valid ones if wrong
                    # (also after the model box switched to a model with other names)
                    emotion = gr.Dropdown([AUTO, *config.emotions], value=AUTO, allow_custom_value=True,
                                          label="Emotion (auto = from the voice)")
                    intensity = gr.Slider(0.0, 2.0, value=1.0, step=0.05, label="Emotion intensity")
                speaker = gr.Dropdown([AUTO, *config.style_speakers], value=AUTO, allow_custom_value=True,
                                      label="Style: library speaker (auto = nearest voiceprint)")
                # the CLI's defaults (`pestalk animate`: no --blinks, --smoothing 0), so the downloads are
                # the files the CLI writes for the same clip; the info lines say so
                blinks = gr.Checkbox(value=DEFAULT_BLINKS, label="Add eye blinks",
                                     info="Off by default, as in the CLI (pestalk animate --blinks)")
                smoothing = gr.Slider(0.0, 5.0, value=DEFAULT_SMOOTHING, step=0.5, label="Smoothing σ (frames)",
                                      info="0 = the model's own curves, as in the CLI (--smoothing)")
                button = gr.Button("Animate", variant="primary", elem_id="animate")
            with gr.Column(scale=2):
                error_panel = gr.HTML("", elem_id="error_panel")
                head = gr.Model3D(label="Animated head (GLB): drag to turn, scroll to zoom", clear_color=VIEWER_BACKGROUND,
                                  height=limits.video_size, elem_id="head3d")
                video = gr.Video(label="Rendered video with audio", elem_id="video", width=limits.video_size,
                                 height=limits.video_size + VIDEO_CONTROLS_PX)
                # no panel label over the image: it hid the plot's own title
                gr.Markdown("**Blendshape curves**: lower face (top), upper face (bottom); the six most active "
                            "of each are coloured", elem_id="curves_caption")
                plot = gr.Image(show_label=False, type="filepath", elem_id="curves")
                with gr.Row():
                    emotions = gr.Label(label="Emotion read from the voice", num_top_classes=len(config.emotions))
                    style = gr.JSON(label="Retrieved style")
                downloads = gr.File(label="Downloads: Live Link CSV, JSON, GLB", file_count="multiple")

        inputs = [audio, avatar, model_box, emotion, intensity, speaker, blinks, smoothing]
        results = [head, video, plot, emotions, style, downloads]
        # The page's button: errors go to one panel and next to the input they concern, and the outputs
        # are cleared (a raised gr.Error would put an "Error" badge on each of the six outputs).
        button.click(
            make_animate_ui(animate), inputs=inputs, outputs=[*results, error_panel, speech_status, avatar_status],
            api_visibility="private", concurrency_limit=limits.concurrency_limit, concurrency_id="animate",
        )
        # The API endpoint (gradio_client, curl) keeps raising: a client wants an exception, not a panel.
        # Same queue slots as the button (one concurrency group).
        gr.Button(visible=False).click(
            animate, inputs=inputs, outputs=results, api_name="animate",
            concurrency_limit=limits.concurrency_limit, concurrency_id="animate",
        )
        audio.change(make_check_speech(limits), inputs=audio, outputs=speech_status, api_visibility="private",
                     queue=False, show_progress="hidden")
        avatar.change(check_avatar, inputs=avatar, outputs=avatar_status, api_visibility="private",
                      queue=False, show_progress="hidden")
        if allow_model_choice:
            refresh = make_refresh(models)
            for trigger in (model_box.submit, model_box.blur):
                trigger(refresh, inputs=[model_box, emotion, speaker], outputs=[emotion, speaker],
                        api_visibility="private")
    demo.queue(max_size=limits.queue_size, default_concurrency_limit=limits.concurrency_limit)
    return demo


DEFAULT_BLINKS = False
DEFAULT_SMOOTHING = 0.0
"""The controls start at the CLI's defaults (``pestalk animate``), checked by the tests against cli.py."""
VIEWER_BACKGROUND = (0.16, 0.17, 0.19, 1.0)
"""A dark neutral backdrop: skin, eye and mouth colours of the GLB's own materials read true on it (the
light grey made the head look washed out)."""
VIDEO_CONTROLS_PX = 40  # the label row above the 512 px video


def message_html(kind: str, text: str) -> str:
    """A message box for the page (``kind`` "ok" or "bad"); ``text`` is escaped (it may hold file names)."""
    mark = "✓" if kind == "ok" else "✗"
    return f'<div class="pestalk-msg {kind}" role="{"status" if kind == "ok" else "alert"}">{mark} {html.escape(text)}</div>'


class InputError(gr.Error):
    """A visitor's input cannot be used; ``field`` ("speech", "avatar" or None) says which input."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, print_exception=False)
        self.field = field


def audio_problem(error: AudioError, limits: SpaceLimits, *paths: str | None) -> str:
    """The sentence a visitor reads about audio that cannot be used (their file's name, no server paths)."""
    message = _hide_paths(str(error), *paths).split(" (soundfile:")[0]
    return (f"This audio cannot be used: {message}. Please send speech as WAV, FLAC, OGG, MP3 or M4A, "
            f"up to {limits.max_audio_seconds:g} s.")


def make_check_speech(limits: SpaceLimits) -> Callable[[str | None], str]:
    """Handler run when speech arrives (upload or recording): type, size and duration are checked at once
    with :func:`pestalk_hf.audio.load_audio` (header first, so a too-long file is refused undecoded)."""

    def check_speech(path: str | None) -> str:
        if not path:
            return ""
        try:
            size = os.path.getsize(path)
            wav = load_audio(path, max_seconds=limits.max_audio_seconds)
        except (AudioError, OSError) as error:
            if not isinstance(error, AudioError):
                error = AudioError(f"the upload could not be read ({type(error).__name__})")
            return message_html("bad", audio_problem(error, limits, path))
        return message_html("ok", f"{len(wav) / 16000:.1f} s of audio ({size / 1e6:.2f} MB): ready to animate.")

    return check_speech


def check_avatar(path: str | None) -> str:
    """Handler run when an avatar arrives: it is parsed (size caps, ARKit targets) before any animation."""
    if not path:
        return ""
    try:
        rig = _avatar(path)
    except ValueError as error:
        return message_html("bad", _hide_paths(str(error), path))
    return message_html("ok", f"{Path(path).name}: {rig.num_vertices:,} vertices, ARKit morph targets found.")


def make_animate_ui(animate: Callable[..., tuple]) -> Callable[..., tuple]:
    """Wrap the API handler for the page: on an error, empty outputs, one error panel, and the message
    also next to the input it concerns (speech or avatar)."""

    def animate_ui(*args: Any) -> tuple:
        try:
            results = animate(*args)
        except gr.Error as error:
            text = str(error.message)
            field = getattr(error, "field", None)
            panel = message_html("bad", text)
            return (None, None, None, None, None, None, panel,
                    panel if field == "speech" else gr.skip(), panel if field == "avatar" else gr.skip())
        return (*results, "", gr.skip(), gr.skip())

    return animate_ui


def make_refresh(models: ModelCache) -> Callable[[str, str, str], tuple[Any, Any]]:
    """Handler: after the model box changes, offer that model's emotions and library speakers
    (keeping the current choices where the new model knows them)."""

    def refresh(model: str, emotion: str, speaker: str) -> tuple[Any, Any]:
        try:
            cfg = models.get(model).model.config
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None
        emotions, speakers = [AUTO, *cfg.emotions], [AUTO, *cfg.style_speakers]
        return (gr.Dropdown(choices=emotions, value=emotion if emotion in emotions else AUTO),
                gr.Dropdown(choices=speakers, value=speaker if speaker in speakers else AUTO))

    return refresh


def make_animate(models: ModelCache, workdirs: WorkDirs, limits: SpaceLimits) -> Callable[..., tuple]:
    """The click handler: validate, run the pipeline, write the outputs into a private folder."""

    def animate(
        audio_path: str | None,
        avatar_path: str | None,
        model: str | None,
        emotion: str,
        intensity: float,
        speaker: str,
        blinks: bool,
        smoothing: float,
    ) -> tuple[str, str, str, dict[str, float], dict[str, Any], list[str]]:
        """Speech → (GLB, MP4, curves PNG, emotion probabilities, retrieved style, [CSV, JSON, GLB])."""
        if not audio_path:
            raise InputError("Please upload or record some speech first.", "speech")
        work = workdirs.new()
        try:
            pipe = models.get(model)
            rig = _avatar(avatar_path)
            anim = pipe(
                audio_path,
                emotion=None if emotion in (None, "", AUTO) else emotion,
                intensity=float(intensity),
                speaker_style=None if speaker in (None, "", AUTO) else speaker,
                smoothing=float(smoothing),
                blinks=bool(blinks),
                max_seconds=limits.max_audio_seconds,
            )
            stem = _safe_stem(audio_path)
            glb = anim.to_glb(work / f"{stem}.glb", avatar=rig)
            mp4 = anim.to_mp4(work / f"{stem}.mp4", avatar=rig, size=limits.video_size)
            png = anim.plot(work / f"{stem}_curves.png")
            csv = anim.to_livelink_csv(work / f"{stem}_livelink.csv")
            js = anim.to_json(work / f"{stem}.json")
        except AudioError as error:
            workdirs.discard(work)
            LOG.info("rejected audio: %s", error)
            raise InputError(audio_problem(error, limits, audio_path, avatar_path), "speech") from None
        except _AvatarError as error:
            workdirs.discard(work)
            raise InputError(_hide_paths(str(error), audio_path, avatar_path), "avatar") from None
        except ValueError as error:  # unknown emotion/speaker, unloadable model
            workdirs.discard(work)
            raise InputError(_hide_paths(str(error), audio_path, avatar_path)) from None
        except Exception:
            workdirs.discard(work)
            LOG.exception("animation failed")
            raise gr.Error("Animating this input failed on our side; please try again or try another clip.",
                           print_exception=False) from None
        workdirs.release(work)
        return (str(glb), str(mp4), str(png), dict(anim.emotion_probabilities or {}), dict(anim.style or {}),
                [str(csv), str(js), str(glb)])

    return animate


class _AvatarError(ValueError):
    """The uploaded avatar cannot be used (its message is for the visitor)."""


def _avatar(path: str | None) -> Avatar:
    """The default head, or the uploaded GLB (cached); any problem with the upload → :class:`_AvatarError`."""
    if not path:
        return default_avatar()
    if Path(path).suffix.lower() not in (".glb", ".gltf"):
        raise _AvatarError(f"the avatar must be a .glb file with ARKit morph targets, got {Path(path).name!r}")
    try:
        return _load_avatar_cached(path, os.path.getmtime(path))
    except _AvatarError:
        raise
    except ValueError as error:
        raise _AvatarError(str(error)) from None


_AVATARS: OrderedDict[tuple[str, float], Avatar] = OrderedDict()
_AVATARS_LOCK = threading.Lock()
_MAX_AVATARS = 4


def _load_avatar_cached(path: str, mtime: float) -> Avatar:
    """Gradio stores uploads under a content hash, so (path, mtime) identifies the same rig."""
    key = (path, mtime)
    with _AVATARS_LOCK:
        if key in _AVATARS:
            return _AVATARS[key]
    try:
        rig = load_avatar(path)
    except ValueError:
        raise  # load_avatar's own message (e.g. no ARKit morph targets) is already clear
    except Exception as error:  # truncated/corrupt GLB: a parser error, not a bug of ours
        raise ValueError(f"the avatar file {Path(path).name!r} is not a readable GLB: {_first_line(error)}") from None
    with _AVATARS_LOCK:
        _AVATARS[key] = rig
        while len(_AVATARS) > _MAX_AVATARS:
            _AVATARS.popitem(last=False)
    return rig


def _safe_stem(path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(path).stem).strip("_")[:40]
    return stem or "speech"


def _hide_paths(message: str, *paths: str | None) -> str:
    """Show visitors their file's name, not where the server keeps it."""
    for path in paths:
        if path:
            message = message.replace(str(path), Path(path).name)
    return message


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def main() -> None:
    """``python app.py``: the model comes from ``PESTALK_MODEL`` (default: the embedded model)."""
    logging.basicConfig(level=logging.INFO)
    try:
        limits = SpaceLimits.from_env()
    except ValueError as error:
        raise SystemExit(f"PESTalk Space: {error}") from None
    try:
        demo = build_demo(os.environ.get("PESTALK_MODEL") or None, limits=limits)
    except ValueError as error:
        raise SystemExit(f"PESTalk Space: {error}\nSet PESTALK_MODEL to a PESTalk model folder or Hub id "
                         "(or train the embedded default model).") from None
    demo.launch(**launch_kwargs(limits))


if __name__ == "__main__":
    main()
