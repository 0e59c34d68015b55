"""Per-patch convolutions: each of N patches convolved with its own kernel, batched.

:class:`dlga.model.layers.LocalAttention` convolves each of its 24 patches with that patch's
own weights. Four ways compute the same function, with different speed on CPU and GPU:

* ``grouped``: the patches' channels side by side, one convolution with groups = N;
* ``einsum``: im2col (the k*k shifted copies side by side), one batched matmul per patch;
* ``dense``: the convolution of a q x q patch written out as one (q*q*C) x (q*q*C') matrix
  per patch (rebuilt at every call: only for tests and small crops);
* ``taps`` (:func:`cells_conv`): patch-major, on a crop held as q*q cells of (N, B, C), one
  batched matmul per pair of neighbouring cells and tap.

``auto`` (:func:`per_patch_conv`) chooses among the first two when the graph is traced.
Shapes: patches ``x`` are ``(B, N, P, P, C)``; kernels ``(g, k, k, Cin, Cout)`` with ``g`` = N
(own weights) or 1 (shared); biases ``(g, Cout)``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

CONV_IMPLS = ("auto", "grouped", "einsum", "dense", "taps")
AUTO_GROUPED_MIN_BATCH = 8
"""``auto`` in training uses the grouped kernel from this batch size up (its gradient is the faster one)."""


def grouped_gradient_available() -> bool:
    """Whether TensorFlow here can take the gradient of a grouped convolution.

    Its plain CPU kernels cannot ("Gradients for grouped convolutions are not supported on
    CPU"); its oneDNN CPU kernels and its GPU kernels can.
    """
    if tf.config.list_logical_devices("GPU"):
        return True
    try:
        from tensorflow.python.util import _pywrap_util_port  # private: no public switch exists
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled())


def _same_conv_taps(size: int, kernel: int) -> tf.Tensor:
    """``T[(u, v), (s, t), tap] = 1`` where a 'same' ``kernel`` x ``kernel`` convolution on a
    ``size`` x ``size`` map sends input cell (u, v) to output cell (s, t) through ``tap``.

    Shape ``(size**2, size**2, kernel**2)``, float32.
    """
    r = kernel // 2
    taps = np.zeros((size, size, size, size, kernel, kernel), np.float32)
    for s_ in range(size):
        for t in range(size):
            for i in range(kernel):
                for j in range(kernel):
                    u, v = s_ + i - r, t + j - r
                    if 0 <= u < size and 0 <= v < size:
                        taps[u, v, s_, t, i, j] = 1.0
    return tf.constant(taps.reshape(size * size, size * size, kernel * kernel))


def _same_conv_neighbours(size: int, kernel: int) -> list[list[tuple[int, int]]]:
    """For each output cell of a 'same' ``kernel`` x ``kernel`` convolution on a ``size`` x
    ``size`` map (row-major), the (input cell, tap) pairs that reach it (taps on padding left out)."""
    r = kernel // 2
    return [[((s + i - r) * size + (t + j - r), i * kernel + j)
             for i in range(kernel) for j in range(kernel)
             if 0 <= s + i - r < size and 0 <= t + j - r < size]
            for s in range(size) for t in range(size)]


def per_patch_conv(x, kernel, bias, impl: str = "auto", shared: bool = False, training=None):
    """'same' convolution of each patch with its own kernel: ``x`` (B, N, P, P, Cin) ->
    (B, N, P, P, Cout). ``shared``: one kernel for every patch (``kernel[0]``). ``impl``: one
    of :data:`CONV_IMPLS` but ``taps`` (that one works on cells: :func:`cells_conv`)."""
    if shared:
        b, n, p = tf.unstack(tf.shape(x)[:3])
        y = tf.nn.conv2d(tf.reshape(x, (-1, p, p, x.shape[-1])), kernel[0], 1, "SAME") + bias[0]
        return tf.reshape(y, (b, n, p, p, kernel.shape[-1]))
    if kernel.shape[1] == 1:  # a 1x1 conv is a per-patch matrix product
        y = tf.einsum("bnpqc,ncd->bnpqd", x, kernel[:, 0, 0])
        return y + bias[None, :, None, None, :]
    if impl != "auto":
        return patch_conv(x, kernel, bias, impl)
    # No "dense" here: its (q*q*C, q*q*C') matrices are rebuilt at every call, which for
    # the attention conv of a 6-cell crop (3 cells pooled, C = 640) is 637 MB a call:
    # 100 ms of paper G's 168 ms an image at batch 1.
    if not training or not grouped_gradient_available():
        # Forward only, im2col + batched matmul is the faster one at every batch (paper G on
        # 2 Zen 5 cores: 20.6 against 25.4 ms/image for the 3x3 convolutions at batch 32,
        # 24 against 168 at batch 1); the grouped kernel pays for its gradient.
        return patch_conv(x, kernel, bias, "einsum")
    batch = x.shape[0]
    if batch is not None:  # known when traced: choose here, no tf.cond in the graph
        return patch_conv(x, kernel, bias, "grouped" if batch >= AUTO_GROUPED_MIN_BATCH else "einsum")
    # Only a graph traced without a batch size decides at run time (training batches have a
    # fixed size, so the training step never does).
    return tf.cond(
        tf.shape(x)[0] >= AUTO_GROUPED_MIN_BATCH,
        lambda: patch_conv(x, kernel, bias, "grouped"),
        lambda: patch_conv(x, kernel, bias, "einsum"),
    )


def patch_conv(x, kernel, bias, impl: str):
    """One of ``grouped``, ``dense`` or ``einsum`` (anything else), own kernel per patch."""
    b, n, p = tf.unstack(tf.shape(x)[:3])
    cin, cout, k = kernel.shape[-2], kernel.shape[-1], kernel.shape[1]
    if impl == "grouped":
        # Channels of all patches side by side: one convolution with groups = N.
        xg = tf.reshape(tf.transpose(x, (0, 2, 3, 1, 4)), (b, p, p, n * cin))
        kg = tf.reshape(tf.transpose(kernel, (1, 2, 3, 0, 4)), (k, k, cin, n * cout))
        y = tf.nn.conv2d(xg, kg, 1, "SAME")
        y = tf.transpose(tf.reshape(y, (b, p, p, n, cout)), (0, 3, 1, 2, 4))
        return y + bias[None, :, None, None, :]
    if impl == "dense":
        # Output cell (s, t) reads input cell (u, v) through tap (u - s + r, v - t + r) of
        # the 'same' kernel: scatter the taps into one block matrix per patch, then one
        # batched matmul over the flattened patch. Taps that fall on padding never appear.
        q = x.shape[2]
        taps = tf.cast(_same_conv_taps(q, k), kernel.dtype)  # (q*q, q*q, k*k) 0/1
        dense = tf.einsum("xyt,ntcd->nxcyd", taps, tf.reshape(kernel, (-1, k * k, cin, cout)))
        dense = tf.reshape(dense, (-1, q * q * cin, q * q * cout))
        y = tf.einsum("bnx,nxy->bny", tf.reshape(x, (b, n, q * q * cin)), dense)
        return tf.reshape(y, (b, n, q, q, cout)) + bias[None, :, None, None, :]
    # im2col: the k*k shifted copies side by side, then one batched matmul per patch.
    r = k // 2
    xp = tf.pad(x, [[0, 0], [0, 0], [r, r], [r, r], [0, 0]])
    cols = tf.concat([xp[:, :, i : i + p, j : j + p, :] for i in range(k) for j in range(k)], -1)
    y = tf.einsum("bnpqk,nkd->bnpqd", cols, tf.reshape(kernel, (-1, k * k * cin, cout)))
    return y + bias[None, :, None, None, :]


def per_patch_dense(x, kernel, bias, shared: bool = False):
    """Per-patch dense layer: x (B, N, K), kernel (g, K, U) -> (B, N, U)."""
    if shared:
        return tf.einsum("bnk,ku->bnu", x, kernel[0]) + bias[0]
    return tf.einsum("bnk,nku->bnu", x, kernel) + bias


def cells_conv(cells, kernel, bias, size: int):
    """'same' convolution of a ``size`` x ``size`` crop held as ``size**2`` cells, each
    (N, B, Cin), with per-patch kernels (N, k, k, Cin, Cout): ``size**2`` cells of (N, B, Cout)."""
    k = kernel.shape[1]
    taps = tf.unstack(tf.reshape(kernel, (kernel.shape[0], k * k, kernel.shape[-2], kernel.shape[-1])), axis=1)
    return [tf.add_n([tf.matmul(cells[u], taps[t]) for u, t in nb]) + bias[:, None, :]
            for nb in _same_conv_neighbours(size, k)]
