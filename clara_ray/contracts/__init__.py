"""What the Core's callers and the Core agree on: its records, its verbs and where it lives.

The Core (``clara_ray.core``), the runner, the DICOM adapter and the driver-side
client all import this package; it imports none of them.
"""
