"""tumor-det: brain tumor detection and segmentation in MRI with Detectron2 Mask R-CNN.

Importing this package first makes Detectron2 0.6 work on current libraries
(:mod:`tumor_det.compat`).
"""

from tumor_det import compat

compat.apply()

__version__ = "0.1.0"
