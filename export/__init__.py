"""Exports of a trained model, each verified against Keras before it is kept.

    python -m export.saved_model --model M.keras --out DIR        # TF Serving, uint8 crops in
    python -m export.tflite --model M.keras --out F.tflite --quantize {none,fp16}   # int8: experimental
    python -m export.onnx --model M.keras --out F.onnx            # tf2onnx, opset 17
    python -m export.benchmark --presets cpu                      # latency per format and stage

Every export converts the gather formulation of the graph convolutions (builtin ops only),
writes to a temporary path, loads the result back in its own runtime (tf.saved_model.load,
the LiteRT interpreter, onnxruntime), compares mesh and joints with the Keras model on a few
crops (`--data`: shard folder or images; otherwise deterministic procedural textures) and
renames it to the output path only if the differences are within the bounds of
`export.parity` (units: pixels of the input crop for u, v; millimetres for d at the template's
46.9 mm scale bone). A failing export exits with status 1 and leaves no output behind.

Importing this package (or `export.parity`) does not import TensorFlow.
"""
