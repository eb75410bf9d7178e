"""`Lab`: one booted VM, its agent, and the LVS cluster built inside it.

The lab's life cycle (prepare, boot, power off) and its cluster are here; the commands,
files and forwarded ports it offers once booted are its agent's (`Guest`).

Example::

    with Lab(Topology(mode=Mode.NAT)) as lab:
        lab.run("client", ["curl", f"http://{lab.vip}/"])
        print(lab.ipvsadm("-Ln", "--stats"))
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lvsprobe.errors import LabError
from lvsprobe.lab.channel import Control, Mux
from lvsprobe.lab.cluster import (
    TLS_DIR,
    AddressPlan,
    build_script,
    failover_script,
    teardown_script,
)
from lvsprobe.lab.guest import Guest
from lvsprobe.lab.prepare import Prepared, prepare
from lvsprobe.lab.topology import Ha, Topology
from lvsprobe.lab.vm import VM, AccelVerdict, guest_python, kvm_verdict

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Switch:
    """One move of the floating addresses: from, to, and the guest wall-clock times (seconds
    since the epoch, as the replay's `start_unix`) when it began and when it was done."""

    old: str
    new: str
    started_unix: float
    done_unix: float


class BootTimedOut(LabError):
    """The guest's agent did not report ready in time while qemu kept running."""


def _quiet(message: str) -> None:
    del message


class Lab(Guest):
    """A throw-away VM with Debian's kernel and an LVS cluster in network namespaces."""

    def __init__(
        self,
        topology: Topology | None = None,
        *,
        build: bool = True,
        shared_dir: Path | None = None,
        memory_mb: int = 1024,
        cpus: int = 2,
        accel: str = "auto",
        boot_timeout_s: float = 240.0,
        progress: Progress = _quiet,
        cache: Path | None = None,
    ) -> None:
        super().__init__()
        self.topology = topology or Topology()
        self._build = build
        self.shared_dir = shared_dir.resolve() if shared_dir else None
        self.memory_mb, self.cpus = memory_mb, cpus
        self._accel_choice = accel
        self.boot_timeout_s = boot_timeout_s
        self.progress = progress
        self._cache = cache
        self.accel: str | None = None
        self.accel_reason = ""
        self.boot_s: float | None = None
        self.guest_uptime_s: float | None = None
        self.tls_certificate_pem = ""  # the backends' self-signed certificate (PEM)
        self.vm: VM | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.plan = AddressPlan(self.topology)
        self.active_director = "lvs1"
        self._dirty = True  # nothing built yet

    # ---- life cycle ----------------------------------------------------------------------
    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _verdict(self) -> AccelVerdict:
        if self._accel_choice == "tcg":
            return AccelVerdict("tcg", "requested (--accel tcg)")
        verdict = kvm_verdict()
        if self._accel_choice == "kvm" and verdict.accel != "kvm":
            raise LabError(f"KVM requested but unusable: {verdict.reason}")
        return verdict

    def start(self) -> None:
        """Prepare (cached), boot, wait for the agent, then build the topology."""
        prepared = prepare(self._cache, self.progress)
        verdict = self._verdict()
        try:
            self._boot(prepared, verdict)
        except LabError as exc:
            if verdict.accel == "tcg" and isinstance(exc, BootTimedOut):
                # seen once in many TCG boots: not a line on the console in 240 s, while
                # the next qemu came up as usual
                self.progress(f"{exc}; booting a fresh VM once more")
                self._boot(prepared, verdict)
            elif verdict.accel == "kvm" and self._accel_choice != "kvm":
                self.progress(f"KVM boot failed ({exc}); retrying with TCG")
                self._boot(prepared, AccelVerdict("tcg", f"KVM boot failed: {exc}"))
            else:
                raise
        if self._build:
            self.apply(self.topology)

    def _boot(self, prepared: Prepared, verdict: AccelVerdict) -> None:
        self.progress(
            f"booting kernel {prepared.kernel_version} ({verdict.accel}: {verdict.reason})"
        )
        started = time.monotonic()
        shares = (self.shared_dir,) if self.shared_dir else ()
        vm = VM(prepared, verdict, self.memory_mb, self.cpus, shares)
        self.vm = vm
        self._finalizer = weakref.finalize(self, _kill_vm, vm)
        vm.start()
        try:
            vm.wait_socket(vm.control_socket, 30)
            vm.wait_socket(vm.mux_socket, 30)
            self._control = Control(vm.control_socket)
            self._mux = Mux(vm.mux_socket)
            timeout = self.boot_timeout_s if verdict.accel == "tcg" else 60.0
            ready = None
            deadline = started + timeout
            while ready is None and time.monotonic() < deadline and vm.alive():
                ready = self._control.wait_ready(0.5)
            if ready is None and vm.alive():
                raise BootTimedOut(f"lab VM boot failed (timed out): {vm.failure_detail()}")
            if ready is None:
                raise LabError(f"lab VM boot failed (the VM stopped): {vm.failure_detail()}")
        except BaseException:
            self.close()
            raise
        self._install_tls_certificate()
        self.boot_s = time.monotonic() - started
        self.guest_uptime_s = float(ready.get("uptime_s", 0.0))
        self.accel, self.accel_reason = verdict.accel, verdict.reason
        self.progress(f"lab VM up in {self.boot_s:.1f} s ({verdict.accel})")

    def _install_tls_certificate(self) -> None:
        """A self-signed certificate for the TLS backends, made on the host (openssl is ~50x
        faster there than under TCG) and written into the guest's /run/lab/tls."""
        with tempfile.TemporaryDirectory(prefix="lvsprobe-tls-") as tmp:
            cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
            argv = ["openssl", "req", "-x509", "-newkey", "ec", "-nodes", "-days", "30",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-subj", "/CN=lvsprobe-lab",
                    "-keyout", str(key), "-out", str(cert)]  # fmt: skip
            try:
                subprocess.run(argv, capture_output=True, check=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as exc:
                raise LabError(
                    f"cannot make the lab's TLS certificate with openssl: {exc}"
                ) from exc
            self.write_file(f"{TLS_DIR}/cert.pem", cert.read_bytes())
            self.write_file(f"{TLS_DIR}/key.pem", key.read_bytes(), mode=0o600)
            self.tls_certificate_pem = cert.read_text()

    def close(self) -> None:
        """Power the guest off (or kill it); nothing stays running or mounted on the host."""
        super().close()
        if self.vm is not None:
            self.vm.stop(wait_s=10)
            self.vm = None
        if self._finalizer is not None:
            self._finalizer.detach()

    # ---- the cluster ---------------------------------------------------------------------
    def apply(self, topology: Topology) -> None:
        """Tear down whatever cluster runs, then build `topology` (one guest call)."""
        started = time.monotonic()
        plan = AddressPlan(topology)
        self.run(None, ["bash", "-s"], timeout=300, input=build_script(plan)).check()
        self.topology, self.plan, self.active_director = topology, plan, "lvs1"
        self._dirty = False
        self.progress(f"cluster {topology.describe()} up in {time.monotonic() - started:.1f} s")

    def ensure(self, topology: Topology | None = None) -> None:
        """Apply `topology` (default: Topology()) unless it is what runs, untouched.

        Tests sharing one boot call this first; after changing the cluster by hand (ipvsadm
        edits, killed backends) call `mark_dirty()` so the next `ensure` rebuilds.
        """
        wanted = topology or Topology()
        if self._dirty or wanted != self.topology or self.active_director != "lvs1":
            self.apply(wanted)

    def mark_dirty(self) -> None:
        """The cluster no longer matches its topology: the next `ensure` rebuilds it."""
        self._dirty = True

    def client(self, proto: str, *args: str, timeout: float = 300.0) -> dict[str, Any]:
        """Run `python -m lvsprobe.lab.client PROTO ARGS` in the client namespace; its JSON."""
        argv = guest_python("lvsprobe.lab.client", proto, *args)
        result = self.run("client", argv, timeout=timeout).check()
        try:
            doc: dict[str, Any] = json.loads(result.stdout)
        except ValueError as exc:
            raise LabError(f"lab client printed no JSON: {result.stdout[-300:]!r}") from exc
        return doc

    def client_batch(self, jobs: list[dict[str, Any]], timeout: float = 600.0) -> list[Any]:
        """Several client jobs in ONE guest Python start (see lvsprobe.lab.client)."""
        argv = guest_python("lvsprobe.lab.client", "batch")
        result = self.run("client", argv, timeout=timeout, input=json.dumps(jobs)).check()
        try:
            docs: list[Any] = json.loads(result.stdout)
        except ValueError as exc:
            raise LabError(f"lab client printed no JSON: {result.stdout[-300:]!r}") from exc
        return docs

    def teardown(self) -> None:
        self.sh(None, teardown_script()).check()
        self._dirty = True

    def _switch(self, old: str, new: str) -> Switch:
        if self.topology.ha is Ha.KEEPALIVED:
            raise LabError(
                "lab: keepalived moves the VIPs in this cluster (ha: keepalived); inject a "
                "fault instead (lvsprobe.lab.faults)"
            )
        out = self.sh(None, failover_script(self.plan, old, new)).check().stdout
        self.active_director = new
        times = dict(line.split(" ", 1) for line in out.splitlines() if line.count(" ") == 1)
        try:
            return Switch(old, new, float(times["started"]), float(times["done"]))
        except (KeyError, ValueError) as exc:
            raise LabError(f"lab: the VIP moved but its times are missing: {out!r}") from exc

    def failover(self) -> Switch:
        """Move the VIPs from lvs1 to lvs2 as keepalived does (addresses + gratuitous ARP/NA);
        when it began and ended, by the guest's clock."""
        return self._switch("lvs1", "lvs2")

    def failback(self) -> Switch:
        """Move the VIPs back to lvs1."""
        return self._switch("lvs2", "lvs1")

    @property
    def vip(self) -> str:
        return self.plan.vip

    @property
    def vip6(self) -> str:
        return self.plan.vip6

    @property
    def client_addresses(self) -> tuple[str, ...]:
        return self.plan.client_addresses

    @property
    def client_addresses6(self) -> tuple[str, ...]:
        return self.plan.client_addresses6

    @property
    def real_server_addresses(self) -> tuple[str, ...]:
        return self.plan.real_server_addresses

    @property
    def real_server_addresses6(self) -> tuple[str, ...]:
        return self.plan.real_server_addresses6

    @property
    def real_server_names(self) -> tuple[str, ...]:
        return self.plan.real_server_names


def _kill_vm(vm: VM) -> None:
    """Last resort (garbage collection, interpreter exit): never leave a qemu running."""
    try:
        vm.kill()
        vm.stop(wait_s=1)
    except (OSError, subprocess.SubprocessError):
        pass
