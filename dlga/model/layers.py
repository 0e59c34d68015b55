"""Keras layers for DLGA-CNN, one class per block of the paper's Figs. 2-6.

* :class:`ChannelMaxPooling` - CMP, max over groups of channels (section 3.2).
* :class:`PatchCentres` - the 24 landmark-derived centres of Fig. 3.
* :class:`PatchCrop` - 24 windows cut from the feature map at those centres.
* :class:`LocalAttention` - the 24 LAL modules (Eqs. 1-3), batched over patches.
* :class:`GlobalAttention` - the GAL module (Eqs. 4-6).
* :class:`WeightedSpatialPyramidPooling` - WSPP (section 3.5).

Shapes use channels-last: ``(batch, height, width, channels)``.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from dlga.config import WSPP_WINDOWS, wspp_bins  # noqa: F401 (part of this module's API)
from dlga.model import patch_conv
from dlga.model.patches import NUM_LANDMARKS, NUM_PATCHES, centre_matrix, centre_offsets

_TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated at +-2 (Keras' correction)


@keras.saving.register_keras_serializable(package="dlga")
class PatchwiseVarianceScaling(keras.initializers.Initializer):
    """He-normal or Glorot-uniform for kernels stacked per patch, shape ``(N, ..., in, out)``.

    Keras' own initialisers would count the leading patch axis into the fan-in; each patch's
    kernel must be scaled as the single layer it stands for.
    """

    def __init__(self, mode: str = "he_normal", seed: int | None = None):
        if mode not in ("he_normal", "glorot_uniform"):
            raise ValueError(f"mode must be 'he_normal' or 'glorot_uniform', got {mode!r}")
        self.mode = mode
        self.seed = seed
        self._gen = keras.random.SeedGenerator(seed) if seed is not None else None

    def __call__(self, shape, dtype=None):
        per_patch = shape[1:]
        receptive = math.prod(per_patch[:-2]) if len(per_patch) > 2 else 1
        fan_in, fan_out = per_patch[-2] * receptive, per_patch[-1] * receptive
        if self.mode == "he_normal":
            std = math.sqrt(2.0 / fan_in) / _TRUNC_STD
            return keras.random.truncated_normal(shape, stddev=std, dtype=dtype, seed=self._gen)
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return keras.random.uniform(shape, -limit, limit, dtype=dtype, seed=self._gen)

    def get_config(self):
        return {"mode": self.mode, "seed": self.seed}


@keras.saving.register_keras_serializable(package="dlga")
class ChannelMaxPooling(keras.layers.Layer):
    """Channel max pooling (CMP): the maximum over consecutive groups of channels.

    Table 2: kernel 4, stride 4, no padding, so 512 channels become 128.

    Args:
        pool_size: channels per group; the channel count must be a multiple of it.

    Input shape: ``(B, H, W, C)``. Output shape: ``(B, H, W, C // pool_size)``.

    Example:
        >>> ChannelMaxPooling(4)(tf.zeros((1, 28, 28, 512))).shape
        TensorShape([1, 28, 28, 128])
    """

    def __init__(self, pool_size: int = 4, **kwargs):
        super().__init__(**kwargs)
        if int(pool_size) < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size!r}")
        self.pool_size = int(pool_size)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.pool_size:
            raise ValueError(
                f"ChannelMaxPooling({self.pool_size}) needs a channel count divisible by "
                f"{self.pool_size}, got input shape {tuple(input_shape)}"
            )

    def call(self, x):
        shape = ops.shape(x)
        c = x.shape[-1]
        x = ops.reshape(x, (shape[0], shape[1], shape[2], c // self.pool_size, self.pool_size))
        return ops.max(x, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // self.pool_size)

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size}


@keras.saving.register_keras_serializable(package="dlga")
class PatchCentres(keras.layers.Layer):
    """The 24 patch centres of Fig. 3 from 68 aligned landmarks (see :mod:`dlga.model.patches`).

    Args:
        input_size: side of the aligned face in pixels (scales the mouth-corner offsets).
        mirror_mouth_offsets: symmetric reading of the paper's mouth offsets.

    Input shape: ``(B, 68, 2)`` landmarks (x, y) in pixels.
    Output shape: ``(B, 24, 2)`` centres (x, y) in pixels.
    """

    def __init__(self, input_size: int = 224, mirror_mouth_offsets: bool = False, **kwargs):
        # Geometry stays float32 under a mixed policy: bfloat16 holds a 150 px centre to 1 px.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.input_size = int(input_size)
        self.mirror_mouth_offsets = bool(mirror_mouth_offsets)
        self._matrix = centre_matrix()
        self._offsets = centre_offsets(self.input_size, self.mirror_mouth_offsets)

    def build(self, input_shape):
        if tuple(input_shape[-2:]) != (NUM_LANDMARKS, 2):
            raise ValueError(
                f"PatchCentres expects landmarks of shape (batch, 68, 2), got {tuple(input_shape)}"
            )

    def call(self, landmarks):
        w = ops.convert_to_tensor(self._matrix, dtype=landmarks.dtype)
        off = ops.convert_to_tensor(self._offsets, dtype=landmarks.dtype)
        return ops.einsum("pl,blc->bpc", w, landmarks) + off

    def compute_output_shape(self, input_shape):
        return (input_shape[0], NUM_PATCHES, 2)

    def get_config(self):
        return {
            **super().get_config(),
            "input_size": self.input_size,
            "mirror_mouth_offsets": self.mirror_mouth_offsets,
        }


@keras.saving.register_keras_serializable(package="dlga")
class PatchCrop(keras.layers.Layer):
    """Cut ``P x P`` windows from a feature map around centres given in input pixels.

    The window's top-left corner is ``round(centre / stride - P / 2)`` (half up), clamped so
    that the window lies inside the map (Decisions: Architecture). Cropping on the feature map
    rather than the image is the paper's choice (section 3.3.2): the receptive field grows and
    the backbone is shared.

    Args:
        patch_size: window side P on the feature map (6 on the 28x28 map of the paper).
        stride: input pixels per feature-map cell (8 for Conv4).

    Input shape: ``[(B, H, W, C) features, (B, N, 2) centres (x, y) in input pixels]``.
    Output shape: ``(B, N, P, P, C)``.
    """

    def __init__(self, patch_size: int = 6, stride: int = 8, **kwargs):
        # Not autocast: the centres arrive in float32 whatever the features' dtype, so a
        # mixed-precision model cuts the windows float32 cuts.
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if int(patch_size) < 1 or int(stride) < 1:
            raise ValueError(f"patch_size and stride must be >= 1, got {patch_size}, {stride}")
        self.patch_size = int(patch_size)
        self.stride = int(stride)

    def build(self, input_shape):
        feat, cent = input_shape
        if feat[1] is not None and feat[1] < self.patch_size:
            raise ValueError(
                f"patch_size {self.patch_size} is larger than the feature map {feat[1]}x{feat[2]}"
            )
        if cent[-1] != 2:
            raise ValueError(f"centres must have shape (batch, N, 2), got {tuple(cent)}")

    def call(self, inputs):
        feat, centres = inputs
        p = self.patch_size
        h, w = feat.shape[1], feat.shape[2]
        start = tf.floor(centres / self.stride - p / 2.0 + 0.5)
        limit = tf.constant([w - p, h - p], dtype=start.dtype)
        start = tf.cast(tf.clip_by_value(start, 0.0, limit), tf.int32)  # (B, N, 2) as (x, y)
        offs = tf.range(p, dtype=tf.int32)
        rows = start[..., 1, None] + offs  # (B, N, P)
        cols = start[..., 0, None] + offs
        idx = tf.stack(
            [
                tf.broadcast_to(rows[..., :, None], tf.concat([tf.shape(rows), [p]], 0)),
                tf.broadcast_to(cols[..., None, :], tf.concat([tf.shape(cols)[:-1], [p, p]], 0)),
            ],
            axis=-1,
        )  # (B, N, P, P, 2) as (row, col)
        return tf.gather_nd(feat, idx, batch_dims=1)

    def compute_output_shape(self, input_shape):
        feat, cent = input_shape
        return (feat[0], cent[1], self.patch_size, self.patch_size, feat[-1])

    def get_config(self):
        return {**super().get_config(), "patch_size": self.patch_size, "stride": self.stride}


@keras.saving.register_keras_serializable(package="dlga")
class LocalAttention(keras.layers.Layer):
    """The 24 Local Attention Learning (LAL) modules of LA-CNN (Fig. 2, Eqs. 1-3).

    Per patch j: conv3x3 (C->C) + ReLU, conv1x1 (C->C) + ReLU, then two branches on that map:
    ``phi_j`` = Dense(units) of the flattened map (linear, Eq. 1) and the attention
    ``alpha_j`` = sigmoid(FC(1)(ReLU(FC(64)(ReLU(conv3x3(maxpool2(map))))))) (Eq. 2);
    the output is ``rho_j = alpha_j * phi_j`` (Eq. 3).

    The paper gives each patch its own weights. They are stored stacked along a leading patch
    axis and applied to all patches at once (a grouped convolution and batched matrix
    products), never as 24 little sequential graphs. ``shared=True`` uses one LAL for all
    patches (fewer parameters for small data).

    Args:
        units: size of each phi_j (64, so that 24 * 64 + 512 = 2048).
        attention_channels: channels of the attention branch's conv (128 at width 1).
        attention_units: hidden units of the attention branch's first FC (64).
        shared: one set of weights for every patch.
        conv_impl: ``"grouped"`` (one grouped convolution), ``"einsum"`` (im2col + batched
            matmul), ``"dense"`` (the convolution of a P x P patch written out as one
            (P*P*C) x (P*P*C') matrix per patch), ``"taps"`` (patch-major: the whole module
            on (N, B, C) cells, a 'same' 3x3 convolution as one batched matmul per pair of
            neighbouring cells and tap; no kernel is rebuilt and no activation transposed
            inside the module) or ``"auto"``: taps for crops up to 3 cells (the tiny and
            small presets: about 2.8x faster than dense for forward plus backward at batch
            32 on one core); otherwise einsum, except in training from batch 8 up, where
            grouped (its gradient is the faster one), unless the grouped gradient is missing
            (TensorFlow's CPU kernels without oneDNN). All compute the same function.

    Input shape: ``(B, N, P, P, C)`` patches.
    Output shape: ``[(B, N * units) rho, (B, N) alpha]``.
    """

    CONV_IMPLS = patch_conv.CONV_IMPLS
    AUTO_TAPS_MAX_PATCH = 3

    def __init__(
        self,
        units: int = 64,
        attention_channels: int = 128,
        attention_units: int = 64,
        shared: bool = False,
        conv_impl: str = "auto",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if conv_impl not in self.CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {self.CONV_IMPLS}, got {conv_impl!r}")
        self.units = int(units)
        self.attention_channels = int(attention_channels)
        self.attention_units = int(attention_units)
        self.shared = bool(shared)
        self.conv_impl = conv_impl

    def build(self, input_shape):
        if len(input_shape) != 5 or input_shape[2] != input_shape[3]:
            raise ValueError(f"LocalAttention expects (batch, N, P, P, C), got {tuple(input_shape)}")
        _, n, p, _, c = input_shape
        self.num_patches, self.patch_size, self.channels = n, p, c
        self.pool = p >= 4  # a 2x2 or 3x3 crop would pool to 1x1: skip (Decisions: Architecture)
        q = p // 2 if self.pool else p
        g = 1 if self.shared else n
        he = PatchwiseVarianceScaling("he_normal")
        glorot = PatchwiseVarianceScaling("glorot_uniform")
        a, u, h = self.attention_channels, self.units, self.attention_units

        def weight(name, shape, init):
            return self.add_weight(name=name, shape=(g, *shape), initializer=init)

        def bias(name, size):
            return self.add_weight(name=name, shape=(g, size), initializer="zeros")

        self.conv1_kernel, self.conv1_bias = weight("conv3x3_kernel", (3, 3, c, c), he), bias("conv3x3_bias", c)
        self.conv2_kernel, self.conv2_bias = weight("conv1x1_kernel", (1, 1, c, c), he), bias("conv1x1_bias", c)
        self.phi_kernel, self.phi_bias = weight("phi_kernel", (p * p * c, u), glorot), bias("phi_bias", u)
        self.att_conv_kernel = weight("att_conv_kernel", (3, 3, c, a), he)
        self.att_conv_bias = bias("att_conv_bias", a)
        self.att_fc1_kernel, self.att_fc1_bias = weight("att_fc1_kernel", (q * q * a, h), he), bias("att_fc1_bias", h)
        self.att_fc2_kernel, self.att_fc2_bias = weight("att_fc2_kernel", (h, 1), glorot), bias("att_fc2_bias", 1)

    def _conv(self, x, kernel, bias, training=None):
        return patch_conv.per_patch_conv(x, kernel, bias, self.conv_impl, self.shared, training)

    def _dense(self, x, kernel, bias):
        return patch_conv.per_patch_dense(x, kernel, bias, self.shared)

    def _uses_taps(self) -> bool:
        return self.conv_impl == "taps" or (self.conv_impl == "auto" and self.patch_size <= self.AUTO_TAPS_MAX_PATCH)

    def call(self, patches, training=None):
        if self._uses_taps():
            return self._call_patch_major(patches)
        b = tf.shape(patches)[0]
        n = self.num_patches
        x = tf.nn.relu(self._conv(patches, self.conv1_kernel, self.conv1_bias, training))
        x = tf.nn.relu(self._conv(x, self.conv2_kernel, self.conv2_bias))
        phi = self._dense(tf.reshape(x, (b, n, -1)), self.phi_kernel, self.phi_bias)  # Eq. 1
        a = x
        if self.pool:
            p = self.patch_size
            q = p // 2
            a = tf.reshape(a[:, :, : 2 * q, : 2 * q, :], (b, n, q, 2, q, 2, self.channels))
            a = tf.reduce_max(a, axis=(3, 5))
        a = tf.nn.relu(self._conv(a, self.att_conv_kernel, self.att_conv_bias, training))
        a = tf.nn.relu(self._dense(tf.reshape(a, (b, n, -1)), self.att_fc1_kernel, self.att_fc1_bias))
        alpha = tf.sigmoid(self._dense(a, self.att_fc2_kernel, self.att_fc2_bias))[..., 0]  # Eq. 2
        rho = alpha[..., None] * phi  # Eq. 3
        return tf.reshape(rho, (b, n * self.units)), alpha

    # -- patch-major path: cells are lists of (N, B, C) tensors, one per cell of the crop ----
    def _call_patch_major(self, patches):
        b = tf.shape(patches)[0]
        n, p, c = self.num_patches, self.patch_size, self.channels
        # (B, N, P, P, C) -> P*P cells of (N, B, C): the per-patch weights lead every product.
        cells = tf.unstack(tf.transpose(tf.reshape(patches, (b, n, p * p, c)), (2, 1, 0, 3)), axis=0)
        x = [tf.nn.relu(v) for v in patch_conv.cells_conv(cells, self.conv1_kernel, self.conv1_bias, p)]
        w1x1 = self.conv2_kernel[:, 0, 0]
        x = [tf.nn.relu(tf.matmul(v, w1x1) + self.conv2_bias[:, None, :]) for v in x]
        phi = tf.matmul(tf.concat(x, -1), self.phi_kernel) + self.phi_bias[:, None, :]  # Eq. 1, (N, B, U)
        q = p
        if self.pool:
            q = p // 2
            grid = tf.reshape(tf.stack(x, 2), (n, b, p, p, c))[:, :, : 2 * q, : 2 * q, :]
            grid = tf.reduce_max(tf.reshape(grid, (n, b, q, 2, q, 2, c)), axis=(3, 5))
            x = tf.unstack(tf.reshape(grid, (n, b, q * q, c)), num=q * q, axis=2)
        a = [tf.nn.relu(v) for v in patch_conv.cells_conv(x, self.att_conv_kernel, self.att_conv_bias, q)]
        a = tf.nn.relu(tf.matmul(tf.concat(a, -1), self.att_fc1_kernel) + self.att_fc1_bias[:, None, :])
        alpha = tf.sigmoid(tf.matmul(a, self.att_fc2_kernel) + self.att_fc2_bias[:, None, :])[..., 0]  # Eq. 2, (N, B)
        rho = alpha[..., None] * phi  # Eq. 3
        return tf.reshape(tf.transpose(rho, (1, 0, 2)), (b, n * self.units)), tf.transpose(alpha)

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], input_shape[1] * self.units), (input_shape[0], input_shape[1])]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "attention_channels": self.attention_channels,
            "attention_units": self.attention_units,
            "shared": self.shared,
            "conv_impl": self.conv_impl,
        }


@keras.saving.register_keras_serializable(package="dlga")
class GlobalAttention(keras.layers.Layer):
    """The Global Attention Learning (GAL) module of GA-CNN (Fig. 4, Eqs. 4-6).

    ``g`` = ReLU(conv3x3 to ``channels``(maxpool2(x))) ("Conv6", 512 x 14 x 14 at width 1);
    ``psi`` = Dense(units) of the flattened g (linear, Eq. 4); the attention ``alpha`` =
    sigmoid(FC(1)(ReLU(FC(64)(ReLU(conv3x3(maxpool2(g))))))) (Eq. 5); output
    ``rho = alpha * psi`` (Eq. 6).

    Args:
        units: size of psi (512).
        channels: channels of Conv6 (512 at width 1).
        attention_channels: channels of the attention branch's conv (128 at width 1).
        attention_units: hidden units of the attention branch's first FC (64).

    Input shape: ``(B, H, W, C)``. Output shape: ``[(B, units) rho, (B,) alpha]``.
    """

    def __init__(self, units=512, channels=512, attention_channels=128, attention_units=64, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.channels = int(channels)
        self.attention_channels = int(attention_channels)
        self.attention_units = int(attention_units)
        he, glorot = "he_normal", "glorot_uniform"
        self.pool = keras.layers.MaxPooling2D(2, name="pool")
        self.conv6 = keras.layers.Conv2D(self.channels, 3, padding="same", activation="relu", kernel_initializer=he, name="conv6")
        self.psi = keras.layers.Dense(self.units, kernel_initializer=glorot, name="psi")
        self.att_pool = keras.layers.MaxPooling2D(2, name="att_pool")
        self.att_conv = keras.layers.Conv2D(self.attention_channels, 3, padding="same", activation="relu", kernel_initializer=he, name="att_conv")
        self.att_fc1 = keras.layers.Dense(self.attention_units, activation="relu", kernel_initializer=he, name="att_fc1")
        self.att_fc2 = keras.layers.Dense(1, activation="sigmoid", kernel_initializer=glorot, name="att_fc2")

    def build(self, input_shape):
        if len(input_shape) != 4 or (input_shape[1] is not None and input_shape[1] < 4):
            raise ValueError(f"GlobalAttention expects (batch, H>=4, W>=4, C), got {tuple(input_shape)}")
        shape = self.pool.compute_output_shape(input_shape)
        self.conv6.build(shape)
        g_shape = self.conv6.compute_output_shape(shape)
        self.psi.build((g_shape[0], math.prod(g_shape[1:])))
        shape = self.att_pool.compute_output_shape(g_shape)
        self.att_conv.build(shape)
        shape = self.att_conv.compute_output_shape(shape)
        self.att_fc1.build((shape[0], math.prod(shape[1:])))
        self.att_fc2.build((shape[0], self.attention_units))

    def call(self, x):
        g = self.conv6(self.pool(x))
        b = ops.shape(g)[0]
        psi = self.psi(ops.reshape(g, (b, -1)))  # Eq. 4
        a = self.att_conv(self.att_pool(g))
        alpha = self.att_fc2(self.att_fc1(ops.reshape(a, (b, -1))))[:, 0]  # Eq. 5
        return alpha[:, None] * psi, alpha  # Eq. 6

    def compute_output_shape(self, input_shape):
        return [(input_shape[0], self.units), (input_shape[0],)]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "channels": self.channels,
            "attention_channels": self.attention_channels,
            "attention_units": self.attention_units,
        }


WSPP_WEIGHTS = (1 / 2, 1 / 4, 1 / 8, 1 / 8)


@keras.saving.register_keras_serializable(package="dlga")
class WeightedSpatialPyramidPooling(keras.layers.Layer):
    """Weighted spatial pyramid pooling (WSPP, section 3.5, Fig. 6) on a feature vector.

    Each level max-pools the vector with window = stride = w (no padding) and multiplies the
    bins by its weight; finer levels weigh more (Lazebnik et al.'s pyramid-match weights).
    The levels are concatenated, finest first. With the paper's windows 25/51/102/204 a
    2048-vector gives 81 + 40 + 20 + 10 = 151 values (the paper says "150D"; VALID pooling
    gives 151). A window longer than the vector is skipped.

    Args:
        windows: window (= stride) of each level.
        weights: weight of each level.

    Input shape: ``(B, L)``. Output shape: ``(B, sum_w floor(L / w))``.
    """

    def __init__(self, windows=WSPP_WINDOWS, weights=WSPP_WEIGHTS, **kwargs):
        super().__init__(**kwargs)
        if len(windows) != len(weights) or not windows:
            raise ValueError(f"windows and weights must be non-empty and of equal length, got {windows}, {weights}")
        if any(int(w) < 1 for w in windows):
            raise ValueError(f"windows must be positive, got {windows}")
        self.windows = tuple(int(w) for w in windows)
        self.level_weights = tuple(float(w) for w in weights)

    def build(self, input_shape):
        length = input_shape[-1]
        if len(input_shape) != 2 or length is None or not any(wspp_bins(length, self.windows)):
            raise ValueError(
                f"WSPP expects (batch, L) with L >= {min(self.windows)}, got {tuple(input_shape)}"
            )
        self.length = length

    def call(self, x):
        b = ops.shape(x)[0]
        levels = []
        for w, weight, n in zip(self.windows, self.level_weights, wspp_bins(self.length, self.windows)):
            if n:
                pooled = ops.max(ops.reshape(x[:, : n * w], (b, n, w)), axis=-1)
                levels.append(weight * pooled)
        return ops.concatenate(levels, axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], sum(wspp_bins(input_shape[-1], self.windows)))

    def get_config(self):
        return {**super().get_config(), "windows": list(self.windows), "weights": list(self.level_weights)}
