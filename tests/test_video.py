"""Video to aligned faces on videos built from the CC0 photos: faces leaving and entering the
view, a small face, damaged files (data_prep.video, data_prep.extract, data_prep.qc)."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pandas as pd
import pytest

from data_prep import store
from data_prep.extract import extract_faces
from data_prep.preprocess import make_params, params_from_record, params_hash, preprocess, process_video, read_qc
from data_prep.qc import summary_by_severity
from data_prep.video import decoder_gist


def textured_face_video(path, photo, present, fps=10.0, size=(640, 480), face_px=320, seed=0):
    """An mp4v video on a smooth random texture (no face), the photo pasted where ``present[i]``."""
    width, height = size
    rng = np.random.default_rng(seed)
    background = cv2.resize(rng.integers(40, 160, (24, 32, 3), dtype=np.uint8), size, interpolation=cv2.INTER_CUBIC)
    face = cv2.resize(cv2.imread(str(photo)), (face_px, face_px), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for i, shown in enumerate(present):
        frame = background.copy()
        if shown:
            x, y = (width - face_px) // 2 + 3 * (i % 4), (height - face_px) // 2 + 2 * (i % 3)
            frame[y : y + face_px, x : x + face_px] = face
        writer.write(frame)
    writer.release()
    return path


def row(video_id, path, bdi=7.0, partition="Training"):
    return dict(video_id=video_id, subject_id=video_id, session_id=video_id, task="Freeform", partition=partition,
                bdi=bdi, path=str(path))


LEAVES = [True] * 4 + [False] * 6
ENTERS = [False] * 6 + [True] * 4


def test_only_frames_with_a_face_are_stored(tmp_path, face_photos):
    leaves = textured_face_video(tmp_path / "leaves.mp4", face_photos[0], LEAVES)
    enters = textured_face_video(tmp_path / "enters.mp4", face_photos[6], ENTERS, seed=1)
    blank = textured_face_video(tmp_path / "blank.mp4", face_photos[0], [False] * 5, seed=2)
    manifest = pd.DataFrame([row("leaves", leaves, 5.0), row("enters", enters, 30.0), row("blank", blank, 22.0)])
    store_dir = preprocess(manifest, tmp_path / "out", size=64, progress=False)
    qc = read_qc(store_dir).set_index("video_id")
    for vid, present in (("leaves", LEAVES), ("enters", ENTERS)):
        data = store.read_video(store.video_path(store_dir, vid))
        assert data["frame_index"].tolist() == [i for i, p in enumerate(present) if p]
        assert data["how"].tolist() == ["detected"] * 4
        # qc.csv describes the store: the tracker that wrote it counted these frames.
        assert qc.loc[vid, ["detected", "reused", "none", "frames_kept"]].tolist() == [4, 0, 6, 4]
    assert qc.loc["blank", "status"] == "failed"
    bands = summary_by_severity(store_dir)
    assert bands.loc["minimal", ["videos", "videos_dropped", "frames_sampled", "frames_kept"]].tolist() == [1, 0, 10, 4]
    assert bands.loc["minimal", "detection_rate"] == 0.4 and bands.loc["severe", "frames_kept"] == 4
    assert bands.loc["moderate", ["videos", "videos_dropped", "frames_kept"]].tolist() == [1, 1, 0]
    assert bands.loc["mild", "videos"] == 0
    # Unverified reuse (the earlier stores) keeps the first five background frames after the face left.
    old = process_video(row("leaves", leaves), tmp_path / "old", make_params(size=64, reuse_min_score=None))
    assert old["reused"] == 5 and old["frames_kept"] == 9


def test_scoring_takes_the_same_frames(tmp_path, face_photos, make_face_video):
    from dlga.inference.predict import PredictError
    from dlga.inference.predict import extract_faces as predict_faces

    video = make_face_video(tmp_path / "v.mp4", face_photos[2], n_frames=8, blank=(0, 1, 5, 6, 7))
    track = predict_faces(video, make_params(size=64))
    assert track.frame_index.tolist() == [2, 3, 4] and track.sampled_how.tolist()[5:] == ["none"] * 3
    np.testing.assert_array_equal(track.frames, extract_faces(video, make_params(size=64)).frames)
    with pytest.raises(PredictError, match="no face found in any of 3 sampled frames"):
        predict_faces(make_face_video(tmp_path / "b.mp4", face_photos[2], n_frames=3, blank=(0, 1, 2)), make_params())


def test_a_face_of_about_50_pixels_is_found(tmp_path, face_photos):
    small = textured_face_video(tmp_path / "small.mp4", face_photos[4], [True] * 4, size=(176, 144), face_px=120)
    track = extract_faces(small, make_params(size=64))
    assert track.how.tolist() == ["detected"] * 4
    width = int(np.median(track.boxes[:, 2] - track.boxes[:, 0]))
    assert 40 <= width <= 60, width
    qc = process_video(row("small", small), tmp_path / "s", make_params(size=64, upsample_retry=False))
    assert qc["status"] == "failed"
    assert qc["reason"] == ("no face found in any of 4 sampled frames (176x144 frames; a face smaller than about 80 "
                            "pixels is not found)")


def faststart(data: bytes) -> bytes:
    """An mp4 with its index (``moov``) moved before the frames (``mdat``), chunk offsets fixed,
    so that a truncated copy still opens and fails while decoding, like a partial download."""

    def boxes(buf, start, end):
        i = start
        while i < end:
            size, kind = struct.unpack(">I4s", buf[i : i + 8])
            yield kind, i, size
            i += size

    top = {kind: (i, size) for kind, i, size in boxes(data, 0, len(data))}
    i, size = top[b"moov"]
    moov = bytearray(data[i : i + size])

    def shift(start, end):
        for kind, j, n in boxes(moov, start, end):
            if kind in (b"trak", b"mdia", b"minf", b"stbl"):
                shift(j + 8, j + n)
            elif kind == b"stco":
                for k in range(struct.unpack(">I", moov[j + 12 : j + 16])[0]):
                    o = j + 16 + 4 * k
                    moov[o : o + 4] = struct.pack(">I", struct.unpack(">I", moov[o : o + 4])[0] + len(moov))

    shift(8, len(moov))
    head = b"".join(data[j : j + n] for kind, (j, n) in top.items() if kind not in (b"moov", b"mdat"))
    j, n = top[b"mdat"]
    return head + bytes(moov) + data[j : j + n]


def test_ffmpeg_messages_go_into_the_reason_not_the_terminal(tmp_path, capfd):
    from dlga.inference.predict import PredictError
    from dlga.inference.predict import extract_faces as predict_faces

    noisy = tmp_path / "noisy.mp4"
    writer = cv2.VideoWriter(str(noisy), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    for i in range(20):
        writer.write(np.random.default_rng(i).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    writer.release()
    data = noisy.read_bytes()
    partial = tmp_path / "partial.mp4"
    partial.write_bytes(faststart(data)[: int(len(data) * 0.6)])
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index is at the end: nothing opens
    capfd.readouterr()
    track = extract_faces(partial, make_params(size=64))
    assert 0 < track.frames_read < 20 and track.decoder_log
    qc = process_video(row("partial", partial), tmp_path / "s", make_params(size=64))
    assert qc["status"] == "failed" and qc["frames_read"] == track.frames_read
    with pytest.raises(PredictError, match="cannot open the video.*; FFmpeg: moov atom not found"):
        predict_faces(cut, make_params(size=64))
    qc = process_video(row("cut", cut), tmp_path / "s", make_params(size=64))
    assert "FFmpeg: moov atom not found" in qc["reason"]
    err = capfd.readouterr().err
    assert "moov atom" not in err and "[mpeg4" not in err, err
    assert decoder_gist("[mpeg4 @ 0x5a] ac-tex damaged at 1 2\n[mpeg4 @ 0x5b] ac-tex damaged at 1 2\nError at MB: 4\n") == (
        "ac-tex damaged at 1 2 (x2); Error at MB: 4")


def test_partial_file_that_keeps_a_face_records_ffmpeg_in_the_reason(tmp_path, face_photos):
    video = textured_face_video(tmp_path / "v.mp4", face_photos[1], [True] * 20)
    data = video.read_bytes()
    partial = tmp_path / "partial.mp4"
    partial.write_bytes(faststart(data)[: int(len(data) * 0.6)])
    qc = process_video(row("partial", partial), tmp_path / "s", make_params(size=64))
    assert qc["status"] == "ok" and 0 < qc["frames_read"] < 20
    assert qc["reason"].startswith(f"decoded {qc['frames_read']} of the 20 frames the container reports; FFmpeg: ")


def test_stores_say_how_each_frame_was_found_and_reused_frames_can_be_dropped(tmp_path):
    from dlga.training.data import load_partition
    from helpers_store import make_store

    root = make_store(tmp_path / "store", {"Training": 2, "Development": 1, "Testing": 1}, frames_per_video=4)
    vid = store.read_manifest(root).video_id[0]
    d = store.read_video(store.video_path(root, vid))
    assert d["how"].tolist() == ["detected"] * 4
    store.write_video(store.video_path(root, vid), d["frames"], d["landmarks"], d["frame_index"], d["score"],
                      how=np.array(["detected", "reused", "reused", "cascade"]))
    assert load_partition(root, "Training").n_frames == 8
    part = load_partition(root, "Training", drop_reused=True)
    assert part.n_frames == 6 and part.videos.set_index("video_id").loc[vid, "n_frames"] == 2
    assert load_partition(root, "Training", in_memory=False, drop_reused=True).n_frames == 6
    with pytest.raises(store.StoreError, match="how must be"):
        store.write_video(tmp_path / "x.npz", d["frames"], d["landmarks"], d["frame_index"], 1.0, how=["sky"] * 4)
    # A store written before `how`: a default on reading, a clear error when asked to drop.
    old = tmp_path / "old.npz"
    np.savez_compressed(old, frames=d["frames"], landmarks=d["landmarks"], frame_index=d["frame_index"],
                        score=np.float32(3), version=np.int32(1))
    assert store.read_video(old)["how"].tolist() == ["unknown"] * 4
    with pytest.raises(store.StoreError, match="reused frames cannot be dropped"):
        store.read_video(old, drop_reused=True)


def test_verified_reuse_changes_the_store_and_old_records_keep_their_meaning():
    new, old = make_params(), make_params(reuse_min_score=None, upsample_retry=False)
    assert params_hash(new) != params_hash(old)
    record = {k: v for k, v in new.items() if k not in ("reuse_min_score", "upsample_retry")}
    assert params_from_record(record) == old
    assert params_from_record(make_params(fallback="cascade"))["fallback"] == "cascade"
    with pytest.raises(ValueError, match="reuse_min_score"):
        make_params(reuse_min_score=float("nan"))
