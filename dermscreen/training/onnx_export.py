"""Export a Keras bundle model to ONNX with tf2onnx, for fast CPU inference with ONNX Runtime.

    onnx_bytes = export_onnx(model)
    save_bundle(path, model, metadata, onnx_bytes=onnx_bytes)

The graph keeps the Keras model's input (float32 NHWC images in [0, 255], any batch size) and
its outputs (class logits, then the pooled features when the model has them: bundles with a
gate); ``dermscreen.bundle.load_bundle`` picks it on CPU.
"""

from __future__ import annotations

OPSET = 17


def export_onnx(model, opset: int = OPSET) -> bytes:
    """Serialised ONNX model computing the same logits as ``model`` (traced in inference mode)."""
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec((None, *model.inputs[0].shape[1:]), tf.float32, name="image")]

    @tf.function(input_signature=spec)
    def logits(image):
        outputs = model(image, training=False)
        if isinstance(outputs, (list, tuple)):  # a bundle with a gate: logits, pooled features
            return {"logits": outputs[0], "features": outputs[1]}
        return {"logits": outputs}

    proto, _ = tf2onnx.convert.from_function(logits, input_signature=spec, opset=opset)
    return proto.SerializeToString()
