"""Using a trained model: scoring face videos and exporting runs.

- :mod:`dlga.inference.predict`: load a run or an export and score videos;
- :mod:`dlga.inference.export`: a run as a SavedModel or a ``.keras`` file;
- :mod:`dlga.inference.exportdir`: an export's metadata and its format version;
- :mod:`dlga.inference.notice`: what every score may claim (research model, synthetic training faces).

This file imports none of them (they load TensorFlow).
"""
