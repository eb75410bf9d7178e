#!/bin/bash
# Build the lvsprobe-export container image from Debian packages and a wheel: no base image,
# no container registry.
#
#   exporters/build-image.sh dist/lvsprobe-*.whl OUTDIR [TAG]
#
# 1. mmdebstrap: a Debian root filesystem of the essential packages plus python3-minimal and
#    the standard library (no apt, docs, man pages or locales), from this host's apt sources.
# 2. A venv at /opt/lvsprobe holding the wheel and the dependencies it declares, as binary
#    wheels for the root filesystem's Python, installed inside it by pip run from its wheel
#    (so neither pip nor a compiler stays in the image).
# 3. User 65532 (lvsprobe), no setuid programs and no file capabilities: CAP_NET_ADMIN, when
#    given, comes from the runtime (podman --cap-add, systemd AmbientCapabilities=; README.md).
# 4. podman build of exporters/Containerfile (FROM scratch + that tree), saved as an OCI
#    archive: OUTDIR/image.oci.tar (podman load -i), and OUTDIR/rootfs.tar.
# Needs root, mmdebstrap, podman, and python3 with pip on the host.
set -euo pipefail

wheel=$(realpath "$1")
outdir=$2
version=$(basename "$wheel" | cut -d- -f2)
tag=${3:-localhost/lvsprobe-export:$version}
here=$(dirname "$(realpath "$0")")
python=${PYTHON:-python3}
uid=65532

work=$(mktemp -d /var/tmp/lvsprobe-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

# The host's own sources (a .sources or .list file), so the image gets the same mirrors and
# security updates as the machine that builds it.
sources=$(ls /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)
[ -n "$sources" ] || sources=/etc/apt/sources.list
. /etc/os-release
# shellcheck disable=SC2016 # $1 is expanded by mmdebstrap's hook shell
mmdebstrap --quiet --mode=root --format=directory --variant=essential \
	--include=python3-minimal,libpython3-stdlib \
	--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--customize-hook='rm -rf "$1"/var/cache/* "$1"/var/log/*' \
	"$VERSION_CODENAME" "$rootfs" "$sources"

in_root() { env -i PATH=/usr/sbin:/usr/bin:/bin /usr/sbin/chroot "$rootfs" "$@"; }
pyver=$(in_root python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
libc=$(in_root python3 -c 'import platform; print(platform.libc_ver()[1].replace(".", "_"))')
arch=$(in_root python3 -c 'import platform; print(platform.machine())')

# Binary wheels only, for the image's interpreter and glibc (manylinux_2_N up to its glibc).
platforms=()
minor=${libc#*_}
for ((n = minor; n >= 17; n--)); do platforms+=(--platform "manylinux_2_${n}_${arch}"); done
platforms+=(--platform "manylinux2014_${arch}")
mkdir -p "$rootfs/tmp/wheels"
"$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
	--python-version "$pyver" --implementation cp --abi "cp$pyver" --abi abi3 --abi none \
	"${platforms[@]}" --dest "$rootfs/tmp/wheels" "$wheel" pip

in_root python3 -m venv --without-pip /opt/lvsprobe
rm -f "$rootfs"/opt/lvsprobe/bin/[Aa]ctivate*
pip_wheel=$(cd "$rootfs/tmp/wheels" && ls pip-*.whl)
in_root /opt/lvsprobe/bin/python3 "/tmp/wheels/$pip_wheel/pip" install --isolated --quiet \
	--no-index --find-links /tmp/wheels --no-cache-dir --disable-pip-version-check \
	"/tmp/wheels/$(basename "$wheel")"
rm -rf "$rootfs/tmp/wheels"
echo "lvsprobe:x:$uid:$uid:lvsprobe export:/nonexistent:/usr/sbin/nologin" >>"$rootfs/etc/passwd"
echo "lvsprobe:x:$uid:" >>"$rootfs/etc/group"
echo "lvsprobe:!:::::::" >>"$rootfs/etc/shadow"
# No setuid or setgid programs (su, mount, ...): nothing in the image may gain privileges.
find "$rootfs" -xdev -type f -perm /6000 -exec chmod ug-s {} +

mkdir -p "$outdir"
tar --numeric-owner --xattrs --sort=name -C "$rootfs" -cf "$work/rootfs.tar" .
cp "$here/Containerfile" "$work/Containerfile"
podman build --quiet --pull=never --file "$work/Containerfile" --tag "$tag" "$work" >/dev/null
rm -f "$outdir/image.oci.tar"
podman save --quiet --format oci-archive --output "$outdir/image.oci.tar" "$tag"
mv "$work/rootfs.tar" "$outdir/rootfs.tar"
