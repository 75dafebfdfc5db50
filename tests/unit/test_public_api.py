"""The package exports exactly what it means to."""

from __future__ import annotations

import clara_ray


def test_all_is_exactly_the_public_surface() -> None:
    assert sorted(clara_ray.__all__) == [
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
    for name in clara_ray.__all__:
        assert getattr(clara_ray, name) is not None


def test_importing_the_package_does_not_import_ray() -> None:
    import subprocess
    import sys

    code = "import sys, clara_ray; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
