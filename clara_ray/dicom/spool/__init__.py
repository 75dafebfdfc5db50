"""The receive spool: every acknowledged instance is a durable file before its Success status.

Layout under ``root``::

    incoming/<AET>/<grouping>-<group uid>/<sop instance uid>.dcm       open groups
    incoming/<AET>/<grouping>-<group uid>/.<random>.slot               slots (durability instance)
    closing/<AET>/<grouping>-<group uid>-<closed at, ms>/<sop uid>.dcm  groups being ingested

:class:`Spool` (:mod:`.store`) stores, lists and closes groups; the rest it is
built from lives beside it:

* :mod:`.names`: the only names made from received data (AE title folders, UIDs);
* :mod:`.files`: durable file writing (temp files, fsyncs, links, data set sizes);
* :mod:`.groups`: the group records, and the ``flock`` holds of open associations;
* :mod:`.slots`: durable instances with one fsync each (pre-created slot files), and
  their recovery.
"""

from clara_ray.dicom.spool.files import TempFile
from clara_ray.dicom.spool.groups import ClosingGroup, GroupHolds, OpenGroup
from clara_ray.dicom.spool.slots import SlotPool
from clara_ray.dicom.spool.store import Spool

__all__ = ["ClosingGroup", "GroupHolds", "OpenGroup", "SlotPool", "Spool", "TempFile"]
