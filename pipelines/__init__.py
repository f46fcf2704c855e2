"""Study in, SR/SEG out: the pipelines, their shared DICOM-array and output layers, and the ONNX model runtime.

Nothing in this package imports torch.
"""
