// What the CUDA runtime linked into rnnfast._cuda sees (in rnnfast._cuda_emulated: the
// emulator, as one device). Framework-free.
#pragma once

#include <string>
#include <vector>

namespace rnnfast::cuda {

struct DeviceInfo {
  int runtime_version = 0;           // e.g. 13000 for CUDA 13.0
  int driver_version = 0;            // 0 when no driver is installed
  std::vector<std::string> devices;  // "NVIDIA H100 80GB HBM3 (sm_90)", one per device
  std::string error;                 // why no device is usable, when none is
};

DeviceInfo device_info();

}  // namespace rnnfast::cuda
