"""EfficientNet-Lite0 port: architecture, weight mapping, legacy checkpoint reader, reference."""

from __future__ import annotations

import io

import numpy as np
import pytest

from dermscreen.training.backbone.convert import (
    TOLERANCE, converted_model, keras_weights, max_relative_error, verify,
)
from dermscreen.training.backbone.efficientnet_lite import BLOCKS, copy_weights, efficientnet_lite0
from dermscreen.training.backbone.torch_checkpoint import read_legacy_state_dict

SIZE = 64


def _torch_state(model) -> dict[str, np.ndarray]:
    """The reference's state dict for a Keras trunk: the inverse of the converter's mapping."""
    def conv(name):
        return model.get_layer(name).get_weights()[0].transpose(3, 2, 0, 1)

    def bn(name, prefix):
        gamma, beta, mean, var = model.get_layer(name).get_weights()
        return {f"{prefix}.weight": gamma, f"{prefix}.bias": beta,
                f"{prefix}.running_mean": mean, f"{prefix}.running_var": var}

    state = {"_conv_stem.weight": conv("stem_conv"), **bn("stem_bn", "_bn0"),
             "_conv_head.weight": conv("head_conv"), **bn("head_bn", "_bn1")}
    for block in BLOCKS:
        ref, name = f"_blocks.{block.index}", f"block{block.index}"
        if block.expand != 1:
            state[f"{ref}._expand_conv.weight"] = conv(f"{name}_expand_conv")
            state.update(bn(f"{name}_expand_bn", f"{ref}._bn0"))
        state[f"{ref}._depthwise_conv.weight"] = (
            model.get_layer(f"{name}_dw_conv").get_weights()[0].transpose(2, 3, 0, 1))
        state.update(bn(f"{name}_dw_bn", f"{ref}._bn1"))
        state[f"{ref}._project_conv.weight"] = conv(f"{name}_project_conv")
        state.update(bn(f"{name}_project_bn", f"{ref}._bn2"))
    return state


def _randomise(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        arrays = layer.get_weights()
        if len(arrays) == 4:  # batch norm: keep variances positive
            arrays = [rng.uniform(0.5, 1.5, a.shape).astype(np.float32) if i in (0, 3)
                      else rng.normal(0, 0.1, a.shape).astype(np.float32) for i, a in enumerate(arrays)]
        else:
            arrays = [rng.normal(0, 0.2, a.shape).astype(np.float32) for a in arrays]
        layer.set_weights(arrays)
    return model


def _images(count=2, size=SIZE, seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


def test_architecture_matches_lite0():
    model = efficientnet_lite0((224, 224, 3))
    assert len(BLOCKS) == 16
    assert tuple(model.output.shape) == (None, 7, 7, 1280)
    # 3,413,024 = the reference trunk's parameters and batch-norm statistics (no classifier).
    assert model.count_params() == 3_413_024


def test_bottom_and_top_compose_to_the_full_trunk():
    full = _randomise(efficientnet_lite0((SIZE, SIZE, 3)))
    bottom = efficientnet_lite0((SIZE, SIZE, 3), stop=10)
    top = efficientnet_lite0(tuple(bottom.output.shape[1:]), start=10)
    assert copy_weights(full, bottom) + copy_weights(full, top) == sum(
        1 for layer in full.layers if layer.weights)
    images = _images()
    chained = top(bottom(images, training=False), training=False)
    np.testing.assert_allclose(np.asarray(chained), np.asarray(full(images, training=False)),
                               rtol=1e-5, atol=1e-5)


def test_weight_mapping_round_trips():
    original = _randomise(efficientnet_lite0((SIZE, SIZE, 3)), seed=3)
    state = _torch_state(original)
    assert len(keras_weights(state)) == sum(1 for layer in original.layers if layer.weights)
    converted = converted_model(state, size=SIZE)
    images = _images()
    error = max_relative_error(np.asarray(converted(images, training=False)),
                               np.asarray(original(images, training=False)))
    assert error < 1e-6


def test_converter_rejects_a_checkpoint_missing_layers():
    state = _torch_state(efficientnet_lite0((SIZE, SIZE, 3)))
    del state["_conv_head.weight"]
    with pytest.raises(KeyError):
        converted_model(state, size=SIZE)


def test_legacy_checkpoint_reader_matches_torch():
    torch = pytest.importorskip("torch")
    state = {"conv.weight": torch.randn(4, 3, 3, 3),
             "fc.weight": torch.randn(5, 6).t(),  # non-contiguous view
             "bn.num_batches_tracked": torch.tensor(7)}
    buffer = io.BytesIO()
    torch.save(state, buffer, _use_new_zipfile_serialization=False)
    read = read_legacy_state_dict(buffer.getvalue())
    assert set(read) == set(state)
    for name, tensor in state.items():
        np.testing.assert_array_equal(read[name], tensor.numpy())


def test_legacy_reader_rejects_other_files():
    with pytest.raises(Exception):
        read_legacy_state_dict(b"PK\x03\x04 a zip checkpoint")


@pytest.mark.slow
def test_port_matches_the_pytorch_reference():
    """The real ImageNet weights against the reference implementation (dev extra ``port``)."""
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite_pytorch")
    from dermscreen.training.backbone.convert import read_checkpoint

    model = converted_model(read_checkpoint(), size=224)
    assert verify(model, count=2) < TOLERANCE
