// The CUDA recurrence kernels (cuda/recurrence.cu) compiled by the host compiler for the
// emulator: RNNFAST_CUDA_EMULATED is defined for this target.
#include "../recurrence.cu"
