"""Configuration: the model's and the training schedule's frozen dataclasses, their named presets
and the paper's ten settings.

The paper (He, Chan, Wang) leaves many sizes open; the book's Decisions chapter (book/decisions.md, "Architecture") fixes them.
Every field is validated on construction so that a bad configuration fails at the boundary
with a message that names the field, not deep inside Keras.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

# The pyramid's windows and its bin counts are geometry, not layers: the analytic complexity
# (dlga.model.complexity) counts them without importing TensorFlow.
WSPP_WINDOWS = (25, 51, 102, 204)


def wspp_bins(length: int, windows=WSPP_WINDOWS) -> list[int]:
    """Bins per pyramid level for a vector of ``length`` (VALID pooling; 0 if skipped)."""
    return [length // w if w <= length else 0 for w in windows]


# Presets scale the input and the conv widths only; vector sizes (64, 512, 2048) stay fixed so
# that WSPP has the same geometry in every preset (Decisions: Architecture).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"input_size": 224, "width": 1.0},
    "small": {"input_size": 112, "width": 0.5},
    "tiny": {"input_size": 64, "width": 0.125},
}

# Tables 3-4 of the paper as switches on one model (Decisions: Architecture).
SETTINGS: dict[str, dict[str, bool]] = {
    "LA-CMP-": {"local": True, "cmp": False, "global_": False, "wspp": False},
    "LA-CMP+": {"local": True, "cmp": True, "global_": False, "wspp": False},
    "A": {"local": True, "cmp": False, "global_": False, "wspp": True},
    "B": {"local": True, "cmp": True, "global_": False, "wspp": True},
    "GA": {"local": False, "cmp": True, "global_": True, "wspp": False},
    "C": {"local": False, "cmp": True, "global_": True, "wspp": True},
    "D": {"local": True, "cmp": False, "global_": True, "wspp": False},
    "E": {"local": True, "cmp": True, "global_": True, "wspp": False},
    "F": {"local": True, "cmp": False, "global_": True, "wspp": True},
    "G": {"local": True, "cmp": True, "global_": True, "wspp": True},
}

# The paper's long names for the settings, for tables.
SETTING_LABELS: dict[str, str] = {
    "LA-CMP-": "LA-CNN (CMP-)",
    "LA-CMP+": "LA-CNN (CMP+)",
    "A": "A: LA-CNN (CMP-) + WSPP",
    "B": "B: LA-CNN (CMP+) + WSPP",
    "GA": "GA-CNN",
    "C": "C: GA-CNN + WSPP",
    "D": "D: LA-CNN (CMP-) + GA-CNN",
    "E": "E: LA-CNN (CMP+) + GA-CNN",
    "F": "F: LA-CNN (CMP-) + GA-CNN + WSPP",
    "G": "G: LA-CNN (CMP+) + GA-CNN + WSPP",
}

CMP_SOURCES = ("conv4_1", "conv4_2")
FEATURE_STRIDE = 8  # three 2x2 poolings before Conv4


class JsonConfig:
    """Shared behaviour of the frozen configuration dataclasses: copy with changes, JSON."""

    def replace(self, **changes: Any):
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str):
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Architecture of one DLGA-CNN variant.

    Args:
        input_size: side of the square aligned face in pixels (224 in the paper). Must be a
            multiple of 16 (three poolings to the Conv4 map, one more in the GAL).
        width: multiplier on conv channels (1.0 = Table 2). Vector sizes are not scaled.
        local: the local attention branch (LA-CNN, 24 patches).
        cmp: channel max pooling concatenated to Conv4_2 (640 channels at width 1).
        global_: the global attention branch (GA-CNN).
        wspp: weighted spatial pyramid pooling on the concatenated vector.
        share_local_weights: one LAL for all 24 patches instead of one per patch.
        cmp_source: the map CMP pools, ``"conv4_1"`` (default) or ``"conv4_2"``.
        phi_units: size of each local vector phi_j (64 so that 24*64 + 512 = 2048).
        psi_units: size of the global vector psi (512).
        head_units: hidden units of the regression head.
        mirror_mouth_offsets: use (+16, -16) for the right mouth-corner point instead of the
            paper's (-16, -16) on both sides.
        warm_start_bias: initial value of the last bias (set by training to the label mean).
    """

    input_size: int = 224
    width: float = 1.0
    local: bool = True
    cmp: bool = True
    global_: bool = True
    wspp: bool = True
    share_local_weights: bool = False
    cmp_source: str = "conv4_1"
    phi_units: int = 64
    psi_units: int = 512
    head_units: int = 64
    mirror_mouth_offsets: bool = False
    warm_start_bias: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.input_size, int) or self.input_size < 32 or self.input_size % 16:
            raise ValueError(
                f"input_size must be an integer >= 32 and a multiple of 16, got {self.input_size!r}"
            )
        if not (0 < float(self.width) <= 4):
            raise ValueError(f"width must be in (0, 4], got {self.width!r}")
        if not (self.local or self.global_):
            raise ValueError(
                "at least one branch must be on: set local=True (LA-CNN) or global_=True (GA-CNN)"
            )
        if self.cmp_source not in CMP_SOURCES:
            raise ValueError(f"cmp_source must be one of {CMP_SOURCES}, got {self.cmp_source!r}")
        for name in ("phi_units", "psi_units", "head_units"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.channels(512) % 4:
            raise ValueError(
                f"width={self.width} gives {self.channels(512)} Conv4 channels; channel max "
                "pooling needs a multiple of 4"
            )

    # --- derived sizes -------------------------------------------------------------------
    def channels(self, base: int) -> int:
        """Conv channels for a Table-2 width ``base`` at this config's width (at least 4)."""
        return max(4, int(round(base * self.width)))

    @property
    def feature_size(self) -> int:
        """Side of the Conv4 feature map (28 at input 224)."""
        return self.input_size // FEATURE_STRIDE

    @property
    def feature_channels(self) -> int:
        """Channels of the map the branches see: Conv4_2 (+ CMP quarter)."""
        c = self.channels(512)
        return c + c // 4 if self.cmp else c

    @property
    def patch_size(self) -> int:
        """Side of a patch crop on the feature map: round(6 * map / 28), at least 2."""
        return max(2, int(round(6 * self.feature_size / 28)))

    @property
    def lga_units(self) -> int:
        """Length of the concatenated local-global vector (2048 for setting G)."""
        return (24 * self.phi_units if self.local else 0) + (self.psi_units if self.global_ else 0)

    # --- construction --------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str = "paper", **overrides: Any) -> "ModelConfig":
        """A named preset (``paper``, ``small``, ``tiny``) with optional field overrides."""
        if name not in MODEL_PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(MODEL_PRESETS)}")
        return cls(**{**MODEL_PRESETS[name], **overrides})

    @classmethod
    def setting(cls, name: str, preset: str = "paper", **overrides: Any) -> "ModelConfig":
        """One of the paper's ten ablation settings, e.g. ``ModelConfig.setting("G", "tiny")``."""
        if name not in SETTINGS:
            raise ValueError(f"unknown setting {name!r}; choose one of {list(SETTINGS)}")
        return cls.preset(preset, **{**SETTINGS[name], **overrides})


# --- training schedules ----------------------------------------------------------------
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # The paper's schedule (section 4.2.1); for GPUs and real data.
    "paper": {"learning_rate": 1e-6, "batch_size": 32, "max_steps": 50_000, "patience": 200,
              "eval_every": 500, "warmup_steps": 0},
    # `make book`: hundreds of steps on 2 CPU cores; lr chosen by the learning-rate study.
    "demo": {"learning_rate": 1e-3, "batch_size": 32, "max_steps": 1000, "patience": 200,
             "eval_every": 50, "warmup_steps": 100},
    # Tests and nbval: minutes for everything.
    "ci": {"learning_rate": 1e-3, "batch_size": 16, "max_steps": 300, "patience": 200,
           "eval_every": 25, "warmup_steps": 100},
}


# Keras dtype policies a run may train under (TrainConfig.precision).
PRECISIONS = ("float32", "mixed_bfloat16")


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """The training schedule of one run.

    Args:
        learning_rate: peak Adam learning rate (paper: 1e-6).
        batch_size: frames per step, over all replicas (paper: 32).
        max_steps: iteration budget (paper: 50k).
        patience: early stopping: steps without a new minimum of the smoothed training loss
            (paper: 200). 0 disables early stopping.
        eval_every: steps between Development evaluations (and checkpoints).
        warmup_steps: linear learning-rate warm-up from lr/warmup_steps to lr.
        weight_decay: L2 factor (paper: 5e-4), see ``decoupled``.
        decoupled: False: coupled L2 in the loss (paper). True: AdamW decoupled decay.
        seed: seeds initialisation and the data order.
        frames_per_video: at most this many frames of each video per epoch (None: all).
        jit_compile: compile the gradient and predict steps with XLA. Off by default: with the
            grouped per-patch model, XLA's constant folding compiles a tiny G step on CPU
            far longer than the uncompiled step takes to run (``make bench``). XLA refuses
            MaxPoolGrad under TensorFlow's op determinism, so that flag is on only when this
            is False.
        shuffle_buffer: 0: uniform shuffle of all frames every epoch. >0: streaming shuffle
            through a buffer of this many frames (for stores read with ``in_memory=False``).
        loss_smoothing: EMA factor of the training loss watched by early stopping.
        eval_batch_size: frames per evaluation batch.
        in_memory: load all frames of a partition into memory (else stream videos).
        fused_adam: Adam's update in one TensorFlow kernel per variable (:class:`dlga.training.optimizer.FusedAdam`:
            the same update to float32 rounding, a tiny G step about 15 % faster on one core);
            False: ``keras.optimizers.Adam``, the first version's. Not used when ``decoupled``.
        precision: ``"float32"`` (default: the book's numbers) or ``"mixed_bfloat16"``: the
            model computes in bfloat16 and keeps float32 weights, loss, score and landmark
            geometry (Keras mixed precision). Faster where the CPU has bfloat16 instructions
            (AVX512-BF16, AMX) or on a GPU; its metrics differ from float32's within training
            noise (test_train checks a tolerance), so compare runs of one precision only.
    """

    learning_rate: float = 1e-6
    batch_size: int = 32
    max_steps: int = 50_000
    patience: int = 200
    eval_every: int = 500
    warmup_steps: int = 0
    weight_decay: float = 5e-4
    decoupled: bool = False
    seed: int = 0
    frames_per_video: int | None = None
    jit_compile: bool = False
    shuffle_buffer: int = 0
    loss_smoothing: float = 0.9
    eval_batch_size: int = 64
    in_memory: bool = True
    fused_adam: bool = True
    precision: str = "float32"

    def __post_init__(self) -> None:
        if not (isinstance(self.learning_rate, (int, float)) and 0 < self.learning_rate < 10):
            raise ValueError(f"learning_rate must be a positive number below 10, got {self.learning_rate!r}")
        positive = ("batch_size", "max_steps", "eval_every", "eval_batch_size")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("patience", "warmup_steps", "seed", "shuffle_buffer"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.frames_per_video is not None and (
            not isinstance(self.frames_per_video, int) or self.frames_per_video < 1
        ):
            raise ValueError(f"frames_per_video must be None or a positive integer, got {self.frames_per_video!r}")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not 0 <= self.loss_smoothing < 1:
            raise ValueError(f"loss_smoothing must be in [0, 1), got {self.loss_smoothing!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("decoupled", "jit_compile", "in_memory", "fused_adam"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @classmethod
    def preset(cls, name: str = "paper", **overrides: Any) -> "TrainConfig":
        """A named schedule (``paper``, ``demo``, ``ci``) with optional field overrides."""
        if name not in TRAIN_PRESETS:
            raise ValueError(f"unknown training preset {name!r}; choose one of {sorted(TRAIN_PRESETS)}")
        return cls(**{**TRAIN_PRESETS[name], **overrides})


# TrainConfig fields that the step's graph holds (the schedule, the loss, the optimizer, the
# batch); the others (seed, max_steps, eval_every, ...) act outside it.
_GRAPH_FIELDS = ("learning_rate", "warmup_steps", "weight_decay", "decoupled", "batch_size",
                 "jit_compile", "fused_adam", "precision")


def compiled_key(model_config: ModelConfig, train_config: TrainConfig) -> str:
    """The key of a :class:`dlga.training.train.CompiledModel`: the architecture (its initial bias
    aside, which is a weight) and the training fields that enter the traced step's graph."""
    arch = model_config.replace(warm_start_bias=0.0).to_dict()
    graph = {name: getattr(train_config, name) for name in _GRAPH_FIELDS}
    return json.dumps({"model": arch, "train": graph}, sort_keys=True, default=str)
