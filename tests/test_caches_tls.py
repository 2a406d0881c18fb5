"""``rediss://`` caches against a real TLS ``redis-server``: a throwaway CA and server
certificate made per module, the CA file and certificate options of
docs/caching.md, a wrong CA (a clear error; under a generator, one warning and
batches from the source), client certificates and AUTH over TLS."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import xarray as xr

import xbatcher as xb
from conftest import REDIS_SERVER, _free_port, _need_redis, make_dataset, unavailable
from xbatcher.caches import BatchCache, RedisCache, open_cache
from xbatcher.errors import CacheWarning, SchemaError

PASSWORD = "tls-s3cret"


@dataclass
class TLSFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _make_pki(folder: Path) -> TLSFiles:
    """A CA, a server certificate for 127.0.0.1 and a client certificate signed by
    it, and an unrelated CA (``cryptography``; all valid for a day)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    def write_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(
        ca_key: ec.EllipticCurvePrivateKey,
        ca_cert: x509.Certificate,
        cn: str,
        usage: x509.ObjectIdentifier,
    ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.DNSName("localhost"),
                    ]
                ),
                False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), False)
            .sign(ca_key, hashes.SHA256())
        )
        return key, cert

    ca_key, ca_cert = ca("xbatcher test CA")
    server_key, server_cert = leaf(
        ca_key, ca_cert, "127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH
    )
    client_key, client_cert = leaf(
        ca_key, ca_cert, "client", ExtendedKeyUsageOID.CLIENT_AUTH
    )
    _, other = ca("another CA")
    return TLSFiles(
        ca=write_cert(ca_cert, folder / "ca.pem"),
        server_cert=write_cert(server_cert, folder / "server.pem"),
        server_key=write_key(server_key, folder / "server.key"),
        client_cert=write_cert(client_cert, folder / "client.pem"),
        client_key=write_key(client_key, folder / "client.key"),
        other_ca=write_cert(other, folder / "other-ca.pem"),
    )


@dataclass
class TLSServer:
    port: int
    files: TLSFiles
    proc: subprocess.Popen[bytes]

    def url(self, scheme: str = "rediss", password: bool = True) -> str:
        auth = f":{PASSWORD}@" if password else ""
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"


def _start(files: TLSFiles, *extra: str) -> TLSServer:
    """``redis-server`` with TLS only (``--port 0``) on a free port, AUTH on."""
    port = _free_port()
    args = [
        *(REDIS_SERVER, "--port", "0", "--tls-port", str(port)),
        *("--tls-cert-file", str(files.server_cert)),
        *("--tls-key-file", str(files.server_key)),
        *("--tls-ca-cert-file", str(files.ca)),
        *("--requirepass", PASSWORD, "--bind", "127.0.0.1"),
        *("--save", "", "--appendonly", "no", *extra),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return TLSServer(port, files, proc)
        except OSError:
            if proc.poll() is not None:
                out = proc.stdout.read().decode() if proc.stdout else ""
                unavailable(f"{REDIS_SERVER} cannot serve TLS here: {out[-300:]}")
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("redis-server (TLS) did not start") from None
            time.sleep(0.05)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return _make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(tls_files: TLSFiles) -> Iterator[TLSServer]:
    """A TLS redis-server that does not ask clients for certificates."""
    _need_redis()
    server = _start(tls_files, "--tls-auth-clients", "no")
    try:
        yield server
    finally:
        server.proc.kill()
        server.proc.wait(timeout=30)


def _round_trip(cache: RedisCache) -> None:
    key = f"t/{uuid.uuid4().hex[:8]}"
    cache.put(key, b"over tls")
    assert cache.get(key) == b"over tls"
    cache.delete(key)


def test_rediss_url_with_the_ca_file_round_trips(tls_server: TLSServer) -> None:
    ca = str(tls_server.files.ca)
    by_option = open_cache(tls_server.url(), ssl_ca_certs=ca, prefix="o:")
    in_query = open_cache(
        f"{tls_server.url()}?ssl_ca_certs={ca}&ssl_cert_reqs=required&prefix=q:"
    )
    for cache in (by_option, in_query):
        assert isinstance(cache, RedisCache)
        _round_trip(cache)
        assert PASSWORD not in repr(cache)
    assert in_query.prefix == "q:"


def test_ssl_true_turns_a_redis_url_into_tls(tls_server: TLSServer) -> None:
    """``ssl=True`` (docs/caching.md) used to reach redis-py as an unknown keyword."""
    cache = open_cache(
        tls_server.url("redis"), ssl=True, ssl_ca_certs=str(tls_server.files.ca)
    )
    _round_trip(cache)
    assert cache.url.startswith("rediss://")


def test_tls_options_without_tls_name_the_fix() -> None:
    with pytest.raises(SchemaError, match=r"ssl_ca_certs need a TLS connection.*"):
        RedisCache("redis://127.0.0.1:1/0", ssl_ca_certs="ca.pem")
    with pytest.raises(SchemaError, match=r"got a redis:// URL. Use a rediss://"):
        RedisCache("rediss://127.0.0.1:1/0", ssl=False, ssl_cert_reqs="none")


def test_a_wrong_ca_is_a_clear_error(tls_server: TLSServer) -> None:
    import redis

    cache = open_cache(
        tls_server.url(), ssl_ca_certs=str(tls_server.files.other_ca), timeout=5
    )
    with pytest.raises(redis.exceptions.ConnectionError, match="CERTIFICATE_VERIFY"):
        cache.get("k")
    # cert checks can be turned off (the docs' ssl_cert_reqs) ...
    _round_trip(open_cache(tls_server.url(), ssl_cert_reqs="none"))
    # ... and a wrong password over TLS is refused as without TLS
    wrong = RedisCache(
        tls_server.url(password=False),
        password="nope",
        ssl_ca_certs=str(tls_server.files.ca),
    )
    with pytest.raises(redis.exceptions.AuthenticationError):
        wrong.get("k")


def test_a_wrong_ca_under_a_generator_warns_once_and_reads_the_source(
    tls_server: TLSServer,
) -> None:
    ds = make_dataset()
    cache = open_cache(
        tls_server.url(), ssl_ca_certs=str(tls_server.files.other_ca), timeout=5
    )
    bgen = xb.BatchGenerator(ds, {"lat": 5, "lon": 6}, cache=cache)
    fresh = xb.BatchGenerator(ds, {"lat": 5, "lon": 6})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(len(bgen)):
            xr.testing.assert_identical(bgen[i], fresh[i])
    found = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(found) == 1
    assert "CERTIFICATE_VERIFY_FAILED" in str(found[0].message)
    assert PASSWORD not in str(found[0].message)


def test_batches_through_tls_hit_equal_miss(tls_server: TLSServer) -> None:
    ds = make_dataset()
    url = f"{tls_server.url()}?ssl_ca_certs={tls_server.files.ca}&prefix=b{uuid.uuid4().hex[:6]}:"
    first = xb.BatchGenerator(ds, {"lat": 5, "lon": 6}, cache=url)
    misses = [first[i] for i in range(len(first))]
    cache = open_cache(url)
    second = xb.BatchGenerator(ds, {"lat": 5, "lon": 6}, cache=cache)
    assert isinstance(second._batch_cache, BatchCache)
    for i in range(len(second)):
        xr.testing.assert_identical(second[i], misses[i])
    assert cache.stats()["hits"] == len(second) and cache.stats()["misses"] == 0
    cache.clear()


def test_client_certificates(tls_files: TLSFiles) -> None:
    """A server that asks for client certificates (mutual TLS)."""
    import redis

    _need_redis()
    server = _start(tls_files, "--tls-auth-clients", "yes")
    try:
        ca = str(tls_files.ca)
        _round_trip(
            open_cache(
                server.url(),
                ssl_ca_certs=ca,
                ssl_certfile=str(tls_files.client_cert),
                ssl_keyfile=str(tls_files.client_key),
            )
        )
        without = open_cache(server.url(), ssl_ca_certs=ca, timeout=5)
        with pytest.raises(redis.exceptions.ConnectionError):
            without.get("k")
    finally:
        server.proc.kill()
        server.proc.wait(timeout=30)
