"""Face detection, landmarks and alignment on the ten CC0 photos (data_prep.faces, data_prep.align)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from data_prep import align, faces


@pytest.fixture(scope="module")
def detector():
    return faces.LandmarkDetector()


@pytest.fixture(scope="module")
def photos_rgb(face_photos):
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in face_photos]


def test_one_face_and_68_landmarks_inside_the_box(detector, photos_rgb):
    for img in photos_rgb:
        boxes = detector.detect(img)
        assert len(boxes) == 1
        left, top, right, bottom = boxes[0]
        w, h = right - left, bottom - top
        assert 120 < w < 450 and 120 < h < 450
        pts = detector.landmarks(img, boxes[0])
        assert pts.shape == (68, 2) and pts.dtype == np.float32
        # Inside the box, give or take: the jaw overhangs it on turned heads and below the chin.
        assert np.all(pts[:, 0] > left - 0.2 * w) and np.all(pts[:, 0] < right + 0.2 * w)
        assert np.all(pts[:, 1] > top) and np.all(pts[:, 1] < bottom + 0.25 * h)
        inner = pts[17:]  # brows, nose, eyes, mouth: strictly inside
        assert np.all((inner[:, 0] > left) & (inner[:, 0] < right) & (inner[:, 1] > top) & (inner[:, 1] < bottom))
        # Anatomy: eye 36-41 on the image's left of eye 42-47, nose tip below the eyes, chin (about) lowest.
        eyes = align.eye_centres(pts)
        assert eyes[0, 0] < eyes[1, 0]
        assert pts[30, 1] > eyes[:, 1].max() and pts[8, 1] >= pts[:, 1].max() - 3


def test_alignment_puts_eyes_on_the_template(detector, photos_rgb):
    tpl_eyes = align.eye_centres(align.template(224))
    for img in photos_rgb:
        pts = faces.detect_landmarks(img)
        aligned, apts, m = align.align_face(img, pts, 224)
        assert aligned.shape == (224, 224, 3) and aligned.dtype == np.uint8
        assert apts.shape == (68, 2) and apts.dtype == np.float32 and m.shape == (2, 3)
        assert np.abs(align.eye_centres(apts) - tpl_eyes).max() < 2.0
        # The carried landmarks agree with landmarks found again on the aligned face.
        again = faces.LandmarkDetector(detect_max_side=None, upsample=1).detect_landmarks(aligned)
        assert again is not None
        assert np.linalg.norm(again - apts, axis=1).mean() < 0.06 * align.inter_ocular(apts)


def test_template_geometry_matches_fig3():
    t = align.template(224)
    eyes = align.eye_centres(t)
    assert abs(eyes[0, 1] - eyes[1, 1]) < 1e-6  # eyes level
    assert abs(eyes.mean(0)[0] - 111.5) < 0.05  # centred between the eyes
    lo, hi = t.min(0), t.max(0)
    assert np.all(lo > 10) and np.all(hi < 214)  # brows to chin, whole face in frame
    assert abs((lo[1] + hi[1]) / 2 - 111.5) < 1e-6
    assert 0.30 < align.inter_ocular(t) / 224 < 0.42
    np.testing.assert_allclose(align.template(112), (t + 0.5) / 2 - 0.5)


def test_committed_template_is_reproducible():
    rebuilt = align.build_template(align.photo_landmarks())
    np.testing.assert_allclose(rebuilt * 224, align.template(224) + 0.5, atol=0.05)


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, size=(20, 2))
    a, s, t = 0.3, 1.7, np.array([5.0, -3.0])
    rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = align.similarity_transform(src, src @ rot.T + t)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], t, atol=1e-9)
    mirrored = src * np.array([-1.0, 1.0])
    m = align.similarity_transform(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0  # never a reflection
    with pytest.raises(ValueError, match="src and dst"):
        align.similarity_transform(src, src[:5])


def test_tracker_reuses_the_box_for_a_bounded_number_of_frames(photos_rgb):
    det = faces.LandmarkDetector(max_reuse=2, reuse_min_score=None)  # unverified reuse, as earlier stores
    face = photos_rgb[0]
    blank = np.full_like(face, 90)
    tracker = det.tracker()
    hows = [tracker(img).how for img in (face, blank, blank, blank, face, blank)]
    assert hows == ["detected", "reused", "reused", "none", "detected", "reused"]
    pts, how = tracker(blank)
    assert how == "reused" and pts.shape == (68, 2)
    assert faces.detect_landmarks(blank) is None
    with pytest.raises(ValueError, match="detect_max_side"):
        faces.LandmarkDetector(detect_max_side=10)


def test_fast_path_agrees_with_full_resolution(photos_rgb):
    fast, full = faces.LandmarkDetector(detect_max_side=400), faces.LandmarkDetector(detect_max_side=None)
    errs = []
    for img in photos_rgb:
        canvas = np.full((480, 640, 3), 90, np.uint8)
        canvas[80:400, 160:480] = cv2.resize(img, (320, 320), interpolation=cv2.INTER_AREA)
        a, b = fast.detect_landmarks(canvas), full.detect_landmarks(canvas)
        errs.append(np.linalg.norm(a - b, axis=1).mean() / align.inter_ocular(b))
    assert np.mean(errs) < 0.03


def test_cascade_detector_finds_the_same_face(detector, photos_rgb):
    cascade = faces.CascadeDetector()
    for img in photos_rgb[:4]:
        boxes = cascade.detect(img)
        assert len(boxes) >= 1
        hog = detector.detect(img)[0]
        cx, cy = (boxes[0][0] + boxes[0][2]) / 2, (boxes[0][1] + boxes[0][3]) / 2
        assert hog[0] < cx < hog[2] and hog[1] < cy < hog[3]


def test_a_reused_box_is_kept_only_where_a_face_is_verified(photos_rgb, monkeypatch):
    det = faces.LandmarkDetector(max_reuse=5)
    face, blank = photos_rgb[1], np.full_like(photos_rgb[1], 90)
    tracker = det.tracker()
    first = tracker(face)
    assert first.how == "detected"
    monkeypatch.setattr(det, "detect", lambda image: [])  # HOG misses from now on
    kept, lost, back = tracker(face), tracker(blank), tracker(face)
    assert (kept.how, lost.how, back.how) == ("reused", "none", "reused")
    assert lost.landmarks is None and kept.landmarks.shape == (68, 2)
    # The verified box is the face's, close to the detected one.
    assert np.abs(np.subtract(kept.box, first.box)).max() < 0.15 * (first.box[2] - first.box[0])
    noise = np.random.default_rng(0).integers(0, 256, face.shape, dtype=np.uint8)
    assert det.verify(noise, first.box) is None and det.verify(blank, first.box) is None
