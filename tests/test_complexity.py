"""Analytic FLOPs at the paper preset (18.2 GFLOPs per image; the book's Decisions chapter,
book/decisions.md, "Architecture")."""

import pytest

from dlga.config import ModelConfig
from dlga.model.complexity import flops_per_image


def test_paper_preset_flops_by_component():
    f = {k: v / 1e9 for k, v in flops_per_image(ModelConfig.setting("G")).items()}
    assert f["backbone"] == pytest.approx(9.42, abs=0.01)
    assert f["patch_conv3x3"] == pytest.approx(6.37, abs=0.01)
    assert f["patch_conv1x1"] == pytest.approx(0.71, abs=0.01)
    assert f["global"] == pytest.approx(1.32, abs=0.01)
    assert f["local_attention"] == pytest.approx(0.32, abs=0.01)
    assert f["phi"] == pytest.approx(0.07, abs=0.01)
    assert f["total"] == pytest.approx(18.2, abs=0.05)


def test_flops_follow_the_switches():
    g = flops_per_image(ModelConfig.setting("G", preset="tiny"))
    ga = flops_per_image(ModelConfig.setting("GA", preset="tiny"))
    la = flops_per_image(ModelConfig.setting("LA-CMP+", preset="tiny"))
    assert "patch_conv3x3" not in ga and "global" not in la
    assert g["backbone"] == ga["backbone"] == la["backbone"]
    assert g["total"] > ga["total"] and g["total"] > la["total"]
    # sharing the LAL weights changes parameters, not FLOPs
    shared = flops_per_image(ModelConfig.setting("G", preset="tiny", share_local_weights=True))
    assert shared["total"] == g["total"]
