"""Every public C++ header (cpp/include/rnnfast) compiles on its own, with nothing included
before it: a header that leans on what its includers happened to include first breaks the next
file that includes it alone (cells.h used std::initializer_list without its header)."""

import pathlib
import shutil
import subprocess

import pytest

INCLUDE = pathlib.Path(__file__).resolve().parents[2] / "cpp" / "include"
HEADERS = sorted(p.relative_to(INCLUDE).as_posix() for p in INCLUDE.rglob("*.h"))
COMPILER = shutil.which("c++") or shutil.which("g++")


def test_the_headers_are_found():
    assert "rnnfast/cells/cells.h" in HEADERS and len(HEADERS) >= 10


@pytest.mark.skipif(COMPILER is None, reason="no C++ compiler on PATH")
@pytest.mark.parametrize("header", HEADERS)
def test_header_compiles_alone(tmp_path, header):
    source = tmp_path / "alone.cpp"
    source.write_text(f'#include "{header}"\n')
    proc = subprocess.run([COMPILER, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra",
                           f"-I{INCLUDE}", str(source)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
