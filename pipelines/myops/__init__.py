"""Cardiac MR (bSSFP + LGE + T2w) -> myocardium / scar / edema SEG on LGE + SR with volumes and burden.

No torch here: ONNX Runtime, numpy, scipy, SimpleITK.  See docs/myops.md.
"""
