// GPU patch extraction against rlmed/imaging/patches.hpp: 3D and 2D, odd and even sizes,
// strides (pyramid levels), frame history, centres inside, on the border and far outside;
// bit-identical to the CPU (a pure gather) and run to run. Exits 77 without a device.
#define DOCTEST_CONFIG_IMPLEMENT
#include "gpu_test_util.hpp"

#include <span>
#include <vector>

#include "rlmed/cuda/patches.cuh"
#include "rlmed/imaging/patches.hpp"

using namespace rlmed;
using imaging::PatchGeometry;
using imaging::Voxel;

namespace {

template <std::size_t Dim>
std::vector<Voxel<Dim>> random_centres(std::size_t count, const Shape<Dim>& volume, PhiloxStream& rng) {
  std::vector<Voxel<Dim>> c(count);
  for (std::size_t i = 0; i < count; ++i)
    for (std::size_t a = 0; a < Dim; ++a) {
      const index_t n = volume[Dim - 1 - a];
      // Mostly near the volume (inside and across the border), sometimes far away.
      const float r = rng.uniform();
      c[i][a] = r < 0.9f ? index_t(rng.uniform(-0.3f, 1.3f) * float(n)) : index_t(rng.uniform(-1e6f, 1e6f));
    }
  return c;
}

template <std::size_t Dim>
Tensor<std::int64_t, 2, rlmed::cuda> device_centres(const std::vector<Voxel<Dim>>& centres, cudaStream_t stream) {
  Tensor<std::int64_t, 2> host(Shape<2>{index_t(centres.size()), index_t(Dim)});
  for (std::size_t i = 0; i < centres.size(); ++i)
    for (std::size_t a = 0; a < Dim; ++a) host(index_t(i), index_t(a)) = centres[i][a];
  return to_device(host.view(), stream);
}

}  // namespace

TEST_CASE("3D patches with frame history equal the CPU's bit for bit, run to run") {
  PhiloxStream rng(3, 0);
  const Shape<3> vshape{23, 19, 29};
  const auto volume = gpu_test::random_tensor<float>(vshape, rng, -5.f, 5.f);
  gpu::Stream stream;
  const auto d_volume = to_device(volume.view(), stream);
  for (index_t side : {1, 4, 9, 15})
    for (index_t stride : {1, 2, 3}) {
      CAPTURE(side);
      CAPTURE(stride);
      const index_t n = 7, frames = 4;
      const auto centres = random_centres<3>(std::size_t(n * frames), vshape, rng);
      PatchGeometry<3> g = PatchGeometry<3>::cube(side, stride);
      g.size_xyz[0] = side + 2;  // anisotropic patch: x longer than y, z
      Tensor<float, 5> ref(Shape<5>{n, frames, side, side, side + 2});
      imaging::extract_patches_3d_into<float>(ref.view(), volume.view(), std::span<const Voxel<3>>(centres), g);
      const auto d_centres = device_centres<3>(centres, stream);
      Tensor<float, 5, rlmed::cuda> d_out(ref.shape());
      kernels::extract_patches<3>(d_out.view(), d_volume.view(), d_centres.view(), g, stream);
      const auto first = to_host(d_out.view(), stream);
      CHECK(gpu_test::same_bits(first, ref));
      d_out.zero(stream);
      kernels::extract_patches<3>(d_out.view(), d_volume.view(), d_centres.view(), g, stream);
      CHECK(gpu_test::same_bits(to_host(d_out.view(), stream), first));
      // The flat form [N·F, *patch] gives the same bytes.
      TensorView<float, 4, rlmed::cuda> flat(d_out.data(), Shape<4>{n * frames, side, side, side + 2});
      d_out.zero(stream);
      kernels::extract_patches<3>(flat, d_volume.view(), d_centres.view(), g, stream);
      CHECK(gpu_test::same_bits(to_host(d_out.view(), stream), ref));
    }
}

TEST_CASE("2D patches equal the CPU's bit for bit") {
  PhiloxStream rng(4, 0);
  const Shape<2> ishape{41, 37};
  const auto image = gpu_test::random_tensor<float>(ishape, rng, -1.f, 1.f);
  gpu::Stream stream;
  const auto d_image = to_device(image.view(), stream);
  for (index_t side : {2, 7, 16})
    for (index_t stride : {1, 4}) {
      const auto centres = random_centres<2>(33, ishape, rng);
      const PatchGeometry<2> g = PatchGeometry<2>::cube(side, stride);
      Tensor<float, 3> ref(Shape<3>{33, side, side});
      imaging::extract_patches_2d_into<float>(ref.view(), image.view(), std::span<const Voxel<2>>(centres), g);
      const auto d_centres = device_centres<2>(centres, stream);
      Tensor<float, 3, rlmed::cuda> d_out(ref.shape());
      kernels::extract_patches<2>(d_out.view(), d_image.view(), d_centres.view(), g, stream);
      CHECK(gpu_test::same_bits(to_host(d_out.view(), stream), ref));
    }
}

TEST_CASE("patch extraction rejects mismatched shapes") {
  gpu::Stream stream;
  Tensor<float, 3, rlmed::cuda> volume(Shape<3>{4, 4, 4});
  Tensor<std::int64_t, 2, rlmed::cuda> centres(Shape<2>{3, 3});
  Tensor<float, 4, rlmed::cuda> out(Shape<4>{3, 5, 5, 5});
  const auto g = PatchGeometry<3>::cube(4);
  CHECK_THROWS_AS(kernels::extract_patches<3>(out.view(), volume.view(), centres.view(), g, stream), Error);
  Tensor<float, 4, rlmed::cuda> out2(Shape<4>{2, 4, 4, 4});
  CHECK_THROWS_AS(kernels::extract_patches<3>(out2.view(), volume.view(), centres.view(), g, stream), Error);
  CHECK_THROWS_AS(kernels::extract_patches<3>(out.view(), volume.view(), centres.view(), PatchGeometry<3>::cube(0), stream),
                  Error);
}

RLMED_GPU_TEST_MAIN
