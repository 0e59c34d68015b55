"""DLGA-CNN: the model, its training and evaluation, the run cache and the book build.

Subpackages by concern: :mod:`dlga.model` (the network), :mod:`dlga.training` (data pipeline,
metrics, the training loop), :mod:`dlga.runs` (the run cache, run directories, executors),
:mod:`dlga.inference` (prediction, export) and :mod:`dlga.book` (the book; the others never
import it). :mod:`dlga.settings` holds the process-wide switches and where things live.
"""

from dlga.settings import enable_onednn, require_tensorflow

require_tensorflow()  # TensorFlow is an extra (cpu or gpu): without it, say which to install
enable_onednn()  # before anything imports TensorFlow (dlga.settings says why)
