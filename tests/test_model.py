"""The DLGA-CNN layers and model against small numpy references and the paper's sizes."""

import re

import numpy as np
import pytest
import tensorflow as tf

from dlga.config import SETTINGS, ModelConfig
from dlga.model.layers import ChannelMaxPooling, GlobalAttention, LocalAttention, PatchCentres
from dlga.model.layers import PatchCrop, WeightedSpatialPyramidPooling, wspp_bins
from dlga.model.network import build_model, lga_size
from dlga.model.patches import PATCH_NAMES, centre_matrix, patch_centres, window_starts


def known_landmarks():
    """Landmark i sits at (i, 100 + i): any centre can be checked by hand."""
    i = np.arange(68, dtype=np.float32)
    return np.stack([i, 100 + i], axis=-1)


def test_channel_max_pooling_matches_numpy():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 16)).astype("float32")
    out = ChannelMaxPooling(4)(x).numpy()
    ref = x.reshape(2, 5, 5, 4, 4).max(-1)
    assert out.shape == (2, 5, 5, 4)
    np.testing.assert_array_equal(out, ref)


def test_channel_max_pooling_rejects_bad_channel_count():
    with pytest.raises(ValueError, match="divisible by 4"):
        ChannelMaxPooling(4)(np.zeros((1, 2, 2, 6), "float32"))


def test_patch_centres_of_known_landmarks():
    lm = known_landmarks()
    c = patch_centres(lm, input_size=224)
    assert c.shape == (24, 2)
    # 16 direct points, 1-indexed in the paper: 19 -> index 18
    np.testing.assert_allclose(c[0], [18, 118])
    np.testing.assert_allclose(c[15], [56, 156])  # point 57
    # midpoints (20, 38) and (27, 57): indices (19, 37), (26, 56)
    np.testing.assert_allclose(c[16], [28, 128])
    np.testing.assert_allclose(c[21], [41, 141])
    # mouth corners 49 and 55 offset by (-16, -16) at 224, the paper's signs on both sides
    np.testing.assert_allclose(c[22], [48 - 16, 148 - 16])
    np.testing.assert_allclose(c[23], [54 - 16, 154 - 16])
    # scaled with the input, and the mirrored reading
    np.testing.assert_allclose(patch_centres(lm, 112)[22], [48 - 8, 148 - 8])
    np.testing.assert_allclose(patch_centres(lm, 224, mirror_mouth_offsets=True)[23], [54 + 16, 154 - 16])
    # each row of the centre matrix is a convex combination of landmarks
    np.testing.assert_allclose(centre_matrix().sum(1), 1.0)



def test_patch_names_follow_the_ibug_scheme():
    # The numbers in a name are the landmarks its centre is made of (1-indexed).
    for name, row in zip(PATCH_NAMES, centre_matrix()):
        numbers = sorted(int(x) for x in re.search(r"\(([\d,]+)\)", name).group(1).split(","))
        assert numbers == sorted(np.flatnonzero(row) + 1), name
    names = dict(zip(range(1, 25), PATCH_NAMES))
    # iBUG 68: 39 and 44 are upper-lid points (not eye corners), 30 the lower nose ridge (31 is
    # the tip), 57 beside the lower-lip centre 58; 37 and 46 are outer eye corners; R/L the subject's.
    assert names[3] == "eye R upper lid (39)" and names[7] == "eye L upper lid (44)"
    assert names[10] == "nose ridge lower (30)" and "tip" not in " ".join(PATCH_NAMES)
    assert names[16] == "lower lip L (57)" and "mid" not in " ".join(PATCH_NAMES)
    assert names[2] == "eye R outer corner (37)" and names[8] == "eye L outer corner (46)"
    assert names[11] == "mouth corner R (49)" and names[15] == "mouth corner L (55)"
    assert len(set(PATCH_NAMES)) == 24

def test_patch_centres_layer_matches_numpy_on_a_batch():
    lm = np.random.default_rng(1).uniform(0, 224, size=(3, 68, 2)).astype("float32")
    out = PatchCentres(224)(lm).numpy()
    np.testing.assert_allclose(out, patch_centres(lm, 224), rtol=1e-5, atol=1e-4)


def test_patch_centres_layer_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(batch, 68, 2\)"):
        PatchCentres(224)(np.zeros((1, 5, 2), "float32"))


def test_patch_crop_at_known_centres_with_clamping():
    h = 28
    feat = np.arange(h * h * 2, dtype="float32").reshape(1, h, h, 2)
    centres = np.array([[[100.0, 60.0], [0.0, 0.0], [223.0, 223.0]]], "float32")
    out = PatchCrop(6, 8)([feat, centres]).numpy()
    assert out.shape == (1, 3, 6, 6, 2)
    starts = window_starts(centres[0], h, 6, 8)
    # centre (100, 60) -> (12.5, 7.5) - 3 -> round half up -> x 10, y 5
    np.testing.assert_array_equal(starts, [[10, 5], [0, 0], [22, 22]])
    for j, (x0, y0) in enumerate(starts):
        np.testing.assert_array_equal(out[0, j], feat[0, y0 : y0 + 6, x0 : x0 + 6])


def _reference_lal(layer, patches):
    """Each patch through its own ordinary convolutions and dense layers (numpy + tf.nn)."""
    w = {v.path.split("/")[-1]: v.numpy() for v in layer.weights}
    outs, alphas = [], []
    for j in range(patches.shape[1]):
        g = 0 if layer.shared else j
        x = patches[:, j]
        x = tf.nn.relu(tf.nn.conv2d(x, w["conv3x3_kernel"][g], 1, "SAME") + w["conv3x3_bias"][g])
        x = tf.nn.relu(tf.nn.conv2d(x, w["conv1x1_kernel"][g], 1, "SAME") + w["conv1x1_bias"][g]).numpy()
        phi = x.reshape(len(x), -1) @ w["phi_kernel"][g] + w["phi_bias"][g]
        a = tf.nn.max_pool2d(x, 2, 2, "VALID") if layer.pool else x
        a = tf.nn.relu(tf.nn.conv2d(a, w["att_conv_kernel"][g], 1, "SAME") + w["att_conv_bias"][g]).numpy()
        a = np.maximum(a.reshape(len(a), -1) @ w["att_fc1_kernel"][g] + w["att_fc1_bias"][g], 0)
        alpha = 1 / (1 + np.exp(-(a @ w["att_fc2_kernel"][g] + w["att_fc2_bias"][g])))[:, 0]
        outs.append(alpha[:, None] * phi)
        alphas.append(alpha)
    return np.concatenate(outs, axis=1), np.stack(alphas, axis=1)


@pytest.mark.parametrize("impl", ["grouped", "einsum", "dense", "taps", "auto"])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("p", [6, 2])
def test_local_attention_equals_per_patch_reference(impl, shared, p):
    tf.keras.utils.set_random_seed(0)
    patches = np.random.default_rng(2).normal(size=(2, 24, p, p, 8)).astype("float32")
    layer = LocalAttention(units=5, attention_channels=4, attention_units=3, shared=shared, conv_impl=impl)
    rho, alpha = layer(patches)
    assert rho.shape == (2, 24 * 5) and alpha.shape == (2, 24)
    ref_rho, ref_alpha = _reference_lal(layer, patches)
    np.testing.assert_allclose(alpha.numpy(), ref_alpha, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rho.numpy(), ref_rho, rtol=1e-4, atol=1e-4)
    g = 1 if shared else 24
    assert layer.conv1_kernel.shape == (g, 3, 3, 8, 8)


@pytest.mark.parametrize("p", [6, 3, 2])
def test_local_attention_gradients_agree_between_conv_impls(p):
    """Training takes gradients through the per-patch convolutions: every path gives the same."""
    patches = tf.constant(np.random.default_rng(4).normal(size=(9, 24, p, p, 8)).astype("float32"))
    grads = {}
    for impl in ("grouped", "einsum", "dense", "taps"):
        tf.keras.utils.set_random_seed(0)
        layer = LocalAttention(units=5, attention_channels=4, attention_units=3, conv_impl=impl)
        with tf.GradientTape() as tape:
            tape.watch(patches)
            rho, alpha = layer(patches)
            loss = tf.reduce_sum(rho**2) + tf.reduce_sum(alpha)
        grads[impl] = [g.numpy() for g in tape.gradient(loss, [patches, layer.conv1_kernel, layer.att_conv_kernel])]
    for impl in ("einsum", "dense", "taps"):
        for got, want in zip(grads[impl], grads["grouped"]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch, training, grouped, cond", [
    (9, False, False, False),  # forward only: im2col at every batch
    (1, False, False, False),
    (9, True, True, False),  # training from batch 8 up: the grouped kernel, chosen at trace time
    (1, True, False, False),
    (None, True, False, True),  # batch unknown when traced: the choice is a tf.cond
])
def test_auto_per_patch_convolution_is_chosen_when_traced(batch, training, grouped, cond):
    layer = LocalAttention(units=5, attention_channels=4, attention_units=3, conv_impl="auto")
    layer.build((None, 24, 6, 6, 8))
    fn = tf.function(lambda x: layer(x, training=training)[0])
    ops = {op.type for op in fn.get_concrete_function(tf.TensorSpec((batch, 24, 6, 6, 8))).graph.get_operations()}
    assert ("Conv2D" in ops) == grouped
    assert bool(ops & {"If", "StatelessIf"}) == cond


def test_grouped_convolution_gradient_is_available_under_the_project_environment():
    # dlga/__init__.py turns oneDNN on: without it TensorFlow's CPU kernels cannot take the
    # gradient of a grouped convolution and `auto` falls back to im2col.
    import os

    from dlga.model.patch_conv import grouped_gradient_available

    assert os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"
    assert grouped_gradient_available()


def test_per_patch_weights_differ_between_patches():
    layer = LocalAttention(units=4, attention_channels=4)
    layer.build((None, 24, 6, 6, 8))
    k = layer.conv1_kernel.numpy()
    assert not np.allclose(k[0], k[1])
    # He-normal per patch: fan-in is 3*3*8 = 72, not 24*72
    assert 0.8 * np.sqrt(2 / 72) < k.std() < 1.2 * np.sqrt(2 / 72)


def test_global_attention_shapes_and_range():
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 10)).astype("float32")
    rho, alpha = GlobalAttention(units=7, channels=6, attention_channels=4)(x)
    assert rho.shape == (2, 7) and alpha.shape == (2,)
    assert np.all((alpha.numpy() >= 0) & (alpha.numpy() <= 1))


def test_wspp_lengths_and_weights():
    assert wspp_bins(2048) == [81, 40, 20, 10]
    assert sum(wspp_bins(2048)) == 151  # the paper says "150D"
    assert sum(wspp_bins(1536)) == 61 + 30 + 15 + 7
    assert wspp_bins(100) == [4, 1, 0, 0]  # windows longer than the vector are skipped
    x = np.arange(2048, dtype="float32")[None]
    out = WeightedSpatialPyramidPooling()(x).numpy()[0]
    assert out.shape == (151,)
    # max of window k of size w is its last element; weights 1/2, 1/4, 1/8, 1/8
    np.testing.assert_allclose(out[:81], 0.5 * (np.arange(81) * 25 + 24))
    np.testing.assert_allclose(out[81:121], 0.25 * (np.arange(40) * 51 + 50))
    np.testing.assert_allclose(out[121:141], 0.125 * (np.arange(20) * 102 + 101))
    np.testing.assert_allclose(out[141:], 0.125 * (np.arange(10) * 204 + 203))


def test_wspp_rejects_too_short_input():
    with pytest.raises(ValueError, match="WSPP expects"):
        WeightedSpatialPyramidPooling()(np.zeros((1, 10), "float32"))


EXPECTED_LGA = {"LA-CMP-": 1536, "LA-CMP+": 1536, "A": 1536, "B": 1536, "GA": 512, "C": 512,
                "D": 2048, "E": 2048, "F": 2048, "G": 2048}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_ten_settings_build_with_expected_sizes(setting):
    cfg = ModelConfig.setting(setting, preset="tiny")
    model = build_model(cfg)
    assert lga_size(model) == EXPECTED_LGA[setting] == cfg.lga_units
    fc1_in = model.get_layer("fc1").input.shape[-1]
    assert fc1_in == (sum(wspp_bins(EXPECTED_LGA[setting])) if cfg.wspp else EXPECTED_LGA[setting])
    feat = model.get_layer("conv4_cmp" if cfg.cmp else "conv4_2").output.shape
    assert feat[1:] == (8, 8, 80 if cfg.cmp else 64)
    rng = np.random.default_rng(4)
    out = model({"image": rng.uniform(0, 255, (3, 64, 64, 3)).astype("float32"),
                 "landmarks": rng.uniform(10, 54, (3, 68, 2)).astype("float32")})
    assert out["score"].shape == (3,)
    assert ("local_attention" in out) == cfg.local and ("global_attention" in out) == cfg.global_
    for key in ("local_attention", "global_attention"):
        if key in out:
            a = out[key].numpy()
            assert np.all((a >= 0) & (a <= 1))


def test_paper_preset_parameter_counts():
    # The size check of the paper preset, biases included (Decisions: Architecture)
    assert build_model(ModelConfig.setting("G")).count_params() == 212_438_490
    assert build_model(ModelConfig.setting("G", share_local_weights=True)).count_params() == 65_625_603


def test_paper_preset_feature_sizes():
    cfg = ModelConfig.setting("G")
    assert (cfg.feature_size, cfg.feature_channels, cfg.patch_size, cfg.lga_units) == (28, 640, 6, 2048)
    tiny = ModelConfig.preset("tiny")
    assert (tiny.feature_size, tiny.feature_channels, tiny.patch_size) == (8, 80, 2)


def test_warm_start_bias_sets_initial_prediction():
    model = build_model(ModelConfig.setting("G", preset="tiny", warm_start_bias=15.5))
    assert float(model.get_layer("fc2").bias.numpy()[0]) == 15.5
    assert not np.allclose(model.get_layer("fc2").kernel.numpy(), 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"input_size": 100}, "multiple of 16"),
        ({"width": 0}, "width"),
        ({"local": False, "global_": False}, "at least one branch"),
        ({"cmp_source": "conv5"}, "cmp_source"),
        ({"head_units": 0}, "head_units"),
    ],
)
def test_bad_configurations_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_unknown_setting_and_preset():
    with pytest.raises(ValueError, match="unknown setting 'H'"):
        ModelConfig.setting("H")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        ModelConfig.preset("huge")


def test_config_json_round_trip():
    cfg = ModelConfig.setting("F", preset="small", share_local_weights=True)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"input_sise": 64})


def test_model_rejects_wrong_input_shapes():
    model = build_model(ModelConfig.setting("G", preset="tiny"))
    with pytest.raises(ValueError):
        model({"image": np.zeros((1, 32, 32, 3), "float32"), "landmarks": np.zeros((1, 68, 2), "float32")})
    with pytest.raises(ValueError):
        model({"image": np.zeros((1, 64, 64, 3), "float32"), "landmarks": np.zeros((1, 5, 2), "float32")})


def test_layers_round_trip_through_get_config():
    for layer in (ChannelMaxPooling(4), PatchCentres(112, True), PatchCrop(3, 8),
                  LocalAttention(8, 4, shared=True, conv_impl="einsum"), GlobalAttention(16, 8, 4),
                  WeightedSpatialPyramidPooling()):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize("impl", ["dense", "taps"])
def test_small_patch_convolutions_run_under_mixed_bfloat16(impl):
    # The scatter of taps is built in float32; under a bfloat16 policy the kernels are bfloat16.
    x = tf.constant(np.random.default_rng(5).normal(size=(2, 24, 3, 3, 8)), tf.bfloat16)
    layer = LocalAttention(units=5, attention_channels=4, attention_units=3, conv_impl=impl, dtype="mixed_bfloat16")
    rho, alpha = layer(x)
    assert rho.dtype == tf.bfloat16 and rho.shape == (2, 120) and np.all(np.isfinite(alpha.numpy().astype(float)))


def test_a_mixed_bfloat16_model_keeps_geometry_score_and_attention_in_float32():
    """Under ``mixed_bfloat16`` the convolutions compute in bfloat16, but the patch centres
    and windows are float32's (bfloat16 would round a 150 px centre to 1 px) and every output
    is float32, close to the float32 model's with the same weights."""
    from dlga.training.train import dtype_policy

    config = ModelConfig.setting("G", preset="small")
    with dtype_policy("mixed_bfloat16"):
        mixed = build_model(config)
    reference = build_model(config)
    reference.set_weights(mixed.get_weights())
    assert mixed.get_layer("conv1").compute_dtype == "bfloat16"
    assert mixed.get_layer("patch_centres").compute_dtype == "float32"
    rng = np.random.default_rng(1)
    s = config.input_size
    x = {"image": rng.uniform(0, 255, (3, s, s, 3)).astype("float32"),
         "landmarks": rng.uniform(0.2 * s, 0.8 * s, (3, 68, 2)).astype("float32") + 0.4}
    centres = mixed.get_layer("patch_centres")(x["landmarks"])
    np.testing.assert_array_equal(centres, reference.get_layer("patch_centres")(x["landmarks"]))
    feature = tf.reshape(tf.range(s // 8 * s // 8, dtype=tf.float32), (1, s // 8, s // 8, 1))
    crop = mixed.get_layer("patch_crop")
    np.testing.assert_array_equal(crop([tf.cast(feature, tf.bfloat16), centres[:1]]),
                                  tf.cast(reference.get_layer("patch_crop")([feature, centres[:1]]), tf.bfloat16))
    out, ref = mixed(x), reference(x)
    assert {k: v.dtype for k, v in out.items()} == {k: tf.float32 for k in ref}
    np.testing.assert_allclose(out["score"], ref["score"], atol=0.1)
