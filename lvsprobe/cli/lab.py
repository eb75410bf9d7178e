"""`lvsprobe lab`: a throw-away VM with Debian's kernel and a real IPVS cluster inside."""

from __future__ import annotations

import click


def _progress(message: str) -> None:
    click.echo(f"lab: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """Boot a throw-away VM running Debian's stock kernel (which has every ip_vs module) with
    an LVS cluster inside: a client, two directors (lvs1 active, lvs2 standby with the sync
    daemon), real servers rs1..rsN answering HTTP, TLS, TCP/UDP echo and FTP with their id.

    The VM shares this machine's / read-only (the same Python, venv and checkout run inside),
    has NO network device, and is killed when the command ends. KVM is used only when it is
    real hardware virtualisation; otherwise TCG (a boot takes ~10 s).

    \b
    Examples:
      lvsprobe lab prepare                          download+unpack the kernel (cached)
      lvsprobe lab check                            prerequisites, KVM/TCG verdict, boot time
      lvsprobe lab run -- ipvsadm -Ln               in the client namespace by default
      lvsprobe lab run --ns lvs1 -- ipvsadm -Ln --stats
      lvsprobe lab run --topology dr.yaml -- curl -s http://198.18.1.100/
      lvsprobe lab run --ns lvs1 -- lvsprobe status
      lvsprobe lab shell --ns lvs1                  type commands, see their output

    \b
    Addresses: VIP 198.18.1.100 / 2001:2:0:1::100, real servers 198.18.1.11.., client
    pool 198.18.16.1.. / 2001:2:0:100::1.. (see `lvsprobe lab run -- ip -br addr`).
    Cache: $LVSPROBE_CACHE or /var/cache/lvsprobe.
    """


@lab.command()
@click.option("--refresh", is_flag=True, help="Re-resolve linux-image-amd64 (apt) even if cached.")
def prepare(refresh: bool) -> None:
    """Check the Debian packages and build the kernel/initramfs cache (idempotent).

    \b
    Needs: qemu-system-x86 busybox-static kmod ipvsadm vsftpd (apt). The kernel package
    behind linux-image-amd64 is downloaded and unpacked into the cache, not installed.
    """
    from lvsprobe.lab.prepare import prepare as do_prepare

    do_prepare(progress=_progress, refresh=refresh)
