"""The ``ct-liver-ai`` reference pipeline's own code: the training of its ``liver-seg`` model.

``python -m pipelines.ct_liver_ai.train --out models/liver-seg/1/model.pt --seed 0``
retrains the model on generated phantoms; the operator that runs it is
:func:`clara_ray.operators.ai_segmentation.segment_liver`.
"""
