"""Model inference: loading model files and running them on numpy batches.

:mod:`clara_ray.inference.torchscript` runs a TorchScript file in-process (CPU
or CUDA).  Serving the same files from a Triton-layout model repository
(Ray Serve deployments, external Triton servers) builds on it.
"""
