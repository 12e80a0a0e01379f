"""`cmake --install` of the build into a temporary prefix, used as a user
would: what is installed (programs, libjobq shared and static, headers,
jobq.pc, the CMake package, man pages, the systemd unit and the sysusers
file); a C program built with `pkg-config --cflags --libs jobq` (shared,
and static with --static) and through find_package(jobq), each run against
the installed jobqd started here; the unit checked by systemd-analyze;
the Python package and jobq-py as installed, and `pip install
clients/python` into a virtual environment, offline (and editable).

Run: /usr/bin/python3 -m pytest tests/python/test_install.py
Needs: cmake, a C compiler, pkg-config, python3-venv and python3-pip
(scripts/deps.sh installs them).
Everything lives in one temporary directory, removed at the end; the
daemon is stopped by each test that starts it.
"""
import glob
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time

import pytest
from jobqd_stop import stop_jobqd

BUILD = os.environ.get("JOBQ_BUILD_DIR", "/work/main/build")
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
CLIENT_C = os.path.join(SRC, "tests", "install", "client.c")
CONSUMER = os.path.join(SRC, "tests", "install", "consumer")
CMAKE = shutil.which("cmake") or "cmake"


def sh(args, timeout=120, **kw):
    """Runs args; fails the test with its output unless it exits 0."""
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, (
        f"{shlex.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


class Install:
    """The build installed under a fresh prefix."""

    def __init__(self, top):
        self.top = top
        self.prefix = os.path.join(top, "prefix")
        sh([CMAKE, "--install", BUILD, "--prefix", self.prefix])
        pcs = glob.glob(os.path.join(self.prefix, "lib*", "**", "jobq.pc"), recursive=True)
        assert len(pcs) == 1, f"jobq.pc not installed (found {pcs})"
        self.pkgconfig_dir = os.path.dirname(pcs[0])
        self.libdir = os.path.dirname(self.pkgconfig_dir)
        self.jobqd = os.path.join(self.prefix, "sbin", "jobqd")
        self.jobq = os.path.join(self.prefix, "bin", "jobq")

    def env(self):
        env = dict(os.environ)
        env["PKG_CONFIG_PATH"] = self.pkgconfig_dir
        env["LD_LIBRARY_PATH"] = self.libdir
        env.pop("JOBQ_ENDPOINT", None)
        return env

    def pkg_config(self, *args):
        return shlex.split(sh(["pkg-config", *args, "jobq"], env=self.env()).stdout)


@pytest.fixture(scope="module")
def inst():
    top = tempfile.mkdtemp(prefix="jobq-install-")
    try:
        yield Install(top)
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def daemon(inst, tmp_path):
    """The installed jobqd on a private data directory; yields its endpoint."""
    data = tmp_path / "data"
    endpoint = f"ipc://{data}/jobq.sock"
    log = open(tmp_path / "jobqd.log", "w+")
    proc = subprocess.Popen([inst.jobqd, "--data-dir", str(data)], stdout=log,
                            stderr=subprocess.STDOUT, env=inst.env())
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                log.seek(0)
                pytest.fail(f"installed jobqd exited with {proc.returncode}: {log.read()}")
            ping = subprocess.run([inst.jobq, "-s", endpoint, "-t", "0.5", "ping"],
                                  capture_output=True, env=inst.env(), timeout=30)
            if ping.returncode == 0:
                break
            assert time.monotonic() < deadline, "installed jobqd did not answer within 20 s"
            time.sleep(0.05)
        yield endpoint
    finally:
        rc = stop_jobqd(proc)
        log.close()
        assert rc == 0, f"jobqd exited with {rc}"


def test_installed_files(inst):
    p = inst.prefix
    for rel in ["bin/jobq", "bin/jobq-worker", "sbin/jobqd"]:
        assert os.access(os.path.join(p, rel), os.X_OK), f"{rel} not installed"
    # The dashboard's pages (jobqd --http serves them from share/jobq/web);
    # Chart.js is Debian's, never installed from here.
    web = ["index.html", "job.html", "dashboard.css", "common.js", "dashboard.js", "job.js"]
    assert sorted(os.listdir(os.path.join(p, "share/jobq/web"))) == sorted(web)
    for rel in ["include/jobq/jobq.h", "include/jobq/wire.h", "lib/systemd/system/jobqd.service",
                "lib/sysusers.d/jobq.conf"]:
        assert os.path.isfile(os.path.join(p, rel)), f"{rel} not installed"
    for name in ["libjobq.a", "libjobq.so", "libjobq.so.0",
                 "cmake/jobq/jobqConfig.cmake", "cmake/jobq/jobqConfigVersion.cmake"]:
        assert os.path.exists(os.path.join(inst.libdir, name)), f"{name} not installed"
    # Every header an installed header includes with quotes is installed too.
    incdir = os.path.join(p, "include", "jobq")
    for h in os.listdir(incdir):
        for line in open(os.path.join(incdir, h)):
            if line.startswith("#include \""):
                dep = line.split('"')[1]
                assert os.path.isfile(os.path.join(incdir, dep)), f"{h} includes {dep}, not installed"
    # The shared library's name carries the major version.
    dyn = sh(["readelf", "-d", os.path.join(inst.libdir, "libjobq.so")]).stdout
    assert "Library soname: [libjobq.so.0]" in dyn, dyn
    # The static library is self-contained: it defines what jobq.h declares
    # from wire.h (no internal library to link beside it).
    syms = sh(["nm", "-g", "--defined-only", os.path.join(inst.libdir, "libjobq.a")]).stdout
    assert " T jobq_code_name" in syms and " T jobq_client_new" in syms
    if shutil.which("scdoc"):
        for rel in ["share/man/man8/jobqd.8", "share/man/man1/jobq.1",
                    "share/man/man1/jobq-worker.1", "share/man/man1/jobq-py.1"]:
            page = os.path.join(p, rel)
            assert os.path.isfile(page), f"{rel} not installed"
            assert open(page).read().lstrip().startswith((".\\\"", ".TH")), f"{rel} is not roff"
    # The installed CLI runs on its own.
    out = sh([inst.jobq, "--help"], env=inst.env()).stdout
    assert out.startswith("Usage: jobq")
    # No path of the build tree leaks into the pkg-config file or the unit.
    for f in [os.path.join(inst.pkgconfig_dir, "jobq.pc"),
              os.path.join(p, "lib/systemd/system/jobqd.service")]:
        text = open(f).read()
        assert BUILD not in text and SRC not in text, f"{f} names the build tree"


def test_pkg_config_program(inst, daemon, tmp_path):
    cflags = inst.pkg_config("--cflags")
    libs = inst.pkg_config("--libs")
    assert "-ljobq" in libs, libs
    exe = str(tmp_path / "client")
    sh(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", exe, CLIENT_C, *cflags, *libs])
    needed = sh(["readelf", "-d", exe]).stdout
    assert "[libjobq.so.0]" in needed, needed
    out = sh([exe, daemon], env=inst.env(), timeout=60).stdout
    assert out.startswith("job ") and out.split()[2] == "success", out
    # The installed CLI sees the same job.
    info = sh([inst.jobq, "-s", daemon, "info", out.split()[1]], env=inst.env()).stdout
    assert "success" in info, info


def test_pkg_config_static_program(inst, daemon, tmp_path):
    cflags = inst.pkg_config("--cflags")
    # --static adds what libjobq.a needs. Debian 12's own libzmq.pc names,
    # in its Libs.private, "libprotokit.a": a file no package ships, which
    # no link can use; such a bare name is dropped (the libraries stay
    # shared: -Bdynamic). -ljobq is taken from the archive (it would
    # otherwise pick libjobq.so).
    libs = [a for a in inst.pkg_config("--static", "--libs")
            if a != "-ljobq" and (a.startswith("-") or os.path.exists(a))]
    for need in ["-lzmq", "-ljansson", "-lmsgpackc", "-lm"]:
        assert need in libs, f"pkg-config --static --libs jobq lacks {need}: {libs}"
    exe = str(tmp_path / "client_static")
    sh(["cc", "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", exe, CLIENT_C, *cflags,
        "-Wl,-Bstatic", f"-L{inst.libdir}", "-ljobq", "-Wl,-Bdynamic", *libs])
    needed = sh(["readelf", "-d", exe]).stdout
    assert "libjobq" not in needed, needed
    out = sh([exe, daemon], env={**inst.env(), "LD_LIBRARY_PATH": ""}, timeout=60).stdout
    assert out.split()[2:] == ["success"], out


def test_cmake_package(inst, daemon, tmp_path):
    build = str(tmp_path / "consumer")
    sh([CMAKE, "-S", CONSUMER, "-B", build, f"-DCMAKE_PREFIX_PATH={inst.prefix}",
        "-DCMAKE_BUILD_TYPE=Release"])
    sh([CMAKE, "--build", build])
    for exe in ["client_shared", "client_static"]:
        out = sh([os.path.join(build, exe), daemon], env=inst.env(), timeout=60).stdout
        assert out.split()[2:] == ["success"], f"{exe}: {out}"
    needed = sh(["readelf", "-d", os.path.join(build, "client_static")]).stdout
    assert "libjobq" not in needed, needed
    # The version file refuses a version this is not compatible with.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(bad LANGUAGES C)\n"
        "find_package(jobq 9.0 REQUIRED)\n")
    proc = subprocess.run([CMAKE, "-S", str(bad), "-B", str(tmp_path / "badbuild"),
                           f"-DCMAKE_PREFIX_PATH={inst.prefix}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "version: 0.1.0" in proc.stderr, proc.stderr


def test_systemd_unit_verifies(inst):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed: the unit is not verified")
    unit = os.path.join(inst.prefix, "lib", "systemd", "system", "jobqd.service")
    text = open(unit).read()
    assert f"ExecStart={inst.jobqd} " in text, text
    for line in ["Type=notify", "User=jobq", "StateDirectory=jobq", "RuntimeDirectory=jobq",
                 "ProtectSystem=strict", "NoNewPrivileges=yes"]:
        assert line in text.splitlines(), f"{line} missing from the unit"
    env = dict(os.environ)
    args = [analyze, "verify"]
    if shutil.which("man") and os.path.isfile(os.path.join(inst.prefix, "share/man/man8/jobqd.8")):
        # Documentation=man:... pages must be found: those just installed.
        env["MANPATH"] = os.path.join(inst.prefix, "share", "man")
    else:
        args.append("--man=no")
    proc = subprocess.run([*args, unit], capture_output=True, text=True, timeout=120, env=env)
    # Warnings (an unknown key, a bad value) exit 0 but are printed.
    complaints = [l for l in (proc.stdout + proc.stderr).splitlines() if "jobqd" in l]
    assert proc.returncode == 0 and not complaints, proc.stdout + proc.stderr


def _python_site(inst):
    sites = glob.glob(os.path.join(inst.prefix, "lib", "python3*", "dist-packages"))
    assert len(sites) == 1, f"the Python package is not installed once (found {sites})"
    return sites[0]


def _submit_and_wait(python, endpoint, env):
    """Runs the installed package's Client in `python`: one job, waited for."""
    code = ("import jobq, sys\n"
            "with jobq.Client(sys.argv[1]) as c:\n"
            "    job = c.submit_job([{'op': 'test.delay', 'args': {'duration': 0}}])\n"
            "    print(job, c.wait(job, timeout=30)['status'])\n")
    out = sh([python, "-c", code, endpoint], env=env, timeout=60).stdout.split()
    assert out[1] == "success", out
    return out[0]


def test_installed_python_package(inst, daemon):
    site = _python_site(inst)
    for rel in ["jobq/__init__.py", "jobq/client.py", "jobq/worker.py", "jobq/py.typed",
                "jobq/cli/__init__.py", "jobq/__main__.py"]:
        assert os.path.isfile(os.path.join(site, rel)), f"{rel} not installed in {site}"
    env = {**inst.env(), "PYTHONPATH": site}
    job = _submit_and_wait("/usr/bin/python3", daemon, env)
    # jobq-py is the command line of the installed package, and sees the job.
    jobq_py = os.path.join(inst.prefix, "bin", "jobq-py")
    assert os.access(jobq_py, os.X_OK), "bin/jobq-py not installed"
    out = sh([jobq_py, "--help"], env=env).stdout
    assert out.startswith("Usage: jobq") and "ipc:///run/jobq/jobq.sock" in out, out
    out = sh([jobq_py, "-s", daemon, "list", "--json", job], env=env).stdout
    assert '"success"' in out, out


def test_pip_install(daemon, tmp_path):
    """pip installs clients/python offline, with no index: its build backend
    needs the standard library alone, its dependencies are Debian's."""
    venv = tmp_path / "venv"
    sh(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)])
    python, pip_env = str(venv / "bin" / "python"), {**os.environ, "PIP_NO_CACHE_DIR": "1"}
    sh([python, "-m", "pip", "install", "-q", "--no-index", os.path.join(SRC, "clients", "python")],
       env=pip_env, timeout=300)
    env = {**os.environ, "PYTHONPATH": ""}
    env.pop("JOBQ_ENDPOINT", None)
    where = sh([python, "-c", "import jobq; print(jobq.__file__)"], env=env, cwd=tmp_path).stdout
    assert where.startswith(str(venv)), f"jobq imported from {where}, not from the venv"
    job = _submit_and_wait(python, daemon, env)
    out = sh([str(venv / "bin" / "jobq-py"), "-s", daemon, "info", job], env=env).stdout
    assert "success" in out, out
    # The package's version is the project's.
    cmake_version = re.search(r"project\(jobq VERSION ([0-9.]+)",
                              open(os.path.join(SRC, "CMakeLists.txt")).read()).group(1)
    version = sh([python, "-c", "import importlib.metadata as m; print(m.version('jobq'))"],
                 env=env, cwd=tmp_path).stdout.strip()
    assert version == cmake_version, (version, cmake_version)
    # An editable install runs the checkout's code.
    sh([python, "-m", "pip", "install", "-q", "--no-index", "-e",
        os.path.join(SRC, "clients", "python")], env=pip_env, timeout=300)
    where = sh([python, "-c", "import jobq; print(jobq.__file__)"], env=env, cwd=tmp_path).stdout
    assert where.strip() == os.path.join(SRC, "clients", "python", "jobq", "__init__.py"), where
