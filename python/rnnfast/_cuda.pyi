"""rnnfast._cuda: the CUDA kernels over CUDA arrays (any object with __cuda_array_interface__).

rnnfast._cuda_emulated has the same interface over NumPy arrays (see _cuda_emulated.pyi).
"""

from typing import Any, Literal, Optional

Cell = Literal["rnn_tanh", "rnn_relu", "lstm", "gru"]
# A CUDA array (cupy.ndarray, or any object with __cuda_array_interface__).
Array = Any

emulated: bool
compiled_architectures: str
Rounding = Optional[Literal["bfloat16", "float16", "tf32"]]

class PersistentPathRefused(ValueError):
    """A call that path='persistent' cannot run (the message says why)."""

def device_info() -> dict[str, Any]: ...
def recurrent_forward(cell: Cell, zx: Array, w_hh: Array, b_hh: Optional[Array], h0: Array,
                      c0: Optional[Array], y: Array, h_n: Array, c_n: Optional[Array],
                      saved: Optional[Array], lengths: Optional[Array] = None,
                      resets: Optional[Array] = None, w_hr: Optional[Array] = None, *,
                      workspace: Optional[Array] = None, stream: int = 0,
                      path: Literal["standard", "persistent"] = "standard",
                      rounding: Rounding = None) -> None: ...
def recurrent_forward_pair(forward: tuple[Any, ...], reverse: tuple[Any, ...], *,
                           workspaces: tuple[Optional[Array], Optional[Array]] = (None, None),
                           stream: int = 0, rounding: Rounding = None) -> None: ...
def recurrent_backward(cell: Cell, w_hh: Array, h0: Array, c0: Optional[Array], y: Array,
                       saved: Optional[Array], dy: Array, dh_n: Optional[Array],
                       dc_n: Optional[Array], dzx: Array, dzh: Optional[Array], dh0: Array,
                       dc0: Optional[Array], lengths: Optional[Array] = None,
                       resets: Optional[Array] = None, w_hr: Optional[Array] = None,
                       dh_proj: Optional[Array] = None, *, workspace: Optional[Array] = None,
                       stream: int = 0,
                       path: Literal["standard", "persistent"] = "standard",
                       rounding: Rounding = None) -> None: ...
def workspace_size(
    direction: Literal["forward", "backward"], cell: Cell, batch: int, hidden: int, proj: int = 0
) -> int: ...
def persistent_refusal(cell: Cell, hidden: int, proj: int = 0,
                       dtype: Literal["float32", "float64"] = "float32",
                       rounding: Rounding = None, directions: int = 1) -> str: ...
def saved_per_unit(cell: Cell) -> int: ...
def gate_count(cell: Cell) -> int: ...
