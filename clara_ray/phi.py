"""Keep patient data out of the logs of every process the platform starts.

pydicom quotes element values verbatim when it finds one invalid (``Invalid
value for VR DA: '1971.03.13'``, ``Value "1,5" is not valid for elements with a VR
of DS``)
and says so twice: once on its ``pydicom`` logger and once through
:func:`warnings.warn`.  In a Ray worker both end up in the worker's stderr
file under Ray's session log folder (the dashboard shows them): the warning
through Python's default warning display, the record through the root
logger's handlers or, with none, :data:`logging.lastResort`.

:func:`keep_patient_data_out_of_logs` is called first in every platform
process (the Core, the job runner host, the DICOM adapter and receivers, the
Serve replicas, operator tasks).  It turns pydicom's value validation off for
reading and writing: the platform reads what it receives as it is and its
writers build valid values themselves, so validation would only ever report,
and its reports are what quote the data.  It also drops the warnings pydicom
issues and every record of pydicom's loggers, whatever they say, so that a
message added in a later pydicom release cannot leak either.
"""

from __future__ import annotations

import logging
import warnings

from pydicom import config

__all__ = ["PydicomRecordFilter", "keep_patient_data_out_of_logs"]

_PYDICOM_MODULES = r"pydicom(\.|$)"
# pydicom's messages that quote a value; some are attributed (``stacklevel``) to the caller.
_VALUE_MESSAGES = (
    r"Invalid value ",  # "Invalid value for VR DA: '...'", "Invalid value '...' for AT element"
    r"The PN component length \(",
    r"The value length \(",
    r"Value \".*\" is not valid",  # DS and IS
)


class PydicomRecordFilter(logging.Filter):
    """Drops the records of pydicom's loggers (``pydicom`` and its children)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "pydicom" or record.name.startswith("pydicom."))


def keep_patient_data_out_of_logs() -> None:
    """Silence pydicom's value reports in this process (idempotent, cheap to repeat)."""
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE
    warnings.filterwarnings("ignore", module=_PYDICOM_MODULES)
    for message in _VALUE_MESSAGES:
        warnings.filterwarnings("ignore", message=message)
    pydicom_logger = logging.getLogger("pydicom")
    # No propagation to the root logger's handlers (nor to logging.lastResort: pydicom's
    # logger keeps the NullHandler pydicom gives it), and nothing from its children either.
    pydicom_logger.propagate = False
    if not any(isinstance(h, logging.NullHandler) for h in pydicom_logger.handlers):
        pydicom_logger.addHandler(logging.NullHandler())
    for handler in pydicom_logger.handlers:
        if not any(isinstance(f, PydicomRecordFilter) for f in handler.filters):
            handler.addFilter(PydicomRecordFilter())
