"""The documentation as users read it: every ```python snippet of README.md and docs/ runs, the docs build with
Sphinx with warnings as errors, and the API reference documents exactly the public names.

A snippet says how it runs with a word after the language (GitHub and Sphinx highlight by the first word only):

    ```python            runs as written, without privileges, in a process of its own
    ```python root       runs as written, as root, in a network namespace of its own (a TUN device needs one)
    ```python peer       one end of a tunnel: runs as written in one namespace, and with its addresses swapped
                         (as its text says the peer does) in a second one joined to the first by a veth pair;
                         the test pings across the tunnel, then ends both ends with SIGTERM
    ```python fragment   a piece of a larger program (names defined elsewhere): compiled only
    ```python windows    Windows-only: compiled only

Any other word fails the collection test, so no snippet is skipped without saying so. Each snippet runs in a
new interpreter (``python -c``), in an empty temporary directory, within a timeout."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import fasttun
import fasttun.errors
from conftest import IN_CI, require_root_environment
from icmp_ping import ping

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MODES = ("run", "root", "peer", "fragment", "windows")
FENCE = re.compile(r"^```python([^\n`]*)\n(.*?)^```[ \t]*$", re.M | re.S)
TIMEOUT = 30


@dataclass(frozen=True)
class Snippet:
    path: Path
    line: int
    mode: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def snippets() -> list[Snippet]:
    found = []
    for path in documents():
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            words = match.group(1).split()
            found.append(Snippet(path, text.count("\n", 0, match.start()) + 1, words[0] if words else "run",
                                 match.group(2)))
    return found


SNIPPETS = snippets()


def by_mode(*modes: str) -> list[Snippet]:
    return [s for s in SNIPPETS if s.mode in modes]


def env() -> dict[str, str]:
    """The environment of a snippet's interpreter: this one's, with the fasttun this test imports first on the path
    (a checkout's in-place build under PYTHONPATH=src, or the installed package)."""
    out = dict(os.environ)
    here = str(Path(fasttun.__file__).resolve().parent.parent)
    out["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [out.get("PYTHONPATH")])])
    return out


def run(argv: list[str], snippet: Snippet, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, text=True, timeout=TIMEOUT,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{snippet.id} failed:\n{snippet.code}\n--- stdout\n{proc.stdout}\n--- stderr\n" \
                                 f"{proc.stderr}"
    return proc


def test_every_snippet_says_how_it_runs() -> None:
    assert len(SNIPPETS) >= 20, "the README and the guides hold more snippets than this: is the pattern broken?"
    unknown = [f"{s.id}: ```python {s.mode}" for s in SNIPPETS if s.mode not in MODES]
    assert not unknown, unknown
    # Other spellings of a Python fence would escape this test.
    for path in documents():
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            assert not re.match(r"^\s*```\s*(py|py3|python3|pycon|ipython)\b", line), f"{path}:{n}: use ```python"


def test_the_readme_quick_start_runs_as_written() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Quick start")
    end = text.find("\n## ", start + 1)
    modes = [s.mode for s in SNIPPETS if s.path.name == "README.md" and start < text.index(s.code) < end]
    assert modes and all(m in ("run", "root") for m in modes), modes


@pytest.mark.parametrize("snippet", by_mode(*MODES), ids=lambda s: s.id)
def test_snippet_compiles(snippet: Snippet) -> None:
    compile(snippet.code, snippet.id, "exec", flags=ast.PyCF_ONLY_AST)


@pytest.mark.parametrize("snippet", by_mode("run"), ids=lambda s: s.id)
def test_snippet_runs(snippet: Snippet, tmp_path: Path) -> None:
    run([sys.executable, "-c", snippet.code], snippet, tmp_path)


def netns_add(name: str) -> None:
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)


def netns_del(*names: str) -> None:
    for name in names:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.mark.root
@pytest.mark.parametrize("snippet", by_mode("root"), ids=lambda s: s.id)
def test_snippet_runs_as_root_in_a_namespace(snippet: Snippet, tmp_path: Path) -> None:
    require_root_environment()
    name = f"ftdoc-{os.getpid()}-{snippet.line}"
    netns_add(name)
    try:
        run(["ip", "netns", "exec", name, sys.executable, "-c", snippet.code], snippet, tmp_path)
    finally:
        netns_del(name)


def swapped(code: str) -> str:
    """The peer's copy of a tunnel end: its TUN address .1 -> .2, and its UDP bind and peer addresses exchanged."""
    code = re.sub(r"(10\.99\.0\.)1/", r"\g<1>2/", code)
    return code.replace("10.200.0.1", "\0").replace("10.200.0.2", "10.200.0.1").replace("\0", "10.200.0.2")


WINDOWS_SIGNALS = Path(__file__).resolve().parent / "windows_signals"


@pytest.mark.root
@pytest.mark.parametrize("signals", ["posix", "windows"])
@pytest.mark.parametrize("snippet", by_mode("peer"), ids=lambda s: s.id)
def test_tunnel_snippet_carries_pings_between_two_namespaces(snippet: Snippet, signals: str, tmp_path: Path) -> None:
    # "windows": the interpreter's signal module and asyncio loops as Windows has them (tests/windows_signals)
    require_root_environment()
    environ = env()
    if signals == "windows":
        environ["PYTHONPATH"] = os.pathsep.join([str(WINDOWS_SIGNALS), environ["PYTHONPATH"]])
    assert "10.99.0.1/" in snippet.code and "10.200.0.1" in snippet.code and "10.200.0.2" in snippet.code, \
        "a peer snippet is one end of a tunnel 10.99.0.1 <-> 10.99.0.2 over UDP between 10.200.0.1 and .2"
    a, b = f"ftdoc-{os.getpid()}-a", f"ftdoc-{os.getpid()}-b"
    netns_add(a)
    netns_add(b)
    procs: list[subprocess.Popen[str]] = []
    try:
        subprocess.run(["ip", "link", "add", "ftdoc-a", "netns", a, "type", "veth", "peer", "ftdoc-b", "netns", b],
                       check=True, capture_output=True)
        for ns, dev, addr in ((a, "ftdoc-a", "10.200.0.1/24"), (b, "ftdoc-b", "10.200.0.2/24")):
            subprocess.run(["ip", "-n", ns, "address", "add", addr, "dev", dev], check=True, capture_output=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True, capture_output=True)
        for ns, code in ((a, snippet.code), (b, swapped(snippet.code))):
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code], cwd=tmp_path,
                                          env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        answered = 0
        while answered == 0 and time.monotonic() < deadline and all(p.poll() is None for p in procs):
            try:
                answered = ping("10.99.0.2", count=1, timeout=0.5, netns=a)
            except OSError:                        # no route yet: the snippet has not brought its device up
                time.sleep(0.1)
        assert answered == 1 and ping("10.99.0.2", count=3, netns=a) == 3, "no echo reply across the tunnel"
        assert ping("10.99.0.1", count=3, netns=b) == 3
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)   # ip netns exec passes it on (it execs the interpreter)
        outputs = [proc.communicate(timeout=TIMEOUT) for proc in procs]
        netns_del(a, b)
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, f"{snippet.id} failed:\n{out}\n{err}"


# ---- the API reference against the package ----

API_PAGE = DOCS / "api.md"
MODULES = ("fasttun", "fasttun.aio", "fasttun.events", "fasttun.pcap", "fasttun.icmp", "fasttun.errors")
DIRECTIVE = re.compile(r"^\.\. auto(?:class|function|exception|data|module)::\s+(\S+)", re.M)


def public_names(module_name: str) -> set[str]:
    """A module's public names, as its __all__ lists them (every documented module has one)."""
    module = __import__(module_name, fromlist=["_"])
    assert hasattr(module, "__all__"), f"{module_name} has no __all__: say what is public"
    return {f"{module_name}.{n}" for n in module.__all__}


def documented() -> set[str]:
    return set(DIRECTIVE.findall(API_PAGE.read_text(encoding="utf-8")))


def test_the_api_reference_documents_every_public_name() -> None:
    # fasttun.errors' classes are fasttun's own (re-exported there), documented once, under fasttun.
    assert set(fasttun.errors.__all__) <= set(fasttun.__all__)
    names = set().union(*(public_names(m) for m in MODULES if m != "fasttun.errors")) | set(MODULES)
    assert names - documented() == set()


def test_every_name_the_api_reference_documents_exists() -> None:
    for dotted in documented():
        module_name, _, attr = dotted.rpartition(".")
        if dotted in MODULES:
            __import__(dotted)
            continue
        module = __import__(module_name, fromlist=["_"])
        assert hasattr(module, attr), f"docs/api.md documents {dotted}, which does not exist"
        assert dotted in public_names(module_name), f"docs/api.md documents {dotted}, which is not public"


# ---- the Sphinx build ----

def test_docs_build_with_warnings_as_errors(tmp_path: Path) -> None:
    try:
        import myst_parser  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError as exc:
        why = f"{exc.name} is not installed (pip install '.[docs]')"
        if IN_CI:
            pytest.fail(f"CI must build the docs: {why}")
        pytest.skip(why)
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(DOCS),
                           str(tmp_path / "html")], env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    api = (tmp_path / "html" / "api.html").read_text(encoding="utf-8")
    # The reference is generated from the docstrings, not an empty page: a member and a docstring's words.
    assert "start_reader" in api and "Packets received together" in api


def test_the_cli_guide_lists_every_bench_scenario() -> None:
    from fasttun._bench.catalog import KNOWN

    text = (DOCS / "guides" / "cli.md").read_text(encoding="utf-8")
    table = text[text.index("| scenario | needs |"):]
    listed = set(re.findall(r"^\| `([a-z-]+)`(?:, `([a-z-]+)`)? \|", table, re.M))
    names = {n for pair in listed for n in pair if n}
    assert set(KNOWN) == names, set(KNOWN) ^ names
