import pathlib
import sys

# The test files share helpers in tests/_util.py. pytest's default import mode already puts this
# folder on sys.path; doing it here too keeps `import _util` working under --import-mode=importlib.
_here = str(pathlib.Path(__file__).resolve().parent)
if _here not in sys.path:
    sys.path.insert(0, _here)
