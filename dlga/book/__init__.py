"""The book: what its chapters run and show, and its build. Not needed to train or use a model.

- :mod:`dlga.book.build`: papermill executes the chapters, jupyter-book renders them; the
  command line ``python -m dlga.book`` (:mod:`dlga.book.__main__`);
- :mod:`dlga.book.presets`: the book presets and deriving one;
- :mod:`dlga.book.data`: a preset's cohort and store;
- :mod:`dlga.book.experiments`: the runs each chapter needs, and executing them;
- :mod:`dlga.book.parameters`: a chapter's parameters (knobs), their table and rerun command;
- :mod:`dlga.book.report`: the paper's numbers, notices, tables, checks of the runs;
- :mod:`dlga.book.intervals`: intervals, paired comparisons and verdicts;
- :mod:`dlga.book.figures`: the chapters' figures;
- :mod:`dlga.book.models`: trained models and their attention (TensorFlow, when called);
- :mod:`dlga.book.prose`: sentences computed from a chapter's results;
- :mod:`dlga.book.rate_rule`: the learning-rate rule of the ablation runs;
- :mod:`dlga.book.controls`: the control cohorts and stores;
- :mod:`dlga.book.reference`: a build's headline numbers against the shipped ones;
- :mod:`dlga.book.baselines`: the comparison chapter's training-mean and LBP + SVR baselines.

This file imports none of them: ``python -m dlga.book`` and the chapters import what they use,
and the library (:mod:`dlga.model`, :mod:`dlga.training`, :mod:`dlga.runs`,
:mod:`dlga.inference`) never imports this package.
"""
