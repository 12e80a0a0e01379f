"""jobq_backend: the PEP 517 build backend of the jobq Python package.

pip builds a package in an isolated environment holding only what
``[build-system] requires`` names, fetched from PyPI. Naming nothing and
building with the standard library alone lets ``pip install
clients/python`` work offline, with Debian's pip and nothing else. The
package is pure Python, so a wheel is a zip of ``jobq/`` plus the
``.dist-info`` files the wheel format (PEP 427) and the core metadata
specification ask for; the metadata comes from pyproject.toml, the
version from jobq/_version.py.
"""
import base64
import hashlib
import io
import re
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "jobq"
# Fixed member times make two builds of the same tree the same bytes.
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

ConfigSettings = Optional[Dict[str, Any]]


def _project() -> Dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        project: Dict[str, Any] = tomllib.load(f)["project"]
    return project


def _version() -> str:
    text = (ROOT / PACKAGE / "_version.py").read_text()
    m = re.search(r'^__version__ = "([^"]+)"$', text, re.M)
    if m is None:
        raise RuntimeError("jobq/_version.py has no __version__ line")
    return m.group(1)


def _dist_info() -> str:
    return f"{PACKAGE}-{_version()}.dist-info"


def _metadata() -> str:
    p = _project()
    lines = ["Metadata-Version: 2.1", f"Name: {p['name']}", f"Version: {_version()}",
             f"Summary: {p['description']}", f"Requires-Python: {p['requires-python']}"]
    lines += [f"Requires-Dist: {d}" for d in p.get("dependencies", [])]
    return "\n".join(lines) + "\n"


def _entry_points() -> str:
    scripts = _project().get("scripts", {})
    return "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())


def _metadata_files() -> Dict[str, bytes]:
    info = _dist_info()
    wheel = ("Wheel-Version: 1.0\nGenerator: jobq_backend\nRoot-Is-Purelib: true\n"
             "Tag: py3-none-any\n")
    return {f"{info}/METADATA": _metadata().encode(), f"{info}/WHEEL": wheel.encode(),
            f"{info}/entry_points.txt": _entry_points().encode()}


def _package_files() -> Dict[str, bytes]:
    files = {}
    for path in sorted((ROOT / PACKAGE).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".typed"):
            files[path.relative_to(ROOT).as_posix()] = path.read_bytes()
    return files


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def _write_wheel(directory: str, files: Dict[str, bytes]) -> str:
    files = {**files, **_metadata_files()}
    record_name = f"{_dist_info()}/RECORD"
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in files.items())
    files[record_name] = (record + f"{record_name},,\n").encode()
    name = f"{PACKAGE}-{_version()}-py3-none-any.whl"
    with zipfile.ZipFile(Path(directory) / name, "w", zipfile.ZIP_DEFLATED) as whl:
        for member, data in files.items():
            info = zipfile.ZipInfo(member, _ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(info, data)
    return name


def get_requires_for_build_wheel(config_settings: ConfigSettings = None) -> List[str]:
    """Nothing beyond the standard library."""
    return []


def get_requires_for_build_sdist(config_settings: ConfigSettings = None) -> List[str]:
    """Nothing beyond the standard library."""
    return []


def get_requires_for_build_editable(config_settings: ConfigSettings = None) -> List[str]:
    """Nothing beyond the standard library."""
    return []


def prepare_metadata_for_build_wheel(metadata_directory: str,
                                     config_settings: ConfigSettings = None) -> str:
    """Writes the .dist-info directory pip reads before building."""
    for name, data in _metadata_files().items():
        path = Path(metadata_directory) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return _dist_info()


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory: str, config_settings: ConfigSettings = None,
                metadata_directory: Optional[str] = None) -> str:
    """The package as a pure-Python wheel."""
    return _write_wheel(wheel_directory, _package_files())


def build_editable(wheel_directory: str, config_settings: ConfigSettings = None,
                   metadata_directory: Optional[str] = None) -> str:
    """A wheel holding a .pth file that puts this directory on sys.path,
    so the installed package is the checkout's (PEP 660)."""
    return _write_wheel(wheel_directory, {f"__editable__.{PACKAGE}.pth": f"{ROOT}\n".encode()})


def build_sdist(sdist_directory: str, config_settings: ConfigSettings = None) -> str:
    """The source: pyproject.toml, this backend and the package."""
    base = f"{PACKAGE}-{_version()}"
    files = {"pyproject.toml": (ROOT / "pyproject.toml").read_bytes(),
             "build_backend/jobq_backend.py": Path(__file__).read_bytes(),
             "PKG-INFO": _metadata().encode(), **_package_files()}
    name = f"{base}.tar.gz"
    with tarfile.open(Path(sdist_directory) / name, "w:gz") as tar:
        for member, data in files.items():
            info = tarfile.TarInfo(f"{base}/{member}")
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return name
