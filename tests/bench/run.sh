#!/usr/bin/env bash
# run.sh: build jobqd and jobq-bench in Release and run the benchmark.
#
#   tests/bench/run.sh                 # every workload (about 7 minutes)
#   tests/bench/run.sh submit memory   # selected workloads
#   tests/bench/run.sh --help          # jobq-bench's options
#
# Arguments go to jobq-bench unchanged ("all" when there are none).
# Environment: JOBQ_BENCH_BUILD_DIR (default: <repo>/build-bench);
# JOBQ_BENCH_CMAKE_ARGS, extra arguments for the cmake configure step
# (none are needed).
# beanstalkd (the issue's comparison) is installed with apt-get when it is
# missing; when that is not possible the comparison is skipped with a note.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${JOBQ_BENCH_BUILD_DIR:-$root/build-bench}

if ! command -v beanstalkd >/dev/null 2>&1 && [ ! -x /usr/sbin/beanstalkd ]; then
    echo "run.sh: beanstalkd is missing; installing it (Debian package beanstalkd)" >&2
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q beanstalkd >/dev/null 2>&1 ||
            { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y -q beanstalkd >/dev/null 2>&1; } ||
            true
    fi
    if ! command -v beanstalkd >/dev/null 2>&1 && [ ! -x /usr/sbin/beanstalkd ]; then
        echo "run.sh: NOTE: could not install beanstalkd (needs root and apt-get);" \
             "the beanstalkd comparison will be skipped" >&2
    fi
fi

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
exec "$bench" "$@"
