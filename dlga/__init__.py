"""DLGA-CNN: the model, its training and evaluation, the run cache and the book build."""

from dlga.settings import enable_onednn

enable_onednn()  # before anything imports TensorFlow (dlga.settings says why)
