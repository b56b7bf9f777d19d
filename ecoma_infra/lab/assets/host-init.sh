#!/bin/sh
# Boots one lab host. Runs as PID 1 of fresh pid/mount/uts namespaces, already inside the host's
# network namespace, with the machine's root still visible. It assembles the host's root
# (overlay of the cached rootfs, private /dev with only this host's loop devices), pivots into
# it and execs the reaper that runs sshd. Any failure exits, which ends the pid namespace: the
# caller sees that as "no process left in the netns" and reports this log.
#
# usage: host-init.sh NAME ROOTFS HOSTDIR USER [BY_ID:LOOPNAME:MAJOR:MINOR ...]
set -eu

name=$1 rootfs=$2 hostdir=$3 user=$4
shift 4
root=$hostdir/root

log() { echo "ecoma-lab[$name]: $*"; }
trap 'log "host init failed (exit $?)"' EXIT

# Nothing mounted here may propagate back to the machine's namespace.
mount --make-rprivate /
mount -t overlay overlay \
    -o "lowerdir=$rootfs,upperdir=$hostdir/upper,workdir=$hostdir/work" "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
# Read-only: tools read it (lsblk, ip), but the host must not reconfigure the machine through it.
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o mode=0755,nosuid,size=64m tmpfs "$root/run"
mkdir -m 0755 "$root/run/sshd"

# A private /dev: the machine's /dev would expose every disk of the machine to the playbook.
dev=$root/dev
mount -t tmpfs -o mode=0755,nosuid,size=16m tmpfs "$dev"
mknod -m 0666 "$dev/null" c 1 3
mknod -m 0666 "$dev/zero" c 1 5
mknod -m 0666 "$dev/full" c 1 7
mknod -m 0666 "$dev/random" c 1 8
mknod -m 0666 "$dev/urandom" c 1 9
mknod -m 0666 "$dev/tty" c 5 0
mkdir -m 0755 "$dev/pts" "$dev/shm" "$dev/disk" "$dev/disk/by-id"
chmod 1777 "$dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts "$dev/pts"
ln -s pts/ptmx "$dev/ptmx"
ln -s /proc/self/fd "$dev/fd"
ln -s /proc/self/fd/0 "$dev/stdin"
ln -s /proc/self/fd/1 "$dev/stdout"
ln -s /proc/self/fd/2 "$dev/stderr"
for disk in "$@"; do
    by_id=${disk%%:*}; rest=${disk#*:}
    loop=${rest%%:*}; rest=${rest#*:}
    major=${rest%%:*}; minor=${rest#*:}
    mknod -m 0660 "$dev/$loop" b "$major" "$minor"
    chgrp 6 "$dev/$loop"  # group "disk", as udev would set it
    # Relative like udev's links, so the link resolves the same from inside and via /proc/PID/root.
    ln -s "../../$loop" "$dev/disk/by-id/$by_id"
done

hostname "$name"

cd "$root"
mkdir -p .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot

if [ "$user" != root ] && ! getent passwd "$user" >/dev/null; then
    # Password "*": no password login, but not "locked" (sshd without PAM refuses "!" accounts).
    useradd --create-home --shell /bin/bash --password '*' --user-group "$user"
fi

trap - EXIT
log "ready to start sshd"
exec /usr/bin/python3 /usr/local/sbin/ecoma-lab-init
