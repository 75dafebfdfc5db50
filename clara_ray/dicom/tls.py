"""DICOM TLS (PS3.15 B.1, BCP 195): SSL contexts for the listener and for export."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

from clara_ray.config.dicom import TlsSettings
from clara_ray.errors import ConfigError

__all__ = ["ClientTls", "client_ssl_context", "server_ssl_context"]


def _readable(field: str, path: Path | None) -> Path:
    if path is None:
        raise ConfigError(f"dicom.tls.{field} must name a PEM file, got nothing")
    if not Path(path).is_file():
        raise ConfigError(f"dicom.tls.{field} must name a readable PEM file, got {str(path)!r}")
    return Path(path)


def _load_chain(ctx: ssl.SSLContext, tls: TlsSettings) -> None:
    certificate = _readable("certificate", tls.certificate)
    key = _readable("private_key", tls.private_key)
    try:
        ctx.load_cert_chain(certificate, key)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"dicom.tls.certificate {str(certificate)!r} and dicom.tls.private_key "
            f"{str(key)!r} must be a matching PEM certificate and key: {exc.reason or exc}"
        ) from None


def _load_ca(ctx: ssl.SSLContext, tls: TlsSettings) -> None:
    ca = _readable("ca_certificates", tls.ca_certificates)
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"dicom.tls.ca_certificates {str(ca)!r} must be a PEM CA bundle: {exc.reason or exc}"
        ) from None


def server_ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """The listener's context: TLS 1.2 or newer, our certificate; with
    ``require_client_certificate`` a peer without a certificate signed by
    ``ca_certificates`` fails the handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, tls)
    if tls.ca_certificates is not None:
        _load_ca(ctx, tls)
        ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    elif tls.require_client_certificate:
        raise ConfigError("dicom.tls.require_client_certificate needs dicom.tls.ca_certificates")
    return ctx


def client_ssl_context(tls: TlsSettings, *, check_hostname: bool = True) -> ssl.SSLContext:
    """The exporter's context: TLS 1.2 or newer, the peer verified against
    ``ca_certificates``, or against the system CA store when that is unset, and
    our certificate presented when one is configured (for peers that require
    client certificates).

    The system store is OpenSSL's default, read when the context is made:
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` in the environment replace the
    system's bundle and folder, as for every OpenSSL client.
    """
    if tls.ca_certificates is None:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        _load_ca(ctx, tls)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if tls.certificate is not None and tls.private_key is not None:
        _load_chain(ctx, tls)
    return ctx


class ClientTls:
    """The exporter's client context, made on first use and kept.

    Made lazily so that an adapter without TLS destinations never depends on
    the TLS files; a configuration error (:class:`ConfigError`, naming the
    setting) is raised on each use until the files are fixed, so fixing them
    needs no restart.
    """

    def __init__(self, tls: TlsSettings) -> None:
        self.tls = tls
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = client_ssl_context(self.tls)
            return self._context
