#!/usr/bin/env bash
# test_package.sh: builds the Debian packages with scripts/package into a
# temporary directory and checks what each holds (dpkg-deb -c, -I, -e).
# Slow (a whole build), so it runs only when asked: JOBQ_TEST_PACKAGE=1;
# otherwise it exits 77, which ctest reports as skipped.
set -euo pipefail
if [ "${JOBQ_TEST_PACKAGE:-0}" != 1 ]; then
    echo "skipped: set JOBQ_TEST_PACKAGE=1 to build the Debian packages"
    exit 77
fi
top=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d /tmp/jobq-package.XXXXXX)
trap 'rm -rf "$out"' EXIT

JOBQ_DEB_DIR="$out" "$top/scripts/package"

version=$(dpkg-parsechangelog -l "$top/debian/changelog" -S Version)
arch=$(dpkg --print-architecture)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
fail=0
# contains GREP-ARGS...: grep -q on the whole of stdin. A pipe into grep -q
# fails under pipefail when grep quits at its match while the writer still
# writes (SIGPIPE): read everything first.
contains() {
    local text
    text=$(cat)
    grep -q "$@" <<<"$text"
}
check() { # PACKAGE PATH...: each PATH is in PACKAGE's .deb (of this or all architectures)
    local deb="$out/${1}_${version}_${arch}.deb" p
    [ -f "$deb" ] || deb="$out/${1}_${version}_all.deb"
    shift
    [ -f "$deb" ] || { echo "FAIL: $deb was not built"; fail=1; return; }
    local list
    list=$(dpkg-deb -c "$deb" | awk '{print $6}')
    for p in "$@"; do
        grep -qx "./$p" <<<"$list" || { echo "FAIL: $(basename "$deb") lacks /$p"; fail=1; }
    done
}
check jobqd usr/sbin/jobqd lib/systemd/system/jobqd.service usr/lib/sysusers.d/jobq.conf \
    usr/share/man/man8/jobqd.8.gz usr/share/jobq/web/index.html usr/share/jobq/web/job.html \
    usr/share/jobq/web/dashboard.css usr/share/jobq/web/common.js \
    usr/share/jobq/web/dashboard.js usr/share/jobq/web/job.js
check jobq usr/bin/jobq usr/share/man/man1/jobq.1.gz usr/bin/jobq-worker \
    usr/share/man/man1/jobq-worker.1.gz
check libjobq0 "usr/lib/$multiarch/libjobq.so.0.1.0" "usr/lib/$multiarch/libjobq.so.0"
check libjobq-dev usr/include/jobq/jobq.h usr/include/jobq/wire.h \
    "usr/lib/$multiarch/libjobq.a" "usr/lib/$multiarch/libjobq.so" \
    "usr/lib/$multiarch/pkgconfig/jobq.pc" "usr/lib/$multiarch/cmake/jobq/jobqConfig.cmake"
check python3-jobq usr/bin/jobq-py usr/share/man/man1/jobq-py.1.gz usr/lib/python3/dist-packages/jobq/__init__.py \
    usr/lib/python3/dist-packages/jobq/cli/__init__.py usr/lib/python3/dist-packages/jobq/py.typed
dpkg-deb -I "$out/python3-jobq_${version}_all.deb" | contains "python3-zmq" ||
    { echo "FAIL: python3-jobq does not depend on python3-zmq"; fail=1; }

# The unit runs the packaged daemon; the user is made before it starts.
ctl="$out/ctl"
dpkg-deb -e "$out/jobqd_${version}_${arch}.deb" "$ctl"
dpkg-deb --fsys-tarfile "$out/jobqd_${version}_${arch}.deb" |
    tar -xOf - ./lib/systemd/system/jobqd.service | contains '^ExecStart=/usr/sbin/jobqd ' ||
    { echo "FAIL: the packaged unit does not run /usr/sbin/jobqd"; fail=1; }
grep -q 'systemd-sysusers.*jobq.conf' "$ctl/postinst" ||
    { echo "FAIL: jobqd's postinst does not create the user"; fail=1; }
grep -q "deb-systemd-helper enable 'jobqd.service'" "$ctl/postinst" ||
    { echo "FAIL: jobqd's postinst does not enable the unit"; fail=1; }
dpkg-deb -I "$out/libjobq-dev_${version}_${arch}.deb" | contains "libjobq0 (= $version)" ||
    { echo "FAIL: libjobq-dev does not depend on libjobq0 of its version"; fail=1; }
dpkg-deb --fsys-tarfile "$out/libjobq-dev_${version}_${arch}.deb" |
    tar -xOf - "./usr/lib/$multiarch/pkgconfig/jobq.pc" | contains -x "libdir=/usr/lib/$multiarch" ||
    { echo "FAIL: jobq.pc does not name /usr/lib/$multiarch"; fail=1; }
# The packaged programs serve and look where the unit puts the daemon,
# never in the tree they were built in.
mkdir "$out/root"
dpkg-deb -x "$out/jobq_${version}_${arch}.deb" "$out/root"
dpkg-deb -x "$out/jobqd_${version}_${arch}.deb" "$out/root"
dpkg-deb -x "$out/python3-jobq_${version}_all.deb" "$out/root"
"$out/root/usr/bin/jobq" --help | contains 'ipc:///run/jobq/jobq.sock' ||
    { echo "FAIL: the packaged jobq does not default to ipc:///run/jobq/jobq.sock"; fail=1; }
"$out/root/usr/bin/jobq-worker" --help | contains 'ipc:///run/jobq/workers.sock' ||
    { echo "FAIL: the packaged jobq-worker does not default to ipc:///run/jobq/workers.sock"; fail=1; }
"$out/root/usr/sbin/jobqd" --help | contains '/var/lib/jobq' ||
    { echo "FAIL: the packaged jobqd does not default to /var/lib/jobq"; fail=1; }
PYTHONPATH="$out/root/usr/lib/python3/dist-packages" /usr/bin/python3 "$out/root/usr/bin/jobq-py" --help |
    contains 'ipc:///run/jobq/jobq.sock' ||
    { echo "FAIL: the packaged jobq-py does not default to ipc:///run/jobq/jobq.sock"; fail=1; }
[ "$fail" = 0 ] && echo "packages built and checked"
exit "$fail"
