"""Training side of the calcium pipeline: COCA readers, phantoms, U-Net, training, evaluation, export.

Modules that need torch import it themselves; ``phantom`` and ``coca`` do not.
"""
