#!/bin/sh
# A throwaway Debian "host" for the Ansible test: a chroot that shares this machine's /usr
# (read-only, so no package can change) and dpkg database (read-only: the roles' apt tasks see
# what is installed here), with its own /etc, /var, /run, /tmp and a writable /usr/local.
# Processes started in it share this machine's network (the test gives every service its own
# loopback port).
#   chroot.sh create DIR    chroot.sh destroy DIR
set -eu
cmd=$1
root=$2

case "$cmd" in
create)
    mkdir -p "$root"
    cd "$root"
    # apt builds its own cache here from the package lists it reads.
    mkdir -p usr proc dev run tmp root home var/lib/dpkg var/lib/apt var/cache/apt/archives/partial \
        var/log usr-local
    chmod 1777 tmp
    ln -sfn usr/bin bin
    ln -sfn usr/sbin sbin
    ln -sfn usr/lib lib
    ln -sfn usr/lib64 lib64
    cp -a /etc "$root/etc"
    # Services of this machine must not seem to run in the chroot.
    rm -f "$root"/etc/init.d/onda-* "$root"/etc/default/etcd "$root"/etc/default/prometheus
    mount --bind /usr usr
    # Private, so nothing mounted under it here ever shows on this machine's /usr.
    mount --make-private usr
    mount -o remount,bind,ro usr
    mkdir -p usr-local/bin usr-local/sbin usr-local/lib usr-local/share
    mount --bind usr-local usr/local
    mount --make-private usr/local
    mount --bind /var/lib/dpkg var/lib/dpkg
    mount -o remount,bind,ro var/lib/dpkg
    mount --bind /var/lib/apt var/lib/apt
    mount -o remount,bind,ro var/lib/apt
    mount --bind /dev dev
    mount -t proc proc proc
    ;;
destroy)
    [ -d "$root" ] || exit 0
    # Whatever still runs inside: stopped, then killed.
    for script in "$root"/etc/init.d/onda-*; do
        [ -x "$script" ] && chroot "$root" "${script#"$root"}" stop >/dev/null 2>&1 || true
    done
    for p in /proc/[0-9]*; do
        if [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ]; then
            kill -9 "${p#/proc/}" 2>/dev/null || true
        fi
    done
    for m in proc dev var/lib/apt var/lib/dpkg usr/local usr; do
        if mountpoint -q "$root/$m"; then
            umount "$root/$m" 2>/dev/null || umount -l "$root/$m"
        fi
    done
    # Only once nothing is mounted: never delete through a bind mount.
    if grep -q " $root/" /proc/mounts; then
        echo "chroot.sh: $root still has mounts; not removing it" >&2
        exit 1
    fi
    rm -rf "$root"
    ;;
*)
    echo "usage: chroot.sh create|destroy DIR" >&2
    exit 2
    ;;
esac
