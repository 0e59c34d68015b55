"""The network: patch centres from landmarks, the custom layers, the DLGA-CNN builder and its
analytic cost. Imports nothing from training, runs or the book.

- :mod:`dlga.model.patches`: the 24 patch centres of the paper's Fig. 3 (numpy only);
- :mod:`dlga.model.layers`: the custom Keras layers (registered for ``.keras`` files);
- :mod:`dlga.model.network`: :func:`~dlga.model.network.build_model`, the whole network;
- :mod:`dlga.model.complexity`: FLOPs per image by component (no TensorFlow).

The modules are imported one by one (this file imports none of them), so that reading patch
centres or FLOPs does not load TensorFlow.
"""
