"""rnnfast's benchmark suite: ``python -m rnnfast.bench`` (or ``rnnfast-bench``); ``--help``
lists the options and benchmarks/README.md describes the method and the output fields.

- grids.py: the grids (JSON files in grids/) and the FLOPs of a row;
- peers.py: the problem of a row, rnnfast and its peers behind one interface;
- runner.py: the method (check, warm-up, interleaved repeats, time budget);
- report.py: environment, table, CSV, --compare, --plot;
- cli.py: the command line.
"""

from .cli import main

__all__ = ["main"]
