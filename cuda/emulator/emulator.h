// The CUDA emulator: the part of CUDA that rnnfast's kernels use, on the host, so that the same
// .cu sources (compiled by the host compiler with RNNFAST_CUDA_EMULATED defined) run and are
// tested on machines without a GPU: the module rnnfast._cuda_emulated.
//
// Model. Every CUDA thread of a launch is a fiber (a context of its own, with a 1 MiB stack) on
// the host thread that launches: an ordinary launch runs its blocks one after another, each
// block's threads together; a cooperative launch runs all blocks together, so that grid_sync()
// (a barrier over the whole grid) works. The fibers take turns in rank order, each running
// until it waits at a barrier or finishes; __syncthreads(), grid_sync() and warp_exchange are
// barriers, at which a fiber waits until all of its group have arrived. Launches run to
// completion on the calling thread before they return: streams are ignored, every launch is
// synchronous, and launches from several host threads run side by side. (A host thread per CUDA
// thread, meeting at condition variables, spent most of its time in the operating system's
// scheduler: 2.4x slower on the layer tests of a 2-core machine.)
//
// Failures. A barrier that not every thread of its group reaches (they finished, or wait at
// another) is found as soon as no fiber can run: the launch fails, every waiting fiber is
// resumed with an exception that unwinds its kernel, and the launch returns
// cudaErrorLaunchTimeout with a message naming the kernel, the barrier and how many threads
// arrived (cudaGetErrorString; the bindings raise it as RuntimeError). A fiber that neither
// finishes nor reaches a barrier (a loop that never ends) holds its host thread and cannot be
// unwound: where a launch makes no progress for the timeout (set_timeout, or the environment
// variable RNNFAST_EMULATOR_TIMEOUT in seconds; default 60), a watchdog thread ends the process
// with a message, rather than let it hang.
//
// Shared memory: declare it with RNNFAST_SHARED (launch.cuh), never with a plain __shared__
// (which this header leaves undefined, so that it does not compile): each block gets its own
// copy, also when blocks run concurrently. Dynamic shared memory (the launch's shared_bytes) is
// dynamic_shared<T>(). Both start filled with 0xFF bytes (NaN for floats), so that a read before
// any write shows.
//
// Warps: the block's threads in the order of their rank (x fastest, then y, then z), 32 a warp.
// They do not run in lock step; a warp-wide instruction is emulated over warp_exchange, a
// barrier of the warp's lanes (the mma.sync of ../mma.cuh). Not emulated: shuffles, votes and
// other warp-level operations (a kernel that uses them needs them added here), atomics beyond
// std::atomic, the memory model's weaker orderings (host threads see each other's writes after a
// barrier, as CUDA guarantees, and often earlier), the compiler's code, speed.
#pragma once

#include <cstddef>
#include <functional>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// The emulated thread's coordinates, set by the emulator before it runs the kernel.
extern thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorLaunchTimeout = 702,
  cudaErrorLaunchFailure = 719,
  cudaErrorCooperativeLaunchTooLarge = 720,
};
using cudaStream_t = struct CUstream_st*;

// The last error of a launch on this host thread (cleared by the call, as in CUDA).
cudaError_t cudaGetLastError();
// For the status of this host thread's last failed launch: its message, which names the kernel.
const char* cudaGetErrorString(cudaError_t status);

// What device_info.cu asks the runtime.
struct cudaDeviceProp {
  char name[256];
  int major, minor;
};
cudaError_t cudaRuntimeGetVersion(int* version);  // 0: no CUDA runtime
cudaError_t cudaDriverGetVersion(int* version);   // 0: no driver
cudaError_t cudaGetDeviceCount(int* count);       // 1: the emulator
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaGetDevice(int* device);  // 0
// The emulated device's attributes, as the persistent path asks them: a small GPU (8 SMs, so
// that a cooperative launch of one block per SM stays within kMaxCooperativeThreads) with an
// H100's shared memory per block (227 KiB).
enum cudaDeviceAttr {
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attribute, int device);

void __syncthreads();

namespace rnnfast::cuda::emulator {

// How long a launch may run without progress (no fiber reaching a barrier or finishing) before
// the watchdog ends the process, in seconds (> 0).
void set_timeout(double seconds);
double timeout();

// Runs body() on every thread of `grid` x `block`; see the model above. `kernel` names it in
// errors. Returns cudaSuccess, cudaErrorLaunchTimeout, cudaErrorInvalidValue (an empty or
// too large launch) or cudaErrorLaunchFailure (the kernel threw).
cudaError_t run(const char* kernel, dim3 grid, dim3 block, size_t shared_bytes, bool cooperative,
                const std::function<void()>& body);

// The barrier over all threads of a cooperative launch.
void grid_sync();

// This block's copy of the shared variable declared at `site` (its address identifies the
// declaration), `bytes` long; the launch's dynamic shared memory.
void* block_shared(const void* site, size_t bytes, size_t align);
void* dynamic_shared();

// This thread's rank in its block: threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y *
// threadIdx.z); its lane is thread_rank() % kWarpSize.
constexpr unsigned kWarpSize = 32;
unsigned thread_rank();

// What a warp-wide instruction needs: every lane of this thread's warp calls it with `bytes`
// (the same for all, at most kMaxLaneBytes) at `mine`; it returns once all have, the warp's
// contributions lane by lane, `bytes` apart. They stay valid until this thread calls it again.
// A lane that never calls it fails the launch at the timeout, as a divergent barrier does.
constexpr size_t kMaxLaneBytes = 64;
const void* warp_exchange(const void* mine, size_t bytes);

// Most threads a cooperative launch may have (all run at once).
constexpr unsigned kMaxCooperativeThreads = 8192;

}  // namespace rnnfast::cuda::emulator
