"""Dataset tools shared by the model families: the "generated data" marker, ``make-phantoms``
(every published layout from our phantom generators) and the nnU-Net export."""
