"""Edge variants of the shipped models: ONNX export, int8 quantization, distilled students, and
the onnxruntime code that serves them. `common` holds the layout and checks every variant shares.
"""
