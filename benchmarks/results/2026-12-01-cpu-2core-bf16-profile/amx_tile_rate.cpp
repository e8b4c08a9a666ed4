// The rate of AMX's bfloat16 tile product (tdpbf16ps, 16 x 16 x 32 multiply-adds) on this
// machine: with no memory operands, and in the loop shapes the recurrence and gemm_bf16 use,
// with B's tiles read from panels of growing size (L1, L2, beyond). Nanoseconds per tdpbf16ps.
//
// Build and run (Linux, a CPU with AMX):
//   g++ -O2 -mamx-tile -mamx-bf16 amx_tile_rate.cpp -o amx_tile_rate && ./amx_tile_rate
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <initializer_list>

namespace {

struct TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

alignas(64) uint16_t data[1 << 22];  // 8 MB of bfloat16 ones

template <class F>
void report(const char* name, long products, F&& f) {
  f();  // warm-up
  const auto start = std::chrono::steady_clock::now();
  f();
  const double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  std::printf("%-52s %6.2f ns per tdpbf16ps\n", name, ns / products);
}

}  // namespace

int main() {
  if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) != 0) {
    std::puts("Linux refused the AMX state");
    return 1;
  }
  TileConfig config{};
  config.palette = 1;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = 64;
    config.rows[t] = 16;
  }
  _tile_loadconfig(&config);
  for (auto& v : data) v = 0x3f80;
  const long n = 2000000;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, data, 64);
  _tile_loadd(5, data, 64);
  _tile_loadd(6, data, 64);
  _tile_loadd(7, data, 64);
  report("4 accumulators, no loads (the peak)", n, [&] {
    for (long i = 0; i < n; i += 4) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  });
  report("2 x 2 blocks, A and B loaded per 4 products (L1)", n, [&] {
    for (long i = 0; i < n; i += 4) {
      _tile_loadd(4, data, 64);
      _tile_loadd(5, data + 1024, 64);
      _tile_loadd(6, data + 512, 128);
      _tile_loadd(7, data + 544, 128);
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  });
  // The recurrence's tile_product16 at W = 64: one A tile per 32 of depth (rows 1 KB apart),
  // four B tiles from a panel with 256-byte rows, read from a panel of `bytes`.
  for (long bytes : {64L << 10, 512L << 10, 1L << 20, 2L << 20, 6L << 20}) {
    char name[64];
    std::snprintf(name, sizeof name, "recurrence tile (16 x 64), panel of %ld KB", bytes >> 10);
    report(name, n, [&] {
      const long elements = bytes / 2;
      long offset = 0;
      for (long i = 0; i < n; i += 4) {
        _tile_loadd(4, data + (i / 4 % 16) * 32, 1024);
        const uint16_t* b = data + (1 << 20) + offset;
        _tile_loadd(6, b, 256);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(6, b + 32, 256);
        _tile_dpbf16ps(1, 4, 6);
        _tile_loadd(6, b + 64, 256);
        _tile_dpbf16ps(2, 4, 6);
        _tile_loadd(6, b + 96, 256);
        _tile_dpbf16ps(3, 4, 6);
        offset += 16 * 128;
        if (offset + 16 * 128 > elements) offset = 0;
      }
    });
  }
  _tile_release();
  return 0;
}
