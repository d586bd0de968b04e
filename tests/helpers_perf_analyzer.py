"""A perf_analyzer command that runs on this machine; `tests/install_test_tools.py` fetches it, the tests only look.

PyPI's perf-analyzer wheels (2.58 and later) are tagged manylinux_2_38: they need glibc 2.38 and GCC 13's
libstdc++. On an older system (Debian 12 has glibc 2.36) pip installs the 0.1.0 placeholder instead, which
has no binary. Then `perf_analyzer_command(fetch=True)` downloads the real wheel with `pip download
--platform`, and, if the binary cannot load against the system's libraries, downloads Debian 13's libc6,
libstdc++6 and libgcc-s1 with `apt-get download` and runs the binary under their dynamic loader. Nothing is
installed system-wide: everything lives in a cache directory. Without `fetch` (as the tests call it) only
what is already there is used. Set PERF_ANALYZER to a command line to use another build.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

VERSION = "2.60.0"
DEBIAN_SUITE = "trixie"
SYSTEM_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
RUNTIME_PACKAGES = ("libc6", "libstdc++6", "libgcc-s1")
_LOAD_FAILURES = ("GLIBC", "GLIBCXX", "error while loading shared libraries")
INSTALL_HINT = "run `python tests/install_test_tools.py` (the README's test command does)"


class PerfAnalyzerUnavailable(RuntimeError):
    """No perf_analyzer could be found or fetched; the message says which step failed and why."""


def perf_analyzer_command(fetch: bool = False) -> list[str]:
    """The argv prefix that runs perf_analyzer (the binary itself, not the wrapper that drops its exit code).

    With `fetch`, what is missing is downloaded into the cache; without it, PerfAnalyzerUnavailable says so.
    """
    explicit = os.environ.get("PERF_ANALYZER")
    if explicit:
        return shlex.split(explicit)
    cache = _cache_dir()
    binary = _installed_binary() or _downloaded_binary(cache, fetch)
    if _loads([str(binary)]):
        return [str(binary)]
    loader, libraries = _debian_runtime(cache, fetch)
    triplet = f"{platform.machine()}-linux-gnu"
    system = [p for p in (f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib64", "/usr/lib64") if Path(p).is_dir()]
    command = [str(loader), "--library-path", ":".join([str(libraries), *system]), str(binary)]
    if not _loads(command):
        raise PerfAnalyzerUnavailable(f"perf_analyzer does not start even with Debian {DEBIAN_SUITE}'s libraries")
    return command


def _cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "mobilenet-serve" / f"perf-analyzer-{VERSION}"


def _installed_binary() -> Path | None:
    spec = importlib.util.find_spec("perf_analyzer")
    if spec is None or spec.origin is None:
        return None
    binary = Path(spec.origin).parent / "bin" / "perf_analyzer"
    return binary if binary.is_file() else None


def _downloaded_binary(cache: Path, fetch: bool) -> Path:
    binary = cache / "perf_analyzer"
    if binary.is_file():
        return binary
    if not fetch:
        raise PerfAnalyzerUnavailable(f"{binary} is not there: {INSTALL_HINT}")
    machine = platform.machine()
    with tempfile.TemporaryDirectory(dir=_made(cache.parent)) as scratch:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", scratch]
        pip += ["--platform", f"manylinux_2_38_{machine}", f"perf-analyzer=={VERSION}"]
        _run(pip, "pip download of the perf-analyzer wheel")
        wheels = list(Path(scratch).glob("perf_analyzer-*.whl"))
        if not wheels:
            raise PerfAnalyzerUnavailable(f"pip download left no perf_analyzer wheel for {machine}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extract("perf_analyzer/bin/perf_analyzer", scratch)
        extracted = Path(scratch) / "perf_analyzer" / "bin" / "perf_analyzer"
        extracted.chmod(0o755)
        _made(cache)
        os.replace(extracted, binary)
    return binary


def _debian_runtime(cache: Path, fetch: bool) -> tuple[Path, Path]:
    """Debian's newer libc and libstdc++, unpacked into the cache: (dynamic loader, library directory)."""
    root = cache / f"debian-{DEBIAN_SUITE}"
    libraries = root / "usr" / "lib" / f"{platform.machine()}-linux-gnu"
    loader = next(iter(sorted(libraries.glob("ld-linux*.so.*"))), None)
    if loader is not None:
        return loader, libraries
    if not fetch:
        raise PerfAnalyzerUnavailable(f"the binary needs glibc 2.38 and {root} is not there: {INSTALL_HINT}")
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise PerfAnalyzerUnavailable(f"the perf_analyzer binary needs glibc 2.38, and {tool} is not here")
    if not DEBIAN_KEYRING.is_file():
        raise PerfAnalyzerUnavailable(f"the perf_analyzer binary needs glibc 2.38, and {DEBIAN_KEYRING} is missing")
    with tempfile.TemporaryDirectory(dir=_made(cache)) as scratch:
        apt = _private_apt(Path(scratch))
        _run([*apt, "update"], f"apt-get update for Debian {DEBIAN_SUITE}")
        debs = Path(scratch) / "debs"
        debs.mkdir()
        _run([*apt, "download", *RUNTIME_PACKAGES], f"apt-get download {' '.join(RUNTIME_PACKAGES)}", cwd=debs)
        unpacked = Path(scratch) / "root"
        for deb in sorted(debs.glob("*.deb")):
            _run(["dpkg-deb", "-x", str(deb), str(unpacked)], f"dpkg-deb -x {deb.name}")
        os.replace(unpacked, root)
    loader = next(iter(sorted(libraries.glob("ld-linux*.so.*"))), None)
    if loader is None:
        raise PerfAnalyzerUnavailable(f"Debian {DEBIAN_SUITE}'s libc6 has no dynamic loader in {libraries}")
    return loader, libraries


def _debian_mirror() -> str:
    """The Debian archive this machine's apt already uses (not its security archive)."""
    if SYSTEM_SOURCES.exists():
        for line in SYSTEM_SOURCES.read_text(encoding="utf-8").splitlines():
            if line.startswith("URIs:"):
                uri = line.split(":", 1)[1].strip()
                if not uri.rstrip("/").endswith("-security"):
                    return uri
    raise PerfAnalyzerUnavailable(f"no Debian archive is configured in {SYSTEM_SOURCES}")


def _private_apt(state: Path) -> list[str]:
    """apt-get with its own sources, lists and cache, so the system's apt state is left alone."""
    sources = _made(state / "sources")
    (sources / f"{DEBIAN_SUITE}.sources").write_text(
        f"Types: deb\nURIs: {_debian_mirror()}\nSuites: {DEBIAN_SUITE}\nComponents: main\n"
        f"Signed-By: {DEBIAN_KEYRING}\n",
        encoding="utf-8",
    )
    (state / "status").touch()
    _made(state / "lists" / "partial")
    _made(state / "cache" / "archives" / "partial")
    options = {
        "Dir::Etc::SourceList": "/dev/null",
        "Dir::Etc::SourceParts": str(sources),
        "Dir::State::Lists": str(state / "lists"),
        "Dir::State::status": str(state / "status"),
        "Dir::Cache": str(state / "cache"),
    }
    if os.geteuid() == 0:
        # apt's unprivileged download user cannot write into a private directory that root made.
        options["APT::Sandbox::User"] = "root"
    command = ["apt-get", "-q"]
    for key, value in options.items():
        command += ["-o", f"{key}={value}"]
    return command


def _loads(command: list[str]) -> bool:
    """True when the dynamic loader resolves every library and symbol version the binary needs."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return False
    return not any(marker in result.stderr + result.stdout for marker in _LOAD_FAILURES)


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PerfAnalyzerUnavailable(f"{what} failed: {exc}") from exc
    if result.returncode != 0:
        raise PerfAnalyzerUnavailable(f"{what} exited {result.returncode}:\n{result.stderr[-2000:]}")


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
