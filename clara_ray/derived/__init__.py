"""DICOM objects derived from a volume: Segmentation (SEG) and measurement reports (SR).

Plain functions over :class:`~clara_ray.volume.Volume` and pydicom datasets,
built with highdicom; the operators in ``clara_ray.operators.dicom_seg`` and
``clara_ray.operators.dicom_sr`` wrap them.  ``codes`` holds the coded values
(segment anatomy and categories, units).
"""

from clara_ray.derived.codes import SegmentCodes, segment_codes
from clara_ray.derived.seg import build_segmentation
from clara_ray.derived.sr import build_measurement_report

__all__ = ["SegmentCodes", "build_measurement_report", "build_segmentation", "segment_codes"]
