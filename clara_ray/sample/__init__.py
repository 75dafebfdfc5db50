"""Synthetic sample data: a CT phantom with ground-truth labels, written as DICOM."""

from clara_ray.sample.ct_series import write_ct_series, write_sample_study
from clara_ray.sample.phantom import LABELS, Phantom, generate_phantom

__all__ = ["LABELS", "Phantom", "generate_phantom", "write_ct_series", "write_sample_study"]
