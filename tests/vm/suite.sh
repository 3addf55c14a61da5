#!/vm/busybox sh
# PID 1 of the calitrace test VM after /init (tests/vm/init.sh) switched to the host's
# root; run by busybox sh, with the host's tools in PATH. Usage: suite.sh PLAN.
#
# Prepares what calitrace and the lab need, runs `calitrace probes` and then each test
# of each test executable named in the plan in a process of its own, with a time limit,
# and powers off. All output goes to the second serial port (ttyS1), each piece framed
# by marker lines that `cargo xtask vm-test` parses:
#   @@CALITRACE-VM KERNEL <uname -r>
#   @@CALITRACE-VM BEGIN <kind> <name>
#   ...output...
#   @@CALITRACE-VM END <kind> <name> rc=<exit code> secs=<seconds>
#   @@CALITRACE-VM DONE

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
# The plan: CALITRACE_BIN, TEST_EXES, TEST_TIMEOUT, FILTER and SKIP (substrings of
# suite::test), ONLY (exact suite::test names; empty: all), FORWARDED_ENV
# (NAME=VALUE ... from the host's environment).
. "$1"
export CALITRACE_BIN
# Under emulation, with guests sharing the host's CPUs, calitrace takes several
# times longer to start: the tests' waits for it scale (tests/src/calitrace.rs).
export CALITRACE_TEST_EMULATED=1
for kv in $FORWARDED_ENV; do
    export "$kv"
done

setup() {
    mount -t tmpfs -o mode=755 tmpfs /run
    mkdir -p /run/netns /run/lock /dev/pts /dev/shm
    mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
    mount -t tmpfs tmpfs /dev/shm
    mount -t bpf bpf /sys/fs/bpf
    mount -t tracefs tracefs /sys/kernel/tracing
    mount -t debugfs debugfs /sys/kernel/debug
    mount -t securityfs securityfs /sys/kernel/security
    hostname calitrace-vm
    ip link set lo up
    # What the lab uses; the rest the kernel loads on demand through /vm/modprobe.
    # Some are built into some kernels: not an error.
    for m in veth vxlan ipip x_tables ip_tables iptable_filter ip6_tables ip6table_filter \
        nfnetlink nf_tables nft_compat nf_conntrack wireguard; do
        /vm/modprobe "$m" 2>/dev/null ||
            grep -q "/$m.ko" "/lib/modules/$(uname -r)/modules.builtin" ||
            echo "vm: cannot load module $m"
    done
}

# What this kernel offers, checked directly (the capability table in the README comes
# from this and `calitrace probes`).
facts() {
    yesno() { if "$@" >/dev/null 2>&1; then echo yes; else echo no; fi; }
    ksym() { grep -q " $1\$" /proc/kallsyms; }
    t=/sys/kernel/tracing
    echo "vmlinux BTF: $(yesno test -e /sys/kernel/btf/vmlinux)"
    for m in nf_tables ip_tables; do
        echo "module BTF ($m): $(yesno test -e /sys/kernel/btf/$m)"
    done
    echo "kfree_skb tracepoint has a reason field: $(yesno grep -q reason $t/events/skb/kfree_skb/format)"
    echo "kprobes (kprobe_events): $(yesno test -e $t/kprobe_events)"
    echo "BPF trampolines (fentry/fexit): $(yesno ksym bpf_trampoline_link_prog)"
    # fentry/fexit need ftrace on the target and its BTF: nft_do_chain and ipt_do_table
    # live in the nf_tables and ip_tables modules on Debian's cloud kernels.
    traceable() { grep -qw "$1" $t/available_filter_functions && test -e "/sys/kernel/btf/$2"; }
    echo "fexit on nft_do_chain (nf_tables): $(yesno traceable nft_do_chain nf_tables)"
    echo "fexit on ipt_do_table (ip_tables): $(yesno traceable ipt_do_table ip_tables)"
    echo "TCX (tcx_link_attach): $(yesno ksym tcx_link_attach)"
    echo "BPF netfilter links (bpf_nf_link_attach): $(yesno ksym bpf_nf_link_attach)"
    echo "lockdown: $(sed -n 's/.*\[\(.*\)\].*/\1/p' /sys/kernel/security/lockdown 2>/dev/null)"
}

mark() { echo "@@CALITRACE-VM $*" >&3; }
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# contains NAME PATTERNS...: whether NAME contains one of the patterns.
contains() {
    name=$1
    shift
    for p in "$@"; do
        case "$name" in *"$p"*) return 0 ;; esac
    done
    return 1
}

# is_one_of NAME WORDS...: whether NAME is one of the words.
is_one_of() {
    name=$1
    shift
    for w in "$@"; do
        [ "$name" = "$w" ] && return 0
    done
    return 1
}

wanted() {
    # shellcheck disable=SC2086 # word splitting wanted
    { [ -z "$ONLY" ] || is_one_of "$1" $ONLY; } &&
        { [ -z "$FILTER" ] || contains "$1" $FILTER; } && ! contains "$1" $SKIP
}

# piece KIND NAME COMMAND...: one framed piece of output.
piece() {
    kind=$1 name=$2
    shift 2
    mark BEGIN "$kind" "$name"
    start=$(now)
    timeout -k 10 "$TEST_TIMEOUT" "$@" >&3 2>&3 </dev/null
    rc=$?
    mark END "$kind" "$name" "rc=$rc" "secs=$(since "$start")"
}

run_suite() {
    mark KERNEL "$(uname -r)"
    # Once per kernel; the tests read it from there (CALITRACE_TEST_PROBES)
    # instead of running `calitrace probes` again.
    mark BEGIN probes probes
    start=$(now)
    timeout -k 10 "$TEST_TIMEOUT" "$CALITRACE_BIN" probes >/run/calitrace-probes.txt 2>&3 </dev/null
    rc=$?
    cat /run/calitrace-probes.txt >&3
    mark END probes probes "rc=$rc" "secs=$(since "$start")"
    export CALITRACE_TEST_PROBES=/run/calitrace-probes.txt
    mark BEGIN facts facts
    facts >&3 2>&3
    mark END facts facts rc=0 secs=0
    for exe in $TEST_EXES; do
        suite=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
        for t in $("$exe" --list --format terse 2>/dev/null | sed -n 's/: test$//p'); do
            wanted "$suite::$t" || continue
            piece test "$suite::$t" "$exe" --exact "$t" --test-threads=1 --nocapture
        done
    done
    mark DONE
}

setup
stty -F /dev/ttyS1 raw -echo 115200
exec 3>/dev/ttyS1
run_suite
exec 3>&-
echo "vm: suite finished after $(now) s, powering off"
sync
/vm/busybox poweroff -f
