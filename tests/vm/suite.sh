#!/bin/sh
# Runs inside the test VM (started by /init): `calitrace probes`, then each test of each
# test executable named in /vm/plan in a process of its own, with a time limit. All
# output goes to the second serial port (ttyS1), each piece framed by marker lines that
# `cargo xtask vm-test` parses:
#   @@CALITRACE-VM KERNEL <uname -r>
#   @@CALITRACE-VM BEGIN <kind> <name>
#   ...output...
#   @@CALITRACE-VM END <kind> <name> rc=<exit code> secs=<seconds>
#   @@CALITRACE-VM DONE

. /vm/plan
export CALITRACE_BIN RUST_BACKTRACE=1

# From the kernel command line: calitrace.timeout=SECS, calitrace.filter=A,B (substrings
# of suite::test names).
TEST_TIMEOUT=300
FILTER=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    calitrace.timeout=*) TEST_TIMEOUT=${arg#*=} ;;
    calitrace.filter=*) FILTER=$(echo "${arg#*=}" | tr , ' ') ;;
    esac
done

OUT=/dev/ttyS1
stty -F "$OUT" raw -echo 115200
exec 3>"$OUT"

mark() { echo "@@CALITRACE-VM $*" >&3; }
now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

wanted() {
    [ -z "$FILTER" ] && return 0
    for f in $FILTER; do
        case "$1" in *"$f"*) return 0 ;; esac
    done
    return 1
}

# run KIND NAME COMMAND...: one framed piece of output.
run() {
    kind=$1 name=$2
    shift 2
    mark BEGIN "$kind" "$name"
    start=$(now)
    timeout -k 10 "$TEST_TIMEOUT" "$@" >&3 2>&3 </dev/null
    rc=$?
    mark END "$kind" "$name" "rc=$rc" "secs=$(since "$start")"
}

mark KERNEL "$(uname -r)"
run probes probes "$CALITRACE_BIN" probes
for exe in $TEST_EXES; do
    suite=$(basename "$exe" | sed 's/-[0-9a-f]*$//')
    for t in $("$exe" --list --format terse 2>/dev/null | sed -n 's/: test$//p'); do
        wanted "$suite::$t" || continue
        run test "$suite::$t" "$exe" --exact "$t" --test-threads=1 --nocapture
    done
done
mark DONE
