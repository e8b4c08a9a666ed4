"""rnnfast._cuda_emulated: the CUDA kernels compiled for the host and run by rnnfast's CUDA
emulator, over NumPy arrays; the interface of rnnfast._cuda plus the emulator's controls."""

from rnnfast._cuda import (
    PersistentPathRefused as PersistentPathRefused,
    compiled_architectures as compiled_architectures,
    device_info as device_info,
    emulated as emulated,
    gate_count as gate_count,
    persistent_refusal as persistent_refusal,
    recurrent_backward as recurrent_backward,
    recurrent_forward as recurrent_forward,
    recurrent_forward_pair as recurrent_forward_pair,
    saved_per_unit as saved_per_unit,
    workspace_size as workspace_size,
)

def set_timeout(seconds: float) -> None: ...
def timeout() -> float: ...
def self_test_divergent_barrier(threads: int, waiting: int) -> None: ...
def self_test_grid_sync(blocks: int, threads: int) -> list[int]: ...
