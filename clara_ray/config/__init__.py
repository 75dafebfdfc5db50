"""Configuration: the one typed settings tree (:mod:`.settings`) and the models it is made of.

The DICOM models (:mod:`.dicom`) live here rather than in the DICOM package, so that the Core,
the DICOM adapter and the runners all depend on configuration and none on another.
"""
