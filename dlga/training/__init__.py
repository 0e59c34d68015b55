"""Training and evaluation: the input pipeline, the metrics and the training loop.

- :mod:`dlga.training.data`: frames of a preprocessed store to model batches (tf.data);
- :mod:`dlga.training.metrics`: RMSE/MAE per video, severity bands, bootstrap intervals and
  paired comparisons (numpy/scipy only);
- :mod:`dlga.training.train`: one run's training, evaluation and checkpoints.

This file imports none of them: the metrics are read without TensorFlow.
"""
