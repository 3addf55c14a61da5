#!/bin/sh
# PID 1 of the calitrace test VM (`cargo xtask vm-test`, see xtask/src/vm.rs).
# The whole system is the initramfs: busybox plus the host's own networking tools,
# calitrace and the test executables. This mounts what calitrace and the lab need,
# loads the network modules, runs /vm/suite.sh and powers the VM off.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/netns /run/lock /dev/shm
mount -t tmpfs tmpfs /dev/shm
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
[ -d /sys/kernel/debug/tracing ] && [ ! -e /sys/kernel/tracing/trace ] &&
    mount -t tracefs tracefs /sys/kernel/debug/tracing 2>/dev/null

hostname calitrace-vm
ip link set lo up

# What the lab uses (the rest loads on demand through busybox modprobe, which the
# kernel runs as /sbin/modprobe). Some are built in on some kernels: not an error.
for m in veth vxlan x_tables ip_tables iptable_filter ip6_tables ip6table_filter \
    nfnetlink nf_tables nft_compat nf_conntrack; do
    modprobe "$m" 2>/dev/null || grep -q "/$m.ko" "/lib/modules/$(uname -r)/modules.builtin" ||
        echo "vm: cannot load module $m"
done

sh /vm/suite.sh
echo "vm: suite finished, powering off"
sync
poweroff -f
