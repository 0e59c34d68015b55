"""The tf.data pipeline: frames of a preprocessed store (Decisions: Data) to model batches.

A store holds one ``.npz`` per video; all reads go through :mod:`data_prep.store` and nothing
is pickled. The model sees one aligned frame at a time, so training shuffles *frames* across
videos; evaluation walks the frames in a fixed order and keeps each frame's video id so that
:func:`dlga.training.metrics.video_scores` can average them.

The training order is a pure function of ``(seed, step)``: every epoch is a seeded permutation
of frame indices, so a run resumed at step ``k`` sees exactly the batches an uninterrupted run
sees from step ``k`` on, with no iterator state to save.

Two frame sources give the same batches:

* in memory (default): all frames of a partition as one uint8 array (64 px: 12 KB a frame);
* streaming (``in_memory=False``): videos are read on demand through a small cache, for
  stores that do not fit in memory. Use ``shuffle_buffer`` then, so consecutive frames come
  from few videos and the cache hits.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf

from data_prep.store import PARTITIONS, StoreError, read_manifest, read_video, video_path

VIDEO_TABLE_COLUMNS = ["video_id", "subject_id", "session_id", "partition", "bdi", "n_frames"]
FRAME_TABLE_COLUMNS = ["video_id", "subject_id", "session_id", "partition", "bdi"]


@dataclass
class Partition:
    """The frames of one partition of a store.

    Attributes:
        name: ``Training``, ``Development`` or ``Testing``.
        videos: one row per video that has frames: ``video_id``, ``subject_id``,
            ``session_id``, ``partition``, ``bdi``, ``n_frames``, ``start`` (index of its
            first frame). A video without a session id is its own session, one without a
            subject id its session's subject (the unit the book's intervals resample).
        labels: (N,) float32 BDI label of every frame.
        video_of_frame: (N,) int32 row of ``videos`` of every frame.
        frame_size: side S of the stored frames in pixels.
        frames: (N, S, S, 3) uint8, or None when streaming.
        landmarks: (N, 68, 2) float32 aligned pixel coordinates, or None when streaming.
        skipped: video ids listed in the manifest without any frame (no face found).
    """

    name: str
    store_dir: Path
    videos: pd.DataFrame
    labels: np.ndarray
    video_of_frame: np.ndarray
    frame_size: int
    frames: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    skipped: list[str] = field(default_factory=list)
    cache_videos: int = 8
    drop_reused: bool = False

    def __post_init__(self) -> None:
        self._cache: OrderedDict[int, dict] = OrderedDict()

    @property
    def n_frames(self) -> int:
        return int(len(self.labels))

    @property
    def in_memory(self) -> bool:
        return self.frames is not None

    def _video(self, row: int) -> dict:
        # A small LRU cache: the streaming order reads few distinct videos in a row.
        if row in self._cache:
            self._cache.move_to_end(row)
            return self._cache[row]
        data = read_video(video_path(self.store_dir, self.videos["video_id"].iat[row]), drop_reused=self.drop_reused)
        self._cache[row] = data
        while len(self._cache) > self.cache_videos:
            self._cache.popitem(last=False)
        return data

    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``index`` as ((S, S, 3) uint8, (68, 2) float32)."""
        if self.in_memory:
            return self.frames[index], self.landmarks[index]
        row = int(self.video_of_frame[index])
        data = self._video(row)
        k = index - int(self.videos["start"].iat[row])
        return data["frames"][k], data["landmarks"][k]


def _filled(videos: pd.DataFrame, column: str, fallback: str) -> pd.Series:
    """``videos[column]`` as text, ``videos[fallback]`` where it is missing or empty."""
    if column not in videos.columns:
        return videos[fallback].astype(str)
    values = videos[column].astype("string")
    return values.mask(values.isna() | (values.str.strip() == ""), videos[fallback].astype(str)).astype(str)


def load_partition(
    store_dir: str | os.PathLike, partition: str, *, in_memory: bool = True, cache_videos: int = 8,
    drop_reused: bool = False,
) -> Partition:
    """Read one partition of a store.

    Args:
        store_dir: a store written by ``data_prep`` (``manifest.csv`` + ``videos/*.npz``).
        partition: ``Training``, ``Development`` or ``Testing``.
        in_memory: load every frame now (fast, needs N*S*S*3 bytes) or stream on demand.
        cache_videos: decoded videos kept by the streaming source.
        drop_reused: leave out frames whose face came from a reused (verified) box, keeping
            only frames where the detector itself found the face.
    """
    if partition not in PARTITIONS:
        raise ValueError(f"partition must be one of {PARTITIONS}, got {partition!r}")
    store_dir = Path(store_dir)
    manifest = read_manifest(store_dir)
    rows = manifest[manifest["partition"] == partition].reset_index(drop=True)
    if rows.empty:
        raise StoreError(
            f"{store_dir}: no {partition} videos in the manifest; partitions present: "
            f"{sorted(manifest['partition'].unique())}"
        )
    if rows["bdi"].isna().any():
        bad = rows.loc[rows["bdi"].isna(), "video_id"].tolist()[:5]
        raise StoreError(f"{store_dir}: {partition} videos without a BDI label, e.g. {bad}")

    frames, landmarks, counts, size = [], [], [], None
    streaming_counts = "n_frames" in rows.columns and not in_memory and not drop_reused
    for video_id in rows["video_id"]:
        if streaming_counts:
            counts.append(None)
            continue
        data = read_video(video_path(store_dir, video_id), drop_reused=drop_reused)
        n = len(data["frames"])
        counts.append(n)
        if n and in_memory:
            if size is not None and data["frames"].shape[1] != size:
                raise StoreError(f"{video_id}: frames of {data['frames'].shape[1]} px in a store of {size} px")
            size = data["frames"].shape[1]
            frames.append(data["frames"])
            landmarks.append(data["landmarks"])
        elif n:
            size = data["frames"].shape[1]
    if streaming_counts:
        counts = rows["n_frames"].fillna(0).astype(int).tolist()
    rows = rows.assign(n_frames=np.asarray(counts, dtype=np.int64))
    skipped = rows.loc[rows["n_frames"] == 0, "video_id"].tolist()
    videos = rows[rows["n_frames"] > 0].reset_index(drop=True)
    if videos.empty:
        raise StoreError(f"{store_dir}: every {partition} video has zero frames (no face found)")
    videos["session_id"] = _filled(videos, "session_id", "video_id")
    videos["subject_id"] = _filled(videos, "subject_id", "session_id")
    videos["start"] = np.concatenate([[0], np.cumsum(videos["n_frames"].to_numpy())[:-1]])
    video_of_frame = np.repeat(np.arange(len(videos), dtype=np.int32), videos["n_frames"].to_numpy())
    labels = np.repeat(videos["bdi"].to_numpy(np.float32), videos["n_frames"].to_numpy())
    part = Partition(
        name=partition,
        store_dir=store_dir,
        videos=videos[VIDEO_TABLE_COLUMNS + ["start"]].copy(),
        labels=labels,
        video_of_frame=video_of_frame,
        frame_size=0,
        skipped=skipped,
        cache_videos=cache_videos,
        drop_reused=drop_reused,
    )
    if in_memory:
        part.frames = np.concatenate(frames)
        part.landmarks = np.concatenate(landmarks).astype(np.float32)
        part.frame_size = int(part.frames.shape[1])
    else:
        part.frame_size = int(size) if size is not None else int(part._video(0)["frames"].shape[1])
    return part


PARTITION_CACHE_SIZE = 9


def cached_partition(store_dir: str | os.PathLike, partition: str) -> Partition:
    """:func:`load_partition` in memory, kept in this process for the next call.

    A worker process trains many runs on the same stores, and reading a ``demo`` store's three
    partitions cost each run about 2 s. The last :data:`PARTITION_CACHE_SIZE` partitions are
    kept, keyed by the store's path and its manifest's size and modification time (a store
    rewritten in place is read again). Runs share the arrays, so they are made read-only.
    """
    store_dir = Path(store_dir).resolve()
    if not (store_dir / "manifest.csv").is_file():
        return load_partition(store_dir, partition)  # its error names the store and the fix
    stat = (store_dir / "manifest.csv").stat()
    return _read_only_partition(str(store_dir), partition, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=PARTITION_CACHE_SIZE)
def _read_only_partition(store_dir: str, partition: str, _size: int, _mtime_ns: int) -> Partition:
    # The manifest's size and time are in the arguments only to key the cache.
    part = load_partition(store_dir, partition)
    for array in (part.frames, part.landmarks, part.labels, part.video_of_frame):
        array.setflags(write=False)
    return part


# --- the training order ------------------------------------------------------------------
def epoch_order(
    part: Partition, epoch: int, seed: int, frames_per_video: int | None = None, shuffle_buffer: int = 0
) -> np.ndarray:
    """Frame indices of one training epoch, a pure function of ``(seed, epoch)``.

    Args:
        frames_per_video: if set, each epoch uses at most this many frames of each video,
            drawn anew every epoch (long videos then do not outweigh short ones).
        shuffle_buffer: 0 gives a uniform permutation of all frames. A positive value mimics
            a streaming shuffle: videos in random order, frames through a buffer of that size.
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    starts = part.videos["start"].to_numpy()
    counts = part.videos["n_frames"].to_numpy()
    per_video = []
    for s, n in zip(starts, counts):
        idx = np.arange(s, s + n)
        if frames_per_video is not None and n > frames_per_video:
            idx = np.sort(rng.choice(idx, size=frames_per_video, replace=False))
        per_video.append(idx)
    if shuffle_buffer <= 0:
        return rng.permutation(np.concatenate(per_video))
    stream = np.concatenate([per_video[i] for i in rng.permutation(len(per_video))])
    out, buf = np.empty(len(stream), dtype=np.int64), []
    k = 0
    for value in stream:
        if len(buf) < shuffle_buffer:
            buf.append(value)
            continue
        j = rng.integers(len(buf))
        out[k], buf[j] = buf[j], value
        k += 1
    rng.shuffle(buf)
    out[k:] = buf
    return out


def training_indices(
    part: Partition,
    batch_size: int,
    steps: int,
    seed: int,
    start_step: int = 0,
    frames_per_video: int | None = None,
    shuffle_buffer: int = 0,
) -> np.ndarray:
    """(steps - start_step, batch_size) frame indices of training steps ``start_step..steps-1``.

    An epoch's last incomplete batch is dropped, so step ``k`` always draws from epoch
    ``k // steps_per_epoch`` and resuming needs only the step number.
    """
    per_epoch_frames = len(epoch_order(part, 0, seed, frames_per_video, 0))
    steps_per_epoch = per_epoch_frames // batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"batch_size={batch_size} is larger than one epoch of {part.name} "
            f"({per_epoch_frames} frames); lower batch_size or frames_per_video"
        )
    first_epoch, last_epoch = start_step // steps_per_epoch, max(steps - 1, start_step) // steps_per_epoch
    chunks = []
    for epoch in range(first_epoch, last_epoch + 1):
        order = epoch_order(part, epoch, seed, frames_per_video, shuffle_buffer)
        chunks.append(order[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size))
    all_steps = np.concatenate(chunks) if chunks else np.zeros((0, batch_size), np.int64)
    offset = start_step - first_epoch * steps_per_epoch
    return all_steps[offset : offset + max(steps - start_step, 0)]


# --- tf.data -------------------------------------------------------------------------------
def resize_batch(images: tf.Tensor, landmarks: tf.Tensor, frame_size: int, input_size: int):
    """Resize (B, S, S, 3) uint8 frames to (B, s, s, 3) float32 raw pixels and scale landmarks.

    Pixels stay in 0-255 (the model rescales them); landmarks are multiplied by s / S.
    """
    images = tf.cast(images, tf.float32)
    landmarks = tf.cast(landmarks, tf.float32)
    if frame_size != input_size:
        images = tf.image.resize(images, (input_size, input_size), method="bilinear", antialias=True)
        landmarks = landmarks * (input_size / frame_size)
    return images, landmarks


def _options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    # No autotuning: its background thread competes with the training step for the core. A
    # demo run confined to one core (as each worker of the local executor is) took 22 s with
    # it and 12 s without; the buffers and map parallelism keep their untuned defaults.
    options.autotune.enabled = False
    # One worker: every replica's share comes from splitting each global batch.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _frames_dataset(part: Partition, indices: np.ndarray) -> tf.data.Dataset:
    """Unbatched (frame uint8, landmarks, label) for a flat array of frame indices."""
    s = part.frame_size
    if part.in_memory:
        frames = tf.constant(part.frames)
        landmarks = tf.constant(part.landmarks)
        labels = tf.constant(part.labels)
        ds = tf.data.Dataset.from_tensor_slices(indices.astype(np.int64))
        return ds.map(lambda i: (tf.gather(frames, i), tf.gather(landmarks, i), tf.gather(labels, i)))

    def generate():
        for i in indices:
            image, lm = part.frame(int(i))
            yield image, lm, part.labels[i]

    return tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec((s, s, 3), tf.uint8),
            tf.TensorSpec((68, 2), tf.float32),
            tf.TensorSpec((), tf.float32),
        ),
    )


def training_dataset(
    part: Partition, input_size: int, batch_size: int, steps: int, seed: int,
    start_step: int = 0, frames_per_video: int | None = None, shuffle_buffer: int = 0,
) -> tf.data.Dataset:
    """Batches of training steps ``start_step..steps-1``.

    Yields ``({"image": (B, s, s, 3) float32 0-255, "landmarks": (B, 68, 2) float32},
    (B,) float32 BDI)``, with s = ``input_size``.
    """
    idx = training_indices(part, batch_size, steps, seed, start_step, frames_per_video, shuffle_buffer)
    ds = _frames_dataset(part, idx.reshape(-1)).batch(batch_size, drop_remainder=True)

    def to_inputs(images, landmarks, labels):
        images, landmarks = resize_batch(images, landmarks, part.frame_size, input_size)
        return {"image": images, "landmarks": landmarks}, labels

    ds = ds.map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def evaluation_dataset(part: Partition, input_size: int, batch_size: int = 64) -> tf.data.Dataset:
    """All frames in store order, batched (last batch may be short).

    Yields ``{"image", "landmarks"}`` as in :func:`training_dataset`; frame ``i`` of the
    sequence belongs to video ``part.videos.iloc[part.video_of_frame[i]]``.
    """
    ds = _frames_dataset(part, np.arange(part.n_frames)).batch(batch_size)

    def to_inputs(images, landmarks, labels):
        images, landmarks = resize_batch(images, landmarks, part.frame_size, input_size)
        return {"image": images, "landmarks": landmarks}

    ds = ds.map(to_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def frame_table(part: Partition) -> pd.DataFrame:
    """One row per frame in evaluation order: :data:`FRAME_TABLE_COLUMNS` (video_id,
    subject_id, session_id, partition, bdi)."""
    return part.videos.iloc[part.video_of_frame][FRAME_TABLE_COLUMNS].reset_index(drop=True)
