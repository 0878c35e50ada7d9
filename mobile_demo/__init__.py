"""On-device demo: a TFLite hand model in the LiteRT interpreter, without TensorFlow.

    python -m mobile_demo [--model F.tflite] [--images ... | --video F | --camera N] [--out DIR] [--benchmark]

`mobile_demo.demo` has the pipeline, `mobile_demo.make_assets` makes the shipped model.
"""
