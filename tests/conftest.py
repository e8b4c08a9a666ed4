"""Shared fixtures. The tests are grouped by level, each folder testing one layer of rnnfast
(ARCHITECTURE.md, "Tests"): reference/ (the NumPy oracle and the cell registry), kernels/ (the
compiled kernels and bindings, CPU and CUDA), functional/ (rnnfast.functional), frontends/
(layers and cells), adapters/ (rnnfast.torch), bench/ (the benchmark suite and examples)."""

import pathlib
import sys

# The test files share helpers in tests/_util.py. pytest's default import mode already puts each
# test's folder on sys.path, not this one: add it, so that `import _util` works from every level.
_here = str(pathlib.Path(__file__).resolve().parent)
if _here not in sys.path:
    sys.path.insert(0, _here)

import pytest  # noqa: E402


def _available_isas():
    from rnnfast import _cpu

    return _cpu.available_isas()


@pytest.fixture(params=_available_isas())
def isa(request):
    """Runs the test once per instruction set compiled into this build and supported by the CPU
    (baseline, avx2, avx512 on x86-64), then restores the one in use."""
    from rnnfast import _cpu

    before = _cpu.active_isa()
    _cpu.set_isa(request.param)
    yield request.param
    _cpu.set_isa(before)


@pytest.fixture(params=["cpu", pytest.param("cuda-emulated", marks=pytest.mark.slow)])
def backend(request):
    """Runs the test once per backend that NumPy arrays can reach: the CPU kernels, and the
    CUDA kernels built for the host (rnnfast.backends.emulate_cuda). Yields the backend's name."""
    from rnnfast import backends

    if request.param == "cpu":
        yield "cpu"
        return
    with backends.emulate_cuda():
        yield request.param


@pytest.fixture
def fake_cupy(monkeypatch):
    """A stand-in for CuPy over the emulated CUDA kernels, for this test only (tests/_fake_cupy.py
    says what it shows and what it does not). Yields the module, installed as ``cupy``."""
    import _fake_cupy

    yield _fake_cupy.install(monkeypatch)


@pytest.fixture(params=["stand-in", pytest.param("cupy", marks=pytest.mark.gpu)])
def cupy_module(request, monkeypatch):
    """CuPy for the tests of the layers and cells on a GPU device: the stand-in (``fake_cupy``)
    everywhere, and CuPy itself where it, rnnfast's CUDA module and a GPU are all present
    (skipped elsewhere), so that a machine with a GPU runs the same tests for real."""
    if request.param == "stand-in":
        import _fake_cupy

        yield _fake_cupy.install(monkeypatch)
        return
    cupy = pytest.importorskip("cupy")
    from rnnfast import backends

    try:
        backends.cuda_backend(cupy)
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no GPU")
    except Exception as error:  # no _cuda module, no driver, no device: whatever CuPy raises
        pytest.skip(f"no usable GPU for CuPy and rnnfast here: {error}")
    yield cupy
