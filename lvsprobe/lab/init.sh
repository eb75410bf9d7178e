#!/bin/busybox sh
# lvsprobe lab, stage 1: PID 1 in the initramfs (busybox only).
# Mount the host's / read-only over 9p, put tmpfs overlays on the dirs the guest writes, mount
# the read-write shares, then switch_root (PID 1 itself must change root, or the kernel's
# modprobe helper keeps resolving in the initramfs and module autoloading breaks).
# Kernel arguments: lab.moddir=HOSTDIR (module tree to show as /lib/modules),
# lab.stage2=PATH (stage 2 script on the host root), lab.rw=DIR,DIR (read-write shares).
B=/bin/busybox
die() { echo "lab-init: $*"; $B sleep 1; echo o > /proc/sysrq-trigger; }
$B mount -t proc proc /proc
$B mount -t sysfs sys /sys
$B mount -t devtmpfs dev /dev
moddir=/lib/modules stage2= rw=
for a in $($B cat /proc/cmdline); do
  case $a in
    lab.moddir=*) moddir=${a#*=} ;;
    lab.stage2=*) stage2=${a#*=} ;;
    lab.rw=*) rw=${a#*=} ;;
  esac
done
for m in $($B cat /mods/order); do $B insmod /mods/$m.ko || die "insmod $m"; done
O=trans=virtio,version=9p2000.L,msize=512000
$B mount -t 9p -o $O,ro,cache=loose hostroot /newroot || die "cannot mount the host root (9p)"
$B mount -t tmpfs -o mode=755 rw /rw
overlays="etc var root tmp home"
[ "$moddir" != /lib/modules ] && overlays="$overlays usr"
for d in $overlays; do
  [ -d /newroot/$d ] && [ ! -L /newroot/$d ] || continue
  $B mkdir -p /rw/$d/u /rw/$d/w
  $B mount -t overlay ov -o lowerdir=/newroot/$d,upperdir=/rw/$d/u,workdir=/rw/$d/w /newroot/$d \
    || die "overlay $d"
done
$B mount -t tmpfs -o mode=755 run /newroot/run
if [ "$moddir" != /lib/modules ]; then
  $B mkdir -p /newroot/lib/modules && $B mount --bind /newroot$moddir /newroot/lib/modules
fi
i=0
for p in $(echo "$rw" | $B tr , ' '); do
  $B mkdir -p /newroot$p && $B mount -t 9p -o $O rw$i /newroot$p || die "9p share $p"
  i=$((i+1))
done
$B mkdir -p /dev/pts /dev/shm
$B mount -t devpts devpts /dev/pts
$B mount -t tmpfs shm /dev/shm
$B hostname lab-vm
$B ip link set lo up
for d in dev proc sys; do $B mount --move /$d /newroot/$d; done
[ -n "$stage2" ] || die "no lab.stage2= on the kernel command line"
exec $B switch_root /newroot /bin/bash "$stage2"
