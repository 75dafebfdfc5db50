"""clara-ray: medical-imaging workflow platform on Ray.

The public surface for pipeline authors and integrators; everything else is
reached through its module (``clara_ray.operators.*``, ``clara_ray.dicom.*``).
"""

from clara_ray.config.settings import Settings, load_settings
from clara_ray.context import OperatorContext
from clara_ray.errors import ClaraError
from clara_ray.pipeline import PipelineSpec, load_pipeline
from clara_ray.storage import PayloadView, ResultsDir, Storage
from clara_ray.volume import InstanceReference, SeriesReference, Volume, array_module

__version__ = "0.1.0"

__all__ = [
    "ClaraError",
    "InstanceReference",
    "OperatorContext",
    "PayloadView",
    "PipelineSpec",
    "ResultsDir",
    "SeriesReference",
    "Settings",
    "Storage",
    "Volume",
    "__version__",
    "array_module",
    "load_pipeline",
    "load_settings",
]
