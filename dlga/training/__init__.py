"""Training and evaluation: the input pipeline, the metrics and the training loop.

- :mod:`dlga.training.data`: frames of a preprocessed store to model batches (tf.data);
- :mod:`dlga.training.metrics`: RMSE/MAE per video, severity bands, bootstrap intervals and
  paired comparisons (numpy/scipy only);
- :mod:`dlga.training.optimizer`: the learning-rate schedule and the optimizer;
- :mod:`dlga.training.step`: the training and prediction steps, evaluating a partition;
- :mod:`dlga.training.checkpoints`: the checkpointed state of a run, its checkpoints;
- :mod:`dlga.training.early_stopping`: stopping on the smoothed training loss;
- :mod:`dlga.training.train`: the run loop: one run's training, evaluation and report.

This file imports none of them: the metrics are read without TensorFlow.
"""
