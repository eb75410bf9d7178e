"""Host-side plumbing that needs no VM: mux frames, the initramfs archive, prepare's checks."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsprobe.errors import LabError
from lvsprobe.lab import prepare as prep
from lvsprobe.lab import protocol as p
from lvsprobe.lab import vm
from lvsprobe.lab.initramfs import CpioWriter, load_order, module_name
from lvsprobe.lab.prepare import Prepared
from lvsprobe.lab.vm import VM, AccelVerdict, guest_path, kvm_verdict

FRAMES = st.lists(
    st.tuples(
        st.integers(0, 2**32 - 1),
        st.sampled_from([p.OPEN, p.DATA, p.EOF, p.CLOSE]),
        st.binary(max_size=300),
    ),
    max_size=8,
)


@settings(deadline=None, max_examples=60)  # no wall-clock limits: CI machines are shared
@given(FRAMES, st.integers(1, 50))
def test_frames_survive_any_chunking(frames: list[tuple[int, int, bytes]], step: int) -> None:
    stream = b"".join(p.encode_frame(*f) for f in frames)
    reader = p.FrameReader()
    out = []
    for i in range(0, len(stream), step):
        out += reader.feed(stream[i : i + step])
    assert out == frames


def test_bad_frame_header_is_refused() -> None:
    with pytest.raises(ValueError, match="bad mux frame"):
        p.FrameReader().feed(p.FRAME_HEADER.pack(1, 99, 0))
    with pytest.raises(ValueError, match="bad mux frame"):
        p.FrameReader().feed(p.FRAME_HEADER.pack(1, p.DATA, p.MAX_FRAME + 1))


def test_control_messages() -> None:
    assert p.decode_message(p.encode_message({"id": 3, "op": "run"})) == {"id": 3, "op": "run"}
    with pytest.raises(ValueError):
        p.decode_message(b"[1, 2]")
    assert p.unb64(p.b64(b"\x00\xff")) == b"\x00\xff"


def test_module_load_order_puts_dependencies_first() -> None:
    deps = {
        "kernel/fs/9p/9p.ko": ["kernel/net/9p/9pnet.ko", "kernel/fs/netfs/netfs.ko"],
        "kernel/net/9p/9pnet_virtio.ko": ["kernel/net/9p/9pnet.ko"],
        "kernel/net/9p/9pnet.ko": [],
        "kernel/fs/netfs/netfs.ko": [],
    }
    order = [module_name(m) for m in load_order(deps, ["9pnet_virtio", "9p"])]
    assert order == ["9pnet", "9pnet_virtio", "netfs", "9p"]
    with pytest.raises(LabError, match="no module 'overlay'"):
        load_order(deps, ["overlay"])


def test_cpio_is_newc_with_trailer() -> None:
    cpio = CpioWriter()
    cpio.directory("bin")
    cpio.file("init", b"#!/bin/sh\n", 0o755)
    data = cpio.finish()
    assert data.startswith(b"070701") and b"TRAILER!!!" in data and len(data) % 4 == 0
    assert b"init\x00" in data and b"#!/bin/sh\n" in data


def test_extract_vmlinux_finds_the_elf_payload() -> None:
    elf = b"\x7fELF" + bytes(1000)
    image = b"MZ boot sector junk" + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert prep.extract_vmlinux(image) == elf
    with pytest.raises(LabError, match="cannot find an ELF"):
        prep.extract_vmlinux(b"no kernel here")


def test_missing_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(prep.REQUIRED_PACKAGES, "no-such-package-xyz", "/nonexistent/binary")
    with pytest.raises(LabError, match=r"no-such-package-xyz.*apt-get install"):
        prep.check_packages()


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LVSPROBE_CACHE", str(tmp_path))
    assert prep.cache_dir() == tmp_path
    monkeypatch.delenv("LVSPROBE_CACHE")
    assert prep.cache_dir() == Path("/var/cache/lvsprobe")


def test_guest_path_puts_the_interpreter_first_and_drops_shims() -> None:
    dirs = guest_path().split(":")
    assert "shims" not in guest_path() and dirs[0].endswith("bin")
    assert kvm_verdict().accel in ("kvm", "tcg") and kvm_verdict().reason


def _booting(monkeypatch: pytest.MonkeyPatch, accel: str, failures: list[LabError]) -> list[str]:
    """A Lab whose boots fail with `failures` in turn, then succeed: the verdicts it booted."""
    from lvsprobe.lab import lab as lab_module

    booted: list[str] = []

    def boot(self: lab_module.Lab, prepared: object, verdict: lab_module.AccelVerdict) -> None:
        booted.append(verdict.accel)
        if failures:
            raise failures.pop(0)

    monkeypatch.setattr(lab_module, "prepare", lambda cache, progress: None)
    monkeypatch.setattr(lab_module.Lab, "_verdict", lambda self: lab_module.AccelVerdict(accel, ""))
    monkeypatch.setattr(lab_module.Lab, "_boot", boot)
    lab_module.Lab(build=False).start()
    return booted


def test_a_tcg_boot_that_times_out_is_tried_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    from lvsprobe.lab.lab import BootTimedOut

    assert _booting(monkeypatch, "tcg", [BootTimedOut("no output")]) == ["tcg", "tcg"]
    with pytest.raises(BootTimedOut):
        _booting(monkeypatch, "tcg", [BootTimedOut("no output"), BootTimedOut("no output")])


def test_a_tcg_boot_whose_vm_stopped_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LabError, match="stopped"):
        _booting(monkeypatch, "tcg", [LabError("lab VM boot failed (the VM stopped)")])


def test_a_kvm_boot_that_fails_falls_back_to_tcg(monkeypatch: pytest.MonkeyPatch) -> None:
    from lvsprobe.lab.lab import BootTimedOut

    assert _booting(monkeypatch, "kvm", [BootTimedOut("no output")]) == ["kvm", "tcg"]


def test_a_tcg_guest_turns_numpys_avx2_off(tmp_path: Path) -> None:
    """qemu 7.2's young AVX2 emulation crashed numpy's AVX2 argsort in the guest (SIGSEGV in
    `replay run`'s summary): under TCG every guest process gets NPY_DISABLE_CPU_FEATURES
    (stage2.sh exports lab.numpy_off); under KVM the guest's numpy is left alone."""
    prepared = Prepared("6.1.0-test", tmp_path / "vmlinux", tmp_path / "initrd", tmp_path)
    tcg = VM(prepared, AccelVerdict("tcg", "test"))
    assert "lab.numpy_off=X86_V3" in tcg.kernel_cmdline().split()
    kvm = VM(prepared, AccelVerdict("kvm", "test"))
    assert not any(a.startswith("lab.numpy_off=") for a in kvm.kernel_cmdline().split())
    stage2 = (Path(vm.__file__).parent / "stage2.sh").read_text()
    assert "lab.numpy_off=*) export NPY_DISABLE_CPU_FEATURES=${a#*=} ;;" in stage2
