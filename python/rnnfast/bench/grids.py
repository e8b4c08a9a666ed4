"""The grids the suite runs, and the work each row does.

A grid is a JSON file in this package's ``grids/`` folder (``benchmarks/grids`` in the source
tree links here, so there is one copy): ``{"description", "device", "sets": [...]}``, each set
``{"cells", "modes", "shapes": [[T, B, I, H], ...]}`` with optional ``"layers"`` and
``"directions"`` lists (default [1]). A grid expands to rows: one per cell, shape, layers,
directions and mode, in the file's order.
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


def product_rows(cells, shapes, modes, layers=(1,), directions=(1,)):
    """Rows of every combination, for grids given on the command line."""
    return [Row(cell, mode, *shape, nl, nd) for cell in cells for shape in shapes
            for nl in layers for nd in directions for mode in modes]
