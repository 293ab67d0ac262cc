"""``pipeline("audio-to-blendshape")``: speech in, a :class:`BlendshapeAnimation` out.

Registered with transformers' ``PIPELINE_REGISTRY`` when ``pestalk_hf`` is imported, and saved into
``custom_pipelines`` of a pushed model (see :func:`register_pipeline`). Audio is decoded by
:func:`pestalk_hf.audio.load_audio` (soundfile/PyAV; never an external ffmpeg binary).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .animation import BlendshapeAnimation
from .audio import SAMPLING_RATE, check_max_seconds, load_audio
from .postprocess import add_blinks, check_smoothing, rest_in_silence as _rest_in_silence, smooth
from .voiceprint import VoiceprintBackend, backend_from_config, get_voiceprint_backend

TASK = "audio-to-blendshape"
DEFAULT_MAX_SECONDS = 3600.0


def _check_name_or_index(what: str, value: Any) -> None:
    """Names are ``str``, indices ``int``; ``True``/``False`` (an ``int`` subclass) and others are type errors."""
    if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, (str, int, np.integer))):
        raise TypeError(f"{what} must be a name (str) or an index (int), got {type(value).__name__} {value!r}")


def _check_number(what: str, value: Any, integer: bool = False) -> None:
    kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if value is not None and (isinstance(value, (bool, np.bool_)) or not isinstance(value, kinds)):
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{what} must be {kind}, got {type(value).__name__} {value!r}")


def resolve_emotion(config, emotion: str | int | None) -> int | None:
    """Emotion name (or index) → index in ``config.emotions``; clear error listing valid names."""
    _check_name_or_index("emotion", emotion)
    if emotion is None or emotion == "" or emotion == "auto":
        return None
    if isinstance(emotion, (int, np.integer)) and 0 <= int(emotion) < len(config.emotions):
        return int(emotion)
    if isinstance(emotion, str) and emotion in config.emotions:
        return config.emotions.index(emotion)
    raise ValueError(f"unknown emotion {emotion!r}; this model knows: {', '.join(config.emotions)}")


def resolve_speaker(config, speaker: str | int | None) -> int | None:
    """Library speaker name (or index) → index in ``config.style_speakers``."""
    _check_name_or_index("speaker_style", speaker)
    if speaker is None or speaker == "" or speaker == "auto":
        return None
    names = list(config.style_speakers)
    if isinstance(speaker, (int, np.integer)) and 0 <= int(speaker) < len(names):
        return int(speaker)
    if isinstance(speaker, str) and speaker in names:
        return names.index(speaker)
    listing = ", ".join(names) if names else "(the style library is empty)"
    raise ValueError(f"unknown library speaker {speaker!r}; this model's library has: {listing}")


def check_intensity(intensity: float | None) -> float | None:
    _check_number("intensity", intensity)
    if intensity is None:
        return None
    value = float(intensity)
    if not math.isfinite(value) or not 0.0 <= value <= 2.0:
        raise ValueError(f"intensity must be a number in [0, 2] (1 = as retrieved), got {intensity!r}")
    return value


def describe_input(item: Any, limit: int = 120) -> str:
    """A short, safe description of one pipeline input for error messages (never its content)."""
    if isinstance(item, str) or hasattr(item, "__fspath__"):
        text = repr(str(item))
        return text if len(text) <= limit else text[: limit - 1] + "…"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<{len(item)} bytes>"
    if isinstance(item, np.ndarray):
        return f"<array {item.dtype} {tuple(item.shape)}>"
    if isinstance(item, dict):
        return f"<dict with keys {sorted(map(str, item))[:5]}>"
    return f"<{type(item).__name__}>"


class BatchError(ValueError):
    """Some items of a list given to the pipeline failed; the good results are kept.

    Attributes:
        results: one entry per input, in order: a :class:`BlendshapeAnimation`, or the exception of
            an item that failed.
        failures: ``{index: exception}`` of the failed items.
        good: ``{index: animation}`` of the items that worked.
    """

    def __init__(self, results: list[Any], failures: dict[int, Exception], inputs: list[Any]) -> None:
        self.results = results
        self.failures = failures
        self.good = {i: r for i, r in enumerate(results) if i not in failures}
        shown = [f"item {i} ({describe_input(inputs[i])}): {type(e).__name__}: {' '.join(str(e).split())[:300]}"
                 for i, e in list(failures.items())[:5]]
        more = f"; and {len(failures) - 5} more" if len(failures) > 5 else ""
        super().__init__(
            f"{len(failures)} of {len(results)} inputs failed: " + "; ".join(shown) + more
            + f". The {len(self.good)} good result(s) are in this error's .results (failed items hold their"
            " exception); pass errors='return' to get that list without an exception"
        )


class AudioToBlendshapePipeline(Pipeline):
    """Speech → 52 ARKit blendshapes at 30 fps, with emotion and personalised style.

    Inputs (one, or a list/iterator of them): a path (wav, flac, ogg, mp3, the audio track of
    mp4/mov), ``bytes``, a numpy array with ``sampling_rate=``, a ``{"array", "sampling_rate"}`` dict.

    Call parameters:
        emotion: force an emotion by name (default: read from the voice).
        intensity: 0 = the speaker's neutral style … 1 = as retrieved … 2 = exaggerated.
        speaker_style: use this library speaker's style instead of the nearest voiceprint.
        style_top_k: soft retrieval over the k nearest library styles.
        rest_in_silence: ease the lower face into the model's own silence pose in the quiet stretches
            (≥ 0.15 s) of the audio (default ``True``; :func:`pestalk_hf.postprocess.rest_in_silence`).
        smoothing: Gaussian smoothing σ in frames (0 = off).
        blinks: add procedural eye blinks (``True``/``False``); ``blink_seed`` picks their timing.
        sampling_rate: rate of a raw numpy input.
        max_seconds: refuse longer audio (default 3600 s; must be > 0); long audio is processed in windows.

    Wrongly typed parameters (``emotion=True``, ``blinks="no"``) raise ``TypeError``; values out of
    range or unknown names raise ``ValueError``, before any audio is decoded. In a list, one bad item
    does not lose the others: :class:`BatchError` carries the good results (or ``errors="return"``
    puts each failed item's exception in its place; see :meth:`__call__`).

    The voiceprint backend is ``voiceprint_backend=`` when given (the caller's choice: a backend, a
    name, a Hub id or a local checkpoint path), else the model config's ``voiceprint_backend``, which
    may only be a registered name or a checkpoint file inside the model folder
    (:func:`pestalk_hf.voiceprint.backend_from_config`).
    """

    def __init__(self, *args: Any, voiceprint_backend: VoiceprintBackend | str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if voiceprint_backend is None:
            self.voiceprint_backend = backend_from_config(
                getattr(self.model.config, "voiceprint_backend", "resemblyzer"),
                getattr(self.model.config, "_name_or_path", None) or getattr(self.model, "name_or_path", None),
            )
        elif isinstance(voiceprint_backend, str):
            self.voiceprint_backend = get_voiceprint_backend(voiceprint_backend)
        else:
            self.voiceprint_backend = voiceprint_backend
        if self.voiceprint_backend.dim != self.model.config.voiceprint_dim:
            raise ValueError(
                f"voiceprint backend {self.voiceprint_backend.name!r} gives {self.voiceprint_backend.dim}-d vectors "
                f"but the model expects {self.model.config.voiceprint_dim}-d"
            )

    def _sanitize_parameters(
        self,
        emotion: str | int | None = None,
        intensity: float | None = None,
        speaker_style: str | int | None = None,
        style_top_k: int | None = None,
        smoothing: float | None = None,
        blinks: bool | None = None,
        blink_seed: int | None = None,
        sampling_rate: int | None = None,
        max_seconds: float | None = None,
        rest_in_silence: bool | None = None,
        **kwargs: Any,
    ):
        if kwargs:
            raise TypeError(f"unexpected pipeline arguments: {sorted(kwargs)}")
        for name, flag in (("blinks", blinks), ("rest_in_silence", rest_in_silence)):
            if flag is not None and not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {type(flag).__name__} {flag!r}")
        rest = True if rest_in_silence is None else bool(rest_in_silence)
        _check_number("style_top_k", style_top_k, integer=True)
        _check_number("blink_seed", blink_seed, integer=True)
        _check_number("smoothing", smoothing)
        max_seconds = check_max_seconds(max_seconds)  # 0 or negative is an error, not "the default"
        preprocess = {"sampling_rate": sampling_rate,
                      "max_seconds": DEFAULT_MAX_SECONDS if max_seconds is None else max_seconds}
        forward = {
            "force_emotion": resolve_emotion(self.model.config, emotion),
            "force_speaker": resolve_speaker(self.model.config, speaker_style),
            "intensity": check_intensity(intensity),
            "return_silence_pose": rest,
        }
        if style_top_k is not None:
            if int(style_top_k) < 1:
                raise ValueError(f"style_top_k must be ≥ 1, got {style_top_k}")
            forward["style_top_k"] = int(style_top_k)
        # validated here, before any audio is decoded
        post = {"smoothing": check_smoothing(smoothing or 0.0), "blinks": bool(blinks), "blink_seed": int(blink_seed or 0),
                "rest_in_silence": rest}
        return preprocess, forward, post

    def __call__(self, inputs: Any, *args: Any, errors: str = "raise", **kwargs: Any) -> Any:
        """One input → a :class:`BlendshapeAnimation`; a list → a list of them, in order.

        A list is animated item by item and one bad item never loses the others:

        * ``errors="raise"`` (default): if any item fails, a :class:`BatchError` is raised after all
          items were tried; it names every failed item (index, a short description, the reason) and
          carries the good results in ``.results`` (a failed item's place holds its exception).
        * ``errors="return"``: no exception; the returned list holds the exception object in the place
          of each failed item (``isinstance(r, Exception)`` tells them apart).

        Call parameters are checked once, before any item (a ``TypeError``/``ValueError`` for the whole
        call). A single input raises its own error (``AudioError`` …) as before; a generator or dataset
        is streamed lazily by transformers and stops at the first bad item.
        """
        if errors not in ("raise", "return"):
            raise ValueError(f"errors must be 'raise' or 'return', got {errors!r}")
        if isinstance(inputs, (list, tuple)) and len(inputs) == 0:
            raise ValueError("no audio given: pass one input (a path, bytes, an array, a dict) or a non-empty list")
        if not isinstance(inputs, list):
            return super().__call__(inputs, *args, **kwargs)
        kwargs.pop("num_workers", None)  # items run one by one: each waveform has its own length
        kwargs.pop("batch_size", None)
        pre, fwd, post = self._sanitize_parameters(**kwargs)
        pre, fwd, post = ({**self._preprocess_params, **pre}, {**self._forward_params, **fwd},
                          {**self._postprocess_params, **post})
        results: list[Any] = []
        failures: dict[int, Exception] = {}
        for index, item in enumerate(inputs):
            try:
                results.append(self.run_single(item, pre, fwd, post))
            except Exception as error:  # noqa: BLE001 - reported per item below
                results.append(error)
                failures[index] = error
        if failures and errors == "raise":
            raise BatchError(results, failures, inputs) from next(iter(failures.values()))
        return results

    def preprocess(self, inputs: Any, sampling_rate: int | None = None, max_seconds: float = DEFAULT_MAX_SECONDS):
        # int16 PCM from decoding on: half the memory of float32 for the one array that grows with the clip
        # (the model and the voiceprint convert a window at a time; the animation keeps it for the MP4)
        waveform = load_audio(inputs, sampling_rate, max_seconds=max_seconds, dtype="int16")
        voiceprint = self.voiceprint_backend.embed(waveform)
        return {
            "waveform": torch.from_numpy(waveform),
            "voiceprint": torch.from_numpy(np.asarray(voiceprint, dtype=np.float32)),
        }

    def _forward(self, model_inputs: dict[str, torch.Tensor], **forward_params: Any) -> dict[str, Any]:
        device = self.model.device
        out = self.model.animate(
            model_inputs["waveform"].to(device), model_inputs["voiceprint"].to(device), **forward_params
        )
        return {
            "blendshapes": out.blendshapes[0].float().cpu(),
            "emotion_logits": out.emotion_logits[0].float().cpu(),
            "style_index": int(out.style_indices[0]),
            "style_similarity": float(out.style_similarity[0]),
            "waveform": model_inputs["waveform"],
            "silence_pose": None if out.silence_pose is None else out.silence_pose[0].float().cpu(),
        }

    def postprocess(self, model_outputs: dict[str, Any], smoothing: float = 0.0, blinks: bool = False, blink_seed: int = 0,
                    rest_in_silence: bool = True):
        cfg = self.model.config
        weights = model_outputs["blendshapes"].numpy()
        if rest_in_silence and model_outputs.get("silence_pose") is not None:
            weights = _rest_in_silence(weights, model_outputs["waveform"].numpy(), model_outputs["silence_pose"].numpy(),
                                       fps=cfg.fps)
        weights = smooth(weights, smoothing)
        if blinks:
            weights = add_blinks(weights, cfg.fps, blink_seed)
        probs = torch.softmax(model_outputs["emotion_logits"], -1).numpy()
        return BlendshapeAnimation(
            weights=np.clip(weights, 0.0, 1.0),
            fps=cfg.fps,
            emotion_probabilities={name: float(p) for name, p in zip(cfg.emotions, probs)},
            style=describe_style(cfg, model_outputs["style_index"], model_outputs["style_similarity"]),
            audio=model_outputs["waveform"].numpy(),
            sample_rate=SAMPLING_RATE,
        )

    # ------------------------------------------------------------------ streaming
    def stream(
        self,
        chunks: Iterable[Any],
        sampling_rate: int = SAMPLING_RATE,
        context_seconds: int = 2,
        lookahead_seconds: float = 0.3,
        **params: Any,
    ) -> Iterator[np.ndarray]:
        """Animate audio as it arrives (microphone, network): yields ``(k, 52)`` arrays of new frames.

        See :class:`pestalk_hf.streaming.StreamingAnimator` for the latency model; ``rest_in_silence``
        (default on) is :class:`pestalk_hf.streaming.RestInSilenceStream`, the causal rest in silence.
        """
        from .streaming import RestInSilenceStream, StreamingAnimator

        _, forward, post = self._sanitize_parameters(**params)
        rest = forward.pop("return_silence_pose")  # a stream rests causally: RestInSilenceStream
        animator = StreamingAnimator(
            self.model, self.voiceprint_backend, context_seconds=context_seconds,
            lookahead_seconds=lookahead_seconds, **forward,
        )
        if rest:
            animator = RestInSilenceStream(animator)
        resampler = None
        if sampling_rate != SAMPLING_RATE:
            import soxr

            resampler = soxr.ResampleStream(sampling_rate, SAMPLING_RATE, 1, dtype="float32")
        for chunk in chunks:
            audio = np.asarray(chunk, dtype=np.float32).reshape(-1)
            if resampler is not None:
                audio = resampler.resample_chunk(audio)
            frames = animator.push(audio)
            if len(frames):
                yield np.clip(frames, 0, 1)
        frames = animator.flush()
        if len(frames):
            yield np.clip(frames, 0, 1)


def describe_style(config, index: int, similarity: float) -> dict[str, Any]:
    """Flat library index → ``{"speaker", "emotion", "similarity"}`` (``speaker`` None when unused)."""
    if index < 0:
        return {"speaker": None, "emotion": None, "similarity": similarity}
    c = len(config.emotions)
    return {"speaker": config.style_speakers[index // c], "emotion": config.emotions[index % c], "similarity": similarity}


def register_pipeline() -> None:
    """Register the task with transformers (idempotent)."""
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            TASK, pipeline_class=AudioToBlendshapePipeline, pt_model=AutoModel, type="audio"
        )


def quantize_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations quantised on the fly).

    CPU only. wav2vec2's transformer layers are most of PESTalk's inference time and are Linear-bound,
    so this is the main CPU speed-up (×2–3 for the paper-size model on CPUs with VNNI; the encoder
    features move by a few per cent: ``python bench/bench_inference.py --case paper --dtype int8``).
    """
    with warnings.catch_warnings():
        # torch.ao's eager quantisation warns that its quantised-tensor constructors are deprecated; it is
        # still the only int8 path in torch itself. Users should not see this on every `--int8` run.
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def is_pestalk_model(model: str, **kwargs: Any) -> bool:
    """Whether the folder or Hub id ``model`` holds a PESTalk config (``model_type == "pestalk"``).

    Reads ``config.json`` as a plain dict: nothing is instantiated and no remote code runs. ``revision``,
    ``token``, ``cache_dir`` and ``local_files_only`` in ``kwargs`` are honoured; any failure → ``False``
    (and transformers' own loading then reports the problem).
    """
    from transformers import PretrainedConfig

    from .modeling.configuration_pestalk import PESTalkConfig

    hub = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if kwargs.get(k) is not None}
    try:
        config_dict, _ = PretrainedConfig.get_config_dict(model, **hub)
    except Exception:  # missing, offline, corrupt: not ours to report here
        return False
    return isinstance(config_dict, dict) and config_dict.get("model_type") == PESTalkConfig.model_type


def load_pipeline(
    model: str | None = None, device: str | int | None = None, int8: bool = False, **kwargs: Any
) -> AudioToBlendshapePipeline:
    """The pipeline on ``model`` (a folder or Hub id; default: the embedded default model).

    ``int8=True`` quantises the Linear layers dynamically (CPU inference only, fp32 weights).
    ``dtype=torch.bfloat16`` (a ``transformers.pipeline`` argument, passed through) loads the weights in
    bf16: the GPU default, and fast on CPUs with AVX512-BF16/AMX.

    A folder written by :func:`pestalk_hf.hub.save_for_hub` (or its Hub repo) carries ``auto_map`` and a
    ``custom_pipelines`` entry for users without this package; transformers' ``pipeline()`` insists on
    ``trust_remote_code=True`` for any ``custom_pipelines`` entry. When the config's ``model_type`` is
    ``"pestalk"`` this package's own classes are used instead (``pipeline_class=`` our pipeline; the model
    through the ``AutoModel`` registration), so no remote code is needed or run.
    """
    from transformers import pipeline as hf_pipeline

    from . import DEFAULT_MODEL

    register_pipeline()
    model = model or DEFAULT_MODEL
    if "pipeline_class" not in kwargs and isinstance(model, str) and is_pestalk_model(model, **kwargs):
        kwargs["pipeline_class"] = AudioToBlendshapePipeline
    pipe = hf_pipeline(TASK, model=model, device=device, **kwargs)
    if int8:
        if pipe.model.device.type != "cpu":
            raise ValueError("int8 dynamic quantisation runs on the CPU only")
        if pipe.model.dtype != torch.float32:
            raise ValueError(f"int8 dynamic quantisation starts from fp32 weights, not {pipe.model.dtype}")
        pipe.model = quantize_int8(pipe.model)
    return pipe
