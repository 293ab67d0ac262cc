"""3D-EmoStyle builder: talking-face videos → Parquet shards of 52 ARKit blendshape tracks + 16 kHz audio.

Pipeline per clip: decode audio (PyAV, 16 kHz mono) → decode frames (PyAV, timestamps from pts, so
variable frame rate is fine) → MediaPipe Face Landmarker in VIDEO mode (largest face) → drop clips with
too many face-less frames or too long a gap, interpolate the rest → resample to 30 fps on the audio's
clock → one :func:`~pestalk_hf.data.schema.make_row` row.

Inputs (:func:`discover_clips`, :func:`read_manifest`):

* **MEAD**: ``<spk>/video/<view>/<emotion>/level_<k>/<nnn>.mp4`` with audio in
  ``<spk>/audio/<emotion>/level_<k>/<nnn>.m4a`` (only the ``front`` view by default). The sentence id is
  the clip number ``nnn``: MEAD numbers its scripts per emotion, so pairs and held-out sentences assume
  that equal numbers mean equal scripts; give exact transcripts through a manifest when that matters.
* **Flat folders** (HDTF, GRID): every video under the folder. Speaker = first sub-folder (GRID's
  ``s1/bbaf2n.mpg``); for files directly in the folder, the file stem without a trailing ``_<digits>``
  (HDTF's ``WDA_BarackObama_000``) or else the folder's name (a one-speaker folder). Sentence = stem,
  emotion = ``neutral``, intensity = 1. A same-stem audio file next to the video (``.wav``/``.m4a``/...)
  is used instead of the video's own audio track.
* **CSV manifest** with columns ``path, speaker, emotion, intensity, sentence`` (optional ``id``,
  ``audio_path``, ``source``); relative paths are relative to the manifest's folder.

Splits (:func:`assign_split`, deterministic, no randomness): ``test_speakers`` = held-out speakers
(explicit list, or sha256("speaker:" + speaker) in the lowest ``test_speaker_fraction``), then ``test`` =
held-out sentences for the remaining speakers (sha256("sentence:" + sentence) in the lowest
``test_sentence_fraction``, the same sentences for every speaker), else ``train``. MEAD's own
train/test overlap in sentences (the flaw the paper points out) cannot happen: a test sentence never
appears in train. ``split="train"`` (or any name) overrides everything, for tiny inputs.

Output (``OUT``): ``data/<split>-<k>.parquet`` (``load_dataset(OUT, streaming=True)`` reads it through
the ``configs`` of ``README.md``), ``report.jsonl`` (one line per clip: ok/skipped + reason),
``pairs.jsonl`` (neutral ↔ emotional clips of the same speaker and sentence), ``README.md`` (dataset card)
and bookkeeping in ``plan.json`` / ``reports/``.

Resumability: clips are sorted by id, split, and cut into fixed groups of ``clips_per_shard``; the
grouping is frozen in ``plan.json``. A shard is finished when its report part exists and (it has no
ok clip or its Parquet file exists); both are written atomically, report first. A rerun after a kill
redoes only unfinished shards, so no clip is duplicated; changing inputs or options under an existing
``OUT`` is refused. A skipped clip's report entry records its files' size and mtime (``inputs``); when
one of them has changed (a corrupt file replaced, a missing one added), the rerun redoes that shard
(only that one), so fixed clips are retried. ``num_proc`` runs shards in processes; ``shard=(i, n)`` takes every n-th shard
for multi-machine builds (copy the ``data/`` and ``reports/`` folders together, or rerun without
``shard`` on the merged folder, which only finalises, to get complete ``report.jsonl``/``pairs.jsonl``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import time
from collections import Counter, defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .mediapipe_labels import FaceBlendshapeLabeler, FrameLabels
from .schema import EMOTIONS, FPS, SAMPLING_RATE, make_row, write_parquet_shard
from .video_io import MediaError, decode_audio, iter_video_frames

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".m4v", ".flv")
AUDIO_EXTENSIONS = (".m4a", ".wav", ".flac", ".mp3", ".aac", ".ogg")
MANIFEST_REQUIRED_COLUMNS = ("path", "speaker", "emotion", "intensity", "sentence")
MANIFEST_OPTIONAL_COLUMNS = ("id", "audio_path", "source")
SPLIT_TRAIN, SPLIT_TEST, SPLIT_TEST_SPEAKERS = "train", "test", "test_speakers"
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_MEAD_LEVEL = re.compile(r"^level_(\d+)$")


# ---------------------------------------------------------------------------------------------
# clip lists
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """One clip to build: where its media are and its labels."""

    id: str
    video_path: str
    speaker: str
    emotion: str = "neutral"
    intensity: int = 1
    sentence: str = ""
    source: str = ""
    audio_path: str | None = None  # None: the video's own audio track


@dataclass
class DiscoveredClips:
    """Clips found under a folder (sorted by id) and files rejected before processing, with reasons."""

    clips: list[ClipSpec]
    rejected: list[dict[str, Any]] = field(default_factory=list)


def _sidecar_audio(video: Path) -> Path | None:
    for ext in AUDIO_EXTENSIONS:
        candidate = video.with_suffix(ext)
        if candidate.is_file() and candidate != video:
            return candidate
    return None


def _mead_audio(root_of_video: Path, emotion: str, level: str, stem: str) -> Path:
    """``<spk>/audio/<emotion>/level_k/<stem>.m4a`` (or another audio extension if present)."""
    folder = root_of_video / "audio" / emotion / level
    for ext in AUDIO_EXTENSIONS:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    return folder / f"{stem}.m4a"  # missing: the clip is skipped with "file not found"


def _check_unique(clips: Sequence[ClipSpec], where: str) -> None:
    dupes = [k for k, n in Counter(c.id for c in clips).items() if n > 1]
    if dupes:
        raise ValueError(f"{where}: duplicate clip ids {dupes[:5]} (ids must be unique; give an 'id' column)")


def discover_clips(video_dir: str | Path, views: Sequence[str] = ("front",)) -> DiscoveredClips:
    """Find clips under ``video_dir`` (MEAD layout where it matches, flat otherwise); see the module doc."""
    root = Path(video_dir)
    if not root.is_dir():
        raise ValueError(f"video folder not found: {root}")
    clips: list[ClipSpec] = []
    rejected: list[dict[str, Any]] = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()):
        rel = path.relative_to(root)
        parts = rel.parts
        mead = len(parts) >= 5 and parts[-5] == "video" and _MEAD_LEVEL.match(parts[-2])
        if mead:
            view, emotion, level = parts[-4], parts[-3], parts[-2]
            if view not in views:
                continue
            speaker = parts[-6] if len(parts) >= 6 else root.name
            clip_id = f"{speaker}_{view}_{emotion}_{level}_{path.stem}"
            if emotion not in EMOTIONS:
                rejected.append({"id": clip_id, "path": str(path), "reason": f"unknown MEAD emotion folder {emotion!r}"})
                continue
            clips.append(
                ClipSpec(
                    id=clip_id, video_path=str(path), speaker=speaker, emotion=emotion,
                    intensity=int(_MEAD_LEVEL.match(level).group(1)), sentence=path.stem, source="MEAD",
                    audio_path=str(_mead_audio(path.parents[4], emotion, level, path.stem)),
                )
            )
            continue
        if len(parts) > 1:
            speaker = parts[0]
        else:
            m = re.match(r"^(.+)_\d+$", path.stem)
            speaker = m.group(1) if m else root.name
        audio = _sidecar_audio(path)
        clips.append(
            ClipSpec(
                id="__".join(rel.with_suffix("").parts), video_path=str(path), speaker=speaker,
                sentence=path.stem, source=root.name, audio_path=str(audio) if audio else None,
            )
        )
    clips.sort(key=lambda c: c.id)
    _check_unique(clips, str(root))
    return DiscoveredClips(clips, rejected)


def read_manifest(csv_path: str | Path) -> DiscoveredClips:
    """Read a CSV manifest (see the module doc). Raises ``ValueError`` naming the bad column/row."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ValueError(f"manifest not found: {csv_path}")
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in MANIFEST_REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise ValueError(
                f"manifest {csv_path}: missing column(s) {missing}; found {columns}; required "
                f"{list(MANIFEST_REQUIRED_COLUMNS)}, optional {list(MANIFEST_OPTIONAL_COLUMNS)}"
            )
        rows = []
        for row in reader:
            if None in row:  # DictReader puts surplus fields under the key None
                raise ValueError(f"manifest {csv_path} line {reader.line_num}: more fields than columns")
            rows.append({k.strip(): (v or "").strip() for k, v in row.items()})
    base = csv_path.parent
    clips = []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"manifest {csv_path} line {line}"
        if not row["path"] or not row["speaker"]:
            raise ValueError(f"{where}: empty 'path' or 'speaker'")
        if row["emotion"] not in EMOTIONS:
            raise ValueError(f"{where}: emotion {row['emotion']!r} is not one of {list(EMOTIONS)}")
        try:
            intensity = int(row["intensity"] or 1)
        except ValueError:
            raise ValueError(f"{where}: intensity {row['intensity']!r} is not an integer") from None
        video = Path(row["path"]) if Path(row["path"]).is_absolute() else base / row["path"]
        audio = row.get("audio_path") or None
        if audio and not Path(audio).is_absolute():
            audio = str(base / audio)
        rel = Path(row["path"]).with_suffix("")
        clip_id = row.get("id") or "__".join(p for p in rel.parts if p not in ("/", ".."))
        clips.append(
            ClipSpec(
                id=clip_id, video_path=str(video), speaker=row["speaker"], emotion=row["emotion"],
                intensity=intensity, sentence=row["sentence"], source=row.get("source") or csv_path.stem,
                audio_path=audio,
            )
        )
    clips.sort(key=lambda c: c.id)
    _check_unique(clips, f"manifest {csv_path}")
    return DiscoveredClips(clips)


# ---------------------------------------------------------------------------------------------
# configuration and splits
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildConfig:
    """Options of a build. Those that change the output are frozen into ``plan.json``."""

    clips_per_shard: int = 50
    max_missing_face_fraction: float = 0.2
    max_gap_seconds: float = 0.5  # longer face-less runs are not interpolated: the clip is skipped
    max_av_mismatch_seconds: float = 1.0  # |audio - video| duration beyond this = broken sync: skipped
    max_side: int = 720  # downscale frames before landmarking (0 = never)
    max_faces: int = 2
    split: str | None = None  # override: every clip goes to this split
    test_speakers: tuple[str, ...] | None = None  # explicit held-out speakers (else the hash rule)
    test_speaker_fraction: float = 0.1
    test_sentence_fraction: float = 0.1
    fps: int = FPS
    sampling_rate: int = SAMPLING_RATE

    def __post_init__(self) -> None:
        if self.clips_per_shard < 1:
            raise ValueError(f"clips_per_shard must be >= 1, got {self.clips_per_shard}")
        for name in ("max_missing_face_fraction", "test_speaker_fraction", "test_sentence_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.max_faces < 1 or self.max_side < 0 or self.max_gap_seconds < 0 or self.max_av_mismatch_seconds < 0:
            raise ValueError("max_faces must be >= 1; max_side, max_gap_seconds, max_av_mismatch_seconds >= 0")
        if self.split is not None and not _SPLIT_NAME.match(self.split):
            raise ValueError(f"split name must match [A-Za-z0-9_]+, got {self.split!r}")


def _unit_hash(key: str) -> float:
    """A stable number in [0, 1) from a string (sha256, unlike Python's salted ``hash``)."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:13], 16) / float(16**13)


def assign_split(speaker: str, sentence: str, config: BuildConfig = BuildConfig()) -> str:
    """Deterministic split of one clip from its speaker and sentence (rule in the module doc)."""
    if config.split is not None:
        return config.split
    if config.test_speakers is not None:
        held_out_speaker = speaker in config.test_speakers
    else:
        held_out_speaker = _unit_hash(f"speaker:{speaker}") < config.test_speaker_fraction
    if held_out_speaker:
        return SPLIT_TEST_SPEAKERS
    if _unit_hash(f"sentence:{sentence}") < config.test_sentence_fraction:
        return SPLIT_TEST
    return SPLIT_TRAIN


# ---------------------------------------------------------------------------------------------
# one clip
# ---------------------------------------------------------------------------------------------


class ClipSkipped(Exception):
    """A clip that cannot become a row; the message is the report's reason."""


def face_gap_stats(labels: FrameLabels, frame_dt: float) -> tuple[int, float]:
    """(frames without a face, longest face-less stretch in seconds, leading/trailing runs included)."""
    valid = labels.valid
    longest = run = 0
    for ok in valid:
        run = 0 if ok else run + 1
        longest = max(longest, run)
    return int((~valid).sum()), longest * frame_dt


def resample_track(times: np.ndarray, values: np.ndarray, num_frames: int, fps: int = FPS) -> np.ndarray:
    """Linearly interpolate (N, C) samples at ``times`` (s, increasing) onto ``num_frames`` frames at ``fps``.

    Gaps between samples are bridged linearly and the ends are held, so callers pass only valid
    (face-found) frames. Frame k is at k / fps seconds (frame 0 = audio sample 0).
    """
    grid = np.arange(num_frames, dtype=np.float64) / fps
    out = np.empty((num_frames, values.shape[1]), dtype=np.float32)
    for c in range(values.shape[1]):
        out[:, c] = np.interp(grid, times, values[:, c])
    return out


def labels_to_track(
    labels: FrameLabels, num_audio_samples: int, audio_start: float, config: BuildConfig
) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Turn per-frame labels into a (T, 52) track at ``config.fps`` aligned with the audio.

    Returns ``(track, num_samples_kept, stats)``; raises :class:`ClipSkipped` for clips the rules reject.
    The clip length is the shorter of audio and video (extra audio past the last frame has no labels;
    extra video past the audio has no sound), and ``T = ceil(seconds × fps)`` of the kept audio.
    """
    if len(labels.times) == 0:
        raise ClipSkipped("no video frames decoded (truncated or corrupt file?)")
    order = np.argsort(labels.times, kind="stable")
    times = labels.times[order] - audio_start
    keep = np.concatenate([[True], np.diff(times) > 1e-6])  # drop duplicate timestamps
    labels = FrameLabels(times[keep], labels.blendshapes[order][keep], labels.num_faces[order][keep])
    diffs = np.diff(labels.times)
    frame_dt = float(np.median(diffs)) if len(diffs) else 1.0 / 25
    audio_seconds = num_audio_samples / config.sampling_rate
    video_seconds = float(labels.times[-1] + frame_dt)
    mismatch = abs(audio_seconds - video_seconds)
    stats: dict[str, Any] = {
        "frames_in": int(len(labels.times)),
        "fps_in": round(1.0 / frame_dt, 3) if frame_dt > 0 else None,
        "audio_seconds": round(audio_seconds, 4),
        "video_seconds": round(video_seconds, 4),
    }
    if mismatch > config.max_av_mismatch_seconds:
        raise ClipSkipped(
            f"audio/video length mismatch: audio {audio_seconds:.2f} s, video {video_seconds:.2f} s "
            f"(max {config.max_av_mismatch_seconds} s)"
        )
    seconds = min(audio_seconds, video_seconds)
    num_samples = min(num_audio_samples, int(round(seconds * config.sampling_rate)))
    num_frames = -(-num_samples * config.fps // config.sampling_rate)  # ceil without float error
    if num_frames < 1:
        raise ClipSkipped(f"clip too short ({seconds:.3f} s)")
    inside = (labels.times > -frame_dt) & (labels.times < seconds)  # frames that overlap the kept audio
    labels = FrameLabels(labels.times[inside], labels.blendshapes[inside], labels.num_faces[inside])
    missing, longest_gap = face_gap_stats(labels, frame_dt)
    if labels.times.size and labels.times[0] > 0:  # video starts after the audio: a leading gap
        longest_gap = max(longest_gap, float(labels.times[0]))
    fraction = missing / max(1, len(labels.times))
    stats.update(
        missing_face_frames=missing, longest_gap_s=round(longest_gap, 4),
        multi_face_frames=int((labels.num_faces > 1).sum()), av_mismatch_s=round(mismatch, 4),
    )
    if fraction > config.max_missing_face_fraction:
        raise ClipSkipped(
            f"no face in {missing}/{len(labels.times)} frames ({fraction:.0%} > "
            f"{config.max_missing_face_fraction:.0%} allowed)"
        )
    if longest_gap > config.max_gap_seconds:
        raise ClipSkipped(f"face lost for {longest_gap:.2f} s (max gap {config.max_gap_seconds} s)")
    valid = labels.valid
    if not valid.any():  # only reachable when the thresholds allow 100 % missing
        raise ClipSkipped("no face found in any frame")
    track = resample_track(labels.times[valid], labels.blendshapes[valid], num_frames, config.fps)
    stats.update(frames_out=num_frames, seconds=round(num_samples / config.sampling_rate, 4))
    return np.clip(track, 0.0, 1.0), num_samples, stats


def process_clip(
    spec: ClipSpec, labeler: FaceBlendshapeLabeler, config: BuildConfig
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """Build one row. Returns ``(row or None, report entry)``; never raises for bad media."""
    entry: dict[str, Any] = {
        "id": spec.id, "status": "ok", "split": assign_split(spec.speaker, spec.sentence, config),
        "speaker": spec.speaker, "emotion": spec.emotion, "intensity": spec.intensity,
        "sentence": spec.sentence, "source": spec.source, "path": spec.video_path,
    }
    try:
        # Audio first: it is cheap, and a clip without usable audio is useless for training.
        wav, audio_start = decode_audio(spec.audio_path or spec.video_path, config.sampling_rate)
        if spec.audio_path:
            audio_start = 0.0  # a separate audio file has its own clock; both are assumed to start together
        labels = labeler.label(iter_video_frames(spec.video_path, config.max_side))
        track, num_samples, stats = labels_to_track(labels, len(wav), audio_start, config)
        entry.update(stats)
        row = make_row(
            id=spec.id, waveform=wav[:num_samples], blendshapes=track, speaker=spec.speaker,
            emotion=spec.emotion, intensity=spec.intensity, sentence=spec.sentence, source=spec.source,
            fps=config.fps,
        )
        return row, entry
    except (MediaError, ClipSkipped) as exc:
        entry.update(status="skipped", reason=str(exc))
    except Exception as exc:  # noqa: BLE001 - one bad clip must never cost the finished work
        entry.update(status="skipped", reason=f"unexpected error: {type(exc).__name__}: {exc}")
    return None, entry


# ---------------------------------------------------------------------------------------------
# shards
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardTask:
    """A fixed group of clips written as ``data/<name>.parquet``."""

    name: str
    clips: tuple[ClipSpec, ...]


def plan_shards(clips: Sequence[ClipSpec], config: BuildConfig) -> list[ShardTask]:
    """Split, then cut each split's id-sorted clips into groups of ``clips_per_shard``. Deterministic."""
    by_split: dict[str, list[ClipSpec]] = defaultdict(list)
    for clip in sorted(clips, key=lambda c: c.id):
        by_split[assign_split(clip.speaker, clip.sentence, config)].append(clip)
    tasks = []
    for split in sorted(by_split):
        group = by_split[split]
        for k in range(0, len(group), config.clips_per_shard):
            chunk = tuple(group[k : k + config.clips_per_shard])
            tasks.append(ShardTask(f"{split}-{k // config.clips_per_shard:05d}", chunk))
    return tasks


def parse_shard_spec(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with 0 <= i < n (this machine takes shards whose index ≡ i mod n)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--shard must look like i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _jsonl(entries: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n" for e in entries)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def input_stats(spec: ClipSpec) -> dict[str, list[int] | None]:
    """``{path: [size, mtime_ns]}`` (``None`` for a missing file) of a clip's video and audio files.

    Recorded in the report entry of every clip that was skipped, so that a later run can tell that
    the file was fixed (or appeared) and redo the shard: :func:`_shard_done`.
    """
    out: dict[str, list[int] | None] = {}
    for path in (spec.video_path, spec.audio_path):
        if path:
            try:
                st = os.stat(path)
                out[str(path)] = [int(st.st_size), int(st.st_mtime_ns)]
            except OSError:
                out[str(path)] = None
    return out


def _inputs_changed(entry: dict[str, Any]) -> bool:
    """A skipped clip whose recorded input files differ now (size, mtime, appeared or vanished)."""
    recorded = entry.get("inputs")
    if entry.get("status") == "ok" or not isinstance(recorded, dict):
        return False  # reports written before inputs were recorded: cannot tell, keep them
    for path, old in recorded.items():
        try:
            st = os.stat(path)
            now = [int(st.st_size), int(st.st_mtime_ns)]
        except OSError:
            now = None
        if now != old:
            return True
    return False


def _shard_done(out_dir: Path, name: str) -> bool:
    """Finished: report part written, Parquet written if it has ok clips, and no skipped clip whose
    input files changed since (a fixed file is retried; the shard's good clips are rebuilt with it)."""
    report = out_dir / "reports" / f"{name}.jsonl"
    if not report.is_file():
        return False
    entries = _read_jsonl(report)
    if any(_inputs_changed(e) for e in entries):
        return False
    has_rows = any(e["status"] == "ok" for e in entries)
    return not has_rows or (out_dir / "data" / f"{name}.parquet").is_file()


def run_shard(
    task: ShardTask,
    out_dir: str | Path,
    landmarker_path: str | Path,
    config: BuildConfig,
    on_clip: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Process one shard and write it (report part first, then Parquet; both atomic). Returns its entries."""
    out_dir = Path(out_dir)
    labeler = FaceBlendshapeLabeler(landmarker_path, max_faces=config.max_faces)
    rows, entries = [], []
    for spec in task.clips:
        row, entry = process_clip(spec, labeler, config)
        entry["shard"] = task.name
        if entry["status"] != "ok":
            entry["inputs"] = input_stats(spec)
        entries.append(entry)
        if row is not None:
            rows.append(row)
        if on_clip is not None:
            on_clip(entry)
    if not rows:  # a redone shard that has no good clip any more: its old Parquet must not survive
        (out_dir / "data" / f"{task.name}.parquet").unlink(missing_ok=True)
    _write_text_atomic(out_dir / "reports" / f"{task.name}.jsonl", _jsonl(entries))
    if rows:
        with _quiet_datasets():
            write_parquet_shard(rows, out_dir / "data" / f"{task.name}.parquet")
    return entries


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No "Creating parquet" bar per shard (it would interleave with the builder's own bar)."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def _plan_record(tasks: Sequence[ShardTask], config: BuildConfig) -> dict[str, Any]:
    frozen = asdict(config)  # JSON has no tuples: store lists so a reread plan compares equal
    frozen["test_speakers"] = list(config.test_speakers) if config.test_speakers is not None else None
    return {"config": frozen, "shards": {t.name: [c.id for c in t.clips] for t in tasks}}


def _check_or_write_plan(out_dir: Path, tasks: Sequence[ShardTask], config: BuildConfig) -> None:
    record = _plan_record(tasks, config)
    path = out_dir / "plan.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != record:
            changed = sorted(k for k in set(old["config"]) | set(record["config"])
                             if old["config"].get(k) != record["config"].get(k))
            what = f"options {changed}" if changed else "the clip list"
            raise ValueError(
                f"{out_dir} was started with different inputs: {what} changed since plan.json was written. "
                "Resume with the same inputs and options, or build into a new --output folder."
            )
        return
    _write_text_atomic(path, json.dumps(record, indent=1, sort_keys=True))


# ---------------------------------------------------------------------------------------------
# build, finalise, push
# ---------------------------------------------------------------------------------------------


@dataclass
class BuildSummary:
    """What a run did: counts over the whole output folder and this run's throughput."""

    ok: int = 0
    skipped: int = 0
    shards_total: int = 0
    shards_done_before: int = 0
    shards_built: int = 0
    failed_shards: dict[str, str] = field(default_factory=dict)
    frames_labelled: int = 0  # video frames run through MediaPipe in this run
    seconds: float = 0.0
    skip_reasons: dict[str, str] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    pairs: int = 0

    @property
    def frames_per_second(self) -> float:
        """Builder throughput of this run in decoded+labelled video frames per wall-clock second."""
        return self.frames_labelled / self.seconds if self.seconds > 0 else 0.0


def build_dataset(
    clips: DiscoveredClips | Sequence[ClipSpec],
    out_dir: str | Path,
    landmarker_path: str | Path,
    config: BuildConfig = BuildConfig(),
    *,
    num_proc: int = 1,
    shard: tuple[int, int] = (0, 1),
    progress: bool = True,
) -> BuildSummary:
    """Build (or resume) a 3D-EmoStyle folder from a clip list; see the module doc for the layout."""
    if not isinstance(clips, DiscoveredClips):
        clips = DiscoveredClips(sorted(clips, key=lambda c: c.id))
    landmarker_path = Path(landmarker_path)
    if not landmarker_path.is_file():
        raise ValueError(f"MediaPipe face landmarker bundle not found: {landmarker_path}")
    if num_proc < 1:
        raise ValueError(f"num_proc must be >= 1, got {num_proc}")
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard index must satisfy 0 <= i < n, got {index}/{count}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = plan_shards(clips.clips, config)
    _check_or_write_plan(out_dir, tasks, config)
    _write_text_atomic(out_dir / "reports" / "_discovery.jsonl",
                       _jsonl({**r, "status": "skipped"} for r in clips.rejected))

    mine = [t for i, t in enumerate(tasks) if i % count == index]
    pending = [t for t in mine if not _shard_done(out_dir, t.name)]
    summary = BuildSummary(shards_total=len(tasks), shards_done_before=len(mine) - len(pending))
    start = time.perf_counter()
    bar = _progress_bar(sum(len(t.clips) for t in pending), progress)

    def account(entries: list[dict[str, Any]]) -> None:
        summary.shards_built += 1
        summary.frames_labelled += sum(int(e.get("frames_in", 0)) for e in entries)

    try:
        if num_proc == 1 or len(pending) <= 1:
            for task in pending:
                try:
                    account(run_shard(task, out_dir, landmarker_path, config, on_clip=lambda e: bar.update(1)))
                except Exception as exc:  # noqa: BLE001 - e.g. disk full: keep going, report, rerun resumes
                    summary.failed_shards[task.name] = f"{type(exc).__name__}: {exc}"
        else:
            _run_in_processes(pending, out_dir, landmarker_path, config, num_proc, bar, account, summary)
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
    finalize(out_dir, summary)
    return summary


def _run_in_processes(pending, out_dir, landmarker_path, config, num_proc, bar, account, summary) -> None:
    # "forkserver": forking this (possibly threaded) parent can deadlock, and "spawn" would re-import
    # torch/transformers/datasets in every worker (tens of seconds on 2 busy cores). The fork server
    # imports this module once, single-threaded, and forks the workers from that clean state.
    context = get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(max_workers=num_proc, mp_context=context) as pool:
        futures: dict[Future, ShardTask] = {
            pool.submit(run_shard, t, str(out_dir), str(landmarker_path), config): t for t in pending
        }
        remaining = set(futures)
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for fut in done:
                task = futures[fut]
                bar.update(len(task.clips))
                try:
                    account(fut.result())
                except BrokenProcessPool as exc:  # a worker died (e.g. killed): its shard stays unfinished
                    summary.failed_shards[task.name] = f"worker process died: {exc}"
                except Exception as exc:  # noqa: BLE001
                    summary.failed_shards[task.name] = f"{type(exc).__name__}: {exc}"


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="clip", desc="3D-EmoStyle", disable=not enabled)


def pair_index(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Neutral ↔ emotional pairs: every ok emotional clip with every ok neutral clip of the same
    speaker and sentence (the pairs the disentanglement loss L_dis needs)."""
    neutral: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    emotional = []
    for e in entries:
        if e.get("status") != "ok":
            continue
        (neutral[(e["speaker"], e["sentence"])] if e["emotion"] == "neutral" else emotional).append(e)
    pairs = [
        {"neutral_id": n["id"], "emotional_id": e["id"], "speaker": e["speaker"], "sentence": e["sentence"],
         "emotion": e["emotion"], "intensity": e["intensity"], "split": e["split"]}
        for e in emotional for n in neutral.get((e["speaker"], e["sentence"]), [])
    ]
    return sorted(pairs, key=lambda p: (p["emotional_id"], p["neutral_id"]))


def finalize(out_dir: str | Path, summary: BuildSummary | None = None) -> BuildSummary:
    """(Re)write ``report.jsonl``, ``pairs.jsonl`` and ``README.md`` from everything in ``out_dir``."""
    out_dir = Path(out_dir)
    summary = summary or BuildSummary()
    entries: list[dict[str, Any]] = []
    for part in sorted((out_dir / "reports").glob("*.jsonl")):
        entries.extend(_read_jsonl(part))
    entries.sort(key=lambda e: e["id"])
    _write_text_atomic(out_dir / "report.jsonl", _jsonl(entries))
    pairs = pair_index(entries)
    _write_text_atomic(out_dir / "pairs.jsonl", _jsonl(pairs))
    ok = [e for e in entries if e["status"] == "ok"]
    summary.ok, summary.skipped, summary.pairs = len(ok), len(entries) - len(ok), len(pairs)
    summary.splits = dict(sorted(Counter(e["split"] for e in ok).items()))
    summary.skip_reasons = {e["id"]: e["reason"] for e in entries if e["status"] != "ok"}
    write_dataset_card(out_dir, ok, pairs, summary)
    return summary


def write_dataset_card(
    out_dir: Path, ok: Sequence[dict[str, Any]], pairs: Sequence[dict[str, Any]], summary: BuildSummary,
    license: str = "other",
) -> None:
    """README.md with ``configs`` (one glob per split present) so ``load_dataset(out_dir)`` finds the shards."""
    from huggingface_hub import DatasetCard, DatasetCardData

    splits = sorted({p.name.rsplit("-", 1)[0] for p in (out_dir / "data").glob("*.parquet")})
    data = DatasetCardData(
        license=license,
        pretty_name="3D-EmoStyle (rebuilt with MediaPipe blendshapes)",
        tags=["audio", "3d-facial-animation", "blendshapes", "arkit", "talking-head", "emotion"],
        configs=[{"config_name": "default",
                  "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits]}],
    )
    seconds = sum(float(e.get("seconds", 0)) for e in ok)
    lines = [
        f"---\n{data.to_yaml()}\n---",
        "# 3D-EmoStyle (rebuilt)\n",
        "Talking-face clips as 16 kHz mono audio + 52 ARKit blendshape tracks at 30 fps (alphabetical ARKit "
        "order, `tongueOut` = 0), labelled with MediaPipe Face Landmarker (VIDEO mode, largest face, "
        "`_neutral` dropped) as in the PESTalk paper (ACM MM 2025). Built by "
        "`hub_scripts/build_3d_emostyle.py` from pestalk-hf.\n",
        "```python\nfrom datasets import load_dataset\nds = load_dataset(REPO, split=\"train\", streaming=True)\n"
        "# audio is FLAC bytes (Audio(decode=False)); decode with soundfile\n```\n",
        "## Contents\n",
        f"- clips: {len(ok)} ({seconds / 3600:.2f} h); skipped: {summary.skipped} (see `report.jsonl`)",
        f"- splits: {', '.join(f'{k}={v}' for k, v in summary.splits.items()) or 'none'}",
        f"- emotions: {', '.join(f'{k}={v}' for k, v in sorted(Counter(e['emotion'] for e in ok).items()))}",
        f"- speakers: {len({e['speaker'] for e in ok})}; sources: {', '.join(sorted({e['source'] for e in ok})) or '-'}",
        f"- neutral↔emotional pairs (same speaker and sentence): {len(pairs)} in `pairs.jsonl`\n",
        "## Splits\n",
        "Deterministic from speaker and sentence: `test_speakers` = held-out speakers; `test` = held-out "
        "sentences of the other speakers (the same sentences for everyone, so no test sentence is ever "
        "seen in training); `train` = the rest. See `plan.json` for the exact options.\n",
        "## Labels and their limits\n",
        "Blendshapes are MediaPipe estimates from video, not motion capture: expect noise, a weak "
        "`cheekPuff`/`mouthRoll*` response and no tongue. Short face-less gaps are linearly interpolated; "
        "clips with too many are skipped (reasons in `report.jsonl`).\n",
        "## Licence\n",
        "The labels are derived from the source videos: the source corpus's licence and attribution "
        "apply (MEAD: research use; GRID: CC BY 4.0, Cooke et al. 2006; HDTF: per video).\n",
    ]
    DatasetCard("\n".join(lines)).save(out_dir / "README.md")


def push_to_hub(out_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload shards, card, report and pair index to a Hub ``datasets`` repo; returns the repo URL.

    ``upload_folder`` keeps the shard layout as built (no re-encoding through ``Dataset.push_to_hub``).
    """
    from huggingface_hub import HfApi

    out_dir = Path(out_dir)
    if not any((out_dir / "data").glob("*.parquet")):
        raise ValueError(f"nothing to push: no Parquet shards in {out_dir / 'data'}")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    api.upload_folder(
        repo_id=repo_id, repo_type="dataset", folder_path=str(out_dir),
        allow_patterns=["data/*.parquet", "README.md", "report.jsonl", "pairs.jsonl", "plan.json"],
        commit_message="Upload 3D-EmoStyle shards",
    )
    return str(url)

