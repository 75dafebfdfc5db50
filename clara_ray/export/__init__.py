"""Export: how a job's DICOM results reach the PACS, from the operator to the ledger.

1. **In the job** the ``export_dicom`` operator (:mod:`clara_ray.operators.export`)
   names the DICOM files to send and the destinations.
   :func:`~clara_ray.export.request.build_manifest` checks that each file exists in
   the job's results and is DICOM; the operator writes the manifest,
   ``export.json`` in its results folder (format and result paths:
   :mod:`clara_ray.export.manifest`).  Nothing is sent from inside a job: a job
   may be retried or evicted, its exports may not be sent twice.
2. **When the job ends Healthy** the Core records one export per manifest and
   destination in the :class:`~clara_ray.export.ledger.ExportLedger`, in the same
   unit of work as the Healthy stop, so a Healthy job always has its exports.  An
   unknown destination or an unreadable manifest is recorded Failed with the
   reason.
3. **The DICOM adapter sends them.** Its
   :class:`~clara_ray.export.workers.ExportScheduler` claims, per destination, the
   next export due (with a lease: an export held by an adapter that died is
   claimed again), at most ``dicom.export.concurrency_per_destination`` at once
   per destination and ``dicom.export.workers`` in all, so a slow PACS delays
   only its own exports.
4. **One attempt** (:func:`~clara_ray.export.attempt.run_export`) copies the
   files out of storage when it is not local and sends them with the Storage SCU
   (:func:`~clara_ray.export.scu.send_files`: one presentation context per SOP
   Class and Transfer Syntax as :mod:`clara_ray.export.send_plan` plans them,
   files streamed from disk as encoded), within the lease.
5. **The outcome** (:mod:`clara_ray.export.outcome`) goes back to the ledger:
   Succeeded, Pending again after a backoff when the retry policy
   (:mod:`clara_ray.export.policy`) says the destination may accept later, or
   Failed with the reason.  A Failed export can be sent again (``clara-ray dicom
   resend``, ``POST /api/v1/exports/{id}/resend``).

The package depends on the configuration, the contracts and storage only: the
Core (which keeps the ledger) and the DICOM adapter (which runs the scheduler)
import it, never the other way round.
"""
