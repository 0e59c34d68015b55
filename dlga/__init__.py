"""DLGA-CNN: the model, its training and evaluation, the run cache and the book build."""

import os

# TensorFlow's CPU kernels cannot take the gradient of a grouped convolution (the per-patch
# convolutions of LocalAttention); its oneDNN kernels can. TensorFlow turns oneDNN on by
# default only on CPUs with AVX-512, so ask for it on every CPU. This must be set before
# TensorFlow is imported; a user's own setting wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
