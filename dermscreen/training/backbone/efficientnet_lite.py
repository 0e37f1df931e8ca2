"""EfficientNet-Lite0 in Keras, layer for layer as Google's TensorFlow reference builds it.

Lite0 is EfficientNet-B0 made friendly to quantisation and plain runtimes: ReLU6 instead of
swish, no squeeze-and-excitation, stem and head not scaled. Convolutions use TensorFlow's
``same`` padding, which is also what the PyTorch port of the ImageNet checkpoint reproduces.

The network is built in two parts that share layer names, so weights move between them by
name: ``bottom`` (normalisation, stem, the first ``cut`` blocks) and ``top`` (the remaining
blocks and the 1x1 head convolution). Training on cached features runs only the top; the
shipped model chains both::

    model = efficientnet_lite0((192, 192, 3))             # images [0, 255] -> (6, 6, 1280)
    bottom = efficientnet_lite0((192, 192, 3), stop=10)   # images -> input of block 10
    top = efficientnet_lite0(bottom.output.shape[1:], start=10)
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

# The reference's input normalisation for the Lite models: (x - 127) / 128 on [0, 255] RGB.
MEAN_RGB = 127.0
STDDEV_RGB = 128.0
BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int


# efficientnet_lite_builder.py: 'r1_k3_s11_e1_i32_o16', 'r2_k3_s22_e6_i16_o24', ...
LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Block:
    """One MBConv block: optional 1x1 expansion, depthwise conv, 1x1 projection, residual."""

    index: int
    kernel: int
    stride: int
    expand: int
    filters_in: int
    filters_out: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.filters_in == self.filters_out


def blocks(stages=LITE0_STAGES) -> list[Block]:
    """The blocks in order; the first of a stage strides and changes width, the rest repeat."""
    out = []
    for stage in stages:
        for repeat in range(stage.repeats):
            first = repeat == 0
            out.append(Block(len(out), stage.kernel, stage.stride if first else 1, stage.expand,
                             stage.filters_in if first else stage.filters_out, stage.filters_out))
    return out


BLOCKS = blocks()


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, activate: bool = True):
    x = keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                            name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{name}_relu6")(x) if activate else x


def _block(x, block: Block):
    name = f"block{block.index}"
    inputs = x
    if block.expand != 1:
        x = _conv_bn(x, block.filters_in * block.expand, 1, 1, f"{name}_expand")
    x = keras.layers.DepthwiseConv2D(block.kernel, strides=block.stride, padding="same",
                                     use_bias=False, name=f"{name}_dw_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}_dw_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
    x = _conv_bn(x, block.filters_out, 1, 1, f"{name}_project", activate=False)
    if block.residual:
        x = keras.layers.Add(name=f"{name}_add")([x, inputs])
    return x


def efficientnet_lite0(input_shape, start: int = 0, stop: int | None = None,
                       name: str | None = None) -> keras.Model:
    """EfficientNet-Lite0 trunk, or the part of it from block ``start`` up to block ``stop``.

    ``start == 0`` means the model takes float32 RGB images in [0, 255] (normalisation inside) and
    begins with the stem; otherwise it takes the feature map that enters block ``start``.
    ``stop is None`` means it ends with the head (1x1 conv to 1280 channels, ReLU6); otherwise it
    returns the feature map that enters block ``stop``.
    """
    stop_index = len(BLOCKS) if stop is None else stop
    if not 0 <= start <= stop_index <= len(BLOCKS):
        raise ValueError(f"blocks {start}..{stop} outside 0..{len(BLOCKS)}")
    inputs = keras.Input(input_shape, name="image" if start == 0 else f"block{start}_input")
    x = inputs
    if start == 0:
        x = keras.layers.Rescaling(1.0 / STDDEV_RGB, offset=-MEAN_RGB / STDDEV_RGB,
                                   name="normalize")(x)
        x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem")
    for block in BLOCKS[start:stop_index]:
        x = _block(x, block)
    if stop is None:
        x = _conv_bn(x, HEAD_FILTERS, 1, 1, "head")
    return keras.Model(inputs, x, name=name or f"efficientnet_lite0_{start}_{stop_index}")


def copy_weights(source: keras.Model, target: keras.Model) -> int:
    """Copy weights from ``source`` into the layers of ``target`` with the same name; return how
    many layers received weights."""
    names = {layer.name for layer in source.layers}
    copied = 0
    for layer in target.layers:
        if layer.name in names and layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())
            copied += 1
    return copied
