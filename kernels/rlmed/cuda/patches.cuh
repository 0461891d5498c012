// rlmed/cuda/patches.cuh — batched 2D/3D patch extraction on the GPU (N centres × patch ×
// frame history, zero padding, strided sampling for pyramid levels): replay rendering's hot path.
//
// Design decisions:
//  * Semantics are rlmed/imaging/patches.hpp's exactly (sample k of an axis at c + (k − P/2)·s,
//    zeros outside, frame history = the same extraction over N·F centres, sample-major), so the
//    CPU and GPU renderers are interchangeable; the tests compare them bit for bit.
//  * A pure gather, one thread per output element: consecutive threads write consecutive
//    bytes (coalesced stores) and, at stride 1, read consecutive voxels of one row (coalesced
//    loads). No shared memory: neighbouring patches overlap only by chance.
//  * Centres live on the device as [M, 3] (or [M, 2]) int64 (x, y[, z]), so a replay sampler
//    can produce them there; any |c| < 2^62 is safe (offsets are at most 2^40).
//  * A pyramid level is its own volume; pass that level's volume and its stride in the geometry.
// Roofline: per output element one 4 B store and at most one 4 B load (L2-cached re-reads of
// overlapping patches), ~10 integer ops: memory-bound; the target is the copy bandwidth on the
// bytes written (zero-padded elements cost a store only).
// CPU reference: extract_patches_into / extract_patch_history_into in rlmed/imaging/patches.hpp.
#pragma once

#include <cstdint>

#include "rlmed/core/tensor_cuda.hpp"
#include "rlmed/cuda/launch.cuh"
#include "rlmed/imaging/patches.hpp"

namespace rlmed::kernels {

namespace patches_gpu {

/// Patch and volume extents in physical order (x, y, z); unused axes 1.
struct PatchDims {
  std::int64_t size[3] = {1, 1, 1};
  std::int64_t stride[3] = {1, 1, 1};
  std::int64_t extent[3] = {1, 1, 1};
  std::int64_t patch_elems = 1;
  std::int64_t centres = 0;
};

template <int Dim, class T>
__global__ void extract_kernel(T* __restrict__ out, const T* __restrict__ volume,
                               const std::int64_t* __restrict__ centres_xyz, PatchDims d) {
  const std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (e >= d.centres * d.patch_elems) return;
  const std::int64_t m = e / d.patch_elems;
  std::int64_t r = e % d.patch_elems;
  const std::int64_t* c = centres_xyz + m * Dim;
  bool inside = true;
  std::int64_t offset = 0, row_stride = 1;
  for (int a = 0; a < Dim; ++a) {  // x fastest
    const std::int64_t k = r % d.size[a];
    r /= d.size[a];
    const std::int64_t v = c[a] + (k - d.size[a] / 2) * d.stride[a];
    inside &= v >= 0 && v < d.extent[a];
    offset += v * row_stride;
    row_stride *= d.extent[a];
  }
  out[e] = inside ? volume[offset] : T(0);
}

}  // namespace patches_gpu

/// Patches around M device centres: out [M, *patch] or, with frame history, [N, F, *patch]
/// (M = N·F, sample-major); volume [D, H, W] (or [H, W]); centres [M, Dim] int64 (x, y[, z]).
/// Ordered on `stream`; allocates nothing.
template <std::size_t Dim, std::size_t R, class T>
void extract_patches(TensorView<T, R, cuda> out, TensorView<const std::type_identity_t<T>, Dim, cuda> volume,
                     TensorView<const std::int64_t, 2, cuda> centres_xyz, const imaging::PatchGeometry<Dim>& geometry,
                     cudaStream_t stream) {
  static_assert(Dim == 2 || Dim == 3, "patches are 2D or 3D");
  static_assert(R == Dim + 1 || R == Dim + 2, "out is [M, *patch] or [N, F, *patch]");
  geometry.validate();
  const Shape<Dim> patch = geometry.tensor_shape();
  const index_t m = R == Dim + 1 ? out.extent(0) : out.extent(0) * out.extent(1);
  bool patch_ok = true;
  for (std::size_t t = 0; t < Dim; ++t) patch_ok &= out.extent(R - Dim + t) == patch[t];
  RLMED_CHECK(patch_ok, "extract_patches (cuda): output shape ", out.shape(), " does not end with the patch shape ",
              patch, " of patch size (x, y, z) ", geometry.size_xyz);
  RLMED_CHECK(centres_xyz.extent(1) == index_t(Dim) && centres_xyz.extent(0) == m, "extract_patches (cuda): expected ",
              m, " centres [", m, ", ", Dim, "] for output ", out.shape(), "; found centres ", centres_xyz.shape());
  RLMED_CHECK(volume.data() != nullptr || volume.size() == 0, "extract_patches (cuda): volume has no data");
  if (out.size() == 0) return;
  patches_gpu::PatchDims d;
  for (std::size_t a = 0; a < Dim; ++a) {
    d.size[a] = geometry.size_xyz[a];
    d.stride[a] = geometry.stride_xyz[a];
    d.extent[a] = volume.extent(Dim - 1 - a);
  }
  d.patch_elems = numel(patch);
  d.centres = m;
  if (volume.size() == 0) {  // every sample is outside
    RLMED_CUDA_CHECK(cudaMemsetAsync(out.data(), 0, out.bytes(), stream));
    return;
  }
  patches_gpu::extract_kernel<static_cast<int>(Dim), T>
      <<<grid_for(out.size()), kDefaultBlock, 0, stream>>>(out.data(), volume.data(), centres_xyz.data(), d);
  RLMED_CUDA_CHECK_LAUNCH();
}

}  // namespace rlmed::kernels
