"""Analytic cost of a DLGA-CNN configuration: FLOPs per image by component.

Counts 2 FLOPs per multiply-add of convolutions and dense layers (pooling, activations and
the tiny head are left out or negligible). At the ``paper`` preset, setting G, the total is
about 18.2 GFLOPs per image (the book's Decisions chapter, book/decisions.md, "Architecture").
"""

from __future__ import annotations

from dlga.config import ModelConfig, wspp_bins


def _conv(h: int, w: int, k: int, cin: int, cout: int) -> int:
    return 2 * h * w * k * k * cin * cout


def _dense(n_in: int, n_out: int) -> int:
    return 2 * n_in * n_out


def flops_per_image(config: ModelConfig) -> dict[str, int]:
    """FLOPs per image by component (``backbone``, ``patch_conv3x3``, ``patch_conv1x1``,
    ``phi``, ``local_attention``, ``global``, ``head``) and their ``total``."""
    s, c = config.input_size, config.channels
    out: dict[str, int] = {}
    chans = [3, c(64), c(128), c(256)]
    backbone = 0
    for i in range(3):
        side = s >> i
        backbone += _conv(side, side, 3, chans[i], chans[i + 1])
    f = config.feature_size
    backbone += _conv(f, f, 3, c(256), c(512)) + _conv(f, f, 3, c(512), c(512))
    out["backbone"] = backbone
    cf = config.feature_channels
    if config.local:
        p = config.patch_size
        q = p // 2 if p >= 4 else p
        out["patch_conv3x3"] = 24 * _conv(p, p, 3, cf, cf)
        out["patch_conv1x1"] = 24 * _conv(p, p, 1, cf, cf)
        out["phi"] = 24 * _dense(p * p * cf, config.phi_units)
        a = c(128)
        out["local_attention"] = 24 * (_conv(q, q, 3, cf, a) + _dense(q * q * a, 64) + _dense(64, 1))
    if config.global_:
        g, a, h = f // 2, c(128), f // 4
        out["global"] = (
            _conv(g, g, 3, cf, c(512))
            + _dense(g * g * c(512), config.psi_units)
            + _conv(h, h, 3, c(512), a)
            + _dense(h * h * a, 64)
            + _dense(64, 1)
        )
    head_in = sum(wspp_bins(config.lga_units)) if config.wspp else config.lga_units
    out["head"] = _dense(head_in, config.head_units) + _dense(config.head_units, 1)
    out["total"] = sum(out.values())
    return out
