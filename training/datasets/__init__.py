"""Dataset tools shared by the model families: the "generated data" marker, ``make-phantoms``
(every published layout from our phantom generators), the nnU-Net export, and the phantom studies of
``cardionode sample`` (``samples``: base install, no torch)."""
