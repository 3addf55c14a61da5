#!/bin/busybox sh
# /init of the calitrace test VM (`cargo xtask vm-test`, see xtask/src/vm.rs), run by
# the initramfs's static busybox. Mounts the host's root (virtiofs, read-only) under a
# tmpfs overlay, points the kernel's modprobe at the modules in the host's cache, and
# hands over to the suite script named in the plan (calitrace.plan= on the kernel
# command line), with busybox sh as PID 1.

/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin

die() {
    echo "vm: $*"
    poweroff -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

for m in $(cat /modules/order); do
    insmod "/modules/$m" || die "cannot load $m"
done

mount -t virtiofs -o ro hostroot /mnt/host || die "cannot mount the host's root"
mount -t tmpfs -o mode=755 tmpfs /mnt/rw || die "no tmpfs"
mkdir -p /mnt/rw/upper /mnt/rw/work
mount -t overlay -o lowerdir=/mnt/host,upperdir=/mnt/rw/upper,workdir=/mnt/rw/work \
    overlay /newroot || die "cannot mount the overlay"

plan=$(sed -n 's/.*calitrace\.plan=\([^ ]*\).*/\1/p' /proc/cmdline)
[ -f "/newroot$plan" ] || die "no plan at $plan"
. "/newroot$plan"

# busybox modprobe for the kernel (and iptables) with this kernel's modules, which
# xtask unpacked into the host's cache.
mkdir -p /newroot/vm /newroot/lib/modules
cp /bin/busybox /newroot/vm/busybox
ln -s busybox /newroot/vm/modprobe
ln -sfn "$MODULES" "/newroot/lib/modules/$(uname -r)"
echo /vm/modprobe >/proc/sys/kernel/modprobe

for fs in /proc /sys /dev; do
    mount --move "$fs" "/newroot$fs"
done
exec switch_root /newroot /vm/busybox sh "$SUITE" "$plan"
