import pathlib
import sys

# The test files share helpers in tests/_util.py. pytest's default import mode already puts this
# folder on sys.path; doing it here too keeps `import _util` working under --import-mode=importlib.
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
