"""The DICOM adapter: a durable Storage SCP that turns studies into payloads and jobs,
and the scheduler that sends results to PACS destinations (:mod:`clara_ray.export`)."""
