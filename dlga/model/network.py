"""DLGA-CNN assembled from :mod:`dlga.model.layers` according to a :class:`~dlga.config.ModelConfig`.

Fig. 1 of the paper: Depressed-CNN (Table 2) -> CMP -> {LA-CNN (24 LAL), GA-CNN (GAL)} ->
concatenation (LGA, 2048) -> WSPP (151) -> FC(64) -> FC(1).

The model takes raw aligned faces and raw aligned landmarks; the patch centres are computed
inside, so callers never compute them by hand.
"""

from __future__ import annotations

import keras

from dlga.config import FEATURE_STRIDE, ModelConfig
from dlga.model.layers import (
    ChannelMaxPooling,
    GlobalAttention,
    LocalAttention,
    PatchCentres,
    PatchCrop,
    WeightedSpatialPyramidPooling,
)


def _conv(filters: int, name: str) -> keras.layers.Conv2D:
    # Every backbone conv is followed by ReLU: He initialisation (Decisions: Architecture).
    return keras.layers.Conv2D(
        filters, 3, padding="same", activation="relu", kernel_initializer="he_normal", name=name
    )


def build_model(config: ModelConfig, conv_impl: str = "auto", name: str | None = None) -> keras.Model:
    """Build one DLGA-CNN variant.

    Args:
        config: the architecture (see :class:`~dlga.config.ModelConfig`).
        conv_impl: how the 24 per-patch convolutions are batched (``"auto"``, ``"grouped"``, ``"einsum"``).
        name: model name (default: derived from the switches).

    Inputs (a dict):
        ``image``: ``(B, S, S, 3)`` float32 aligned RGB faces, raw pixels in [0, 255];
        ``landmarks``: ``(B, 68, 2)`` float32 aligned landmarks (x, y) in pixels at S.

    Outputs (a dict):
        ``score``: ``(B,)`` predicted BDI-II;
        ``local_attention``: ``(B, 24)`` the alpha_j of the 24 LAL modules (if ``local``);
        ``global_attention``: ``(B,)`` the alpha of the GAL module (if ``global_``).
    """
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config must be a ModelConfig, got {type(config).__name__}")
    s = config.input_size
    image = keras.Input((s, s, 3), name="image")
    landmarks = keras.Input((68, 2), name="landmarks")

    # Depressed-CNN, Table 2. Inputs scaled to [-1, 1] (Decisions: Architecture).
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="scale")(image)
    for i, base in enumerate((64, 128, 256), start=1):
        x = _conv(config.channels(base), f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
    conv4_1 = _conv(config.channels(512), "conv4_1")(x)
    conv4_2 = _conv(config.channels(512), "conv4_2")(conv4_1)
    features = conv4_2
    if config.cmp:
        source = conv4_1 if config.cmp_source == "conv4_1" else conv4_2
        cmp = ChannelMaxPooling(4, name="cmp")(source)
        features = keras.layers.Concatenate(name="conv4_cmp")([conv4_2, cmp])

    parts, outputs = [], {}
    if config.local:
        centres = PatchCentres(s, config.mirror_mouth_offsets, name="patch_centres")(landmarks)
        patches = PatchCrop(config.patch_size, FEATURE_STRIDE, name="patch_crop")([features, centres])
        rho, alpha = LocalAttention(
            units=config.phi_units,
            attention_channels=config.channels(128),
            shared=config.share_local_weights,
            conv_impl=conv_impl,
            name="local_attention",
        )(patches)
        parts.append(rho)
        outputs["local_attention"] = keras.layers.Identity(name="local_alpha", dtype="float32")(alpha)
    if config.global_:
        rho_g, alpha_g = GlobalAttention(
            units=config.psi_units,
            channels=config.channels(512),
            attention_channels=config.channels(128),
            name="global_attention",
        )(features)
        parts.append(rho_g)
        outputs["global_attention"] = keras.layers.Identity(name="global_alpha", dtype="float32")(alpha_g)

    lga = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="lga")(parts)
    z = WeightedSpatialPyramidPooling(name="wspp")(lga) if config.wspp else lga
    z = keras.layers.Dense(config.head_units, activation="relu", kernel_initializer="he_normal", name="fc1")(z)
    # The last bias starts at the training-label mean and the kernel is Glorot, not zero: a
    # zero kernel blocks every gradient at step 1 (Decisions: Architecture).
    score = keras.layers.Dense(
        1,
        kernel_initializer="glorot_uniform",
        bias_initializer=keras.initializers.Constant(config.warm_start_bias),
        dtype="float32",  # keep the score in float32 under a mixed-precision policy
        name="fc2",
    )(z)
    outputs = {"score": keras.layers.Reshape((), name="score", dtype="float32")(score), **outputs}
    return keras.Model({"image": image, "landmarks": landmarks}, outputs, name=name or model_name(config))


def model_name(config: ModelConfig) -> str:
    """A readable name from the switches, e.g. ``dlga_la_cmp_ga_wspp``."""
    parts = ["dlga"]
    if config.local:
        parts.append("la")
    if config.cmp:
        parts.append("cmp")
    if config.global_:
        parts.append("ga")
    if config.wspp:
        parts.append("wspp")
    if config.share_local_weights and config.local:
        parts.append("shared")
    return "_".join(parts)


def lga_size(model: keras.Model) -> int:
    """Length of the concatenated local-global vector fed to WSPP (or to the head)."""
    layer = model.get_layer("wspp") if any(l.name == "wspp" for l in model.layers) else model.get_layer("fc1")
    return int(layer.input.shape[-1])
