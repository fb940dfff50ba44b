"""The bridge's security (SPEC §8) against a real nats-server that requires a password
or a token and TLS, with certificates made here by ``openssl``: the right secrets
work, wrong or missing ones get a clear error and exit code, and nothing travels in
the clear (a relay between the bridge and the server records every byte)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from natsproc import Procs, _env

import reqrep

pytestmark = pytest.mark.timeout(180, method="thread")

PASSWORD = "pa55-w0rd-nobody-guesses"
TOKEN = "t0ken-nobody-guesses"
MARKER = b"marker-that-must-not-travel-in-the-clear"


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make certificates")
    d = tmp_path_factory.mktemp("certs")
    # the extensions that strict verification (Python 3.13's default) asks for
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=reqrep test CA", "-keyout", "ca.key", "-out", "ca.pem",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-addext", "subjectKeyIdentifier=hash", cwd=d)
    (d / "san.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n")
    for who in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=reqrep {who}",
                 "-keyout", f"{who}.key", "-out", f"{who}.csr", cwd=d)
        _openssl("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", f"{who}.pem",
                 cwd=d)
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
                 d / "client.key")


def _tls(certs: Certs, verify: bool = False) -> str:
    return (f"tls {{ cert_file: {str(certs.server_cert)!r}, key_file: {str(certs.server_key)!r}"
            f", ca_file: {str(certs.ca)!r}, verify: {str(verify).lower()}, timeout: 5 }}\n")


def _password() -> str:
    return f"authorization {{ user: alice, password: {PASSWORD!r} }}\n"


class Relay:
    """A TCP relay to `port` that keeps every byte it passes, both ways; ``switch``
    sends new connections elsewhere and cuts the current ones."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.seen = bytearray()
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self._listener.accept()
                up = socket.create_connection(("127.0.0.1", self.upstream), timeout=10)
            except OSError:
                return
            self._socks += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                with self._lock:
                    self.seen += chunk
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def switch(self, port: int) -> None:
        self.upstream = port
        for s in self._socks[1:]:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        for s in self._socks:
            s.close()


def _env_with(**secrets: str) -> dict[str, str]:
    env = {k: v for k, v in _env().items() if not k.startswith("NATS_")}
    env.update(secrets)
    return env


def _bridge(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reqrep", "bridge", *argv],
                          capture_output=True, text=True, timeout=90, env=env)


def test_password_and_tls_work_and_nothing_travels_in_the_clear(
        procs: Procs, tmp_path: Path, certs: Certs) -> None:
    server = procs.nats(_tls(certs) + _password())
    relay = Relay(server.port)
    try:
        env = _env_with(NATS_USER="alice", NATS_PASSWORD=PASSWORD)
        b, a = tmp_path / "b.rr", tmp_path / "a.rr"
        procs.worker(b, "data + b'|' + data")
        tls = ("--tls-ca", str(certs.ca))
        for role, path in (("serve", b), ("forward", a)):
            proc = procs.start([sys.executable, "-m", "reqrep", "bridge", role, str(path),
                                "--nats", relay.url, "--subject", "secure", *tls],
                               f"bridge-{role}", env)
            proc.wait_log("taking requests")
        with reqrep.Client(a) as c:
            assert c.req(MARKER, 30) == MARKER + b"|" + MARKER
        seen = bytes(relay.seen)
        assert len(seen) > 1000  # the relay did carry the traffic
        assert MARKER not in seen
        assert PASSWORD.encode() not in seen
        assert b"alice" not in seen
        # and no secret is on any command line
        for proc in procs.procs:
            cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
            assert PASSWORD.encode() not in cmdline
    finally:
        relay.close()


@pytest.mark.parametrize("secrets", [
    {"NATS_USER": "alice", "NATS_PASSWORD": "wrong"},
    {"NATS_USER": "mallory", "NATS_PASSWORD": PASSWORD},
    {},
    {"NATS_TOKEN": "a token where a password is needed"},
])
def test_wrong_or_missing_credentials_exit_77(procs: Procs, tmp_path: Path, certs: Certs,
                                              secrets: dict[str, str]) -> None:
    server = procs.nats(_tls(certs) + _password())
    r = _bridge("forward", str(tmp_path / "a.rr"), "--nats", server.url, "--subject", "s",
                "--tls-ca", str(certs.ca), env=_env_with(**secrets))
    assert r.returncode == 77, r.stderr
    assert "NATS refused the credentials" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_token_from_the_environment(procs: Procs, tmp_path: Path, certs: Certs) -> None:
    server = procs.nats(_tls(certs) + f"authorization {{ token: {TOKEN!r} }}\n")
    b, a = tmp_path / "b.rr", tmp_path / "a.rr"
    procs.worker(b, "data.upper()")
    env = _env_with(NATS_TOKEN=TOKEN)
    for role, path in (("serve", b), ("forward", a)):
        procs.bridge(role, path, server.url, "tok", "--tls-ca", str(certs.ca), env=env)
    with reqrep.Client(a) as c:
        assert c.req(b"abc", 30) == b"ABC"
    r = _bridge("serve", str(b), "--nats", server.url, "--subject", "tok", "--tls-ca",
                str(certs.ca), env=_env_with(NATS_TOKEN="wrong"))
    assert r.returncode == 77, r.stderr


def test_a_server_that_does_not_offer_tls_gets_no_password(procs: Procs, tmp_path: Path,
                                                         certs: Certs) -> None:
    server = procs.nats(_password())  # plain: no tls block
    relay = Relay(server.port)
    try:
        r = _bridge("forward", str(tmp_path / "a.rr"), "--nats", relay.url, "--subject", "s",
                    "--tls-ca", str(certs.ca),
                    env=_env_with(NATS_USER="alice", NATS_PASSWORD=PASSWORD))
        assert r.returncode == 78, r.stderr
        assert "did not offer" in r.stderr
        assert PASSWORD.encode() not in bytes(relay.seen)
    finally:
        relay.close()


def test_a_server_certificate_from_another_ca_is_refused(procs: Procs, tmp_path: Path,
                                                         certs: Certs) -> None:
    server = procs.nats(_tls(certs) + _password())
    # trusting only the system's CAs, the test CA's server certificate fails
    r = _bridge("forward", str(tmp_path / "a.rr"), "--nats", f"tls://127.0.0.1:{server.port}",
                "--subject", "s", env=_env_with(NATS_USER="alice", NATS_PASSWORD=PASSWORD))
    assert r.returncode == 78, r.stderr
    assert "TLS failed" in r.stderr and "certificate" in r.stderr


def test_client_certificates(procs: Procs, tmp_path: Path, certs: Certs) -> None:
    server = procs.nats(_tls(certs, verify=True))
    b, a = tmp_path / "b.rr", tmp_path / "a.rr"
    procs.worker(b, "data[::-1]")
    mine = ("--tls-ca", str(certs.ca), "--tls-cert", str(certs.client_cert), "--tls-key",
            str(certs.client_key))
    env = _env_with()
    for role, path in (("serve", b), ("forward", a)):
        procs.bridge(role, path, server.url, "mtls", *mine, env=env)
    with reqrep.Client(a) as c:
        assert c.req(b"abc", 30) == b"cba"
    r = _bridge("serve", str(b), "--nats", server.url, "--subject", "mtls", "--tls-ca",
                str(certs.ca), env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    r = _bridge("serve", str(b), "--nats", server.url, "--subject", "mtls", "--tls-ca",
                str(certs.ca), "--tls-cert", str(certs.client_cert), env=env)
    assert r.returncode == 78 and "both" in r.stderr, r.stderr
    r = _bridge("serve", str(b), "--nats", server.url, "--subject", "mtls", "--tls-ca",
                str(tmp_path / "no-such-ca.pem"), env=env)
    assert r.returncode == 78 and "TLS files" in r.stderr, r.stderr




# ---- a credentials file (JWT and seed): nats-server in operator mode, with an
# operator, an account and users made here with nkeys


def _jwt(claims: dict[str, object], signer: Any) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    claims = dict(claims, iat=int(time.time()), iss=signer.public_key.decode())
    digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64(json.dumps(claims).encode())
    return f"{head}.{body}.{b64(signer.sign(f'{head}.{body}'.encode()))}"


def _keypair(prefix: int) -> Any:
    import nkeys

    return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))


def _creds(tmp: Path, name: str, account: Any) -> Path:
    import nkeys

    user = _keypair(nkeys.PREFIX_BYTE_USER)
    token = _jwt({"sub": user.public_key.decode(), "name": name,
                  "nats": {"type": "user", "version": 2, "pub": {}, "sub": {}, "subs": -1,
                           "data": -1, "payload": -1}}, account)
    path = tmp / f"{name}.creds"
    path.write_text(f"-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n"
                    f"\n-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n"
                    "------END USER NKEY SEED------\n")
    return path


def test_a_credentials_file(procs: Procs, tmp_path: Path, certs: Certs) -> None:
    try:
        import nkeys
    except ImportError:
        pytest.skip("nkeys is not installed (pip install 'reqrep[nats]')")
    operator, account, stranger = (_keypair(nkeys.PREFIX_BYTE_OPERATOR),
                                   _keypair(nkeys.PREFIX_BYTE_ACCOUNT),
                                   _keypair(nkeys.PREFIX_BYTE_ACCOUNT))
    op_jwt = _jwt({"sub": operator.public_key.decode(), "name": "op",
                   "nats": {"type": "operator", "version": 2}}, operator)
    acc_pub = account.public_key.decode()
    acc_jwt = _jwt({"sub": acc_pub, "name": "acc", "nats": {
        "type": "account", "version": 2, "limits": {
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": True, "conn": -1, "leaf": -1}}}, operator)
    (tmp_path / "op.jwt").write_text(op_jwt)
    server = procs.nats(_tls(certs) + f"operator: {str(tmp_path / 'op.jwt')!r}\n"
                        f"resolver: MEMORY\nresolver_preload: {{ {acc_pub}: {acc_jwt} }}\n")
    good = _creds(tmp_path, "good", account)
    b, a = tmp_path / "b.rr", tmp_path / "a.rr"
    procs.worker(b, "data * 3")
    env = _env_with()
    for role, path in (("serve", b), ("forward", a)):
        procs.bridge(role, path, server.url, "creds", "--creds", str(good), "--tls-ca",
                     str(certs.ca), env=env)
    with reqrep.Client(a) as c:
        assert c.req(b"ab", 30) == b"ababab"
    # a user of an account the server does not trust, and no credentials at all
    for extra in (("--creds", str(_creds(tmp_path, "stranger", stranger))), ()):
        r = _bridge("serve", str(b), "--nats", server.url, "--subject", "creds", "--tls-ca",
                    str(certs.ca), *extra, env=env)
        assert r.returncode == 77, r.stderr
        assert "NATS refused the credentials" in r.stderr


def test_tls_is_required_on_every_reconnect(procs: Procs, tmp_path: Path, certs: Certs) -> None:
    """Connected over TLS, the bridge's connection is cut and new ones reach a server
    without TLS (an attacker's): the bridge never reconnects in the clear."""
    secure = procs.nats(_tls(certs) + _password())
    plain = procs.nats()
    relay = Relay(secure.port)
    try:
        env = _env_with(NATS_USER="alice", NATS_PASSWORD=PASSWORD)
        a = tmp_path / "a.rr"
        fwd = procs.bridge("forward", a, relay.url, "svc", "--tls-ca", str(certs.ca),
                           "--timeout", "2", env=env)
        relay.switch(plain.port)
        fwd.wait_log("TLS was asked for but the server did not offer it")
        with reqrep.Client(a) as c, pytest.raises(reqrep.RemoteError):
            c.req(MARKER, 30)  # no answer: it went nowhere
        seen = bytes(relay.seen)
        assert MARKER not in seen and PASSWORD.encode() not in seen
    finally:
        relay.close()


def test_a_credentials_file_is_not_used_without_tls(procs: Procs, tmp_path: Path,
                                                    certs: Certs) -> None:
    try:
        import nkeys
    except ImportError:
        pytest.skip("nkeys is not installed (pip install 'reqrep[nats]')")
    creds = _creds(tmp_path, "someone", _keypair(nkeys.PREFIX_BYTE_ACCOUNT))
    server = procs.nats()  # no TLS
    relay = Relay(server.port)
    try:
        r = _bridge("serve", str(tmp_path / "b.rr"), "--nats", relay.url, "--subject", "s",
                    "--creds", str(creds), "--tls-ca", str(certs.ca), env=_env_with())
        assert r.returncode in (66, 78), r.stderr  # no channel, or refused: never sent
        r = _bridge("forward", str(tmp_path / "a.rr"), "--nats", relay.url, "--subject", "s",
                    "--creds", str(creds), "--tls-ca", str(certs.ca), env=_env_with())
        assert r.returncode == 78 and "did not offer" in r.stderr, r.stderr
        assert b"jwt" not in bytes(relay.seen) and b"CONNECT" not in bytes(relay.seen)
    finally:
        relay.close()


def test_revoked_credentials_stop_the_bridge(procs: Procs, tmp_path: Path) -> None:
    """Credentials that stop being valid (the server drops the connection and refuses
    the reconnect): the bridge says so and exits 77, instead of running on without
    NATS."""
    server = procs.nats(_password())
    b = tmp_path / "b.rr"
    procs.worker(b, "data")
    serve = procs.bridge("serve", b, server.url, "svc",
                         env=_env_with(NATS_USER="alice", NATS_PASSWORD=PASSWORD))
    text = server.conf.read_text().replace(PASSWORD, "changed")
    server.conf.write_text(text)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)  # nats-server reloads its configuration
    assert serve.wait(60) == 77, serve.log()
    assert "NATS refused the credentials" in serve.log()


def test_secrets_are_not_shown() -> None:
    from reqrep.bridge import Connection, NatsUnavailableError
    from reqrep.bridge._connect import failure

    conn = Connection(["nats://bob:" + PASSWORD + "@127.0.0.1:1"], token=TOKEN,
                      password=PASSWORD, user="bob")
    assert PASSWORD not in repr(conn) and TOKEN not in repr(conn)
    err = failure(ConnectionRefusedError("refused"), conn.urls())
    assert isinstance(err, NatsUnavailableError) and PASSWORD not in str(err)
    r = _bridge("serve", "x.rr", "--nats", "bob:" + PASSWORD + "@127.0.0.1:1",
                "--subject", "s", env=_env_with())
    assert r.returncode == 2 and "NATS_USER" in r.stderr and PASSWORD not in r.stderr


def test_only_the_servers_refusals_end_a_bridge() -> None:
    """A refusal of the credentials ends a bridge; other errors that merely contain the
    word (a slow consumer's names its subject, which anyone may choose) do not."""
    import nats.errors

    from reqrep.bridge._connect import refused

    assert refused(nats.errors.Error("nats: 'Authorization Violation'"))
    assert refused(nats.errors.Error("nats: 'User Authentication Expired'"))
    assert refused(nats.errors.AuthorizationError())
    assert not refused(nats.errors.SlowConsumerError(
        subject="payments.authorization", reply="", sid=1, sub=None))
    assert not refused(nats.errors.Error("nats: 'Authentication Timeout'"))
    assert not refused(nats.errors.Error("nats: slow consumer on authorization"))
    assert not refused(ConnectionRefusedError("Authorization Violation"))
