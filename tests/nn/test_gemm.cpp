// Packed GEMM (core/gemm.hpp) and the packed-GEMM convolution path (nn/layers/conv_gemm.hpp):
// every kernel family this CPU supports against a naive double-precision product (odd sizes,
// transposed operands, accumulate, bias, row stride), bit-identical repeats and thread counts,
// and convolutions (forward, weight and data gradients) against the Eigen path.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "rlmed/core/gemm.hpp"
#include "rlmed/core/random.hpp"
#include "rlmed/nn/layers/conv.hpp"

using namespace rlmed;

namespace {

std::vector<GemmIsa> supported_isas() {
  std::vector<GemmIsa> out;
  for (GemmIsa isa : {GemmIsa::generic, GemmIsa::avx2, GemmIsa::avx512})
    if (gemm_isa_supported(isa)) out.push_back(isa);
  return out;
}

// Restores the automatic kernel choice when a test case ends.
struct IsaGuard {
  GemmIsa saved = gemm_isa();
  ~IsaGuard() { set_gemm_isa(saved); }
};

std::vector<float> random_floats(index_t n, std::uint64_t seed) {
  PhiloxStream rng(seed, 0);
  Tensor<float, 1> t(Shape<1>{n});
  fill_normal(t.view(), rng);
  return std::vector<float>(t.data(), t.data() + n);
}

// max |C - ref| over max(sum_k |a_ik b_kj|), both in double.
double gemm_error(index_t M, index_t N, index_t K, const std::vector<float>& A, index_t ars, index_t acs,
                  const std::vector<float>& B, index_t brs, index_t bcs, const std::vector<float>& C0,
                  const std::vector<float>& C, index_t ldc, bool accumulate, const float* bias) {
  double worst = 0, scale = 1e-30;
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      double ref = accumulate ? double(C0[std::size_t(i * ldc + j)]) : (bias ? double(bias[i]) : 0.0);
      double mag = std::abs(ref);
      for (index_t k = 0; k < K; ++k) {
        const double p = double(A[std::size_t(i * ars + k * acs)]) * double(B[std::size_t(k * brs + j * bcs)]);
        ref += p;
        mag += std::abs(p);
      }
      worst = std::max(worst, std::abs(double(C[std::size_t(i * ldc + j)]) - ref));
      scale = std::max(scale, mag);
    }
  return worst / scale;
}

}  // namespace

TEST_CASE("gemm matches a double-precision triple loop for every supported kernel") {
  IsaGuard guard;
  const index_t sizes[] = {1, 5, 17, 63, 257};
  for (GemmIsa isa : supported_isas()) {
    set_gemm_isa(isa);
    CAPTURE(gemm_isa_name(isa));
    int cases = 0;
    for (index_t M : sizes)
      for (index_t N : sizes)
        for (index_t K : sizes) {
          if ((M * 7 + N * 3 + K) % 3 != 0 && !(M == 257 && N == 257)) continue;  // a spread subset
          for (int variant = 0; variant < 4; ++variant) {
            const bool ta = variant & 1, tb = variant & 2;
            const bool accumulate = variant == 1, with_bias = variant == 2;
            CAPTURE(M);
            CAPTURE(N);
            CAPTURE(K);
            CAPTURE(variant);
            const auto A = random_floats(M * K, 10 + std::uint64_t(M));
            const auto B = random_floats(K * N, 20 + std::uint64_t(N));
            const auto bias = random_floats(M, 30);
            const index_t ars = ta ? 1 : K, acs = ta ? M : 1, brs = tb ? 1 : N, bcs = tb ? K : 1;
            const index_t ldc = N + 3;
            const auto C0 = random_floats(M * ldc, 40);
            auto C = C0;
            gemm(M, N, K, {A.data(), ars, acs}, {B.data(), brs, bcs}, C.data(), ldc, accumulate,
                 with_bias ? bias.data() : nullptr);
            CHECK(gemm_error(M, N, K, A, ars, acs, B, brs, bcs, C0, C, ldc, accumulate,
                             with_bias ? bias.data() : nullptr) < 1e-5);
            // the padding columns between rows are never written
            for (index_t i = 0; i < M; ++i)
              for (index_t j = N; j < ldc; ++j) REQUIRE(C[std::size_t(i * ldc + j)] == C0[std::size_t(i * ldc + j)]);
            ++cases;
          }
        }
    CHECK(cases > 100);
  }
}

TEST_CASE("gemm with K = 0 writes the bias or zero, and leaves C when accumulating") {
  std::vector<float> C(6, 7.0f), bias{1.0f, 2.0f};
  gemm(2, 3, 0, {nullptr, 0, 0}, {nullptr, 0, 0}, C.data(), 3, false, bias.data());
  CHECK(C == std::vector<float>{1, 1, 1, 2, 2, 2});
  gemm(2, 3, 0, {nullptr, 0, 0}, {nullptr, 0, 0}, C.data(), 3, true);
  CHECK(C == std::vector<float>{1, 1, 1, 2, 2, 2});
  gemm(2, 3, 0, {nullptr, 0, 0}, {nullptr, 0, 0}, C.data(), 3);
  CHECK(C == std::vector<float>(6, 0.0f));
}

TEST_CASE("gemm results are bit-identical across repeats and thread counts") {
  IsaGuard guard;
  const index_t M = 70, N = 1000, K = 700;  // several K blocks, M and N blocks with edges
  const auto A = random_floats(M * K, 1), B = random_floats(K * N, 2), bias = random_floats(M, 3);
  for (GemmIsa isa : supported_isas()) {
    set_gemm_isa(isa);
    CAPTURE(gemm_isa_name(isa));
    std::vector<float> first(std::size_t(M * N)), again(first.size()), par1(first.size()), par2(first.size());
    gemm(M, N, K, {A.data(), K, 1}, {B.data(), N, 1}, first.data(), N, false, bias.data());
    gemm(M, N, K, {A.data(), K, 1}, {B.data(), N, 1}, again.data(), N, false, bias.data());
    CHECK(first == again);
    const int saved_threads = max_threads();
    set_num_threads(1);
    gemm_parallel(M, N, K, {A.data(), K, 1}, {B.data(), N, 1}, par1.data(), N, false, bias.data());
    set_num_threads(2);
    gemm_parallel(M, N, K, {A.data(), K, 1}, {B.data(), N, 1}, par2.data(), N, false, bias.data());
    set_num_threads(saved_threads);
    CHECK(par1 == first);
    CHECK(par2 == first);
  }
}

TEST_CASE("gemm rejects bad arguments") {
  std::vector<float> a(4), c(4);
  CHECK_THROWS_AS(gemm(-1, 2, 2, {a.data(), 2, 1}, {a.data(), 2, 1}, c.data(), 2), Error);
  CHECK_THROWS_AS(gemm(2, 2, 2, {a.data(), 2, 1}, {a.data(), 2, 1}, c.data(), 1), Error);
  CHECK_THROWS_AS(gemm(2, 2, 2, {nullptr, 2, 1}, {a.data(), 2, 1}, c.data(), 2), Error);
  for (GemmIsa isa : {GemmIsa::avx2, GemmIsa::avx512})
    if (!gemm_isa_supported(isa)) CHECK_THROWS_AS(set_gemm_isa(isa), Error);
}

namespace {

template <int Dims, index_t In, index_t Out, index_t K>
struct ConvRun {
  std::vector<float> y, dx, dw, db;
};

// Forward + backward (input gradient on) of one convolution with fixed weights and data.
template <int Dims, index_t In, index_t Out, index_t K>
ConvRun<Dims, In, Out, K> run_conv(const nn::ConvConfig<Dims>& cfg, const Shape<Dims + 2>& in_shape) {
  nn::ConvModule<Dims, In, Out, K, float> conv(cfg);
  PhiloxStream rng(7, 0);
  conv.initialize(rng);
  Tensor<float, Dims + 2> x(in_shape);
  fill_normal(x.view(), rng);
  nn::Context ctx;
  typename nn::ConvModule<Dims, In, Out, K, float>::Cache cache;
  const auto y = conv.forward(ctx, x.view(), cache);
  Tensor<float, Dims + 2> dy(y.shape());
  fill_normal(dy.view(), rng);
  const auto dx = conv.backward(ctx, cache, dy.view());
  ConvRun<Dims, In, Out, K> r;
  r.y.assign(y.data(), y.data() + y.size());
  r.dx.assign(dx.data(), dx.data() + dx.size());
  r.dw.assign(conv.weight.grad.data(), conv.weight.grad.data() + conv.weight.grad.size());
  r.db.assign(conv.bias.grad.data(), conv.bias.grad.data() + conv.bias.grad.size());
  return r;
}

double rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0, scale = 1e-30;
  for (std::size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::abs(double(b[i])));
  }
  return worst / scale;
}

template <int Dims, index_t In, index_t Out, index_t K>
void check_conv_paths(const nn::ConvConfig<Dims>& cfg, const Shape<Dims + 2>& in_shape) {
  IsaGuard guard;
  set_gemm_isa(GemmIsa::generic);  // the Eigen path
  const auto ref = run_conv<Dims, In, Out, K>(cfg, in_shape);
  for (GemmIsa isa : supported_isas()) {
    if (isa == GemmIsa::generic) continue;
    set_gemm_isa(isa);
    CAPTURE(gemm_isa_name(isa));
    const auto got = run_conv<Dims, In, Out, K>(cfg, in_shape);
    CHECK(rel_diff(got.y, ref.y) < 1e-5);
    CHECK(rel_diff(got.dx, ref.dx) < 1e-5);
    CHECK(rel_diff(got.dw, ref.dw) < 1e-5);
    CHECK(rel_diff(got.db, ref.db) < 1e-6);
    // Bit-identical forward and data gradient for 1 and 2 threads; everything on a repeat.
    const int saved_threads = max_threads();
    set_num_threads(1);
    const auto one = run_conv<Dims, In, Out, K>(cfg, in_shape);
    set_num_threads(2);
    const auto two = run_conv<Dims, In, Out, K>(cfg, in_shape);
    const auto two_again = run_conv<Dims, In, Out, K>(cfg, in_shape);
    set_num_threads(saved_threads);
    CHECK(one.y == two.y);
    CHECK(one.dx == two.dx);
    CHECK(two.dw == two_again.dw);
  }
}

}  // namespace

TEST_CASE("packed-GEMM convolutions match the Eigen path") {
  SUBCASE("2D 3x3 same padding, odd sizes") { check_conv_paths<2, 3, 13, 3>(nn::ConvConfig<2>::same(3), Shape<4>{2, 3, 19, 23}); }
  SUBCASE("2D wide rows (B rows pointing into the input)") {
    check_conv_paths<2, 4, 10, 3>(nn::ConvConfig<2>::same(3), Shape<4>{2, 4, 5, 70});
  }
  SUBCASE("2D wide rows, dilation 3") { check_conv_paths<2, 3, 9, 3>(nn::ConvConfig<2>::same(3, 3), Shape<4>{1, 3, 8, 100}); }
  SUBCASE("2D dilated 3x3") { check_conv_paths<2, 16, 9, 3>(nn::ConvConfig<2>::same(3, 2), Shape<4>{3, 16, 17, 16}); }
  SUBCASE("2D stride 2, padding 1") { check_conv_paths<2, 5, 8, 3>(nn::ConvConfig<2>(2, 1), Shape<4>{2, 5, 15, 12}); }
  SUBCASE("2D 1x1 pointwise") { check_conv_paths<2, 40, 3, 1>(nn::ConvConfig<2>(), Shape<4>{2, 40, 9, 37}); }
  SUBCASE("2D large reduction (several K blocks)") { check_conv_paths<2, 72, 20, 3>(nn::ConvConfig<2>::same(3), Shape<4>{1, 72, 12, 12}); }
  SUBCASE("3D 3x3x3 padding 1, stride 2") { check_conv_paths<3, 4, 6, 3>(nn::ConvConfig<3>(2, 1), Shape<5>{2, 4, 7, 8, 9}); }
  SUBCASE("3D 5^3 valid") { check_conv_paths<3, 2, 8, 5>(nn::ConvConfig<3>(), Shape<5>{2, 2, 9, 9, 9}); }
  SUBCASE("1D") { check_conv_paths<1, 6, 7, 3>(nn::ConvConfig<1>(1, 1), Shape<3>{3, 6, 50}); }
  // >= 16 column panels of dW: the weight gradient is split over dW's columns (in-register
  // transposes of the im2col rows, K-block tails that are not multiples of 16).
  SUBCASE("2D dW split over columns, dilation 2, narrow rows") {
    check_conv_paths<2, 64, 20, 3>(nn::ConvConfig<2>::same(3, 2), Shape<4>{2, 64, 16, 21});
  }
  SUBCASE("2D dW split over columns, more output channels than one M block") {
    check_conv_paths<2, 56, 270, 3>(nn::ConvConfig<2>(1, 2, 1), Shape<4>{2, 56, 5, 7});
  }
  SUBCASE("2D dW split over columns, stride 2") {
    check_conv_paths<2, 60, 9, 3>(nn::ConvConfig<2>(2, 1), Shape<4>{1, 60, 13, 11});
  }
}

TEST_CASE("the column-split weight gradient does not depend on the thread count") {
  IsaGuard guard;
  for (GemmIsa isa : supported_isas()) {
    if (isa == GemmIsa::generic) continue;
    set_gemm_isa(isa);
    CAPTURE(gemm_isa_name(isa));
    const int saved_threads = max_threads();
    set_num_threads(1);
    const auto one = run_conv<2, 64, 20, 3>(nn::ConvConfig<2>::same(3, 2), Shape<4>{2, 64, 16, 21});
    set_num_threads(2);
    const auto two = run_conv<2, 64, 20, 3>(nn::ConvConfig<2>::same(3, 2), Shape<4>{2, 64, 16, 21});
    set_num_threads(saved_threads);
    CHECK(one.dw == two.dw);
  }
}
