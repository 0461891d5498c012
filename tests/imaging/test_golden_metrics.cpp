// rlmed's distance transform and metrics against fixtures computed independently with scipy,
// numpy and torch (tests/golden/make_golden_metrics.py -> tests/golden/imaging/metrics.safetensors).
// Tolerances: EDT in float32, relative error < 1e-5 per voxel; metrics |difference| < 1e-6
// (computed in double); local NCC gradient in float32, relative error (L2) < 1e-5.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "rlmed/core/safetensors.hpp"
#include "rlmed/imaging/distance_transform.hpp"
#include "rlmed/imaging/metrics.hpp"

using namespace rlmed;
using namespace rlmed::imaging;
using io::SafetensorsReader;

namespace {

const SafetensorsReader& fixture() {
  static const SafetensorsReader reader =
      SafetensorsReader::open(std::string(RLMED_GOLDEN_DIR) + "/imaging/metrics.safetensors");
  return reader;
}

// Case names "<group>.<case>" that hold a tensor "<group>.<case>.<field>".
std::vector<std::string> cases(const std::string& group, const std::string& field) {
  std::vector<std::string> out;
  const std::string prefix = group + ".", suffix = "." + field;
  for (const auto& t : fixture().tensors())
    if (t.name.rfind(prefix, 0) == 0 && t.name.size() > suffix.size() &&
        t.name.compare(t.name.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(t.name.substr(0, t.name.size() - suffix.size()));
  return out;
}

std::size_t rank_of_tensor(const std::string& name) { return fixture().info(name).shape.size(); }

template <std::size_t R>
AxisSpacing<R> read_spacing(const std::string& name) {
  const auto s = fixture().read<double, 1>(name);
  REQUIRE(s.size() == index_t(R));
  AxisSpacing<R> out{};
  for (std::size_t a = 0; a < R; ++a) out[a] = s(index_t(a));
  return out;
}

// Largest per-voxel relative error (exact zeros must stay exact zeros).
template <class T, std::size_t R>
double max_relative_error(const Tensor<T, R>& got, const Tensor<float, R>& want) {
  REQUIRE(got.shape() == want.shape());
  double worst = 0;
  for (index_t i = 0; i < got.size(); ++i) {
    const double w = want.data()[i], g = double(got.data()[i]);
    if (w == 0) {
      if (g != 0) return std::numeric_limits<double>::infinity();
      continue;
    }
    worst = std::max(worst, std::abs(g - w) / std::abs(w));
  }
  return worst;
}

template <std::size_t R>
void check_edt_case(const std::string& c) {
  const auto& f = fixture();
  const auto mask = f.read<std::uint8_t, R>(c + ".mask");
  const auto sp = read_spacing<R>(c + ".sampling");
  double e = max_relative_error(distance_to_background<float>(mask, sp), f.read<float, R>(c + ".to_background"));
  INFO(c << " to background: max relative error " << e);
  CHECK(e < 1e-5);
  e = max_relative_error(distance_to_background<double>(mask, sp), f.read<float, R>(c + ".to_background"));
  CHECK(e < 1e-5);
  if (f.contains(c + ".to_foreground")) {
    e = max_relative_error(distance_to_foreground<float>(mask, sp), f.read<float, R>(c + ".to_foreground"));
    INFO(c << " to foreground: max relative error " << e);
    CHECK(e < 1e-5);
  }
  EdtOptions framed;
  framed.outside_is_background = true;
  e = max_relative_error(distance_to_background<float>(mask, sp, framed), f.read<float, R>(c + ".framed"));
  INFO(c << " framed: max relative error " << e);
  CHECK(e < 1e-5);
}

template <std::size_t R>
void check_seg_case(const std::string& c) {
  const auto& f = fixture();
  const auto pred = f.read<std::uint8_t, R>(c + ".prediction");
  const auto label = f.read<std::uint8_t, R>(c + ".label");
  const auto sp = read_spacing<R>(c + ".spacing");
  const auto want = f.read<double, 1>(c + ".scores");  // dice, iou, ppv, sen, boundary iou, band width
  REQUIRE(want.size() == 6);
  INFO("case " << c);
  const auto s = overlap_scores(pred, label);
  CHECK(std::abs(s.dice - want(0)) < 1e-6);
  CHECK(std::abs(s.iou - want(1)) < 1e-6);
  CHECK(std::abs(s.ppv - want(2)) < 1e-6);
  CHECK(std::abs(s.sensitivity - want(3)) < 1e-6);
  CHECK(default_boundary_band_width(pred.shape()) == want(5));
  CHECK(std::abs(boundary_iou(pred, label) - want(4)) < 1e-6);

  bool pred_on = false, label_on = false;
  for (auto v : pred) pred_on = pred_on || v;
  for (auto v : label) label_on = label_on || v;
  const auto summary = surface_distance_summary(pred, label, sp);
  if (f.contains(c + ".surface")) {
    const auto surf = f.read<double, 1>(c + ".surface");  // hd95, hausdorff, mean
    CHECK(std::abs(summary.percentile - surf(0)) < 1e-6);
    CHECK(std::abs(summary.hausdorff - surf(1)) < 1e-6);
    CHECK(std::abs(summary.mean - surf(2)) < 1e-6);
    CHECK(std::abs(hd95(pred, label, sp) - surf(0)) < 1e-6);
  } else if (pred_on != label_on) {
    CHECK(std::isinf(summary.percentile));  // documented: exactly one mask empty
  } else {
    REQUIRE(!pred_on);
    CHECK(summary.percentile == 0.0);  // documented: both masks empty
  }
}

}  // namespace

TEST_CASE("golden: Euclidean distance transforms match scipy (2D, 3D, anisotropic, framed)") {
  const auto names = cases("edt", "mask");
  REQUIRE(names.size() >= 5);
  for (const auto& c : names) {
    if (rank_of_tensor(c + ".mask") == 2) check_edt_case<2>(c);
    else check_edt_case<3>(c);
  }
}

TEST_CASE("golden: Dice, IoU, PPV, sensitivity, boundary IoU and surface distances match numpy/scipy") {
  const auto names = cases("seg", "prediction");
  REQUIRE(names.size() >= 8);
  for (const auto& c : names) {
    if (rank_of_tensor(c + ".prediction") == 2) check_seg_case<2>(c);
    else check_seg_case<3>(c);
  }
}

TEST_CASE("golden: multi-label Dice per label") {
  const auto& f = fixture();
  const auto pred = f.read<std::uint8_t, 3>("mld.prediction");
  const auto label = f.read<std::uint8_t, 3>("mld.label");
  const auto labels_t = f.read<std::int64_t, 1>("mld.labels");
  const auto want = f.read<double, 1>("mld.dice");
  const std::vector<std::int64_t> labels(labels_t.begin(), labels_t.end());
  const auto r = multi_label_dice(pred, label, labels);
  REQUIRE(r.dice.size() == labels.size());
  double sum = 0;
  int counted = 0;
  for (std::size_t k = 0; k < labels.size(); ++k) {
    INFO("label " << labels[k]);
    if (std::isnan(want(index_t(k)))) {
      CHECK(std::isnan(r.dice[k]));
    } else {
      CHECK(std::abs(r.dice[k] - want(index_t(k))) < 1e-6);
      sum += want(index_t(k));
      ++counted;
    }
  }
  REQUIRE(counted > 0);
  CHECK(std::abs(r.mean - sum / counted) < 1e-6);
}

TEST_CASE("golden: local NCC value (scipy) and gradient (torch autograd), 2D and 3D") {
  const auto& f = fixture();
  const auto names = cases("ncc", "fixed");
  REQUIRE(names.size() >= 3);
  for (const auto& c : names) {
    INFO("case " << c);
    const double want = f.read<double, 1>(c + ".value")(0);
    const auto window = f.read<std::int64_t, 1>(c + ".window");
    auto check = [&]<std::size_t R>() {
      const auto fixed = f.read<float, R>(c + ".fixed");
      const auto warped = f.read<float, R>(c + ".warped");
      LocalNccOptions<R> o;
      for (std::size_t a = 0; a < R; ++a) o.window[a] = window(index_t(a));
      const auto [value, grad] = local_ncc_with_gradient(fixed, warped, o);
      CHECK(std::abs(value - want) < 1e-6);
      CHECK(std::abs(local_ncc(f.read<double, R>(c + ".fixed"), f.read<double, R>(c + ".warped"), o) - want) < 1e-6);
      const auto want_grad = f.read<float, R>(c + ".grad");
      REQUIRE(grad.shape() == want_grad.shape());
      double num = 0, den = 0;
      for (index_t i = 0; i < grad.size(); ++i) {
        const double d = double(grad.data()[i]) - double(want_grad.data()[i]);
        num += d * d;
        den += double(want_grad.data()[i]) * want_grad.data()[i];
      }
      const double rel = std::sqrt(num / den);
      INFO("gradient relative error " << rel);
      CHECK(rel < 1e-5);
    };
    if (rank_of_tensor(c + ".fixed") == 2) check.template operator()<2>();
    else check.template operator()<3>();
  }
}
