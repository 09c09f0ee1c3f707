"""TLS: certificates are verified; a hospital CA is added with `fhir.ca_bundle`.

A private CA and a server certificate for 127.0.0.1 are made for the test; an aiohttp server
serves a CapabilityStatement over TLS with it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from wardsync.fhir.client import FhirClient, tls_context
from wardsync.fhir.errors import UntrustedCertificate


class NoTokens:
    async def access_token(self) -> str:
        return "unused"

    async def refresh_after_rejection(self, rejected: str) -> str:
        return "unused"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("Example Hospital Test CA"))
          .issuer_name(_name("Example Hospital Test CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_pem, cert_pem, key_pem = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return ca_pem, cert_pem, key_pem


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    ca_pem, cert_pem, key_pem = make_ca_and_server_cert(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_pem, key_pem)

    async def metadata(request: web.Request) -> web.Response:
        return web.json_response({"resourceType": "CapabilityStatement", "status": "active",
                                  "kind": "instance", "fhirVersion": "4.0.1",
                                  "date": "2026-11-22", "format": ["json"]})

    app = web.Application()
    app.router.add_get("/fhir/metadata", metadata)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}/fhir", ca_pem
    finally:
        await runner.cleanup()


async def test_untrusted_certificate_is_refused_in_plain_words(tls_server) -> None:
    base, _ = tls_server
    client = FhirClient(base, NoTokens(), verify=tls_context(None))
    with pytest.raises(UntrustedCertificate) as err:
        await client.capabilities()
    assert "certificate is not trusted" in err.value.user_message
    await client.aclose()


async def test_hospital_ca_bundle_makes_the_server_trusted(tls_server) -> None:
    base, ca_pem = tls_server
    async with httpx.AsyncClient(verify=tls_context(str(ca_pem))) as http:
        client = FhirClient(base, NoTokens(), http=http)
        meta = await client.capabilities()
    assert meta["resourceType"] == "CapabilityStatement"
