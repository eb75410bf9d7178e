"""The lab VM: one qemu process booting the cached Debian kernel over the host's root.

q35, `-nodefaults -nic none` (no network device at all), the host's `/` shared read-only over
virtio-9p (the guest runs this very Python, venv and checkout), two virtio-serial ports for the
agent (control, mux) and optional read-write 9p shares. KVM only when it really is hardware
virtualisation; otherwise TCG multi-threaded.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import lvsprobe
from lvsprobe.errors import LabError
from lvsprobe.lab import protocol
from lvsprobe.lab.prepare import Prepared

PR_SET_PDEATHSIG = 1
# numpy's dispatched CPU features a TCG guest turns off (NPY_DISABLE_CPU_FEATURES, set by
# stage2.sh for every guest process). Debian 12's qemu 7.2 is the first to emulate AVX2 under
# TCG, and numpy's AVX2 argsort (x86-simd-sort, built on AVX2 gathers) crashed there:
# `replay run` died of SIGSEGV in its summary in 4 of 4 lab runs of `bench replay_conn` (the
# same data re-sorted in a warm guest did not crash: it depends on memory the gathers meet
# first). A guest CPU without AVX2 ended the crashes too, but made all guest code slower
# (glibc's string functions, isal: an exporter scrape +10 %, `status` +50 %); numpy is the
# one user of gathers the lab has met, so only its AVX2 paths are turned off.
TCG_NUMPY_OFF = "X86_V3"
KERNEL_ARGS = "console=ttyS0 quiet loglevel=1 panic=-1 slab_nomerge"


@dataclass(frozen=True, slots=True)
class AccelVerdict:
    """Which accelerator a boot uses and why."""

    accel: str  # "kvm" or "tcg"
    reason: str


def kvm_verdict() -> AccelVerdict:
    """KVM only where it is real hardware virtualisation.

    Nested "PVM" KVM (kvm_pvm loaded, no vmx/svm flag) aborts or crawls with a stock kernel:
    `-cpu host` dies on MSR 0x10a, and without it a boot is ~400x slower than TCG.
    """
    kvm = Path("/dev/kvm")
    if not kvm.exists():
        return AccelVerdict("tcg", "no /dev/kvm")
    if not os.access(kvm, os.R_OK | os.W_OK):
        return AccelVerdict("tcg", "/dev/kvm is not writable by this user")
    if Path("/sys/module/kvm_pvm").exists():
        return AccelVerdict("tcg", "/dev/kvm is nested PVM (kvm_pvm): it cannot run a stock kernel")
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    if not flags & {"vmx", "svm"}:
        return AccelVerdict("tcg", "the CPU shows no vmx/svm flag")
    return AccelVerdict("kvm", "/dev/kvm with hardware virtualisation")


def guest_path() -> str:
    """The guest's PATH: this interpreter's bin dirs first (pyenv shims cost ~8 s per call
    under TCG), then the host's PATH without shims."""
    first = [str(Path(sys.executable).parent), str(Path(sys.executable).resolve().parent)]
    rest = [d for d in os.environ.get("PATH", "").split(":") if d and "shims" not in d]
    rest += ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    dirs: list[str] = []
    for d in first + rest:
        if d not in dirs and " " not in d:
            dirs.append(d)
    return ":".join(dirs)


def guest_python(module: str, *args: str) -> list[str]:
    """argv running a stdlib-only module with this interpreter in the guest.

    `-S` skips site-packages processing: the venv's .pth files (editable install finder,
    certifi, distutils hack) cost ~8 s per start under TCG, `python -S` ~1-2 s. The guest's
    PYTHONPATH (set by stage2.sh) finds lvsprobe; third-party packages are not importable.
    """
    return [sys.executable, "-S", "-m", module, *args]


def _die_with_parent() -> None:
    """In the qemu child: get SIGKILL when the process that started it dies."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class VM:
    """A running qemu. `start()` returns at once; the agent's channels are unix sockets."""

    def __init__(
        self,
        prepared: Prepared,
        accel: AccelVerdict,
        memory_mb: int = 1024,
        cpus: int = 2,
        shares: tuple[Path, ...] = (),
    ) -> None:
        self.prepared = prepared
        self.accel = accel
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.shares = tuple(p.resolve() for p in shares)
        self.run_dir = Path(tempfile.mkdtemp(prefix="lvsprobe-lab-"))
        self.control_socket = self.run_dir / "control.sock"
        self.mux_socket = self.run_dir / "mux.sock"
        self.console_log = self.run_dir / "console.log"
        self.qemu_log = self.run_dir / "qemu.log"
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        if self.accel.accel == "kvm":
            accel = ["-accel", "kvm", "-cpu", "host"]
        else:
            accel = ["-accel", "tcg,thread=multi", "-cpu", "max"]
        argv = [
            "qemu-system-x86_64", "-M", "q35", *accel,
            "-m", str(self.memory_mb), "-smp", str(self.cpus),
            "-nodefaults", "-no-reboot", "-display", "none", "-nic", "none",
            "-kernel", str(self.prepared.vmlinux), "-initrd", str(self.prepared.initrd),
            "-serial", f"file:{self.console_log}",
            "-device", "virtio-serial-pci",
        ]  # fmt: skip
        for name, sock in (("ctl", self.control_socket), ("mux", self.mux_socket)):
            port = protocol.CONTROL_PORT if name == "ctl" else protocol.MUX_PORT
            argv += ["-chardev", f"socket,id={name},path={sock},server=on,wait=off"]
            argv += ["-device", f"virtserialport,chardev={name},name={port}"]
        argv += [
            "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
            "-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
        ]  # fmt: skip
        for i, share in enumerate(self.shares):
            argv += [
                "-fsdev", f"local,id=rw{i},path={share},security_model=none,multidevs=remap",
                "-device", f"virtio-9p-pci,fsdev=rw{i},mount_tag=rw{i}",
            ]  # fmt: skip
        return [*argv, "-append", self.kernel_cmdline()]

    def kernel_cmdline(self) -> str:
        stage2 = resources.files("lvsprobe.lab").joinpath("stage2.sh")
        args = {
            "moddir": str(self.prepared.kroot / "lib" / "modules"),
            "stage2": str(stage2),
            "python": sys.executable,
            "pypath": str(Path(lvsprobe.__file__).resolve().parent.parent),
            "path": guest_path(),
            "rw": ",".join(str(s) for s in self.shares),
            "numpy_off": TCG_NUMPY_OFF if self.accel.accel == "tcg" else "",
        }
        for key, value in args.items():
            if " " in value:
                raise LabError(f"lab: {key} path {value!r} contains a space (unsupported)")
        return " ".join([KERNEL_ARGS, *(f"lab.{k}={v}" for k, v in args.items() if v)])

    def start(self) -> None:
        if shutil.which("qemu-system-x86_64") is None:
            raise LabError("qemu-system-x86_64 not found (apt-get install qemu-system-x86)")
        with open(self.qemu_log, "wb") as log:
            self.process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_socket(self, path: Path, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if not self.alive() or time.monotonic() > deadline:
                raise LabError(f"qemu did not start: {self.failure_detail()}")
            time.sleep(0.02)

    def failure_detail(self, lines: int = 15) -> str:
        """The tail of qemu's own output and of the guest console, for error messages."""
        parts = []
        for what, path in (("qemu", self.qemu_log), ("console", self.console_log)):
            try:
                tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
            except OSError:
                continue
            if tail:
                parts.append(f"{what}: " + " | ".join(tail))
        if self.process is not None and self.process.poll() is not None:
            parts.insert(0, f"qemu exited with status {self.process.returncode}")
        return "; ".join(parts) or "no output"

    def stop(self, wait_s: float = 10.0, on_wait: Callable[[], None] | None = None) -> None:
        """Wait for qemu to exit by itself (after a guest power-off), else kill it; clean up."""
        if self.process is not None:
            try:
                self.process.wait(wait_s)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
