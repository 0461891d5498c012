// Training machinery: initialisers, schedules, gradient clipping, checkpoints (bit-exact round
// trip, named errors, exact resume), determinism of a training step and no allocation after
// the first step.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>

#include "rlmed/core/interop.hpp"
#include "rlmed/nn/nn.hpp"

using namespace rlmed;
namespace fs = std::filesystem;

TEST_CASE("initialisers: He and Xavier variances, orthogonal rows, determinism by seed") {
  Tensor<double, 4> w(Shape<4>{64, 32, 3, 3});
  PhiloxStream rng(1, 0);
  nn::init::he_normal(w.view(), rng);
  double s2 = 0;
  for (double v : w) s2 += v * v;
  CHECK(s2 / double(w.size()) == doctest::Approx(2.0 / (32 * 9)).epsilon(0.05));
  nn::init::xavier_uniform(w.view(), rng);
  s2 = 0;
  for (double v : w) s2 += v * v;
  CHECK(s2 / double(w.size()) == doctest::Approx(2.0 / (32 * 9 + 64 * 9)).epsilon(0.05));
  Tensor<double, 2> q(Shape<2>{6, 10});
  nn::init::orthogonal(q.view(), rng);
  const Eigen::MatrixXd qq = as_eigen_matrix(q.view()) * as_eigen_matrix(q.view()).transpose();
  CHECK((qq - Eigen::MatrixXd::Identity(6, 6)).norm() < 1e-12);
  Tensor<double, 2> tall(Shape<2>{10, 6});
  nn::init::orthogonal(tall.view(), rng, 2.0);
  const Eigen::MatrixXd tt = as_eigen_matrix(tall.view()).transpose() * as_eigen_matrix(tall.view());
  CHECK((tt - 4.0 * Eigen::MatrixXd::Identity(6, 6)).norm() < 1e-12);
  Tensor<float, 2> a(Shape<2>{5, 5}), b(Shape<2>{5, 5});
  PhiloxStream r1(7, 0), r2(7, 0);
  nn::init::he_uniform(a.view(), r1);
  nn::init::he_uniform(b.view(), r2);
  CHECK(bitwise_equal(a, b));
}

TEST_CASE("schedules follow the torch.optim.lr_scheduler formulas") {
  const nn::optim::StepSchedule step{25, 0.9};
  CHECK(step(1e-3, 0) == doctest::Approx(1e-3));
  CHECK(step(1e-3, 24) == doctest::Approx(1e-3));
  CHECK(step(1e-3, 25) == doctest::Approx(9e-4));
  CHECK(step(1e-3, 199) == doctest::Approx(1e-3 * std::pow(0.9, 7)));
  const nn::optim::LinearSchedule lin{1.0, 0.1, 10};
  CHECK(lin(1.0, 5) == doctest::Approx(0.55));
  CHECK(lin(1.0, 50) == doctest::Approx(0.1));
  const nn::optim::CosineSchedule cos{100, 0.0};
  CHECK(cos(1.0, 50) == doctest::Approx(0.5));
  CHECK(cos(1.0, 100) == doctest::Approx(0.0));
  CHECK_THROWS_AS((void)step(1.0, -1), Error);
}

namespace {
using Net = nn::Model<nn::Sequential<nn::Conv<2, 1, 4, 3>, nn::ReLU, nn::BatchNorm<4>, nn::Flatten, nn::Linear<3>>, float>;

Net make_net(std::uint64_t seed) {
  Net net;
  net.layer<0>().config = nn::ConvConfig<2>::same(3);
  net.setup(Shape<4>{2, 1, 6, 6});
  PhiloxStream rng(seed, 0);
  net.initialize(rng);
  return net;
}

// One Adam step on a fixed batch; returns the loss.
template <class Opt>
double train_step(Net& net, Opt& opt, Net::Cache& cache, const Tensor<float, 4>& x, const Tensor<float, 2>& target,
                  Tensor<float, 2>& grad) {
  nn::Context ctx;
  opt.zero_grad();
  const auto y = net.forward(ctx, x.view(), cache);
  const double l = nn::loss::mse<float, 2>(y, target.view(), grad);
  net.backward(ctx, cache, grad.view());
  nn::optim::clip_grad_norm(opt.params(), 1.0);
  opt.step();
  return l;
}
}  // namespace

TEST_CASE("checkpoint round trip is bit-exact and resuming equals never stopping") {
  const auto dir = fs::temp_directory_path() / ("rlmed_ckpt_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  Tensor<float, 4> x(Shape<4>{2, 1, 6, 6});
  Tensor<float, 2> target(Shape<2>{2, 3});
  PhiloxStream data(3, 0);
  fill_normal(x.view(), data);
  fill_normal(target.view(), data);
  Tensor<float, 2> grad;

  // Uninterrupted: 6 steps.
  Net a = make_net(5);
  nn::optim::Adam<float> opt_a(a);
  Net::Cache ca;
  for (int i = 0; i < 6; ++i) train_step(a, opt_a, ca, x, target, grad);

  // Interrupted after 3 steps, saved, restored into a fresh network and optimiser, 3 more.
  Net b = make_net(5);
  nn::optim::Adam<float> opt_b(b);
  Net::Cache cb;
  for (int i = 0; i < 3; ++i) train_step(b, opt_b, cb, x, target, grad);
  nn::save_checkpoint(dir / "step3.safetensors", b, &opt_b, {{"step", "3"}});
  Net c = make_net(999);  // different init: everything must come from the file
  nn::optim::Adam<float> opt_c(c);
  const auto meta = nn::load_checkpoint(dir / "step3.safetensors", c, &opt_c);
  CHECK(meta.at("step") == "3");
  CHECK(opt_c.steps == 3);
  Net::Cache cc;
  for (int i = 0; i < 3; ++i) train_step(c, opt_c, cc, x, target, grad);

  std::vector<Tensor<float, 1>> pa, pc;
  a.parameters([&](const std::string&, auto& p) { pa.push_back(Tensor<float, 1>::copy_of(p.value.flat())); });
  c.parameters([&](const std::string&, auto& p) { pc.push_back(Tensor<float, 1>::copy_of(p.value.flat())); });
  REQUIRE(pa.size() == pc.size());
  for (std::size_t i = 0; i < pa.size(); ++i) CHECK(bitwise_equal(pa[i], pc[i]));
  CHECK(bitwise_equal(a.layer<2>().running_mean, c.layer<2>().running_mean));

  // The file holds module paths, buffers and optimiser state under readable names.
  const auto r = io::SafetensorsReader::open(dir / "step3.safetensors");
  CHECK(r.contains("0.weight"));
  CHECK(r.contains("2.running_var"));
  CHECK(r.contains("optim.4.weight.exp_avg_sq"));
  CHECK(r.contains("optim.step"));
  fs::remove_all(dir);
}

TEST_CASE("loading a checkpoint into another architecture names the missing or mis-shaped tensor") {
  const auto dir = fs::temp_directory_path() / ("rlmed_ckpt2_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  Net a = make_net(1);
  nn::save_checkpoint(dir / "a.safetensors", a);
  using Other = nn::Model<nn::Sequential<nn::Conv<2, 1, 5, 3>, nn::ReLU, nn::BatchNorm<5>, nn::Flatten, nn::Linear<3>>, float>;
  Other o;
  o.layer<0>().config = nn::ConvConfig<2>::same(3);
  o.setup(Shape<4>{2, 1, 6, 6});
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir / "a.safetensors", o), doctest::Contains("tensor '0.weight' has shape [4, 1, 3, 3], expected [5, 1, 3, 3]"), Error);
  nn::optim::SGD<float> sgd(a);
  Net b = make_net(2);
  const auto before = Tensor<float, 4>::copy_of(b.layer<0>().weight.value.view());
  CHECK_THROWS_WITH_AS(nn::load_checkpoint(dir / "a.safetensors", b, &sgd), doctest::Contains("no tensor named 'optim.0.weight.momentum_buffer'"), Error);
  CHECK(bitwise_equal(b.layer<0>().weight.value, before));  // a failed load changes nothing
  CHECK(io::SafetensorsReader::open(dir / "a.safetensors").contains("2.num_batches_tracked"));
  fs::remove_all(dir);
}

TEST_CASE("a training step is deterministic and allocates nothing after the first step") {
  Tensor<float, 4> x(Shape<4>{2, 1, 6, 6});
  Tensor<float, 2> target(Shape<2>{2, 3});
  PhiloxStream data(4, 0);
  fill_normal(x.view(), data);
  fill_normal(target.view(), data);
  Tensor<float, 2> grad;
  Net a = make_net(2), b = make_net(2);
  nn::optim::Adam<float> oa(a), ob(b);
  Net::Cache ca, cb;
  for (int i = 0; i < 4; ++i) CHECK(train_step(a, oa, ca, x, target, grad) == train_step(b, ob, cb, x, target, grad));
  // Buffers keep their addresses from the second step on.
  const float* y0 = std::get<4>(ca.layers).y.data();
  const float* dx0 = std::get<0>(ca.layers).dx.data();
  train_step(a, oa, ca, x, target, grad);
  CHECK(std::get<4>(ca.layers).y.data() == y0);
  CHECK(std::get<0>(ca.layers).dx.data() == dx0);
}

TEST_CASE("gradient clipping scales to the global norm") {
  Net a = make_net(3);
  nn::optim::SGD<float> sgd(a);
  for (const auto& s : sgd.params().slots()) fill(s.grad, 1.0f);
  const double n = std::sqrt(double(sgd.params().numel()));
  CHECK(nn::optim::clip_grad_norm(sgd.params(), 2.0) == doctest::Approx(n));
  CHECK(nn::optim::grad_norm(sgd.params()) == doctest::Approx(2.0).epsilon(1e-5));
  sgd.params().slots()[0].grad.data()[0] = std::nanf("");
  CHECK_THROWS_WITH_AS(nn::optim::clip_grad_norm(sgd.params(), 1.0), doctest::Contains("NaN or inf"), Error);
}
