#!/usr/bin/env bash
# run.sh: build jobqd and jobq-bench in Release and run the benchmark.
#
#   tests/bench/run.sh                 # every workload (about 10 minutes)
#   tests/bench/run.sh submit memory   # selected workloads
#   tests/bench/run.sh cycle           # remote workers against beanstalkd, Redis, gearmand
#   tests/bench/run.sh python          # the Python client against the C client
#   tests/bench/run.sh curve           # CURVE against plain TCP (--insecure)
#   tests/bench/run.sh http            # the HTTP thread's cost (a dashboard open, /metrics scraped)
#   tests/bench/run.sh peers           # issue 14's table: jobqd beside Redis, beanstalkd, gearmand
#   tests/bench/run.sh --help          # jobq-bench's options
#
# Arguments go to jobq-bench unchanged ("all" when there are none).
# Environment: JOBQ_BENCH_BUILD_DIR (default: <repo>/build-bench);
# JOBQ_BENCH_CMAKE_ARGS, extra arguments for the cmake configure step
# (none are needed).
# The servers jobq is compared with — beanstalkd (submit, memory, idle,
# cycle, peers), redis-server and gearmand (cycle, peers) — are installed
# with apt-get when missing; when that is not possible their figures say
# "not measured".
# Every daemon the bench starts dies with it (PR_SET_PDEATHSIG), and its
# temporary directory (under a directory of this script's own, in $TMPDIR)
# is removed however the bench ends, unless --keep is given.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${JOBQ_BENCH_BUILD_DIR:-$root/build-bench}

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

# install_peer PROGRAM DEBIAN-PACKAGE
install_peer() {
    have "$1" && return 0
    echo "run.sh: $1 is missing; installing it (Debian package $2)" >&2
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        # The bench starts its own instances on free ports: a service the
        # package may start on its default port is not used.
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1 ||
            { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1; } ||
            true
    fi
    if ! have "$1"; then
        echo "run.sh: NOTE: could not install $2 (needs root and apt-get);" \
             "the $1 comparison will be skipped" >&2
    fi
}

install_peer beanstalkd beanstalkd
install_peer redis-server redis-server
install_peer gearmand gearman-job-server

# shellcheck disable=SC2086 # JOBQ_BENCH_CMAKE_ARGS is a list of arguments
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release ${JOBQ_BENCH_CMAKE_ARGS:-} >/dev/null
jobs=$(nproc 2>/dev/null || echo 2)
if cmake --build "$build" -j "$jobs" --target jobqd jobq-bench >/dev/null; then
    bench=$build/tests/bench/jobq-bench
else
    # The tree did not add tests/bench: build it on its own against jobqd.
    cmake --build "$build" -j "$jobs" --target jobqd >/dev/null
    # shellcheck disable=SC2086
    cmake -S "$here" -B "$build/bench-standalone" -DCMAKE_BUILD_TYPE=Release \
          -DJOBQ_BENCH_JOBQD="$build/broker/jobqd" ${JOBQ_BENCH_CMAKE_ARGS:-} >/dev/null
    cmake --build "$build/bench-standalone" -j "$jobs" --target jobq-bench >/dev/null
    bench=$build/bench-standalone/jobq-bench
fi

# 10,000 idle connections need descriptors: take what the hard limit allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if [ $# -eq 0 ]; then
    set -- all
fi

keep=false
for a in "$@"; do
    if [ "$a" = --keep ]; then keep=true; fi
done
tmp=$(mktemp -d "${TMPDIR:-/tmp}/jobq-bench-run-XXXXXX")
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    if ! $keep; then rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# In the background so a signal to this script runs its trap at once (a
# foreground child would delay it until the bench ended on its own).
TMPDIR=$tmp "$bench" "$@" &
pid=$!
rc=0
wait "$pid" || rc=$?
pid=
exit "$rc"
