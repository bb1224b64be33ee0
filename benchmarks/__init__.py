"""Benchmarks of tumor-det against torchvision's Mask R-CNN (``tools/benchmark.py``).

Kept outside the ``tumor_det`` package (like Detectron2's ``tools/benchmark.py``): it uses
``tumor_det`` as a library and is not installed with it. :mod:`.common` (machine, load, timing,
the ``RESULTS.md`` writer), :mod:`.models` (both models from one initialisation, inputs, a
training step), :mod:`.speed` (inference, train), :mod:`.profiling` (profile), :mod:`.quality`
(sizes, accuracy), :mod:`.cli`. ``real_slices.py`` and ``threshold_baseline.py`` are scripts.
"""
