"""The DICOM adapter: a durable Storage SCP that turns studies into payloads and jobs,
and a Storage SCU that exports results to PACS destinations."""
