"""`lvsprobe lab prepare`: everything the lab VM boots from, cached.

Debian's stock kernel carries every ip_vs* module. Its package is only downloaded and unpacked
into the cache (`apt-get download`, `dpkg-deb -x`, `depmod -b`), never installed: installing it
builds unused initramfs images and upgrades systemd. The compressed bzImage is unpacked once
into `vmlinux` (qemu boots it via PVH; decompressing in the guest costs ~3.5 s under TCG), and a
busybox initramfs is built next to it.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import subprocess
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from lvsprobe.errors import LabError
from lvsprobe.lab.initramfs import build_initramfs

Progress = Callable[[str], None]

# Debian package -> a file it installs that the lab uses (the check looks for both).
REQUIRED_PACKAGES: dict[str, str] = {
    "qemu-system-x86": "/usr/bin/qemu-system-x86_64",
    "busybox-static": "/bin/busybox",
    "kmod": "/usr/sbin/depmod",
    "ipvsadm": "/usr/sbin/ipvsadm",
    "vsftpd": "/usr/sbin/vsftpd",
}
KERNEL_METAPACKAGE = "linux-image-amd64"
DEFAULT_CACHE = Path("/var/cache/lvsprobe")


def cache_dir() -> Path:
    """$LVSPROBE_CACHE, else /var/cache/lvsprobe (kept between sessions on one machine)."""
    return Path(os.environ.get("LVSPROBE_CACHE") or DEFAULT_CACHE)


@dataclass(frozen=True, slots=True)
class Prepared:
    """What a lab boot needs, all inside the cache."""

    kernel_version: str
    vmlinux: Path
    initrd: Path
    kroot: Path  # the unpacked kernel package: kroot/lib/modules/<version>

    @property
    def modules_dir(self) -> Path:
        return self.kroot / "lib" / "modules" / self.kernel_version


def _quiet(message: str) -> None:
    del message


def missing_packages() -> list[str]:
    """Required Debian packages that are not installed (dpkg) or lack their binary."""
    missing = []
    for package, binary in REQUIRED_PACKAGES.items():
        try:
            out = subprocess.run(
                ["dpkg-query", "-W", "-f=${Status}", package],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
        except FileNotFoundError:
            out = "install ok installed"  # not a dpkg system: trust the binary check
        if "ok installed" not in out or not Path(binary).exists():
            missing.append(package)
    return missing


def check_packages() -> None:
    """Raise LabError naming every missing package and the command that installs them."""
    missing = missing_packages()
    if missing:
        names = " ".join(missing)
        raise LabError(
            f"missing Debian package(s): {names} "
            f"(install with `apt-get install -y --no-install-recommends {names}`, "
            "or run `make setup`)"
        )


def _run(argv: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    except FileNotFoundError as exc:
        raise LabError(f"{what}: {argv[0]} not found") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise LabError(f"{what} failed ({' '.join(argv)}): {' / '.join(tail)}")
    return proc.stdout


def resolve_kernel_package() -> str:
    """The real image package behind linux-image-amd64 (e.g. linux-image-6.1.0-56-amd64)."""
    out = _run(["apt-cache", "depends", KERNEL_METAPACKAGE], "resolving the kernel package")
    for line in out.splitlines():
        kind, _, name = line.strip().partition(": ")
        if kind == "Depends" and name.startswith("linux-image-") and name[12:13].isdigit():
            return name
    raise LabError(f"apt knows no kernel behind {KERNEL_METAPACKAGE} (run `apt-get update` first)")


def _cached_kernel(cache: Path) -> str | None:
    """The version of a completely unpacked kernel in the cache, if any (newest)."""
    versions = sorted(p.name[len(".complete-") :] for p in (cache / "kroot").glob(".complete-*"))
    return versions[-1] if versions else None


def fetch_kernel(cache: Path, progress: Progress, refresh: bool = False) -> str:
    """Download and unpack the kernel package into cache/kroot; return its version."""
    cached = _cached_kernel(cache)
    if cached and not refresh:
        progress(f"kernel {cached}: cached in {cache / 'kroot'}")
        return cached
    package = resolve_kernel_package()
    version = package[len("linux-image-") :]
    kroot = cache / "kroot"
    if cached == version:
        progress(f"kernel {version}: cached (newest)")
        return version
    debs = cache / "deb"
    debs.mkdir(parents=True, exist_ok=True)
    debs.chmod(0o777)  # apt-get download drops privileges to _apt, which must write here
    progress(f"kernel {version}: downloading {package}")
    _run(["apt-get", "download", "-q", package], "apt-get download", cwd=debs)
    deb = next(iter(sorted(debs.glob(f"{package}_*.deb"))), None)
    if deb is None:
        raise LabError(f"apt-get download left no {package}_*.deb in {debs}")
    progress(f"kernel {version}: unpacking {deb.name}")
    shutil.rmtree(kroot, ignore_errors=True)
    _run(["dpkg-deb", "-x", str(deb), str(kroot)], "dpkg-deb -x")
    _run(["depmod", "-b", str(kroot), version], "depmod")
    deb.unlink()
    if not any((kroot / "lib/modules" / version).rglob("ip_vs.ko*")):
        raise LabError(f"kernel {version} has no ip_vs module: the lab needs a kernel with IPVS")
    (kroot / f".complete-{version}").touch()
    return version


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (XZ or gzip payload), found by trying each magic."""
    decoders: tuple[tuple[bytes, Callable[[bytes], bytes]], ...] = (
        (b"\xfd7zXZ\x00", lambda data: lzma.LZMADecompressor().decompress(data)),
        (b"\x1f\x8b\x08", lambda data: zlib.decompressobj(31).decompress(data)),
    )
    for magic, decode in decoders:
        at = bzimage.find(magic)
        while at >= 0:
            try:
                out = decode(bzimage[at:])
            except (lzma.LZMAError, zlib.error, EOFError):
                out = b""
            if out[:4] == b"\x7fELF":
                return out
            at = bzimage.find(magic, at + 1)
    raise LabError("cannot find an ELF vmlinux (XZ or gzip) inside the kernel image")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def _init_script() -> bytes:
    return resources.files("lvsprobe.lab").joinpath("init.sh").read_bytes()


def prepare(
    cache: Path | None = None, progress: Progress = _quiet, refresh: bool = False
) -> Prepared:
    """Check packages, fetch the kernel, build vmlinux and initramfs; quick when cached."""
    cache = cache or cache_dir()
    check_packages()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabError(
            f"cannot create the lab cache {cache}: {exc.strerror} (set LVSPROBE_CACHE)"
        ) from exc
    version = fetch_kernel(cache, progress, refresh)
    kroot = cache / "kroot"
    vmlinux = cache / f"vmlinux-{version}"
    if not vmlinux.is_file() or vmlinux.stat().st_size == 0:
        progress(f"kernel {version}: extracting vmlinux")
        _write_atomic(vmlinux, extract_vmlinux((kroot / f"boot/vmlinuz-{version}").read_bytes()))
    init = _init_script()
    busybox = Path(REQUIRED_PACKAGES["busybox-static"])
    stamp = hashlib.sha256(init + busybox.read_bytes()).hexdigest()[:10]
    initrd = cache / f"initrd-{version}-{stamp}.cpio"
    if not initrd.is_file():
        progress("building the initramfs (busybox + 9p/virtio modules)")
        image = build_initramfs(busybox, kroot / "lib/modules" / version, init)
        _write_atomic(initrd, image)
        for old in cache.glob("initrd-*.cpio"):
            if old != initrd:
                old.unlink(missing_ok=True)
    progress(f"lab ready: kernel {version}, cache {cache}")
    return Prepared(version, vmlinux, initrd, kroot)
