"""The grids the suite runs, and the work each row does.

A grid is a JSON file in this package's ``grids/`` folder (``benchmarks/grids`` in the source
tree links here, so there is one copy): ``{"description", "device", "sets": [...]}``, each set
``{"cells", "modes", "shapes": [[T, B, I, H], ...]}`` with optional ``"layers"`` and
``"directions"`` lists (default [1]). A grid expands to rows: one per cell, shape, layers,
directions and mode, in the file's order.

A grid may also hold speed targets, which the report judges each run by (report.judge_targets):
``"targets": {"dtype": "float32", "list": [...]}``, each ``{"text", "cells", "modes",
"met_if"}`` with an optional ``"shapes"`` (default: every shape of the grid's rows with those
cells and modes). ``met_if`` is a list of alternatives, each a dict of criteria that must all
hold: ``"vs_<peer>": x`` (the peer's ratio, peer time over rnnfast's, at least x),
``"percent_of_peak": p`` (rnnfast at p% or more of the run's SGEMM rate), ``"max_us": t``
(rnnfast's median time, per step in mode step, at most t microseconds). The targets hold for
runs of their dtype only.
"""

import json
import pathlib
from dataclasses import dataclass

from ..cell_registry import SPECS

GRIDS_DIR = pathlib.Path(__file__).resolve().parent / "grids"
MODES = ("inference", "train", "step")


@dataclass(frozen=True)
class Row:
    """One benchmark row. In mode "step" the timed call runs T single steps of a cell and the
    reported times are per step."""

    cell: str
    mode: str
    T: int
    B: int
    I: int  # noqa: E741 (the input size, named as in the shapes)
    H: int
    layers: int = 1
    directions: int = 1

    @property
    def shape(self):
        return (self.T, self.B, self.I, self.H)

    def flops(self):
        """Multiply-adds of the matmuls counted as 2 FLOPs: per layer and direction
        T*B*G*(2*I*H + 2*H*H) forward (layers after the first see I = directions*H); training
        (forward and backward) counts 3x the forward. In mode "step": per step (T = 1)."""
        steps = 1 if self.mode == "step" else self.T
        total = 0
        for layer in range(self.layers):
            inputs = self.I if layer == 0 else self.directions * self.H
            total += self.directions * steps * self.B * SPECS[self.cell].gate_count * (
                2 * inputs * self.H + 2 * self.H * self.H)
        return total * (3 if self.mode == "train" else 1)


def grid_path(name_or_path, device="cpu"):
    """A grid file: a path to a JSON file, or a name of a packaged grid ("default", "full";
    the device is appended: "default_cpu")."""
    path = pathlib.Path(name_or_path)
    if path.suffix == ".json":
        return path
    return GRIDS_DIR / f"{name_or_path}_{device}.json"


def packaged_grids():
    return sorted(p.stem for p in GRIDS_DIR.glob("*.json"))


def load_grid(path):
    """The grid file's rows, as a list of Row, and its description."""
    with open(path) as f:
        grid = json.load(f)
    rows = []
    for s in grid["sets"]:
        for cell in s["cells"]:
            for shape in s["shapes"]:
                for layers in s.get("layers", [1]):
                    for directions in s.get("directions", [1]):
                        for mode in s["modes"]:
                            if mode not in MODES:
                                raise ValueError(f"{path}: unknown mode {mode!r}")
                            rows.append(Row(cell, mode, *shape, layers, directions))
    return rows, grid.get("description", "")


# The criteria a target's alternative may set (see the module's docstring); "vs_<peer>" too.
CRITERIA = ("percent_of_peak", "max_us")


@dataclass(frozen=True)
class Target:
    """A speed target over some of a grid's rows (see the module's docstring)."""

    text: str
    cells: tuple
    modes: tuple
    shapes: tuple  # of (T, B, I, H); empty: every shape
    met_if: tuple  # of dicts, one per alternative

    def covers(self, cell, mode, shape):  # shape: a (T, B, I, H) tuple
        return cell in self.cells and mode in self.modes and (
            not self.shapes or shape in self.shapes)


def load_targets(path):
    """The grid file's targets, as (dtype they hold for, list of Target): (None, []) for a grid
    without. Raises ValueError, naming the target, for an unknown criterion or a target that
    covers none of the grid's rows."""
    with open(path) as f:
        targets = json.load(f).get("targets")
    if not targets:
        return None, []
    rows, _ = load_grid(path)
    out = []
    for t in targets["list"]:
        target = Target(t["text"], tuple(t["cells"]), tuple(t["modes"]),
                        tuple(tuple(s) for s in t.get("shapes", ())), tuple(t["met_if"]))
        for alternative in target.met_if:
            unknown = [k for k in alternative if k not in CRITERIA and not k.startswith("vs_")]
            if unknown or not alternative:
                raise ValueError(f"{path}: target {target.text!r}: "
                                 + (f"unknown criteria {unknown}" if unknown else
                                    "an alternative without criteria")
                                 + f" (known: {', '.join(CRITERIA)}, vs_<peer>)")
        if not any(target.covers(r.cell, r.mode, r.shape) for r in rows):
            raise ValueError(f"{path}: target {target.text!r}: covers none of the grid's rows")
        out.append(target)
    return targets["dtype"], out


def product_rows(cells, shapes, modes, layers=(1,), directions=(1,)):
    """Rows of every combination, for grids given on the command line."""
    return [Row(cell, mode, *shape, nl, nd) for cell in cells for shape in shapes
            for nl in layers for nd in directions for mode in modes]
