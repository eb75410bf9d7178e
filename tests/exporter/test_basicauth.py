"""basic_auth_users at request time: every failure a plain False (no bcrypt traceback), unknown
users and long passwords pay for a bcrypt too, 401s logged once per client; and the start-up
hash check agrees with bcrypt itself."""

from __future__ import annotations

import base64
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import bcrypt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.exporter.basicauth import BasicAuth, RejectionLog, bcrypt_hash_problem
from lvsprobe.exporter.server import ExporterServer
from lvsprobe.exporter.webconfig import WebConfig

ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
LONG = "x" * 73  # one byte over bcrypt's limit


@pytest.fixture(scope="module")
def auth_users() -> dict[str, bytes]:
    return {
        "prometheus": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)),
        "ops": bcrypt.hashpw(b"x" * 72, bcrypt.gensalt(rounds=5)),
    }


def _basic(user: str | bytes, password: str | bytes) -> str:
    raw = (user if isinstance(user, bytes) else user.encode()) + b":"
    raw += password if isinstance(password, bytes) else password.encode()
    return "Basic " + base64.b64encode(raw).decode()


class _Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """bcrypt.checkpw, recording what it was asked."""
    calls: list[tuple[bytes, bytes]] = []
    real = bcrypt.checkpw

    def checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append((password, hashed))
        return bool(real(password, hashed))

    monkeypatch.setattr(bcrypt, "checkpw", checkpw)
    return calls


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "no credentials"),
        ("", "no credentials"),
        ("Bearer abc", "not Basic authorization"),
        ("Basic !!!", "malformed Basic credentials"),
        ("Basic caf\u00e9", "malformed Basic credentials"),  # was a ValueError traceback
        ("Basic " + base64.b64encode(b"no-colon").decode(), "no ':'"),
        (_basic("prometheus", "wrong"), "wrong password for user 'prometheus'"),
        (_basic("nobody", "s3cret"), "unknown user 'nobody'"),
        (_basic(b"\xff\xfe", "s3cret"), "unknown user"),
        (_basic("prometheus", "s3cret\0"), "wrong password"),
        (_basic("prometheus", LONG), "longer than bcrypt's 72 bytes"),
        (_basic("nobody", LONG), "unknown user 'nobody'"),
        (_basic("ops", LONG), "password of user 'ops' is longer"),  # its first 72 bytes match
        (_basic("evil\nts=0 level=error msg=forged", "x"), r"unknown user 'evil\nts=0"),
    ],
)
def test_every_failure_is_false_and_says_why(
    auth_users: dict[str, bytes], header: str | None, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    auth = BasicAuth(auth_users)
    with caplog.at_level(logging.WARNING, "lvsprobe.exporter"):
        assert auth.check(header, "192.0.2.1") is False
    (record,) = caplog.records
    assert "401 unauthorized: client=192.0.2.1 reason=" in record.message
    assert reason in record.message and "\n" not in record.message


@settings(deadline=None, max_examples=300)  # no wall-clock limits in tests
@given(
    header=st.text(max_size=40)
    | st.builds(lambda s: "Basic " + s, st.text(max_size=40))
    | st.builds(lambda b: "Basic " + base64.b64encode(b).decode(), st.binary(max_size=90))
)
def test_any_header_is_true_or_false(header: str) -> None:
    auth = BasicAuth({"a": b"$2b$04$" + b"." * 53}, RejectionLog(interval_s=0))
    assert auth.check(header, "192.0.2.1") is False


def test_right_passwords_pass_and_are_cached(
    auth_users: dict[str, bytes], spy: list[tuple[bytes, bytes]]
) -> None:
    auth = BasicAuth(auth_users)
    assert auth.check(_basic("prometheus", "s3cret"))
    assert auth.check("basic " + _basic("prometheus", "s3cret")[6:])  # the scheme is any case
    assert auth.check(_basic("ops", "x" * 72))
    assert len(spy) == 2  # the second check of prometheus was the cache's


def test_unknown_users_and_long_passwords_cost_a_bcrypt(
    auth_users: dict[str, bytes], spy: list[tuple[bytes, bytes]]
) -> None:
    auth = BasicAuth(auth_users)
    for header in (_basic("nobody", "s3cret"), _basic("nobody", LONG), _basic("ops", LONG)):
        assert not auth.check(header)
    decoy = spy[0][1]
    assert decoy.startswith(b"$2b$05$")  # the highest cost configured, as the toolkit
    assert bcrypt_hash_problem(decoy.decode()) is None
    assert spy == [
        (b"s3cret", decoy),
        (LONG[:72].encode(), decoy),
        (LONG[:72].encode(), auth_users["ops"]),
    ]


def test_401s_are_logged_once_per_client_and_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    rejections = RejectionLog(interval_s=600, max_clients=2, clock=clock)
    auth = BasicAuth({"a": b"$2b$04$" + b"." * 53}, rejections)
    with caplog.at_level(logging.WARNING, "lvsprobe.exporter"):
        for _ in range(5):
            auth.check(None, "192.0.2.1")
        auth.check(None, "192.0.2.2")
        clock.now_s += 599
        auth.check(None, "192.0.2.1")
        clock.now_s += 1
        auth.check(None, "192.0.2.1")
    lines = [record.message for record in caplog.records]
    assert len(lines) == 3
    assert "client=192.0.2.1" in lines[0] and "at most one line per client per 600 s" in lines[0]
    assert "client=192.0.2.2" in lines[1]
    assert "client=192.0.2.1" in lines[2] and "5 more since the last line" in lines[2]
    assert all(record.levelno == logging.WARNING for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, "lvsprobe.exporter"):
        auth.check(None, "192.0.2.3")  # memory is bounded: .2, heard from longest ago, is forgotten
        auth.check(None, "192.0.2.2")
        auth.check(None, "192.0.2.3")
        auth.check(None, "192.0.2.1")  # .1 was forgotten in turn
    clients = [record.message.split()[2] for record in caplog.records]
    assert clients == ["client=192.0.2.3", "client=192.0.2.2", "client=192.0.2.1"]


def _serve(web: WebConfig) -> Iterator[str]:
    server = ExporterServer(("127.0.0.1", 0), lambda fmt, timeout_s: [b"ipvs_up 1\n"], web)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _get(url: str, header: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": header})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_long_password_is_a_plain_401_over_http(
    auth_users: dict[str, bytes], caplog: pytest.LogCaptureFixture
) -> None:
    """It was an empty reply and a 25-line ValueError traceback in the log."""
    with caplog.at_level(logging.DEBUG, "lvsprobe.exporter"):
        for url in _serve(WebConfig(auth=BasicAuth(auth_users))):
            for user in ("prometheus", "nobody", "prometheus"):
                assert _get(url, _basic(user, "p" * 100)) == (401, b"Unauthorized\n")
            assert _get(url, _basic("prometheus", "s3cret")) == (200, b"ipvs_up 1\n")
    unauthorized = [r for r in caplog.records if "401 unauthorized" in r.getMessage()]
    assert len(unauthorized) == 1 and "client=127.0.0.1" in unauthorized[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@settings(deadline=None, max_examples=30)  # no wall-clock limits in tests
@given(password=st.binary(max_size=72))
def test_hashes_bcrypt_writes_pass_the_start_check(password: bytes) -> None:
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(rounds=4)).decode()
    assert bcrypt_hash_problem(hashed) is None
    assert bcrypt_hash_problem(hashed.replace("$2b$", "$2y$", 1)) is None


@settings(deadline=None, max_examples=300)  # no wall-clock limits in tests
@given(
    prefix=st.sampled_from(["$2a$04$", "$2b$04$", "$2y$04$", "$2x$04$", "$2b$4$", "$2b$03$"]),
    rest=st.text(alphabet=st.sampled_from(ALPHABET), min_size=50, max_size=56)
    | st.text(min_size=53, max_size=53),
)
def test_the_start_check_agrees_with_bcrypt(prefix: str, rest: str) -> None:
    """Whatever bcrypt refuses is refused at start; whatever passes, bcrypt takes."""
    hashed = prefix + rest
    problem = bcrypt_hash_problem(hashed)
    try:
        bcrypt.checkpw(b"p", hashed.encode())
    except ValueError:  # "Invalid salt": every request would have failed so
        assert problem is not None
        return
    if problem is None:
        assert bcrypt.hashpw(b"p", hashed[:29].encode()).startswith(hashed[:29].encode())
