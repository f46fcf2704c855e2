"""CT -> coronary calcium pipeline: COCA 8-class calcium SEG + Agatston SR (ONNX Runtime only, no torch)."""
