"""ONNX export: ONNX Runtime and TensorFlow give the same probabilities."""

from __future__ import annotations

import numpy as np
import onnxruntime

from dermscreen.bundle import load_bundle, onnx_providers
from dermscreen.training.backbone.efficientnet_lite import efficientnet_lite0
from dermscreen.training.onnx_export import export_onnx
from tests.factories import BLUE, RED, lesion_image, make_tiny_bundle


def test_tiny_bundle_onnx_and_tensorflow_agree(tmp_path):
    path = make_tiny_bundle(tmp_path / "tiny", with_onnx=True)
    images = [lesion_image(RED, seed=1), lesion_image(BLUE, seed=2), lesion_image(RED, seed=3)]
    onnx = load_bundle(path, backend="onnx")
    tf = load_bundle(path, backend="tensorflow")
    assert load_bundle(path).backend == "onnx"  # picked whenever the bundle has its export
    assert onnx._onnx.get_providers() == onnx_providers(onnxruntime.get_available_providers())
    from_onnx, from_tf = onnx.predict(images), tf.predict(images)
    np.testing.assert_allclose(from_onnx, from_tf, atol=1e-5)
    melanoma = onnx.melanoma_index
    assert from_onnx[0, melanoma] > 0.5 > from_onnx[1, melanoma]


def test_serving_takes_the_cuda_provider_where_the_runtime_has_it_and_keeps_the_cpu():
    assert onnx_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert onnx_providers(["TensorrtExecutionProvider", "CUDAExecutionProvider",
                           "CPUExecutionProvider"]) == ["CUDAExecutionProvider",
                                                        "CPUExecutionProvider"]


def test_bundles_without_an_export_run_on_tensorflow(tmp_path):
    assert load_bundle(make_tiny_bundle(tmp_path / "tiny", with_onnx=False)).backend == "tensorflow"


def test_efficientnet_part_exports_with_dynamic_batch():
    model = efficientnet_lite0((32, 32, 3), stop=3)
    session = onnxruntime.InferenceSession(export_onnx(model), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).uniform(0, 255, (5, 32, 32, 3)).astype(np.float32)
    (exported,) = session.run(None, {session.get_inputs()[0].name: images})
    expected = np.asarray(model(images, training=False))
    assert exported.shape == expected.shape
    np.testing.assert_allclose(exported, expected, rtol=1e-4, atol=1e-4)
