"""Evaluation-only phantom generators, independent of ``training/``.

The bundled models are trained on studies from ``training/`` generators.  To measure whether they
generalise, the benchmarks also evaluate on studies written by the modules here, which share no
geometry, intensity or DICOM-writing code with the training generators (different anatomy models,
acquisition parameters, vendors' attribute conventions).  Nothing here is ever used for training.
Figures on these studies are phantom figures, not clinical accuracy.

One module per modality: ``ct`` (calcium), ``xa`` (SYNTAX), ``cmr`` (myocardial pathology).
"""
