"""Using a trained model: scoring face videos and exporting runs.

- :mod:`dlga.inference.predict`: load a run or an export and score videos;
- :mod:`dlga.inference.export`: a run as a SavedModel or a ``.keras`` file;
- :mod:`dlga.inference.exportdir`: an export's metadata and its format version.

This file imports none of them (they load TensorFlow).
"""
