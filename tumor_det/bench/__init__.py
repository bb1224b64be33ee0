"""Benchmarks against torchvision's Mask R-CNN (``tools/benchmark.py``): :mod:`.speed`
(inference, train, profile), :mod:`.quality` (sizes, accuracy), :mod:`.cli`."""
