"""Input quality control and abstention: is this study, and the model's answer on it, inside what the model knows?

Two kinds of check, both bounded by ranges in the model's manifest (so a retrained model carries
its own):

- **input checks** (:mod:`.inputs`): properties of the study a pipeline is about to analyse
  (modality, contrast, pixel spacing, slice thickness, kVp, coverage, frame count, matrix, MR
  sequences) against ``input_domain``;
- **output checks** (:mod:`.scores`): how unusual the model's own output is (low-confidence
  foreground, disagreement between ensemble members, implausible volumes) against ``output_domain``.

:func:`.domain.check` turns every value outside its range into a
:class:`~pipelines.quality.QualityIssue` with a stable code (:data:`.domain.CHECKS`) and a
one-sentence reason naming the value and the accepted range; the output builders then write "not
assessable: <reason>" in the SR, SEG and summary image instead of a number.
"""
from .domain import CHECKS, Check, DomainCheckError, Outcome, check

__all__ = ["CHECKS", "Check", "DomainCheckError", "Outcome", "check"]
