"""Reading videos: frames sampled at a rate, and FFmpeg's messages kept out of the terminal.

:func:`iter_sampled_frames` decodes a video with OpenCV and yields the frames that
:class:`FrameSampler` keeps. OpenCV decodes through FFmpeg, whose decoder writes its complaints
about damaged files ("ac-tex damaged", "Invalid NAL unit size", "moov atom not found") straight
to the process's stderr, around the project's own clear message. Here stderr (the file
descriptor) is redirected to a temporary file during each OpenCV call that decodes, and the
distinct messages are summarised (:func:`decoder_gist`) into ``stats["decoder_log"]`` and into
the :class:`VideoError` message, where QC reasons and ``predict`` errors show them. (Setting
``OPENCV_FFMPEG_LOGLEVEL=-8`` before the first capture also silences FFmpeg, but then the
messages are lost; ``OPENCV_LOG_LEVEL`` and ``cv2.utils.logging`` do not reach FFmpeg's log.)
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import IO, Any, Iterator

import cv2
import numpy as np

UNKNOWN_FPS = 30.0
"""Frame rate assumed when the container reports none."""


class VideoError(RuntimeError):
    """One video cannot be read or gives no face; the message is the QC reason."""


class FrameSampler:
    """Which source frames to keep at ``sample_fps`` from a ``fps`` source.

    Frame ``i`` (time ``i / fps``) is kept when it is the first frame at or after a sample time
    ``k / sample_fps``; ``sample_fps=None`` (or at or above ``fps``) keeps every frame. Call it
    with increasing frame indices; skipped indices (frames that do not exist) are allowed.
    """

    def __init__(self, fps: float, sample_fps: float | None):
        self.step = None if sample_fps is None or sample_fps >= fps else fps / sample_fps
        self._next = 0.0

    def __call__(self, index: int) -> bool:
        if self.step is None:
            return True
        if index + 1e-6 < self._next:
            return False
        while self._next <= index + 1e-6:
            self._next += self.step
        return True


_ADDRESS = re.compile(r"^\[[^\]]*@ 0x[0-9a-f]+\]\s*")


def decoder_gist(log: str, limit: int = 3) -> str:
    """The distinct messages of an FFmpeg/OpenCV log, most frequent first, as one line.

    ``"[mpeg4 @ 0x55d] ac-tex damaged at 11 10"`` becomes ``"ac-tex damaged at 11 10"``; a
    message seen several times gets ``(xN)``; at most ``limit`` messages, then ``...``.
    Empty string for an empty log.
    """
    lines = [_ADDRESS.sub("", line).strip() for line in log.splitlines()]
    counts = Counter(line for line in lines if line)
    parts = [f"{msg} (x{n})" if n > 1 else msg for msg, n in counts.most_common(limit)]
    return "; ".join(parts) + ("; ..." if len(counts) > limit else "")


@contextlib.contextmanager
def _stderr_to(sink: IO[bytes]) -> Iterator[None]:
    """Point file descriptor 2 at ``sink`` for the duration (C libraries write there directly).

    Another thread writing to stderr meanwhile is captured too; the window is one OpenCV call.
    """
    saved = os.dup(2)
    try:
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def iter_sampled_frames(
    path: str | os.PathLike, sample_fps: float | None, stats: dict[str, Any] | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a video and yield ``(frame_index, rgb uint8 (H, W, 3))`` at ``sample_fps``.

    Sampling follows :class:`FrameSampler`. Decoding stops at the first frame that fails to
    decode: containers of truncated files report more frames than they hold. ``stats`` (if
    given) receives ``fps``, ``frames_reported``, ``frames_read`` and ``decoder_log`` (the gist
    of FFmpeg's messages, "" when it said nothing), kept up to date while frames are yielded.

    Raises:
        VideoError: for a missing, empty or unopenable file (with FFmpeg's gist when it has one).
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError("file not found")
    if path.stat().st_size == 0:
        raise VideoError("empty file (0 bytes)")
    stats = {} if stats is None else stats
    stats["decoder_log"] = ""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as log:

        def gist() -> str:
            log.seek(0)
            return decoder_gist(log.read().decode("utf-8", "replace"))

        with _stderr_to(log):
            # One decoding thread: FFmpeg's frame threads print their complaints whenever they
            # get to them, outside the window in which stderr is captured.
            cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
            if not cap.isOpened():  # not FFmpeg's: let OpenCV choose a backend
                cap = cv2.VideoCapture(str(path))
        try:
            if not cap.isOpened():
                said = gist()
                raise VideoError("cannot open the video (unreadable or unsupported container/codec)"
                                 + (f"; FFmpeg: {said}" if said else ""))
            fps = cap.get(cv2.CAP_PROP_FPS)
            if not (fps and math.isfinite(fps) and fps > 0):
                fps = UNKNOWN_FPS  # unknown rate: sampling assumes 30 frames/s
            stats.update(fps=float(fps), frames_reported=int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), frames_read=0)
            sampler = FrameSampler(fps, sample_fps)
            index = 0
            while True:
                keep = sampler(index)
                with _stderr_to(log):
                    ok, bgr = cap.read() if keep else (cap.grab(), None)
                if log.tell():
                    stats["decoder_log"] = gist()
                    log.seek(0, os.SEEK_END)
                if not ok:
                    break
                stats["frames_read"] = index + 1
                if keep:
                    yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                index += 1
        finally:
            with _stderr_to(log):
                cap.release()


def source_signature(path: str | os.PathLike) -> dict[str, Any]:
    """Size and modification time of a source file (None when missing)."""
    try:
        st = Path(path).stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    except OSError:
        return {"size": None, "mtime_ns": None}
