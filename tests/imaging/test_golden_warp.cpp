// rlmed::imaging warps against PyTorch grid_sample (align_corners=True; zeros and border padding;
// bilinear / trilinear and nearest; output, image gradient and field gradient) and against
// scipy.ndimage.map_coordinates(order=1). Fixtures: tests/golden/make_golden_warp.py (float32,
// computed in float64); relative error ||rlmed - reference|| / ||reference|| < 1e-5.
#include <doctest/doctest.h>

#include <cmath>
#include <string>

#include "rlmed/core/safetensors.hpp"
#include "rlmed/imaging/warp.hpp"

using namespace rlmed;
using namespace rlmed::imaging;
using io::SafetensorsReader;

namespace {

SafetensorsReader fixture(const std::string& name) {
  return SafetensorsReader::open(std::string(RLMED_GOLDEN_DIR) + "/imaging/" + name + ".safetensors");
}

template <std::size_t R>
double rel_error(const Tensor<float, R>& got, const Tensor<float, R>& want) {
  REQUIRE(got.shape() == want.shape());
  double num = 0, den = 0;
  for (index_t i = 0; i < want.size(); ++i) {
    const double d = double(got.data()[i]) - double(want.data()[i]);
    num += d * d;
    den += double(want.data()[i]) * double(want.data()[i]);
  }
  return std::sqrt(num) / std::sqrt(den);
}

template <std::size_t R>
void check_close(const Tensor<float, R>& got, const Tensor<float, R>& want, const std::string& what) {
  const double err = rel_error(got, want);
  INFO(what << ": relative error " << err);
  CHECK(err < 1e-5);
}

template <std::size_t R>
void check_grid_sample_fixture(const std::string& name, Interp interp, Padding padding) {
  INFO("fixture " << name);
  const auto r = fixture(name);
  const auto image = r.read<float, R>("image");
  const auto field = r.read<float, R>("field");
  const auto dy = r.read<float, R>("R");
  const auto y = warp_forward(image, field, interp, padding);
  check_close(y, r.read<float, R>("y"), name + " output");
  const auto grads = warp_backward(dy, image, field, interp, padding);
  check_close(grads.image, r.read<float, R>("grad.image"), name + " image gradient");
  const auto want_field_grad = r.read<float, R>("grad.field");
  if (interp == Interp::linear) {
    check_close(grads.field, want_field_grad, name + " field gradient");
  } else {
    // grid_sample's nearest mode has a zero grid gradient; so has ours, exactly.
    for (index_t i = 0; i < want_field_grad.size(); ++i) REQUIRE(want_field_grad.data()[i] == 0.0f);
    for (index_t i = 0; i < grads.field.size(); ++i) REQUIRE(grads.field.data()[i] == 0.0f);
  }
}

template <std::size_t Dim>
void check_map_coordinates_fixture(const std::string& name) {
  INFO("fixture " << name);
  const auto r = fixture(name);
  const auto image = r.read<float, Dim>("image");
  const auto interior = r.read<float, Dim + 1>("field_interior");
  const auto full = r.read<float, Dim + 1>("field_full");
  // Inside [0, n-1] every padding agrees with mode='constant'.
  check_close(warp_forward(image, interior, Interp::linear, Padding::zeros), r.read<float, Dim>("y_constant"),
              "zeros padding vs mode='constant' inside the grid");
  check_close(warp_forward(image, interior, Interp::linear, Padding::border), r.read<float, Dim>("y_constant"),
              "border padding vs mode='constant' inside the grid");
  // Everywhere: zeros padding is mode='grid-constant', border padding is mode='nearest'.
  check_close(warp_forward(image, full, Interp::linear, Padding::zeros), r.read<float, Dim>("y_grid_constant"),
              "zeros padding vs mode='grid-constant'");
  check_close(warp_forward(image, full, Interp::linear, Padding::border), r.read<float, Dim>("y_nearest"),
              "border padding vs mode='nearest'");
}

}  // namespace

TEST_CASE("2D warps match grid_sample (bilinear and nearest; zeros and border): output and both gradients") {
  check_grid_sample_fixture<4>("warp2d_linear_zeros", Interp::linear, Padding::zeros);
  check_grid_sample_fixture<4>("warp2d_linear_border", Interp::linear, Padding::border);
  check_grid_sample_fixture<4>("warp2d_nearest_zeros", Interp::nearest, Padding::zeros);
  check_grid_sample_fixture<4>("warp2d_nearest_border", Interp::nearest, Padding::border);
}

TEST_CASE("3D warps match grid_sample (trilinear and nearest; zeros and border): output and both gradients") {
  check_grid_sample_fixture<5>("warp3d_linear_zeros", Interp::linear, Padding::zeros);
  check_grid_sample_fixture<5>("warp3d_linear_border", Interp::linear, Padding::border);
  check_grid_sample_fixture<5>("warp3d_nearest_zeros", Interp::nearest, Padding::zeros);
  check_grid_sample_fixture<5>("warp3d_nearest_border", Interp::nearest, Padding::border);
}

TEST_CASE("linear warps match scipy.ndimage.map_coordinates(order=1)") {
  check_map_coordinates_fixture<2>("warp2d_map_coordinates");
  check_map_coordinates_fixture<3>("warp3d_map_coordinates");
}
