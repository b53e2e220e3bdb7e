"""The image pipeline: validate and decode an upload, cut out the item, prepare the
28×28 model input, classify it with the exported LiteRT model.

Shared by the worker, ``fashion classify`` and training (so training and serving
convert photos the same way). It imports nothing of ours but settings, errors and
the shared vocabulary (``catalog.codes``), and never TensorFlow.
"""
