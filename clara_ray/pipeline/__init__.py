"""Pipeline definitions: parsing, validation and resolution of parameters."""

from clara_ray.pipeline.load import load_pipeline, parse_pipeline, validate_pipeline_file
from clara_ray.pipeline.resolve import ResolvedOperator, ResolvedPipeline, resolve_pipeline
from clara_ray.pipeline.spec import (
    InputSpec,
    OperatorSpec,
    OutputSpec,
    PipelineSpec,
    Requests,
    ServiceSpec,
)

__all__ = [
    "InputSpec",
    "OperatorSpec",
    "OutputSpec",
    "PipelineSpec",
    "Requests",
    "ResolvedOperator",
    "ResolvedPipeline",
    "ServiceSpec",
    "load_pipeline",
    "parse_pipeline",
    "resolve_pipeline",
    "validate_pipeline_file",
]
