// rlmed/nn/layers/window.hpp — sliding-window geometry shared by convolution and pooling,
// and col2im over 1D, 2D and 3D inputs.
//
// Design: every spatial layer works on a 3D geometry; 1D and 2D inputs are 3D inputs whose
// leading spatial extents are 1 (kernel 1, stride 1, no padding), so one code path serves all
// ranks. Output extent per axis: floor((in + 2p - d(k-1) - 1) / s) + 1, PyTorch's formula.
// Column matrices have rows (c, kz, ky, kx) and columns (oz, oy, ox); they are built tile by
// tile in conv_gemm.hpp. col2im parallelises over channels: a channel's rows only touch that
// channel of dx, so accumulation order is fixed and the result deterministic.
#pragma once

#include <array>

#include "rlmed/core/error.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/tensor.hpp"

namespace rlmed::nn {

/// Stride, padding and dilation of a sliding window, per spatial axis.
template <int Dims>
struct WindowConfig {
  static_assert(Dims >= 1 && Dims <= 3, "1D, 2D or 3D windows");
  std::array<index_t, Dims> stride{};
  std::array<index_t, Dims> padding{};
  std::array<index_t, Dims> dilation{};

  WindowConfig() { set(1, 0, 1); }
  WindowConfig(index_t s, index_t p, index_t d = 1) { set(s, p, d); }
  void set(index_t s, index_t p, index_t d) {
    stride.fill(s);
    padding.fill(p);
    dilation.fill(d);
  }
};

/// A window over a 3D spatial volume (unused leading axes have extent 1).
struct Window3 {
  std::array<index_t, 3> in{1, 1, 1}, kernel{1, 1, 1}, stride{1, 1, 1}, pad{0, 0, 0}, dil{1, 1, 1}, out{1, 1, 1};

  [[nodiscard]] index_t in_size() const { return in[0] * in[1] * in[2]; }
  [[nodiscard]] index_t out_size() const { return out[0] * out[1] * out[2]; }
  [[nodiscard]] index_t kernel_size() const { return kernel[0] * kernel[1] * kernel[2]; }
  [[nodiscard]] bool is_pointwise() const {
    return kernel_size() == 1 && stride == std::array<index_t, 3>{1, 1, 1} && pad == std::array<index_t, 3>{0, 0, 0};
  }
};

/// Builds the window for an input of shape [B, C, spatial...] and a kernel of extent k per axis.
template <int Dims, std::size_t Rank>
Window3 make_window(const Shape<Rank>& input_shape, const std::array<index_t, Dims>& kernel,
                    const WindowConfig<Dims>& cfg, const char* layer) {
  static_assert(Rank == Dims + 2);
  Window3 w;
  for (int a = 0; a < Dims; ++a) {
    const int t = 3 - Dims + a;
    w.in[t] = input_shape[2 + a];
    w.kernel[t] = kernel[a];
    w.stride[t] = cfg.stride[a];
    w.pad[t] = cfg.padding[a];
    w.dil[t] = cfg.dilation[a];
    RLMED_CHECK(w.stride[t] >= 1 && w.dil[t] >= 1 && w.pad[t] >= 0, layer, ": stride ", w.stride[t], ", dilation ",
                w.dil[t], ", padding ", w.pad[t], " on axis ", a, "; expected stride >= 1, dilation >= 1, padding >= 0");
    const index_t span = w.dil[t] * (w.kernel[t] - 1) + 1;
    const index_t room = w.in[t] + 2 * w.pad[t] - span;
    RLMED_CHECK(room >= 0, layer, ": input shape ", input_shape, " is too small on spatial axis ", a,
                " for a window spanning ", span, " with padding ", w.pad[t]);
    w.out[t] = room / w.stride[t] + 1;
  }
  return w;
}

/// Calls f(offset) for every in-bounds input offset (within one [in] plane) that the window of
/// output position (oz, oy, ox) reads, in kernel order; positions in the padding are skipped.
template <class F>
void for_each_window_tap(const Window3& w, index_t oz, index_t oy, index_t ox, F&& f) {
  for (index_t kz = 0; kz < w.kernel[0]; ++kz) {
    const index_t iz = oz * w.stride[0] - w.pad[0] + kz * w.dil[0];
    if (iz < 0 || iz >= w.in[0]) continue;
    for (index_t ky = 0; ky < w.kernel[1]; ++ky) {
      const index_t iy = oy * w.stride[1] - w.pad[1] + ky * w.dil[1];
      if (iy < 0 || iy >= w.in[1]) continue;
      for (index_t kx = 0; kx < w.kernel[2]; ++kx) {
        const index_t ix = ox * w.stride[2] - w.pad[2] + kx * w.dil[2];
        if (ix >= 0 && ix < w.in[2]) f((iz * w.in[1] + iy) * w.in[2] + ix);
      }
    }
  }
}

/// dx[c, ...] += sum over the windows that read it of dcol (the adjoint of im2col).
template <class T>
void col2im_add(const T* dcol, index_t channels, const Window3& w, T* dx) {
  const index_t kvol = w.kernel_size(), osize = w.out_size(), isize = w.in_size();
  parallel_for(
      0, channels,
      [&](index_t c) {
        T* dxc = dx + c * isize;
        for (index_t k = 0; k < kvol; ++k) {
          const index_t kx = k % w.kernel[2];
          const index_t ky = (k / w.kernel[2]) % w.kernel[1];
          const index_t kz = k / (w.kernel[2] * w.kernel[1]);
          const T* in = dcol + (c * kvol + k) * osize;
          for (index_t oz = 0; oz < w.out[0]; ++oz) {
            const index_t iz = oz * w.stride[0] - w.pad[0] + kz * w.dil[0];
            if (iz < 0 || iz >= w.in[0]) continue;
            for (index_t oy = 0; oy < w.out[1]; ++oy) {
              const index_t iy = oy * w.stride[1] - w.pad[1] + ky * w.dil[1];
              if (iy < 0 || iy >= w.in[1]) continue;
              const T* g = in + (oz * w.out[1] + oy) * w.out[2];
              T* dr = dxc + (iz * w.in[1] + iy) * w.in[2];
              const index_t x0 = kx * w.dil[2] - w.pad[2];
              for (index_t ox = 0; ox < w.out[2]; ++ox) {
                const index_t ix = x0 + ox * w.stride[2];
                if (ix >= 0 && ix < w.in[2]) dr[ix] += g[ox];
              }
            }
          }
        }
      },
      /*grain=*/2);
}

}  // namespace rlmed::nn
