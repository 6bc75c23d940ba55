"""srood_lib: the library behind the SR-OOD reproducibility workbook.

Conventions used everywhere (stated once, here):
- Images on disk and in the cache are uint8 arrays ``(N, H, W, 3)``; inside models they are float tensors
  ``(N, 3, H, W)`` in ``[-1, 1]`` (LPIPS's convention). ``srood_lib.data.to_tensor`` converts.
- OOD scores: higher means more out-of-distribution; OOD is the positive class for AUROC, AUPR-Out and
  FPR@95TPR.
"""
__version__ = "0.1.0"
