"""The seed notebook's CNN: three Conv-MaxPool blocks (16, 32, 64 filters), Flatten, Dense 128,
Dense logits. Normalisation (``Rescaling(1/255)``) is inside the model, so it takes the
bundle's input (float32 RGB in [0, 255]) as is."""

from __future__ import annotations


def build_seed_cnn(image_size: int = 180, classes: int = 9, dropout: float = 0.0):
    import keras

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(inputs)
    for filters in (16, 32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu")(x)
    outputs = keras.layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="seed_cnn")
