"""The two builds of Darknet a trainer can follow: every difference is one named switch.

`darknet="cpu"` is Darknet's CPU build (the training oracle proves it, bugs included);
`darknet="gpu"` (the default) is the CUDA + cuDNN build in float32 on one GPU, which people train
with. Everything that is not a switch here is shared code. File:line references are to
AlexeyAB/darknet 59596d78 (CPU path / GPU path); the README's training section lists the same.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

__all__ = ["Semantics", "CPU", "GPU", "semantics"]


@dataclass(frozen=True)
class Semantics:
    name: str
    # A layer's delta is zeroed before its forward only if l.train (network.c:276-278), so route,
    # upsample, connected, avgpool, ... accumulate stale deltas over subdivisions and iterations;
    # the GPU zeroes every layer's (network_kernels.cu:79-81).
    zero_every_delta: bool
    # A conv's backward zero-fills its input's delta before adding W^T*delta (col2im.c:65), losing
    # what later routes and shortcuts put there; cuDNN's backward-data adds (beta=1,
    # convolutional_kernels.cu:881-893).
    conv_input_delta_adds: bool
    # [sam] assigns its `from` layer's delta (sam_layer.c:92); the GPU adds (blas_kernels.cu:1705).
    sam_from_delta_adds: bool
    # Batch norm in training. "darknet": unbiased variance (blas.c:271), rolling .9/.1 (.95/.05 in
    # [connected]), Darknet's approximate backward (batchnorm_layer.c:91-147, 211-221) and no bias
    # gradient (convolutional_layer.c:1547-1552: BN convs' biases never learn). "cudnn":
    # cudnnBatchNormalizationForwardTraining/Backward (batchnorm_layer.c:296-315, 374-396): biased
    # variance, exact gradient, bias gradient, rolling .99/.01 of the unbiased variance.
    batchnorm: str
    # stopbackward=N > 1 ends the backward at that layer in every iteration (network.c:355); the
    # GPU only while the iteration is below N (network_kernels.cu:172-173).
    stopbackward_until_iteration: bool
    # adam=1 only allocates buffers on the CPU; the GPU update runs adam_update_gpu
    # (convolutional_kernels.cu:1317-1325, blas_kernels.cu:192-222).
    adam: bool
    # train_only_bn, dont_update, burnin_update and clip are read by the GPU code only
    # (parser.c:1306-1337, network_kernels.cu:291-294, convolutional_kernels.cu:1378-1380).
    layer_train_options: bool
    # loss_scale divides the rate and scales decay, [yolo]/[softmax] deltas (GPU only:
    # convolutional_kernels.cu:1300, 1343; yolo_layer.c:1225; softmax_layer.c:122); [yolo] and
    # [Gaussian_yolo] also scale their delta by delta_normalizer= (yolo_layer.c:1225,
    # gaussian_yolo_layer.c:894). The CPU backward adds the deltas unscaled (yolo_layer.c:932).
    loss_scale: bool
    # A [connected] layer's delta is clamped to [-1, 1] before its backward on the GPU
    # (connected_layer.c:379); not on the CPU (connected_layer.c:213).
    connected_clips_delta: bool

    def differences(self, other: Semantics) -> list[str]:
        """The names of the switches where two semantics differ."""
        return [f.name for f in fields(self)
                if f.name != "name" and getattr(self, f.name) != getattr(other, f.name)]


CPU = Semantics("cpu", zero_every_delta=False, conv_input_delta_adds=False,
                sam_from_delta_adds=False, batchnorm="darknet",
                stopbackward_until_iteration=False, adam=False, layer_train_options=False,
                loss_scale=False, connected_clips_delta=False)

GPU = Semantics("gpu", zero_every_delta=True, conv_input_delta_adds=True,
                sam_from_delta_adds=True, batchnorm="cudnn",
                stopbackward_until_iteration=True, adam=True, layer_train_options=True,
                loss_scale=True, connected_clips_delta=True)


def semantics(darknet: str | Semantics, **switches: object) -> Semantics:
    """The preset named `darknet` ("cpu" or "gpu"), with any switch overridden by keyword."""
    if isinstance(darknet, Semantics):
        base = darknet
    elif darknet in ("cpu", "gpu"):
        base = CPU if darknet == "cpu" else GPU
    else:
        raise ValueError(f"darknet={darknet!r}: expected 'cpu' or 'gpu'")
    unknown = set(switches) - {f.name for f in fields(Semantics)}
    if unknown:
        raise TypeError(f"unknown Darknet semantics switch(es): {', '.join(sorted(unknown))}")
    return replace(base, **switches) if switches else base
