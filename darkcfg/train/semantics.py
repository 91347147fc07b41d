"""The two builds of Darknet a trainer can follow: every difference is one named switch.

`darknet="cpu"` is Darknet's CPU build (the training oracle proves it, bugs included);
`darknet="gpu"` (the default) is the CUDA + cuDNN build people train with. Everything that is
not a switch here is shared code. File:line references are to AlexeyAB/darknet 59596d78; the
README's training section lists the same switches with both paths.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["Semantics", "CPU", "GPU", "semantics"]


@dataclass(frozen=True)
class Semantics:
    name: str
    # forward_network zeroes a layer's delta before its forward only for layers with l.train
    # (network.c:275-278); the GPU zeroes every layer's (network_kernels.cu:79-81). Without it,
    # route/upsample/shortcut/connected deltas accumulate over subdivisions and iterations.
    zero_every_delta: bool
    # A conv's backward zero-fills its input's delta before adding W^T*delta (col2im.c:65, an
    # overwrite that loses what later routes/shortcuts put there); cuDNN's backward-data adds
    # (beta = 1, convolutional_kernels.cu).
    conv_input_delta_adds: bool
    # backward_batchnorm_layer computes no bias gradient on the CPU, so BN convs' biases never
    # learn (batchnorm_layer.c:211-221, convolutional_layer.c:1547-1552); the GPU does
    # (backward_bias_gpu in backward_batchnorm_layer_gpu).
    bn_bias_learns: bool
    # BN in training: "darknet" normalises with the unbiased variance, rolls .9/.1 (.95/.05 in
    # [connected]) and uses Darknet's approximate backward (eps outside the sqrt, 1/N);
    # "cudnn" is cuDNN's batch norm: biased variance, exact gradient, rolling .99/.01.
    batchnorm: str
    # Only conv/batchnorm/maxpool/crnn/conv_lstm set l.train on the CPU, so [connected], [local],
    # weighted [shortcut] and [implicit] never update there (connected_layer.c:53-160); the GPU
    # updates every layer with an update_gpu.
    update_every_weighted_layer: bool
    # stopbackward=N > 1 ends backward at that layer in every iteration on the CPU
    # (network.c:355); the GPU only while the iteration is below N (network_kernels.cu:172-173).
    stopbackward_until_iteration: bool
    # adam=1: the CPU update has no Adam branch; the GPU's update runs adam_update_gpu.
    adam: bool
    # train_only_bn, dont_update, burnin_update, loss_scale: read in the GPU code only
    # (network_kernels.cu update_network_gpu, convolutional_kernels.cu).
    layer_train_options: bool


CPU = Semantics("cpu", zero_every_delta=False, conv_input_delta_adds=False, bn_bias_learns=False,
                batchnorm="darknet", update_every_weighted_layer=False,
                stopbackward_until_iteration=False, adam=False, layer_train_options=False)

GPU = Semantics("gpu", zero_every_delta=True, conv_input_delta_adds=True, bn_bias_learns=True,
                batchnorm="cudnn", update_every_weighted_layer=True,
                stopbackward_until_iteration=True, adam=True, layer_train_options=True)


def semantics(darknet: str | Semantics, **switches: object) -> Semantics:
    """The preset named `darknet` ("cpu" or "gpu"), with any switch overridden by keyword."""
    if isinstance(darknet, Semantics):
        base = darknet
    elif darknet == "cpu":
        base = CPU
    elif darknet == "gpu":
        base = GPU
    else:
        raise ValueError(f"darknet={darknet!r}: expected 'cpu' or 'gpu'")
    return replace(base, **switches) if switches else base
