"""The presentation contexts the Storage SCP accepts, and its transfer syntax preference."""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts, build_context
from pynetdicom._globals import ALL_TRANSFER_SYNTAXES
from pynetdicom.presentation import PresentationContext

__all__ = ["TRANSFER_SYNTAXES", "supported_contexts"]

# The acceptor takes, per presentation context, the first syntax of *this* list that the
# requestor proposed.  Explicit VR Little Endian comes first: uncompressed data then arrives
# with explicit VRs (self-describing, what the spool keeps), and no requestor is ever made to
# compress (lossy or not) what it holds uncompressed.  Implicit VR LE (the default every peer
# supports) and Deflated follow, then the compressed syntaxes: senders of compressed files
# propose them in contexts of their own (dcmtk storescu, pynetdicom), so those are accepted
# as sent, without transcoding.  Every other syntax pynetdicom knows comes last.
_PREFERRED = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
]
TRANSFER_SYNTAXES: list[str] = [
    *_PREFERRED,
    *(ts for ts in ALL_TRANSFER_SYNTAXES if ts not in _PREFERRED),
]

_VERIFICATION = "1.2.840.10008.1.1"


def supported_contexts() -> list[PresentationContext]:
    """Verification plus every storage SOP class pynetdicom knows, with TRANSFER_SYNTAXES."""
    contexts = [build_context(_VERIFICATION, TRANSFER_SYNTAXES)]
    contexts += [
        build_context(str(cx.abstract_syntax), TRANSFER_SYNTAXES)
        for cx in AllStoragePresentationContexts
    ]
    return contexts
