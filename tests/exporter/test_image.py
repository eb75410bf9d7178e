"""The container image of exporters/ (build-image.sh + Containerfile), built from Debian
packages and this tree's wheel with no registry, run by podman as uid 65532 with only
CAP_NET_ADMIN from the runtime, and scraped: once plain on a captured /proc, once over TLS with
basic auth.

The build takes minutes, so it is cached in /var/cache/lvsprobe/image under a hash of the
wheel's RECORD (every file's hash), the Containerfile and the build script.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import yaml
from click.testing import CliRunner

from lvsprobe.cli import cli

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
EXPORTERS = ROOT / "exporters"
CACHE = Path("/var/cache/lvsprobe/image")
UID = 65532
CAP_NET_ADMIN_BIT = 1 << 12
BUILD_TIMEOUT_S = 1500
# This sandbox gives root no CAP_SYS_RESOURCE, and conmon runs with lower limits than the
# shell: podman's default (raise nofile and nproc to 1048576) fails in setrlimit, lowering
# never does. crun also refuses the host's hybrid cgroup layout (v1 + a v2 with controllers);
# runc accepts it.
RUN_FLAGS = ("--ulimit=nofile=4096:4096", "--ulimit=nproc=4096:4096")
VARYING = ("ipvs_scrape_source_duration_seconds", "ipvs_exporter_build_info")


def _need(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} missing: make test installs it")
    return path


def _build_wheel(out: Path) -> Path:
    """The wheel of this tree, built from a copy (setuptools writes build/ into its source)."""
    src = out / "src"
    for name in ("pyproject.toml", "README.md"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "lvsprobe", src / "lvsprobe", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        check=True,
        timeout=600,
    )
    return next(out.glob("lvsprobe-*.whl"))


def _cache_key(wheel: Path) -> str:
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        record = next(n for n in archive.namelist() if n.endswith(".dist-info/RECORD"))
        digest.update(archive.read(record))
    for name in ("Containerfile", "build-image.sh"):
        digest.update((EXPORTERS / name).read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(podman image name, directory with image.oci.tar and rootfs.tar)."""
    if os.geteuid() != 0:
        pytest.skip("building the image needs root (mmdebstrap --mode=root)")
    for program in ("mmdebstrap", "podman", "runc"):
        _need(program)
    wheel = _build_wheel(tmp_path_factory.mktemp("wheel"))
    key = _cache_key(wheel)
    built = CACHE / key
    if not (built / "image.oci.tar").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        staging = CACHE / f".{key}.{os.getpid()}"
        try:
            subprocess.run(
                [
                    str(EXPORTERS / "build-image.sh"),
                    str(wheel),
                    str(staging),
                    f"localhost/lvsprobe-export:{key}",
                ],
                check=True,
                timeout=BUILD_TIMEOUT_S,
                env={**os.environ, "PYTHON": sys.executable},
            )
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        # Finished builds of other keys go; another run's staging directory (".") stays.
        for old in CACHE.iterdir():
            if not old.name.startswith(".") and old.name != key:
                shutil.rmtree(old)
        if built.exists():  # a concurrent run finished first
            shutil.rmtree(staging)
        else:
            staging.rename(built)
    name = f"localhost/lvsprobe-export:{key}"
    for other in _podman(
        "images", "--format", "{{.Repository}}:{{.Tag}}", "lvsprobe-export"
    ).split():
        if other != name:
            _podman("rmi", "--force", other)
    if subprocess.run(["podman", "image", "exists", name], check=False).returncode != 0:
        loaded = _podman("load", "--quiet", "--input", str(built / "image.oci.tar"))
        loaded_name = loaded.split(":", 1)[1].strip()
        _podman("tag", loaded_name, name)
    yield name, built


def _podman(*args: str) -> str:
    result = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"podman {' '.join(args)}: {result.stderr}"
    return result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def run_exporter(image: tuple[str, Path]) -> Iterator[Callable[..., str]]:
    """Start the image detached on the host network; yields a starter, removes the containers."""
    started: list[str] = []

    def start(*args: str, volumes: tuple[str, ...] = ()) -> str:
        cid = _podman(
            "run",
            "--detach",
            "--runtime=runc",
            *RUN_FLAGS,
            "--network=host",
            "--read-only",
            "--cap-drop=ALL",
            "--cap-add=NET_ADMIN",
            "--security-opt=no-new-privileges",
            *(f"--volume={v}" for v in volumes),
            image[0],
            *args,
        ).strip()
        started.append(cid)
        return cid

    yield start
    for cid in started:
        subprocess.run(
            ["podman", "rm", "--force", "--time=2", cid],
            capture_output=True,
            timeout=120,
            check=False,
        )


def _get(
    url: str, context: ssl.SSLContext | None = None, auth: str | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_get(cid: str, url: str, **kwargs: object) -> tuple[int, bytes]:
    """The first answer of the exporter; a safety bound of 60 s for the interpreter to start."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return _get(url, **kwargs)  # type: ignore[arg-type]
        except (urllib.error.URLError, ConnectionError) as exc:
            if time.monotonic() > deadline:
                logs = subprocess.run(
                    ["podman", "logs", cid], capture_output=True, text=True, check=False
                )
                raise AssertionError(f"no answer from {url}: {exc}; log: {logs.stderr}") from exc
            time.sleep(0.2)


def _stable_lines(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if not line.startswith(VARYING)]


def test_image_serves_captured_proc_as_the_tree_does(
    run_exporter: Callable[..., str], nat_proc: Path
) -> None:
    port = _free_port()
    cid = run_exporter(
        f"--web.listen-address=127.0.0.1:{port}",
        "--procfs-root=/host/proc",
        volumes=(f"{nat_proc}:/host/proc:ro",),
    )
    status, body = _wait_get(cid, f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    local = CliRunner().invoke(cli, ["export", "--procfs-root", str(nat_proc), "--once"])
    assert local.exit_code == 0, local.output
    assert _stable_lines(body) == _stable_lines(local.stdout_bytes)
    # The exporter itself: uid 65532, exactly CAP_NET_ADMIN (ambient, from the runtime),
    # no_new_privs on: no file capability or setuid program was needed.
    status_lines = dict(
        line.split(":\t", 1) for line in _podman("exec", cid, "cat", "/proc/1/status").splitlines()
    )
    assert status_lines["Uid"].split() == [str(UID)] * 4
    for capability_set in ("CapEff", "CapPrm", "CapAmb", "CapBnd"):
        assert int(status_lines[capability_set], 16) == CAP_NET_ADMIN_BIT, capability_set
    assert status_lines["NoNewPrivs"].strip() == "1"


def _tls_material(directory: Path) -> None:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=lvsprobe-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(directory / "server.key"),
            "-out",
            str(directory / "server.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def test_image_serves_tls_with_basic_auth(
    run_exporter: Callable[..., str], nat_proc: Path, tmp_path: Path
) -> None:
    _need("openssl")
    config = tmp_path / "web"
    config.mkdir()
    _tls_material(config)
    password = "scrape-secret"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
    web = {
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},
        "basic_auth_users": {"prometheus": hashed},
    }
    (config / "web-config.yml").write_text(yaml.safe_dump(web))
    # Read by uid 65532 through the bind mount: test material only.
    config.chmod(0o755)
    for path in config.iterdir():
        path.chmod(0o644)
    port = _free_port()
    cid = run_exporter(
        f"--web.listen-address=127.0.0.1:{port}",
        "--procfs-root=/host/proc",
        "--web.config.file=/etc/lvsprobe/web-config.yml",
        volumes=(f"{nat_proc}:/host/proc:ro", f"{config}:/etc/lvsprobe:ro"),
    )
    context = ssl.create_default_context(cafile=str(config / "server.crt"))
    url = f"https://127.0.0.1:{port}/metrics"
    status, body = _wait_get(cid, url, context=context, auth=f"prometheus:{password}")
    assert status == 200 and b"\nipvs_up 1\n" in body
    assert _get(url, context=context)[0] == 401
    assert _get(url, context=context, auth="prometheus:wrong")[0] == 401


def test_image_config(image: tuple[str, Path]) -> None:
    inspect = yaml.safe_load(_podman("image", "inspect", "--format", "{{json .Config}}", image[0]))
    assert inspect["User"] == f"{UID}:{UID}"
    assert inspect["Entrypoint"] == ["/opt/lvsprobe/bin/lvsprobe", "export"]
    assert "9954/tcp" in inspect["ExposedPorts"]


def test_image_tree_has_no_privilege_gain(image: tuple[str, Path]) -> None:
    """No file capabilities and no setuid or setgid program anywhere in the root filesystem."""
    with tarfile.open(image[1] / "rootfs.tar") as tree:
        members = tree.getmembers()
    assert any(m.name == "./opt/lvsprobe/bin/lvsprobe" for m in members)
    assert not [m.name for m in members if m.isfile() and m.mode & 0o6000]
    assert not [m.name for m in members if "SCHILY.xattr.security.capability" in m.pax_headers]
