"""The lab's tiny initramfs: busybox, the modules needed to mount the host's root over 9p, and
`init.sh`. Written as a newc cpio archive directly (no cpio tool, reproducible bytes)."""

from __future__ import annotations

import lzma
from collections.abc import Iterable
from pathlib import Path

from lvsprobe.errors import LabError

# Modules stage 1 needs, as Debian builds them (=m): the PCI transport, 9p over virtio, the
# overlay filesystem for the writable dirs and virtio-serial for the agent's channels.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_console")


def read_modules_dep(modules_dir: Path) -> dict[str, list[str]]:
    """modules.dep of a kernel's module tree: module path -> its dependencies (paths)."""
    dep_file = modules_dir / "modules.dep"
    try:
        text = dep_file.read_text()
    except OSError as exc:
        raise LabError(
            f"cannot read {dep_file}: {exc.strerror} (run `lvsprobe lab prepare`)"
        ) from exc
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        path, sep, rest = line.partition(":")
        if sep:
            deps[path] = rest.split()
    return deps


def module_name(path: str) -> str:
    """kernel/fs/9p/9p.ko.xz -> 9p (the name insmod/lsmod use; '-' and '_' are one)."""
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def load_order(deps: dict[str, list[str]], wanted: Iterable[str]) -> list[str]:
    """Module paths for `wanted` (names) and their dependencies, dependencies first.

    A wrong order makes insmod fail with "Unknown symbol" and the 9p mount then with EINVAL.
    """
    by_name = {module_name(p): p for p in deps}
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        path = by_name.get(name.replace("-", "_"))
        if path is None:
            raise LabError(f"the lab kernel has no module {name!r} (modules.dep)")
        visit(path)
    return order


def module_bytes(path: Path) -> bytes:
    """A module file's ELF bytes: busybox insmod cannot read compressed modules."""
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        raise LabError(f"{path}: zstd-compressed modules are not supported")
    return data


class CpioWriter:
    """A newc ("070701") cpio archive, as the kernel's initramfs unpacker reads it."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def _entry(self, name: str, mode: int, data: bytes) -> None:
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._ino += 1
        self._parts.append(header + encoded + b"\0" * (-(110 + len(encoded)) % 4))
        self._parts.append(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755, b"")

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0, b"")
        return b"".join(self._parts)


def build_initramfs(busybox: Path, modules_dir: Path, init_script: bytes) -> bytes:
    """The archive: /bin/busybox, /mods/*.ko + /mods/order (load order), /init."""
    order = load_order(read_modules_dep(modules_dir), BOOT_MODULES)
    cpio = CpioWriter()
    for d in ("bin", "mods", "proc", "sys", "dev", "newroot", "rw"):
        cpio.directory(d)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.symlink("bin/sh", "busybox")
    names = []
    for path in order:
        name = module_name(path)
        names.append(name)
        cpio.file(f"mods/{name}.ko", module_bytes(modules_dir / path))
    cpio.file("mods/order", ("\n".join(names) + "\n").encode())
    cpio.file("init", init_script, 0o755)
    return cpio.finish()
