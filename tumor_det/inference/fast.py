"""Faster PyTorch inference with the same answers: conv/norm folding and the bfloat16 check.

:func:`fuse_conv_norm` folds the norm layers into the convolutions (``tools/splash.py --fast``,
:meth:`tumor_det.inference.predictor.TumorPredictor.optimize`); :func:`cpu_bf16_supported` says
whether bfloat16 autocast (``--bf16``) is native on this CPU.
"""

from __future__ import annotations

import torch
from torch import nn


def fuse_conv_norm(model: nn.Module) -> int:
    """Fold each eval-mode norm layer of Detectron2's ``Conv2d`` (``FrozenBatchNorm2d``,
    ``BatchNorm2d``) into the convolution's weight and bias; returns how many were folded.

    ``y = norm(conv(x))`` becomes one convolution with ``w' = w * s`` and ``b' = (b - mean) * s
    + beta``, ``s = gamma / sqrt(var + eps)``: the same function up to float rounding, one
    pass over the activations less per convolution. For inference only: the norm layers are
    removed (``conv.norm = None``), so load weights before calling it, and never train after.
    """
    from detectron2.layers import Conv2d, FrozenBatchNorm2d

    count = 0
    for module in model.modules():
        norm = getattr(module, "norm", None)
        if not isinstance(module, Conv2d) or norm is None:
            continue
        if isinstance(norm, nn.BatchNorm2d):
            if norm.training or not norm.track_running_stats:
                continue
        elif not isinstance(norm, FrozenBatchNorm2d):
            continue  # GroupNorm etc. depend on the input
        with torch.no_grad():
            scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
            shift = norm.bias - norm.running_mean * scale
            weight = module.weight * scale.reshape(-1, 1, 1, 1)
            bias = shift if module.bias is None else module.bias * scale + shift
            module.weight = nn.Parameter(weight.detach(), requires_grad=False)
            module.bias = nn.Parameter(bias.detach(), requires_grad=False)
        module.norm = None
        count += 1
    return count


def cpu_bf16_supported() -> bool:
    """Whether oneDNN has native bfloat16 on this CPU (AVX512-BF16 or AMX): bfloat16 autocast
    is fast there and emulated (slow) elsewhere."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
