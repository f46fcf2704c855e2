"""Synthetic DICOM: phantom arrays written as the files a modality sends (CT, Enhanced CT, MR, XA).

Shared by the tests, the benchmarks, the training tools (bundled-model data and
domain checks) and ``cardionode sample``, so that every one of them reads
phantoms through the code paths real studies take.  numpy and pydicom only: no
torch and nothing from ``training/``, so it is part of the base install
(tests/test_import_graph.py keeps it that way).  The phantom generators
themselves stay with their model families (``training/<family>/phantom.py``),
whose module names the bundled models' provenance records.
"""
