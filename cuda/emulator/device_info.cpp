// cuda/device_info.cu compiled by the host compiler for the emulator.
#include "../device_info.cu"
