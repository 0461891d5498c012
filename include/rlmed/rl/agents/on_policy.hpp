// rlmed/rl/agents/on_policy.hpp — what the on-policy agents (REINFORCE, A2C, A3C, PPO) share:
// action distributions with log-probabilities, entropies and their gradients; actor-critic
// networks (separate or shared); SB3's orthogonal initialisation; the policy-gradient, clipped
// surrogate, value and entropy loss terms with their gradients; the [T, N] rollout buffer with GAE.
//
// Design decisions:
//  * Structure is compile-time. The distribution follows from the environment's action space:
//    Discrete<N> -> CategoricalPolicy<N> (N logits), Box<D> -> DiagGaussianPolicy<D> (D means and a
//    state-independent log standard deviation, SB3's default). The networks are specs:
//    Separate<PolicySpec, ValueSpec> (SB3's MlpPolicy default: no shared layers) or
//    Shared<Spec> (one trunk whose last layer gives the W distribution parameters and the value);
//    output widths are checked against the distribution with static_assert.
//  * Every loss term is a function (inputs, gradient out) -> value, forward and backward written
//    side by side, so an agent's update reads as the sum of its terms and each term is testable by
//    finite differences (tests/rl/test_rl_on_policy.cpp). Gradients are w.r.t. the per-sample
//    log-probability, entropy and value; the distribution maps them to its parameters, the network
//    to its weights. Means over the batch are folded into the gradients (PyTorch's reduction).
//  * Actions are stored in the rollout as T rows of action_width numbers (the index for a
//    categorical, the UNclipped sample for a Gaussian, as SB3 stores it); the environment receives
//    the clipped action. Log-probabilities are of the stored action.
//  * Randomness only from PhiloxStreams the agent owns: a categorical draw takes one 32-bit word
//    (inverse CDF), a Gaussian draw two words per dimension (Box-Muller). Greedy actions (argmax,
//    lowest index on ties; the mean for a Gaussian) draw nothing.
//  * Terminations and truncations differ (returns.hpp): a truncated step bootstraps from
//    V(final observation); the rollout keeps these values beside the rewards.
//  * Buffers are members resized with Tensor::resize: after the first update nothing allocates.
//  * Small MLPs (64 units) run fastest with one OpenMP thread (rlmed::set_num_threads(1)): their
//    products are too small to share, and on a busy machine a parallel region that waits for a
//    descheduled thread costs milliseconds. Results are bit-identical run to run either way.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numbers>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <Eigen/Core>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/safetensors.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/nn/init.hpp"
#include "rlmed/nn/layers/activation.hpp"
#include "rlmed/nn/layers/linear.hpp"
#include "rlmed/nn/module.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/nn/optim/param_list.hpp"
#include "rlmed/nn/sequential.hpp"
#include "rlmed/rl/environment.hpp"
#include "rlmed/rl/returns.hpp"
#include "rlmed/rl/spaces.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace rlmed::rl {

// ============================================================================================
// Environments
// ============================================================================================

namespace pg_detail {
template <class O>
struct VectorObs : std::false_type {};
template <class S, std::size_t K>
  requires std::is_floating_point_v<S>
struct VectorObs<std::array<S, K>> : std::true_type {
  using scalar = S;
  static constexpr index_t size = static_cast<index_t>(K);
};
template <class Env>
using action_space_t = std::remove_cvref_t<decltype(std::declval<const Env&>().action_space())>;
}  // namespace pg_detail

/// Environments the on-policy agents accept: observations std::array<float or double, K>.
template <class E>
concept VectorObservationEnv = Environment<E> && pg_detail::VectorObs<typename E::observation_type>::value;

// ============================================================================================
// Action distributions
// ============================================================================================

/// Categorical policy over N actions from N logits z:
///   log π(a) = z_a − logsumexp(z),   H = −Σ_k p_k log p_k,   p = softmax(z)
///   ∂ log π(a)/∂z_k = 1[k = a] − p_k,   ∂H/∂z_k = −p_k (log p_k + H)
template <int N, class T>
class CategoricalPolicy {
  static_assert(N >= 1, "a categorical policy needs at least one action");
  static_assert(std::is_floating_point_v<T>);

 public:
  using value_type = T;
  using action_type = int;
  using space_type = Discrete<N>;
  static constexpr index_t param_width = N;   ///< logits per sample
  static constexpr index_t action_width = 1;  ///< stored numbers per action (the index)

  CategoricalPolicy() = default;
  explicit CategoricalPolicy(const space_type&) {}

  template <class V>
  void parameters(V&&, std::string_view = {}) {}
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  /// Samples from one row of logits (one Philox word), stores the index, returns it.
  action_type sample(const T* logits, PhiloxStream& rng, T* stored) const {
    double weights[N];
    exp_shifted(logits, weights);
    const int a = rng.categorical(weights, N);
    stored[0] = static_cast<T>(a);
    return a;
  }
  /// The most probable action (lowest index on ties).
  action_type mode(const T* logits, T* stored) const {
    check_finite(logits);
    int best = 0;
    for (int k = 1; k < N; ++k)
      if (logits[k] > logits[best]) best = k;
    stored[0] = static_cast<T>(best);
    return best;
  }
  /// The environment action of a stored row.
  action_type to_env(const T* stored) const { return static_cast<int>(stored[0]); }
  /// Stores an environment action (validated).
  void from_env(const action_type& a, T* stored) const {
    validate(a);
    stored[0] = static_cast<T>(a);
  }
  /// rlmed::Error unless a is in {0, ..., N-1}.
  void validate(const action_type& a, std::string_view what = "action") const { space_type::validate(a, what); }

  /// log π(a_b) and H_b for logits [B, N] and stored actions [B, 1].
  void log_prob_entropy(TensorView<const T, 2> logits, TensorView<const T, 2> actions, TensorView<T, 1> log_prob,
                        TensorView<T, 1> entropy) const {
    check_batch(logits, actions, log_prob.extent(0), entropy.extent(0));
    for (index_t b = 0; b < logits.extent(0); ++b) {
      const T* z = logits.data() + b * N;
      const int a = action_index(actions(b, 0), b);
      const double lse = log_sum_exp(z);
      double h = 0;
      for (int k = 0; k < N; ++k) {
        const double lp = static_cast<double>(z[k]) - lse;
        h -= std::exp(lp) * lp;
      }
      log_prob(b) = static_cast<T>(static_cast<double>(z[a]) - lse);
      entropy(b) = static_cast<T>(h);
    }
  }

  /// dlogits[b, k] = dlog_prob_b (1[k = a_b] − p_k) − dentropy_b p_k (log p_k + H_b). Either
  /// upstream gradient may be empty (zero).
  void backward(TensorView<const T, 2> logits, TensorView<const T, 2> actions, TensorView<const T, 1> dlog_prob,
                TensorView<const T, 1> dentropy, TensorView<T, 2> dlogits) {
    const index_t B = logits.extent(0);
    check_batch(logits, actions, dlog_prob.empty() ? B : dlog_prob.extent(0), dentropy.empty() ? B : dentropy.extent(0));
    RLMED_CHECK(dlogits.shape() == logits.shape(), "CategoricalPolicy::backward: gradient shape ", dlogits.shape(),
                ", expected ", logits.shape());
    for (index_t b = 0; b < B; ++b) {
      const T* z = logits.data() + b * N;
      const int a = action_index(actions(b, 0), b);
      const double lse = log_sum_exp(z);
      double lp[N], h = 0;
      for (int k = 0; k < N; ++k) {
        lp[k] = static_cast<double>(z[k]) - lse;
        h -= std::exp(lp[k]) * lp[k];
      }
      const double glp = dlog_prob.empty() ? 0.0 : static_cast<double>(dlog_prob(b));
      const double gh = dentropy.empty() ? 0.0 : static_cast<double>(dentropy(b));
      for (int k = 0; k < N; ++k) {
        const double p = std::exp(lp[k]);
        dlogits(b, k) = static_cast<T>(glp * ((k == a ? 1.0 : 0.0) - p) - gh * p * (lp[k] + h));
      }
    }
  }

 private:
  static void check_finite(const T* z) {
    for (int k = 0; k < N; ++k)
      RLMED_CHECK(std::isfinite(z[k]), "CategoricalPolicy: logit ", k, " is ", z[k], "; expected a finite number");
  }
  static double log_sum_exp(const T* z) {
    check_finite(z);
    double m = z[0];
    for (int k = 1; k < N; ++k) m = std::max(m, static_cast<double>(z[k]));
    double s = 0;
    for (int k = 0; k < N; ++k) s += std::exp(static_cast<double>(z[k]) - m);
    return m + std::log(s);
  }
  static void exp_shifted(const T* z, double* w) {
    check_finite(z);
    double m = z[0];
    for (int k = 1; k < N; ++k) m = std::max(m, static_cast<double>(z[k]));
    for (int k = 0; k < N; ++k) w[k] = std::exp(static_cast<double>(z[k]) - m);
  }
  static int action_index(T stored, index_t row) {
    const int a = static_cast<int>(stored);
    RLMED_CHECK(static_cast<T>(a) == stored && a >= 0 && a < N, "CategoricalPolicy: stored action ", stored,
                " at row ", row, " is not an integer in [0, ", N, ")");
    return a;
  }
  static void check_batch(TensorView<const T, 2> logits, TensorView<const T, 2> actions, index_t n_lp, index_t n_h) {
    const index_t B = logits.extent(0);
    RLMED_CHECK(logits.extent(1) == N, "CategoricalPolicy: logits have shape ", logits.shape(), ", expected [B, ", N, "]");
    RLMED_CHECK(actions.extent(0) == B && actions.extent(1) == 1, "CategoricalPolicy: actions have shape ",
                actions.shape(), ", expected [", B, ", 1]");
    RLMED_CHECK(n_lp == B && n_h == B, "CategoricalPolicy: ", n_lp, " log-prob and ", n_h, " entropy slots for ", B,
                " samples");
  }
};

/// Diagonal Gaussian policy over D dimensions: the network gives the means μ, a trainable
/// state-independent vector gives log σ (SB3's default, initialised to log_std_init = 0):
///   log π(a) = Σ_j −½ z_j² − log σ_j − ½ log 2π,  z = (a − μ)/σ;   H = Σ_j ½ + ½ log 2π + log σ_j
///   ∂ log π/∂μ_j = z_j/σ_j,  ∂ log π/∂log σ_j = z_j² − 1,  ∂H/∂log σ_j = 1
/// The environment receives the sample clipped to the action box; the rollout keeps it unclipped.
template <std::size_t D, class S, class T>
class DiagGaussianPolicy {
  static_assert(D >= 1);
  static_assert(std::is_floating_point_v<T> && std::is_floating_point_v<S>);

 public:
  using value_type = T;
  using action_type = std::array<S, D>;
  using space_type = Box<D, S>;
  static constexpr index_t param_width = static_cast<index_t>(D);
  static constexpr index_t action_width = static_cast<index_t>(D);

  explicit DiagGaussianPolicy(const space_type& space = space_type{}, double log_std_init = 0.0) : space_(space) {
    log_std.reset(Shape<1>{param_width});
    reset_log_std(log_std_init);
  }

  void reset_log_std(double value) {
    RLMED_CHECK(std::isfinite(value), "DiagGaussianPolicy: log_std_init must be finite, found ", value);
    fill(log_std.value.view(), static_cast<T>(value));
  }
  [[nodiscard]] const space_type& space() const noexcept { return space_; }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    visit(nn::join_name(prefix, "log_std"), log_std);
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  /// a = μ + σ ε with ε ~ N(0, 1) (two Philox words per dimension); returns the clipped action.
  action_type sample(const T* mean, PhiloxStream& rng, T* stored) const {
    for (std::size_t j = 0; j < D; ++j) {
      RLMED_CHECK(std::isfinite(mean[j]), "DiagGaussianPolicy: mean ", j, " is ", mean[j]);
      const T eps = static_cast<T>(rng.normal());
      stored[j] = mean[j] + std::exp(log_std.value(static_cast<index_t>(j))) * eps;
    }
    return to_env(stored);
  }
  action_type mode(const T* mean, T* stored) const {
    for (std::size_t j = 0; j < D; ++j) {
      RLMED_CHECK(std::isfinite(mean[j]), "DiagGaussianPolicy: mean ", j, " is ", mean[j]);
      stored[j] = mean[j];
    }
    return to_env(stored);
  }
  action_type to_env(const T* stored) const {
    action_type a;
    for (std::size_t j = 0; j < D; ++j)
      a[j] = std::min(std::max(static_cast<S>(stored[j]), space_.low[j]), space_.high[j]);
    return a;
  }
  void from_env(const action_type& a, T* stored) const {
    validate(a);
    for (std::size_t j = 0; j < D; ++j) stored[j] = static_cast<T>(a[j]);
  }
  /// rlmed::Error unless a lies in the action box (no NaN).
  void validate(const action_type& a, std::string_view what = "action") const { space_.validate(a, what); }

  void log_prob_entropy(TensorView<const T, 2> mean, TensorView<const T, 2> actions, TensorView<T, 1> log_prob,
                        TensorView<T, 1> entropy) const {
    check_batch(mean, actions, log_prob.extent(0), entropy.extent(0));
    const double half_log_2pi = 0.5 * std::log(2.0 * std::numbers::pi);
    double h = 0;
    for (std::size_t j = 0; j < D; ++j) h += 0.5 + half_log_2pi + static_cast<double>(log_std.value(index_t(j)));
    for (index_t b = 0; b < mean.extent(0); ++b) {
      double lp = 0;
      for (index_t j = 0; j < param_width; ++j) {
        const double ls = log_std.value(j);
        const double z = (static_cast<double>(actions(b, j)) - static_cast<double>(mean(b, j))) / std::exp(ls);
        lp += -0.5 * z * z - ls - half_log_2pi;
      }
      log_prob(b) = static_cast<T>(lp);
      entropy(b) = static_cast<T>(h);
    }
  }

  /// dmean[b, j] = dlog_prob_b z_j/σ_j; log_std.grad_j += Σ_b dlog_prob_b (z_j² − 1) + dentropy_b.
  void backward(TensorView<const T, 2> mean, TensorView<const T, 2> actions, TensorView<const T, 1> dlog_prob,
                TensorView<const T, 1> dentropy, TensorView<T, 2> dmean) {
    const index_t B = mean.extent(0);
    check_batch(mean, actions, dlog_prob.empty() ? B : dlog_prob.extent(0), dentropy.empty() ? B : dentropy.extent(0));
    RLMED_CHECK(dmean.shape() == mean.shape(), "DiagGaussianPolicy::backward: gradient shape ", dmean.shape(),
                ", expected ", mean.shape());
    for (index_t j = 0; j < param_width; ++j) {
      const double ls = log_std.value(j), sigma = std::exp(ls);
      double g_ls = 0;
      for (index_t b = 0; b < B; ++b) {
        const double glp = dlog_prob.empty() ? 0.0 : static_cast<double>(dlog_prob(b));
        const double gh = dentropy.empty() ? 0.0 : static_cast<double>(dentropy(b));
        const double z = (static_cast<double>(actions(b, j)) - static_cast<double>(mean(b, j))) / sigma;
        dmean(b, j) = static_cast<T>(glp * z / sigma);
        g_ls += glp * (z * z - 1.0) + gh;
      }
      log_std.grad(j) += static_cast<T>(g_ls);
    }
  }

  nn::Parameter<T, 1> log_std;  ///< [D]

 private:
  static void check_batch(TensorView<const T, 2> mean, TensorView<const T, 2> actions, index_t n_lp, index_t n_h) {
    const index_t B = mean.extent(0);
    RLMED_CHECK(mean.extent(1) == param_width, "DiagGaussianPolicy: means have shape ", mean.shape(), ", expected [B, ",
                D, "]");
    RLMED_CHECK(actions.extent(0) == B && actions.extent(1) == param_width, "DiagGaussianPolicy: actions have shape ",
                actions.shape(), ", expected [", B, ", ", D, "]");
    RLMED_CHECK(n_lp == B && n_h == B, "DiagGaussianPolicy: ", n_lp, " log-prob and ", n_h, " entropy slots for ", B,
                " samples");
  }
  space_type space_;
};

/// The distribution an action space calls for.
template <class Space, class T>
struct DistributionFor {
  static_assert(sizeof(Space) == 0, "on-policy agents support Discrete<N> and Box<D> action spaces");
};
template <int N, class T>
struct DistributionFor<Discrete<N>, T> {
  using type = CategoricalPolicy<N, T>;
};
template <std::size_t D, class S, class T>
struct DistributionFor<Box<D, S>, T> {
  using type = DiagGaussianPolicy<D, S, T>;
};

// ============================================================================================
// Actor-critic networks
// ============================================================================================

/// Which heads a forward or backward pass needs.
enum class Heads : unsigned { policy = 1, value = 2, both = 3 };
constexpr bool has_head(Heads h, Heads part) noexcept {
  return (static_cast<unsigned>(h) & static_cast<unsigned>(part)) != 0;
}

/// The two outputs of an actor-critic network: distribution parameters [B, W] and values [B, 1].
template <class T>
struct PolicyValue {
  TensorView<const T, 2> policy;
  TensorView<const T, 2> value;
};

/// Policy network PiSpec ([B, K] -> [B, W]) and value network VfSpec ([B, K] -> [B, 1]) without
/// shared layers. Parameters "pi.*" and "vf.*".
template <class PiSpec, class VfSpec, class T, index_t Width>
class SeparateActorCriticModule {
  static_assert(PiSpec::out_channels(nn::kAnyChannels) == Width,
                "Separate<PolicySpec, ValueSpec>: the policy network's output width must equal the distribution's "
                "parameter count (N logits for Discrete<N>, D means for Box<D>)");
  static_assert(VfSpec::out_channels(nn::kAnyChannels) == 1,
                "Separate<PolicySpec, ValueSpec>: the value network must end in one output");

 public:
  using value_type = T;
  using Pi = nn::Model<PiSpec, T, 2>;
  using Vf = nn::Model<VfSpec, T, 2>;
  struct Cache {
    typename Pi::Cache pi;
    typename Vf::Cache vf;
  };

  void setup(index_t obs_dim) {
    const auto a = pi.setup(Shape<2>{1, obs_dim});
    const auto v = vf.setup(Shape<2>{1, obs_dim});
    RLMED_CHECK(a[1] == Width && v[1] == 1, "Separate actor-critic: outputs [", a[1], "] and [", v[1], "], expected [",
                Width, "] and [1]");
  }
  void initialize(PhiloxStream& rng) {
    pi.initialize(rng);
    vf.initialize(rng);
  }
  /// Calls f(network, role) for each network: the initialiser gives its last layer the gain of
  /// its role (policy head, value head, or both for a shared network).
  template <class F>
  void visit_parts(F&& f) {
    f(pi, Heads::policy);
    f(vf, Heads::value);
  }

  PolicyValue<T> forward(nn::Context& ctx, TensorView<const T, 2> x, Cache& cache, Heads heads = Heads::both) {
    PolicyValue<T> out;
    if (has_head(heads, Heads::policy)) out.policy = pi.forward(ctx, x, cache.pi);
    if (has_head(heads, Heads::value)) out.value = vf.forward(ctx, x, cache.vf);
    return out;
  }
  /// Accumulates parameter gradients; an empty view skips that head.
  void backward(nn::Context& ctx, Cache& cache, TensorView<const T, 2> dpolicy, TensorView<const T, 2> dvalue) {
    nn::Context c = ctx;
    c.input_grad = false;
    if (!dpolicy.empty()) pi.backward(c, cache.pi, dpolicy);
    if (!dvalue.empty()) vf.backward(c, cache.vf, dvalue);
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    pi.parameters(visit, nn::join_name(prefix, "pi"));
    vf.parameters(visit, nn::join_name(prefix, "vf"));
  }
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) {
    pi.buffers(visit, nn::join_name(prefix, "pi"));
    vf.buffers(visit, nn::join_name(prefix, "vf"));
  }

  Pi pi;
  Vf vf;
};

/// One network Spec ([B, K] -> [B, W + 1]): columns [0, W) are the distribution parameters,
/// column W the value (the A3C paper's shared torso). Parameters "net.*".
template <class Spec, class T, index_t Width>
class SharedActorCriticModule {
  static_assert(Spec::out_channels(nn::kAnyChannels) == Width + 1,
                "Shared<Spec>: the network's output width must be the distribution's parameter count + 1 (value)");

 public:
  using value_type = T;
  using Net = nn::Model<Spec, T, 2>;
  struct Cache {
    typename Net::Cache net;
    Tensor<T, 2> policy, value, dy;  // [B, W], [B, 1], [B, W + 1]
  };

  void setup(index_t obs_dim) {
    const auto y = net.setup(Shape<2>{1, obs_dim});
    RLMED_CHECK(y[1] == Width + 1, "Shared actor-critic: output width ", y[1], ", expected ", Width + 1);
  }
  void initialize(PhiloxStream& rng) { net.initialize(rng); }
  template <class F>
  void visit_parts(F&& f) {
    f(net, Heads::both);
  }

  PolicyValue<T> forward(nn::Context& ctx, TensorView<const T, 2> x, Cache& cache, Heads heads = Heads::both) {
    const auto y = net.forward(ctx, x, cache.net);  // [B, W + 1]
    const index_t B = y.extent(0);
    cache.policy.resize(Shape<2>{B, Width});
    cache.value.resize(Shape<2>{B, 1});
    for (index_t b = 0; b < B; ++b) {
      std::copy(y.data() + b * (Width + 1), y.data() + b * (Width + 1) + Width, cache.policy.data() + b * Width);
      cache.value(b, 0) = y(b, Width);
    }
    PolicyValue<T> out;
    if (has_head(heads, Heads::policy)) out.policy = cache.policy.view();
    if (has_head(heads, Heads::value)) out.value = cache.value.view();
    return out;
  }
  void backward(nn::Context& ctx, Cache& cache, TensorView<const T, 2> dpolicy, TensorView<const T, 2> dvalue) {
    const index_t B = cache.value.extent(0);
    cache.dy.resize(Shape<2>{B, Width + 1});
    fill(cache.dy.view(), T(0));
    for (index_t b = 0; b < B; ++b) {
      if (!dpolicy.empty())
        std::copy(dpolicy.data() + b * Width, dpolicy.data() + (b + 1) * Width, cache.dy.data() + b * (Width + 1));
      if (!dvalue.empty()) cache.dy(b, Width) = dvalue(b, 0);
    }
    nn::Context c = ctx;
    c.input_grad = false;
    net.backward(c, cache.net, cache.dy.view());
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    net.parameters(visit, nn::join_name(prefix, "net"));
  }
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) {
    net.buffers(visit, nn::join_name(prefix, "net"));
  }

  Net net;
};

/// Spec: separate policy and value networks.
template <class PolicySpec, class ValueSpec>
struct Separate {
  template <class T, index_t Width>
  using module = SeparateActorCriticModule<PolicySpec, ValueSpec, T, Width>;
};
/// Spec: one network for both heads.
template <class Spec>
struct Shared {
  template <class T, index_t Width>
  using module = SharedActorCriticModule<Spec, T, Width>;
};

/// tanh over whole arrays with Eigen's vectorised rational approximation (float: a few ulp of
/// std::tanh, ~10x faster than libm's scalar tanhf, which dominated small-MLP updates; double:
/// std::tanh). Same protocol as nn::Tanh: y = tanh(x), dx = dy (1 − y²). Deterministic: the
/// result of an element depends only on its value.
template <class T, std::size_t Rank>
class FastTanhModule : public nn::Stateless {
 public:
  using value_type = T;
  static constexpr std::size_t in_rank = Rank;
  static constexpr std::size_t out_rank = Rank;
  struct Cache {
    Tensor<T, Rank> y;
    Tensor<T, Rank> dx;
  };
  void initialize(PhiloxStream&) {}
  Shape<Rank> output_shape(const Shape<Rank>& in) const { return in; }

  TensorView<const T, Rank> forward(nn::Context&, TensorView<const T, Rank> x, Cache& cache) {
    cache.y.resize(x.shape());
    array(cache.y.data(), x.size()) = const_array(x.data(), x.size()).tanh();
    return cache.y.view();
  }
  TensorView<const T, Rank> backward(nn::Context&, Cache& cache, TensorView<const T, Rank> dy) {
    nn::detail::check_grad_shape(dy, cache.y.shape(), "FastTanh");
    cache.dx.resize(dy.shape());
    const auto y = const_array(cache.y.data(), dy.size());
    array(cache.dx.data(), dy.size()) = const_array(dy.data(), dy.size()) * (T(1) - y * y);
    return cache.dx.view();
  }

 private:
  using Array = Eigen::Array<T, Eigen::Dynamic, 1>;
  static Eigen::Map<Array> array(T* p, index_t n) { return Eigen::Map<Array>(p, n); }
  static Eigen::Map<const Array> const_array(const T* p, index_t n) { return Eigen::Map<const Array>(p, n); }
};

/// Spec of FastTanh: any rank, channels unchanged (a drop-in for nn::Tanh).
struct FastTanh {
  static constexpr index_t in_channels = nn::kAnyChannels;
  static constexpr index_t out_channels(index_t c) { return c; }
  template <class T, std::size_t Rank>
  using module = FastTanhModule<T, Rank>;
};

/// An MLP of two tanh hidden layers of Hidden units and Out outputs.
template <index_t Hidden, index_t Out>
using TanhMlp = nn::Sequential<nn::Linear<Hidden>, FastTanh, nn::Linear<Hidden>, FastTanh, nn::Linear<Out>>;

/// SB3's MlpPolicy default: separate policy and value MLPs (two tanh layers of Hidden units each);
/// the policy's output width follows the action space.
template <index_t Hidden = 64>
struct SeparateMlp {
  template <class T, index_t Width>
  using module = SeparateActorCriticModule<TanhMlp<Hidden, Width>, TanhMlp<Hidden, 1>, T, Width>;
};

/// Initialisation of an actor-critic (SB3's ActorCriticPolicy): with `orthogonal`, every weight
/// (rank >= 2) gets an orthogonal matrix with gain √2, the policy's last layer gain 0.01, the
/// value's last layer gain 1, biases 0; otherwise the layers' own (PyTorch-default) initialisers.
struct InitConfig {
  bool orthogonal = true;
  double hidden_gain = std::numbers::sqrt2;
  double policy_gain = 0.01;
  double value_gain = 1.0;
  double log_std_init = 0.0;  ///< Gaussian policies only
};

/// Network + distribution: the complete policy, one parameter set for one optimiser.
template <class NetSpec, class Dist>
class ActorCritic {
 public:
  using value_type = typename Dist::value_type;
  using T = value_type;
  using dist_type = Dist;
  using Net = typename NetSpec::template module<T, Dist::param_width>;
  using Cache = typename Net::Cache;
  static constexpr index_t width = Dist::param_width;

  explicit ActorCritic(Dist d = Dist{}) : dist(std::move(d)) {}

  /// Builds the layers for observations of obs_dim numbers.
  void setup(index_t obs_dim) {
    RLMED_CHECK(obs_dim >= 1, "ActorCritic: observations need at least one component, found ", obs_dim);
    net.setup(obs_dim);
    obs_dim_ = obs_dim;
  }
  [[nodiscard]] index_t obs_dim() const noexcept { return obs_dim_; }

  /// The layers' initialisers from `rng`, then (InitConfig::orthogonal) SB3's orthogonal scheme.
  void initialize(PhiloxStream& rng, const InitConfig& init = {}) {
    net.initialize(rng);
    if (init.orthogonal) {
      net.visit_parts([&](auto& module, Heads role) { orthogonal_init(module, rng, init, role); });
    }
    if constexpr (requires { dist.reset_log_std(0.0); }) dist.reset_log_std(init.log_std_init);
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    net.parameters(visit, prefix);
    dist.parameters(visit, prefix);
  }
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) {
    net.buffers(visit, prefix);
    dist.buffers(visit, prefix);
  }

  /// Copies every parameter value from `other` (same architecture): A3C's pull and push.
  void copy_parameters_from(ActorCritic& other) {
    std::vector<TensorView<const T, 1>> src;
    other.parameters([&](const std::string&, auto& p) { src.push_back(p.value.flat()); });
    std::size_t i = 0;
    parameters([&](const std::string& name, auto& p) {
      RLMED_CHECK(i < src.size() && src[i].size() == p.value.size(), "ActorCritic::copy_parameters_from: parameter '",
                  name, "' differs between the two networks");
      std::copy(src[i].begin(), src[i].end(), p.value.data());
      ++i;
    });
  }

  Net net;
  Dist dist;

 private:
  template <class M>
  static void orthogonal_init(M& module, PhiloxStream& rng, const InitConfig& init, Heads role) {
    int weights = 0;
    module.parameters([&](const std::string&, auto& p) {
      if constexpr (std::remove_reference_t<decltype(p.value)>::rank >= 2) ++weights;
    });
    int seen = 0;
    module.parameters([&](const std::string&, auto& p) {
      using P = std::remove_reference_t<decltype(p.value)>;
      if constexpr (P::rank >= 2) {
        ++seen;
        const bool last = seen == weights;
        const double gain = !last ? init.hidden_gain : (role == Heads::value ? init.value_gain : init.policy_gain);
        nn::init::orthogonal(p.value.view(), rng, role == Heads::both && last ? init.value_gain : gain);
        if (role == Heads::both && last) {
          // Shared output layer: rows [0, W) are the policy head, row W the value.
          const index_t cols = p.value.size() / p.value.extent(0);
          const T scale = static_cast<T>(init.policy_gain / init.value_gain);
          for (index_t r = 0; r < std::min<index_t>(width, p.value.extent(0)); ++r)
            for (index_t c = 0; c < cols; ++c) p.value.data()[r * cols + c] *= scale;
        }
      } else {
        fill(p.value.view(), typename P::value_type(0));
      }
    });
  }
  index_t obs_dim_ = 0;
};

// ============================================================================================
// Loss terms (value and gradient side by side)
// ============================================================================================

/// Vanilla policy gradient (REINFORCE, A2C): L = −mean_b(A_b log π_b); dlog_prob_b = −A_b / B.
template <class T>
double policy_gradient_loss(std::span<const T> log_prob, std::span<const T> advantages, std::span<T> dlog_prob) {
  const std::size_t B = log_prob.size();
  RLMED_CHECK(B >= 1 && advantages.size() == B && dlog_prob.size() == B, "policy_gradient_loss: ", B,
              " log-probs, ", advantages.size(), " advantages, ", dlog_prob.size(), " gradient slots");
  double sum = 0;
  for (std::size_t b = 0; b < B; ++b) {
    sum += static_cast<double>(advantages[b]) * static_cast<double>(log_prob[b]);
    dlog_prob[b] = static_cast<T>(-static_cast<double>(advantages[b]) / static_cast<double>(B));
  }
  const double loss = -sum / static_cast<double>(B);
  RLMED_CHECK(std::isfinite(loss), "policy_gradient_loss is ", loss, " (NaN or inf in log-probs or advantages)");
  return loss;
}

/// Statistics of a clipped-surrogate evaluation.
struct SurrogateStats {
  double loss = 0;           ///< −mean min(r A, clip(r) A)
  double clip_fraction = 0;  ///< fraction of samples with |r − 1| > ε
  double approx_kl = 0;      ///< mean((r − 1) − log r), Schulman's low-variance KL(old || new) estimator
};

/// PPO's clipped surrogate (Schulman et al. 2017, eq. 7), r_b = exp(log π_b − log π_old,b):
///   L = −mean_b min(r_b A_b, clip(r_b, 1 − ε, 1 + ε) A_b)
///   dL/dlog π_b = −r_b A_b / B where the unclipped term is the minimum (r A ≤ clip(r) A), else 0.
template <class T>
SurrogateStats clipped_surrogate(std::span<const T> log_prob, std::span<const T> old_log_prob,
                                 std::span<const T> advantages, double clip_range, std::span<T> dlog_prob) {
  const std::size_t B = log_prob.size();
  RLMED_CHECK(B >= 1 && old_log_prob.size() == B && advantages.size() == B && dlog_prob.size() == B,
              "clipped_surrogate: ", B, " log-probs, ", old_log_prob.size(), " old log-probs, ", advantages.size(),
              " advantages, ", dlog_prob.size(), " gradient slots");
  RLMED_CHECK(clip_range >= 0 && std::isfinite(clip_range), "clipped_surrogate: clip range must be >= 0, found ",
              clip_range);
  SurrogateStats s;
  double sum = 0, kl = 0;
  std::size_t clipped = 0;
  for (std::size_t b = 0; b < B; ++b) {
    const double log_ratio = static_cast<double>(log_prob[b]) - static_cast<double>(old_log_prob[b]);
    const double r = std::exp(log_ratio);
    const double a = advantages[b];
    const double unclipped = r * a;
    const double clipped_term = std::clamp(r, 1.0 - clip_range, 1.0 + clip_range) * a;
    const bool take_unclipped = unclipped <= clipped_term;
    sum += take_unclipped ? unclipped : clipped_term;
    dlog_prob[b] = static_cast<T>(take_unclipped ? -unclipped / static_cast<double>(B) : 0.0);
    clipped += std::abs(r - 1.0) > clip_range ? 1 : 0;
    kl += (r - 1.0) - log_ratio;
  }
  s.loss = -sum / static_cast<double>(B);
  s.clip_fraction = static_cast<double>(clipped) / static_cast<double>(B);
  s.approx_kl = kl / static_cast<double>(B);
  RLMED_CHECK(std::isfinite(s.loss), "clipped_surrogate: loss is ", s.loss, " (NaN or inf in the inputs)");
  return s;
}

/// Value loss L = mean_b (V_b − R_b)² (SB3: F.mse_loss), or with clip_range_vf > 0 the clipped form
/// of OpenAI baselines' PPO2: V^clip = V_old + clip(V − V_old, ±ε_v), L = mean max((V − R)², (V^clip − R)²).
/// dvalue_b = dL/dV_b. `old_values` may be empty when clip_range_vf <= 0.
template <class T>
double value_loss(std::span<const T> values, std::span<const T> returns, std::span<const T> old_values,
                  double clip_range_vf, std::span<T> dvalue) {
  const std::size_t B = values.size();
  const bool clip = clip_range_vf > 0;
  RLMED_CHECK(B >= 1 && returns.size() == B && dvalue.size() == B && (!clip || old_values.size() == B),
              "value_loss: ", B, " values, ", returns.size(), " returns, ", old_values.size(), " old values, ",
              dvalue.size(), " gradient slots");
  double sum = 0;
  const double n = static_cast<double>(B);
  for (std::size_t b = 0; b < B; ++b) {
    const double v = values[b], R = returns[b];
    const double d = v - R;
    if (!clip) {
      sum += d * d;
      dvalue[b] = static_cast<T>(2.0 * d / n);
      continue;
    }
    const double old = old_values[b];
    const double delta = v - old;
    const bool inside = delta >= -clip_range_vf && delta <= clip_range_vf;
    const double vc = old + std::clamp(delta, -clip_range_vf, clip_range_vf);
    const double dc = vc - R;
    if (d * d >= dc * dc) {
      sum += d * d;
      dvalue[b] = static_cast<T>(2.0 * d / n);
    } else {
      sum += dc * dc;
      dvalue[b] = static_cast<T>(inside ? 2.0 * dc / n : 0.0);
    }
  }
  const double loss = sum / n;
  RLMED_CHECK(std::isfinite(loss), "value_loss is ", loss, " (NaN or inf in values or returns)");
  return loss;
}

/// Mean entropy H̄ = mean_b H_b; writes dentropy_b = coef · ∂H̄/∂H_b = coef / B (pass −ent_coef to
/// get the gradient of the bonus term −ent_coef · H̄ of a loss).
template <class T>
double mean_entropy(std::span<const T> entropy, double coef, std::span<T> dentropy) {
  const std::size_t B = entropy.size();
  RLMED_CHECK(B >= 1 && dentropy.size() == B, "mean_entropy: ", B, " entropies, ", dentropy.size(), " gradient slots");
  double sum = 0;
  for (std::size_t b = 0; b < B; ++b) {
    sum += static_cast<double>(entropy[b]);
    dentropy[b] = static_cast<T>(coef / static_cast<double>(B));
  }
  RLMED_CHECK(std::isfinite(sum), "mean_entropy: entropy sum is ", sum);
  return sum / static_cast<double>(B);
}

/// 1 − Var(R − V)/Var(R): how much of the returns' variance the value function explains.
template <class T>
double explained_variance(std::span<const T> values, std::span<const T> returns) {
  const std::size_t n = values.size();
  if (n < 2 || returns.size() != n) return std::numeric_limits<double>::quiet_NaN();
  double mr = 0, md = 0;
  for (std::size_t i = 0; i < n; ++i) {
    mr += returns[i];
    md += static_cast<double>(returns[i]) - static_cast<double>(values[i]);
  }
  mr /= double(n);
  md /= double(n);
  double vr = 0, vd = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double r = static_cast<double>(returns[i]) - mr;
    const double d = static_cast<double>(returns[i]) - static_cast<double>(values[i]) - md;
    vr += r * r;
    vd += d * d;
  }
  return vr == 0 ? std::numeric_limits<double>::quiet_NaN() : 1.0 - vd / vr;
}

// ============================================================================================
// Rollout buffer
// ============================================================================================

/// T steps of N environments, time-major, as the act/observe protocol fills it.
template <class T>
struct Rollout {
  Tensor<T, 3> obs;                 // [S, N, K]
  Tensor<T, 3> actions;             // [S, N, action_width]
  Tensor<T, 2> log_probs;           // [S, N]
  Tensor<T, 2> values;              // [S, N] V(obs) at collection
  Tensor<T, 2> rewards;             // [S, N]
  Tensor<std::uint8_t, 2> terminated, truncated;  // [S, N]
  Tensor<T, 2> truncation_values;   // [S, N] V(final observation) where truncated
  Tensor<T, 2> next_values;         // [S, N] (finish)
  Tensor<T, 2> advantages;          // [S, N] (finish)
  Tensor<T, 2> returns;             // [S, N] (finish)
  Tensor<T, 2> last_obs;            // [N, K] the observation after the last stored step
  Tensor<T, 1> last_values;         // [N]
  index_t pos = 0;

  [[nodiscard]] index_t steps() const noexcept { return obs.extent(0); }
  [[nodiscard]] index_t envs() const noexcept { return obs.extent(1); }
  [[nodiscard]] index_t obs_dim() const noexcept { return obs.extent(2); }
  [[nodiscard]] index_t action_width() const noexcept { return actions.extent(2); }
  [[nodiscard]] bool full() const noexcept { return pos == steps(); }
  [[nodiscard]] bool allocated() const noexcept { return obs.size() > 0; }

  void allocate(index_t steps, index_t envs, index_t obs_dim, index_t action_width) {
    RLMED_CHECK(steps >= 1 && envs >= 1 && obs_dim >= 1 && action_width >= 1, "Rollout: needs positive sizes, found ",
                steps, " steps, ", envs, " envs, ", obs_dim, " observation and ", action_width, " action components");
    obs = Tensor<T, 3>(Shape<3>{steps, envs, obs_dim});
    actions = Tensor<T, 3>(Shape<3>{steps, envs, action_width});
    for (auto* t : {&log_probs, &values, &rewards, &truncation_values, &next_values, &advantages, &returns})
      *t = Tensor<T, 2>(Shape<2>{steps, envs});
    terminated = Tensor<std::uint8_t, 2>(Shape<2>{steps, envs});
    truncated = Tensor<std::uint8_t, 2>(Shape<2>{steps, envs});
    last_obs = Tensor<T, 2>(Shape<2>{envs, obs_dim});
    last_values = Tensor<T, 1>(Shape<1>{envs});
    pos = 0;
  }

  /// GAE(γ, λ) over the stored steps, bootstrapped from last_values (set by the caller).
  void finish(double gamma, double lambda) {
    RLMED_CHECK(full(), "Rollout::finish: ", pos, " of ", steps(), " steps stored");
    build_next_values_into<T>(values.view(), last_values.view(), truncated.view(), truncation_values.view(),
                              next_values.view());
    gae_into<T>(rewards.view(), values.view(), next_values.view(), terminated.view(), truncated.view(), gamma, lambda,
                advantages.view(), returns.view());
  }

  /// Observations as one batch [S·N, K] and stored actions [S·N, action_width].
  TensorView<const T, 2> flat_obs() const { return obs.view().reshape(Shape<2>{steps() * envs(), obs_dim()}); }
  TensorView<const T, 2> flat_actions() const {
    return actions.view().reshape(Shape<2>{steps() * envs(), action_width()});
  }

  template <class F>
  void visit_tensors(F&& f) {
    f("obs", obs);
    f("actions", actions);
    f("log_probs", log_probs);
    f("values", values);
    f("rewards", rewards);
    f("terminated", terminated);
    f("truncated", truncated);
    f("truncation_values", truncation_values);
    f("last_obs", last_obs);
  }
  void save(io::SafetensorsWriter& w, const std::string& prefix) const {
    auto& self = const_cast<Rollout&>(*this);
    self.visit_tensors([&](const char* name, auto& t) { w.add(prefix + name, t); });
    ckpt::save_i64(w, prefix + "pos", pos);
  }
  /// Checks every tensor against this (allocated) buffer's shapes, then loads.
  void load(const io::SafetensorsReader& r, const std::string& prefix) {
    check(r, prefix);
    visit_tensors([&](const char* name, auto& t) { r.read_into(prefix + name, t.view()); });
    pos = ckpt::load_i64(r, prefix + "pos");
  }
  void check(const io::SafetensorsReader& r, const std::string& prefix) {
    visit_tensors([&](const char* name, auto& t) { ckpt::expect_shape(r, prefix + name, t.shape()); });
    ckpt::expect_shape(r, prefix + "pos", Shape<1>{1});
    const auto p = ckpt::load_i64(r, prefix + "pos");
    RLMED_CHECK(p >= 0 && p <= steps(), r.source(), ": rollout position ", p, " outside [0, ", steps(), "]");
  }
};

// ============================================================================================
// Shared acting machinery of the rollout agents (A2C, PPO)
// ============================================================================================

namespace pg_detail {

/// Copies K-component observations into rows of `out` [n, K] (NaN is an error).
template <class T, class Obs>
void stack_obs_into(std::span<const Obs> obs, Tensor<T, 2>& out, const char* who) {
  constexpr index_t K = VectorObs<Obs>::size;
  out.resize(Shape<2>{static_cast<index_t>(obs.size()), K});
  for (std::size_t i = 0; i < obs.size(); ++i)
    for (index_t k = 0; k < K; ++k) {
      const auto v = obs[i][static_cast<std::size_t>(k)];
      RLMED_CHECK(!std::isnan(v), who, ": observation ", i, " component ", k, " is NaN");
      out(static_cast<index_t>(i), k) = static_cast<T>(v);
    }
}

/// The environment-facing default optimiser settings of each algorithm.
template <class OptConfig>
OptConfig adam_defaults(double lr, double eps) {
  OptConfig c{};
  if constexpr (std::is_same_v<OptConfig, nn::optim::AdamConfig>) {
    c.lr = lr;
    c.eps = eps;
  }
  return c;
}
template <class OptConfig>
OptConfig rmsprop_defaults(double lr, double alpha, double eps) {
  OptConfig c{};
  if constexpr (std::is_same_v<OptConfig, nn::optim::RmspropConfig>) {
    c.lr = lr;
    c.alpha = alpha;
    c.eps = eps;
  }
  return c;
}

}  // namespace pg_detail

/// Terms of an actor-critic loss evaluation.
struct ActorCriticLossStats {
  double loss = std::numeric_limits<double>::quiet_NaN();
  double policy_loss = std::numeric_limits<double>::quiet_NaN();
  double value_loss = std::numeric_limits<double>::quiet_NaN();
  double entropy = std::numeric_limits<double>::quiet_NaN();
  double explained_variance = std::numeric_limits<double>::quiet_NaN();
};

/// Settings common to the rollout agents.
struct RolloutConfig {
  index_t n_steps = 5;       ///< steps per environment per rollout
  double gamma = 0.99;
  double gae_lambda = 1.0;   ///< 1: plain n-step returns (A2C)
  std::uint64_t seed = 0;    ///< streams: stream_base + 0 initialisation, + 1 actions, + 2 shuffling
  InitConfig init{};
  std::uint64_t stream_base = 0;

  void validate(const char* who) const {
    RLMED_CHECK(n_steps >= 1, who, ": n_steps must be >= 1, found ", n_steps);
    RLMED_CHECK(gamma >= 0 && gamma <= 1, who, ": gamma must be in [0, 1], found ", gamma);
    RLMED_CHECK(gae_lambda >= 0 && gae_lambda <= 1, who, ": gae_lambda must be in [0, 1], found ", gae_lambda);
  }
};

/// act / observe / evaluate_actions and checkpointing of a rollout agent; the algorithm derives
/// from it and adds update(). Not copyable (the optimiser of the derived class holds views).
template <VectorObservationEnv Env, class NetSpec, class T>
class RolloutAgentBase {
 public:
  using observation_type = typename Env::observation_type;
  using space_type = pg_detail::action_space_t<Env>;
  using dist_type = typename DistributionFor<space_type, T>::type;
  using model_type = ActorCritic<NetSpec, dist_type>;
  using action_type = typename dist_type::action_type;
  using value_type = T;
  static constexpr index_t obs_dim = pg_detail::VectorObs<observation_type>::size;
  static constexpr index_t action_width = dist_type::action_width;
  static constexpr const char* exploration_label = "entropy";
  static_assert(std::is_same_v<action_type, typename Env::action_type>,
                "the environment's action type differs from what its action space's distribution produces");

  RolloutAgentBase(const RolloutAgentBase&) = delete;
  RolloutAgentBase& operator=(const RolloutAgentBase&) = delete;

  [[nodiscard]] model_type& model() noexcept { return model_; }
  [[nodiscard]] const Rollout<T>& rollout() const noexcept { return rollout_; }
  [[nodiscard]] index_t num_envs() const noexcept { return rollout_.allocated() ? rollout_.envs() : 0; }
  [[nodiscard]] PhiloxStream& action_stream() noexcept { return action_rng_; }

  /// Samples an action per environment from the current policy (stream 1) and remembers the
  /// log-probabilities and values for observe().
  void act(std::span<const observation_type> obs, std::span<action_type> actions) {
    RLMED_CHECK(obs.size() == actions.size() && !obs.empty(), agent_name_, "::act: ", obs.size(), " observations and ",
                actions.size(), " action slots; expected the same positive number");
    ensure_envs(static_cast<index_t>(obs.size()));
    pg_detail::stack_obs_into(obs, act_obs_, agent_name_);
    nn::Context ctx;
    ctx.training = false;
    const auto out = model_.net.forward(ctx, act_obs_.view(), act_cache_);
    const index_t n = act_obs_.extent(0);
    pending_actions_.resize(Shape<2>{n, action_width});
    pending_log_probs_.resize(Shape<1>{n});
    pending_entropy_.resize(Shape<1>{n});
    pending_values_.resize(Shape<1>{n});
    pending_env_actions_.resize(static_cast<std::size_t>(n));
    for (index_t i = 0; i < n; ++i) {
      const auto a = model_.dist.sample(out.policy.data() + i * dist_type::param_width, action_rng_,
                                        pending_actions_.data() + i * action_width);
      actions[static_cast<std::size_t>(i)] = a;
      pending_env_actions_[static_cast<std::size_t>(i)] = a;
      pending_values_(i) = out.value(i, 0);
    }
    model_.dist.log_prob_entropy(out.policy, pending_actions_.view(), pending_log_probs_.view(), pending_entropy_.view());
    acted_ = true;
  }

  /// Stores one step of every environment in the rollout.
  void observe(std::span<const observation_type> obs, std::span<const action_type> actions,
               const VectorStep<observation_type>& step) {
    RLMED_CHECK(acted_, agent_name_, "::observe without a preceding act() (the rollout needs its log-probabilities)");
    const auto n = static_cast<std::size_t>(rollout_.envs());
    RLMED_CHECK(obs.size() == n && actions.size() == n && step.reward.size() == n && step.observation.size() == n &&
                    step.final_observation.size() == n,
                agent_name_, "::observe: ", obs.size(), " observations, ", actions.size(), " actions and ",
                step.reward.size(), " step results; expected ", n, " of each (one per environment)");
    for (std::size_t i = 0; i < n; ++i) {
      model_.dist.validate(actions[i], "observed action");
      RLMED_CHECK(actions[i] == pending_env_actions_[i], agent_name_, "::observe: the action of env ", i,
                  " is not the one act() chose (on-policy agents learn only from their own actions)");
      RLMED_CHECK(std::isfinite(step.reward[i]), agent_name_, "::observe: reward of env ", i, " is ", step.reward[i],
                  "; expected a finite number");
      RLMED_CHECK(step.terminated[i] <= 1 && step.truncated[i] <= 1, agent_name_, "::observe: episode flags of env ",
                  i, " are not 0/1");
    }
    pg_detail::stack_obs_into(obs, obs_scratch_, agent_name_);
    pg_detail::stack_obs_into(std::span<const observation_type>(step.observation), next_obs_, agent_name_);
    const index_t t = rollout_.pos;
    const index_t N = rollout_.envs();
    std::copy(obs_scratch_.begin(), obs_scratch_.end(), rollout_.obs.data() + t * N * obs_dim);
    std::copy(pending_actions_.begin(), pending_actions_.end(), rollout_.actions.data() + t * N * action_width);
    for (index_t i = 0; i < N; ++i) {
      const auto k = static_cast<std::size_t>(i);
      rollout_.log_probs(t, i) = pending_log_probs_(i);
      rollout_.values(t, i) = pending_values_(i);
      rollout_.rewards(t, i) = static_cast<T>(step.reward[k]);
      rollout_.terminated(t, i) = step.terminated[k];
      rollout_.truncated(t, i) = step.truncated[k];
      rollout_.truncation_values(t, i) = T(0);
    }
    bootstrap_truncations(step, t);
    std::copy(next_obs_.begin(), next_obs_.end(), rollout_.last_obs.data());
    ++rollout_.pos;
    double entropy_sum = 0;
    for (index_t i = 0; i < N; ++i) entropy_sum += static_cast<double>(pending_entropy_(i));
    last_act_entropy_ = entropy_sum / static_cast<double>(N);
    acted_ = false;
  }

  /// Greedy actions (argmax / mean); draws nothing and changes no learning state.
  void evaluate_actions(std::span<const observation_type> obs, std::span<action_type> actions) {
    RLMED_CHECK(obs.size() == actions.size(), agent_name_, "::evaluate_actions: ", obs.size(), " observations and ",
                actions.size(), " action slots");
    if (obs.empty()) return;
    pg_detail::stack_obs_into(obs, eval_obs_, agent_name_);
    nn::Context ctx;
    ctx.training = false;
    const auto out = model_.net.forward(ctx, eval_obs_.view(), eval_cache_, Heads::policy);
    eval_actions_.resize(Shape<2>{eval_obs_.extent(0), action_width});
    for (index_t i = 0; i < eval_obs_.extent(0); ++i)
      actions[static_cast<std::size_t>(i)] =
          model_.dist.mode(out.policy.data() + i * dist_type::param_width, eval_actions_.data() + i * action_width);
  }

  /// The distribution for `prototype`'s action space (a Gaussian clips to its box).
  static dist_type make_dist(const Env& prototype) {
    if constexpr (std::is_constructible_v<dist_type, const space_type&>) {
      return dist_type(prototype.action_space());
    } else {
      return dist_type{};
    }
  }

  /// V(s) of a batch of observations [B, K] -> [B, 1] (inference).
  TensorView<const T, 2> values_of(TensorView<const T, 2> obs) {
    RLMED_CHECK(obs.extent(1) == obs_dim, agent_name_, ": observation batch has shape ", obs.shape(), ", expected [B, ",
                obs_dim, "]");
    nn::Context ctx;
    ctx.training = false;
    return model_.net.forward(ctx, obs, value_cache_, Heads::value).value;
  }
  /// Distribution parameters of a batch [B, K] -> [B, W] (inference).
  TensorView<const T, 2> policy_of(TensorView<const T, 2> obs) {
    RLMED_CHECK(obs.extent(1) == obs_dim, agent_name_, ": observation batch has shape ", obs.shape(), ", expected [B, ",
                obs_dim, "]");
    nn::Context ctx;
    ctx.training = false;
    return model_.net.forward(ctx, obs, eval_cache_, Heads::policy).policy;
  }

  /// Bootstraps from the observations after the full rollout (V(last_obs)) and computes the
  /// advantages and returns (GAE); update() calls it, tests may call it to inspect them.
  void finish_rollout() {
    const auto v = values_of(rollout_.last_obs.view());
    for (index_t i = 0; i < rollout_.envs(); ++i) rollout_.last_values(i) = v(i, 0);
    rollout_.finish(base_config_.gamma, base_config_.gae_lambda);
  }

 protected:
  RolloutAgentBase(const char* name, const RolloutConfig& config, const Env& prototype)
      : agent_name_(name),
        base_config_(config),
        model_(make_dist(prototype)),
        init_rng_(config.seed, config.stream_base + 0),
        action_rng_(config.seed, config.stream_base + 1),
        shuffle_rng_(config.seed, config.stream_base + 2) {
    config.validate(name);
    model_.setup(obs_dim);
    model_.initialize(init_rng_, config.init);
  }

  void ensure_envs(index_t n) {
    if (!rollout_.allocated()) {
      rollout_.allocate(base_config_.n_steps, n, obs_dim, action_width);
      return;
    }
    RLMED_CHECK(n == rollout_.envs(), agent_name_, ": acting for ", n, " environments; this agent's rollout was set up for ",
                rollout_.envs());
  }

  /// Values of the final observations of truncated (not terminated) episodes at step t.
  void bootstrap_truncations(const VectorStep<observation_type>& step, index_t t) {
    trunc_index_.clear();
    for (std::size_t i = 0; i < step.reward.size(); ++i)
      if (step.truncated[i] && !step.terminated[i]) trunc_index_.push_back(i);
    if (trunc_index_.empty()) return;
    trunc_obs_.resize(Shape<2>{static_cast<index_t>(trunc_index_.size()), obs_dim});
    for (std::size_t j = 0; j < trunc_index_.size(); ++j) {
      const auto& o = step.final_observation[trunc_index_[j]];
      for (index_t k = 0; k < obs_dim; ++k) {
        RLMED_CHECK(!std::isnan(o[static_cast<std::size_t>(k)]), agent_name_, ": final observation of env ",
                    trunc_index_[j], " has a NaN");
        trunc_obs_(static_cast<index_t>(j), k) = static_cast<T>(o[static_cast<std::size_t>(k)]);
      }
    }
    const auto v = values_of(trunc_obs_.view());
    for (std::size_t j = 0; j < trunc_index_.size(); ++j)
      rollout_.truncation_values(t, static_cast<index_t>(trunc_index_[j])) = v(static_cast<index_t>(j), 0);
  }


  /// The advantage actor-critic loss on the whole (finished) rollout, gradients ACCUMULATED into
  /// the model's parameters (the caller zeroes them first and steps an optimiser after):
  ///   L = −mean(A log π) − ent_coef · mean H + vf_coef · mean (V − R)²
  ActorCriticLossStats actor_critic_backward(double ent_coef, double vf_coef, bool normalize_advantage) {
    auto& ro = rollout_;
    const index_t M = ro.steps() * ro.envs();
    const auto um = static_cast<std::size_t>(M);
    for (auto* t : {&ac_adv_, &ac_logp_, &ac_entropy_, &ac_dlogp_, &ac_dentropy_, &ac_values_, &ac_dvalue_flat_})
      t->resize(Shape<1>{M});
    std::copy(ro.advantages.begin(), ro.advantages.end(), ac_adv_.data());
    if (normalize_advantage && M > 1) normalize_advantages(ac_adv_.view());

    nn::Context ctx;
    ctx.training = true;
    ctx.input_grad = false;
    const auto out = model_.net.forward(ctx, ro.flat_obs(), ac_cache_);
    model_.dist.log_prob_entropy(out.policy, ro.flat_actions(), ac_logp_.view(), ac_entropy_.view());
    ActorCriticLossStats st;
    st.policy_loss = policy_gradient_loss<T>(span_of(ac_logp_), span_of(ac_adv_), std::span<T>(ac_dlogp_.data(), um));
    for (index_t b = 0; b < M; ++b) ac_values_(b) = out.value(b, 0);
    const std::span<const T> returns(ro.returns.data(), um);
    st.value_loss = value_loss<T>(span_of(ac_values_), returns, {}, 0.0, std::span<T>(ac_dvalue_flat_.data(), um));
    st.entropy = mean_entropy<T>(span_of(ac_entropy_), -ent_coef, std::span<T>(ac_dentropy_.data(), um));
    ac_dvalue_.resize(Shape<2>{M, 1});
    for (index_t b = 0; b < M; ++b) ac_dvalue_(b, 0) = static_cast<T>(vf_coef * static_cast<double>(ac_dvalue_flat_(b)));
    ac_dpolicy_.resize(out.policy.shape());
    model_.dist.backward(out.policy, ro.flat_actions(), ac_dlogp_.view(), ac_dentropy_.view(), ac_dpolicy_.view());
    model_.net.backward(ctx, ac_cache_, ac_dpolicy_.view(), ac_dvalue_.view());
    st.loss = st.policy_loss - ent_coef * st.entropy + vf_coef * st.value_loss;
    st.explained_variance = explained_variance<T>(std::span<const T>(ro.values.data(), um), returns);
    return st;
  }

  static std::span<const T> span_of(const Tensor<T, 1>& t) {
    return std::span<const T>(t.data(), static_cast<std::size_t>(t.size()));
  }

  /// Base part of a checkpoint: model, streams, rollout, counters. The optimiser is the derived
  /// class's (saved by it under "<prefix>optim.").
  void save_base(io::SafetensorsWriter& w, const std::string& prefix) const {
    auto& self = const_cast<RolloutAgentBase&>(*this);
    ckpt::save_module(w, prefix + "model.", self.model_);
    ckpt::save_stream(w, prefix + "rng.init", init_rng_);
    ckpt::save_stream(w, prefix + "rng.action", action_rng_);
    ckpt::save_stream(w, prefix + "rng.shuffle", shuffle_rng_);
    Tensor<std::int64_t, 1> c(Shape<1>{4});
    c(0) = rollout_.allocated() ? rollout_.envs() : 0;
    c(1) = base_config_.n_steps;
    c(2) = obs_dim;
    c(3) = action_width;
    w.add(prefix + "shape", c);
    if (rollout_.allocated()) rollout_.save(w, prefix + "rollout.");
    const double e = last_act_entropy_;
    ckpt::save_f64(w, prefix + "entropy", std::span<const double>(&e, 1));
  }
  /// Checks the base part (throws before anything changes), allocating the rollout if needed.
  void check_base(const io::SafetensorsReader& r, const std::string& prefix) {
    ckpt::expect_shape(r, prefix + "shape", Shape<1>{4});
    const auto c = r.read<std::int64_t, 1>(prefix + "shape");
    RLMED_CHECK(c(1) == base_config_.n_steps && c(2) == obs_dim && c(3) == action_width, r.source(), ": ", agent_name_,
                " checkpoint has n_steps ", c(1), ", ", c(2), " observation and ", c(3),
                " action components; this agent ", base_config_.n_steps, ", ", obs_dim, ", ", action_width);
    RLMED_CHECK(c(0) >= 0, r.source(), ": negative environment count");
    RLMED_CHECK(!rollout_.allocated() || c(0) == 0 || c(0) == rollout_.envs(), r.source(), ": checkpoint rollout has ",
                c(0), " environments, this agent ", rollout_.envs());
    model_.parameters([&](const std::string& name, auto& p) { ckpt::expect_shape(r, prefix + "model." + name, p.value.shape()); });
    for (const char* s : {"rng.init", "rng.action", "rng.shuffle"}) ckpt::expect_shape(r, prefix + s, Shape<1>{3});
    ckpt::expect_shape(r, prefix + "entropy", Shape<1>{1});
    if (c(0) > 0) {
      Rollout<T> probe;
      probe.allocate(base_config_.n_steps, c(0), obs_dim, action_width);
      probe.check(r, prefix + "rollout.");
    }
  }
  void load_base(const io::SafetensorsReader& r, const std::string& prefix) {
    const auto c = r.read<std::int64_t, 1>(prefix + "shape");
    ckpt::load_module(r, prefix + "model.", model_);
    ckpt::load_stream(r, prefix + "rng.init", init_rng_);
    ckpt::load_stream(r, prefix + "rng.action", action_rng_);
    ckpt::load_stream(r, prefix + "rng.shuffle", shuffle_rng_);
    if (c(0) > 0) {
      if (!rollout_.allocated()) rollout_.allocate(base_config_.n_steps, c(0), obs_dim, action_width);
      rollout_.load(r, prefix + "rollout.");
    } else {
      rollout_ = Rollout<T>{};
    }
    double e = 0;
    ckpt::load_f64(r, prefix + "entropy", std::span<double>(&e, 1));
    last_act_entropy_ = e;
    acted_ = false;
  }

  const char* agent_name_;
  RolloutConfig base_config_;
  model_type model_;
  PhiloxStream init_rng_, action_rng_, shuffle_rng_;
  Rollout<T> rollout_;
  double last_act_entropy_ = std::numeric_limits<double>::quiet_NaN();

 private:
  typename model_type::Cache act_cache_, eval_cache_, value_cache_;
  Tensor<T, 2> act_obs_, eval_obs_, obs_scratch_, next_obs_, trunc_obs_;
  Tensor<T, 2> pending_actions_, eval_actions_;
  Tensor<T, 1> pending_log_probs_, pending_entropy_, pending_values_;
  std::vector<action_type> pending_env_actions_;
  std::vector<std::size_t> trunc_index_;
  bool acted_ = false;
  typename model_type::Cache ac_cache_;
  Tensor<T, 2> ac_dpolicy_, ac_dvalue_;
  Tensor<T, 1> ac_adv_, ac_logp_, ac_entropy_, ac_dlogp_, ac_dentropy_, ac_values_, ac_dvalue_flat_;
};

}  // namespace rlmed::rl
