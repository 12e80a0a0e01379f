# deps.sh: install the Debian 12 packages jobq needs, only those missing.
# Sourced by scripts/run and scripts/test; needs root or sudo for apt-get.
# scdoc builds the man pages; systemd brings systemd-analyze, which the
# tests use to check the unit; python3-mypy type-checks the Python package;
# python3-pip and python3-venv install it with pip in the install test;
# clang and libclang-rt-14-dev (libFuzzer, the sanitizers' runtime) build the
# fuzz targets (scripts/fuzz). libmicrohttpd serves --http; libjs-chart.js
# is the dashboard's charting library (served from its installed path).
# libraft and libuv run the Raft cluster (--cluster).
JOBQ_PACKAGES="build-essential cmake pkg-config libzmq3-dev libczmq-dev \
libmsgpack-dev libcmocka-dev libjansson-dev liblmdb-dev zlib1g-dev libsystemd-dev libmicrohttpd-dev \
libsodium-dev libraft-dev libuv1-dev libjs-chart.js python3-zmq python3-msgpack \
python3-pytest python3-mypy python3-pip python3-venv procps scdoc systemd clang libclang-rt-14-dev"

# Only the tests need a browser (the dashboard's tests drive Debian's
# chromium through chromedriver) and Prometheus' parser.
JOBQ_TEST_PACKAGES="chromium chromium-driver python3-selenium python3-prometheus-client"

jobq_install_deps() {
    local missing=() p
    for p in $JOBQ_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing: ${missing[*]}" >&2
    $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
}

# jobq_build DIR [cmake args...]: configure and build into DIR.
jobq_build() {
    local dir=$1
    shift
    cmake -S "$JOBQ_TOP" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null &&
        cmake --build "$dir" -j"$(nproc)"
}
