// rlmed/rl/agents/actor_critic_common.hpp — what the off-policy continuous-control agents (DDPG,
// TD3, SAC) share: the environment traits they accept, the policy-space ↔ environment action map,
// an ensemble of Q(s, a) critics, action-noise processes, and the visitor that saves, checks and
// loads an agent's complete state.
//
// Design decisions:
//  * Environments with vector observations std::array<float, O> and a bounded Box<A> action space
//    (Pendulum-v1 and the like). Networks are MLPs, so O and A are compile-time and a policy head's
//    width is checked against A with static_assert.
//  * Policies act in the normalised box [-1, 1]^A (tanh outputs); the replay stores these
//    normalised actions and critics see them, so learning rates and noise scales do not depend on
//    the environment's units. Actions are mapped to [low, high] only when handed to the
//    environment: a_env = low + (a + 1) (high - low) / 2. Unbounded action boxes are an error.
//  * A critic ensemble holds N independent Q networks of one spec over the concatenated input
//    [s, a] (as the TD3 and SAC reference code). Its parameters are visited as "q0.*", "q1.*", so
//    one optimiser (Adam is elementwise: the same as one per critic) and one target pairing serve
//    all of them. backward() can return dL/da summed over critics, which the actor update needs.
//  * Agent state (networks, targets, optimisers, counters, Philox positions) is enumerated once by
//    a visit_state(visitor, prefix) member; SaveVisitor writes it, CheckVisitor validates every
//    name, dtype and shape before LoadVisitor changes anything, so a mismatching checkpoint leaves
//    the agent untouched. Scalars travel as one-element I64/F64 tensors, Philox streams as
//    [seed, stream, position] (the layout of train_loop.hpp's ckpt::save_stream). Only a visitor
//    with writes_state = true assigns anything back, so saving is a const operation.
//  * Exploration noise is a template strategy with per-environment state: Gaussian (TD3, SAC-less)
//    is stateless, Ornstein–Uhlenbeck (DDPG) keeps one process per environment, reset when that
//    environment's episode ends, and saved with the agent.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/safetensors.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/nn/module.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/rl/environment.hpp"
#include "rlmed/rl/explore.hpp"
#include "rlmed/rl/spaces.hpp"

namespace rlmed::rl::agents {

// ============================================================================================
// Environments the continuous agents accept
// ============================================================================================

namespace detail {
template <class A>
struct FloatArrayTraits : std::false_type {};
template <std::size_t K>
struct FloatArrayTraits<std::array<float, K>> : std::true_type {
  static constexpr std::size_t size = K;
};
}  // namespace detail

/// An environment with std::array<float, O> observations and std::array<float, A> actions in a
/// Box<A> action space.
template <class E>
concept ContinuousControlEnv =
    Environment<E> && detail::FloatArrayTraits<typename E::observation_type>::value &&
    detail::FloatArrayTraits<typename E::action_type>::value && requires(E& env) {
      { env.action_space() } -> std::convertible_to<Box<detail::FloatArrayTraits<typename E::action_type>::size>>;
    };

template <ContinuousControlEnv Env>
struct ContinuousEnvTraits {
  using observation_type = typename Env::observation_type;
  using action_type = typename Env::action_type;
  static constexpr index_t obs_dim = static_cast<index_t>(detail::FloatArrayTraits<observation_type>::size);
  static constexpr index_t act_dim = static_cast<index_t>(detail::FloatArrayTraits<action_type>::size);
};

// ============================================================================================
// Normalised policy actions ↔ environment actions
// ============================================================================================

/// Affine map between the policy's [-1, 1]^A and a bounded action box [low, high].
template <std::size_t A>
class ActionScale {
 public:
  ActionScale() {
    low_.fill(-1.0);
    high_.fill(1.0);
  }
  explicit ActionScale(const Box<A>& box) {
    for (std::size_t i = 0; i < A; ++i) {
      RLMED_CHECK(std::isfinite(box.low[i]) && std::isfinite(box.high[i]) && box.low[i] < box.high[i],
                  "continuous agents need a bounded action box with low < high; component ", i, " is [", box.low[i],
                  ", ", box.high[i], "]");
      low_[i] = box.low[i];
      high_[i] = box.high[i];
    }
  }

  /// Policy action in [-1, 1] → environment action (clipped into [low, high]).
  template <class T>
  void to_env(std::span<const T> policy, std::span<float> env_action) const {
    check_sizes(policy.size(), env_action.size());
    for (std::size_t i = 0; i < A; ++i) {
      RLMED_CHECK(!std::isnan(policy[i]), "policy action component ", i, " is NaN");
      const double u = std::clamp(static_cast<double>(policy[i]), -1.0, 1.0);
      env_action[i] = static_cast<float>(low_[i] + (u + 1.0) * 0.5 * (high_[i] - low_[i]));
    }
  }
  /// Environment action → policy action in [-1, 1]; an action outside [low, high] or NaN is an error.
  template <class T>
  void to_policy(std::span<const float> env_action, std::span<T> policy) const {
    check_sizes(policy.size(), env_action.size());
    for (std::size_t i = 0; i < A; ++i) {
      const double a = env_action[i];
      RLMED_CHECK(!std::isnan(a) && a >= low_[i] && a <= high_[i], "action component ", i, " is ", a,
                  ", outside the action box [", low_[i], ", ", high_[i], "]");
      policy[i] = static_cast<T>(std::clamp(2.0 * (a - low_[i]) / (high_[i] - low_[i]) - 1.0, -1.0, 1.0));
    }
  }
  [[nodiscard]] const std::array<double, A>& low() const noexcept { return low_; }
  [[nodiscard]] const std::array<double, A>& high() const noexcept { return high_; }

 private:
  static void check_sizes(std::size_t policy, std::size_t env) {
    RLMED_CHECK(policy == A && env == A, "action of ", policy, " (policy) / ", env, " (environment) components, expected ",
                A);
  }
  std::array<double, A> low_{}, high_{};
};

// ============================================================================================
// Q(s, a) critics
// ============================================================================================

/// N critics Q_i(s, a) of one network spec over the concatenation [s, a] → [B, 1].
template <class Spec, class T, int N>
class CriticEnsemble {
  static_assert(N >= 1, "a critic ensemble needs at least one critic");

 public:
  using value_type = T;
  using Net = nn::Model<Spec, T>;
  static constexpr int size = N;

  CriticEnsemble() = default;
  /// Sets the networks up for obs_dim + act_dim inputs and checks the output is one value.
  CriticEnsemble(index_t obs_dim, index_t act_dim) : obs_dim_(obs_dim), act_dim_(act_dim) {
    RLMED_CHECK(obs_dim >= 1 && act_dim >= 1, "critic needs obs_dim, act_dim >= 1, found ", obs_dim, ", ", act_dim);
    for (auto& net : nets_) {
      const auto out = net.setup(Shape<2>{1, obs_dim + act_dim});
      RLMED_CHECK(out[1] == 1, "critic network must output one value per sample, its spec gives ", out[1]);
    }
  }

  void initialize(PhiloxStream& rng) {
    for (auto& net : nets_) net.initialize(rng);
  }
  [[nodiscard]] index_t obs_dim() const noexcept { return obs_dim_; }
  [[nodiscard]] index_t act_dim() const noexcept { return act_dim_; }
  Net& net(int i) { return nets_.at(static_cast<std::size_t>(i)); }

  /// q [N, B]: every critic on (obs [B, O], act [B, A]). Keeps what backward needs.
  TensorView<const T, 2> forward(nn::Context& ctx, TensorView<const T, 2> obs, TensorView<const T, 2> act) {
    const index_t B = obs.extent(0);
    RLMED_CHECK(obs.extent(1) == obs_dim_ && act.extent(1) == act_dim_ && act.extent(0) == B,
                "critic: observations ", obs.shape(), " and actions ", act.shape(), ", expected [B, ", obs_dim_,
                "] and [B, ", act_dim_, "]");
    const index_t width = obs_dim_ + act_dim_;
    input_.resize(Shape<2>{B, width});  // [B, O + A]
    for (index_t b = 0; b < B; ++b) {
      std::copy(obs.data() + b * obs_dim_, obs.data() + (b + 1) * obs_dim_, input_.data() + b * width);
      std::copy(act.data() + b * act_dim_, act.data() + (b + 1) * act_dim_, input_.data() + b * width + obs_dim_);
    }
    q_.resize(Shape<2>{N, B});
    for (int i = 0; i < N; ++i) {
      const auto y = nets_[static_cast<std::size_t>(i)].forward(ctx, input_.view(), caches_[static_cast<std::size_t>(i)]);
      std::copy(y.data(), y.data() + B, q_.data() + i * B);  // y [B, 1]
    }
    return q_.view();
  }

  /// Back-propagates dL/dq [N, B] into the critics' parameter gradients (accumulated). With
  /// action_grad, returns dL/da [B, A] summed over the critics; otherwise an empty view.
  TensorView<const T, 2> backward(nn::Context& ctx, TensorView<const T, 2> dq, bool action_grad) {
    RLMED_CHECK(dq.shape() == q_.shape(), "critic backward: gradient shape ", dq.shape(), " differs from q ", q_.shape());
    const index_t B = q_.extent(1), width = obs_dim_ + act_dim_;
    nn::Context inner = ctx;
    inner.input_grad = action_grad;
    if (action_grad) {
      dact_.resize(Shape<2>{B, act_dim_});
      fill(dact_.view(), T(0));
    }
    dq_column_.resize(Shape<2>{B, 1});
    for (int i = 0; i < N; ++i) {
      std::copy(dq.data() + i * B, dq.data() + (i + 1) * B, dq_column_.data());
      const auto dx = nets_[static_cast<std::size_t>(i)].backward(inner, caches_[static_cast<std::size_t>(i)],
                                                                  TensorView<const T, 2>(dq_column_.view()));
      if (action_grad)
        for (index_t b = 0; b < B; ++b)
          for (index_t j = 0; j < act_dim_; ++j) dact_(b, j) += dx(b, obs_dim_ + j);
    }
    if (!action_grad) return {};
    (void)width;
    return dact_.view();
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    for (int i = 0; i < N; ++i)
      nets_[static_cast<std::size_t>(i)].parameters(visit, nn::join_name(prefix, critic_name(i)));
  }
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) {
    for (int i = 0; i < N; ++i)
      nets_[static_cast<std::size_t>(i)].buffers(visit, nn::join_name(prefix, critic_name(i)));
  }

 private:
  static std::string critic_name(int i) {
    std::string name(1, 'q');  // (not "q" + to_string: g++ 12 warns falsely about that concatenation)
    name += std::to_string(i);
    return name;
  }

  index_t obs_dim_ = 0, act_dim_ = 0;
  std::array<Net, N> nets_{};
  std::array<typename Net::Cache, N> caches_{};
  Tensor<T, 2> input_;      // [B, O + A]
  Tensor<T, 2> q_;          // [N, B]
  Tensor<T, 2> dq_column_;  // [B, 1]
  Tensor<T, 2> dact_;       // [B, A]
};

// ============================================================================================
// Saving, checking and loading an agent's state
// ============================================================================================

/// Adds every visited tensor to a safetensors writer.
struct SaveVisitor {
  static constexpr bool writes_state = false;
  io::SafetensorsWriter& writer;
  template <class U, std::size_t R>
  void operator()(const std::string& name, TensorView<U, R> t) const {
    writer.add(name, TensorView<const U, R>(t));
  }
};

/// Checks that every visited tensor exists in the file with the same dtype and shape; changes nothing.
struct CheckVisitor {
  static constexpr bool writes_state = false;
  const io::SafetensorsReader& reader;
  template <class U, std::size_t R>
  void operator()(const std::string& name, TensorView<U, R> t) const {
    const io::TensorInfo& info = reader.info(name);
    const std::vector<index_t> want(t.shape().begin(), t.shape().end());
    RLMED_CHECK(info.dtype == io::dtype_of<std::remove_const_t<U>>(), reader.source(), ": tensor '", name,
                "' has dtype ", io::dtype_name(info.dtype), ", expected ", io::dtype_name(io::dtype_of<std::remove_const_t<U>>()));
    RLMED_CHECK(info.shape == want, reader.source(), ": tensor '", name, "' has shape ", info.shape, ", expected ", want);
  }
};

/// Reads every visited tensor from the file (after a CheckVisitor pass).
struct LoadVisitor {
  static constexpr bool writes_state = true;
  const io::SafetensorsReader& reader;
  template <class U, std::size_t R>
  void operator()(const std::string& name, TensorView<U, R> t) const {
    reader.read_into(name, t);
  }
};

namespace state {

/// Visits a module's parameters and buffers as "<prefix><path>".
template <class V, class M>
void visit_module(V& visit, const std::string& prefix, M& module) {
  module.parameters([&](const std::string& name, auto& p) { visit(prefix + name, p.value.view()); });
  module.buffers([&](const std::string& name, auto& t) { visit(prefix + name, t.view()); });
}

/// Visits an int64 counter (one-element tensor); the visitor may overwrite it (loading).
template <class V>
void visit_counter(V& visit, const std::string& name, std::int64_t& counter) {
  Tensor<std::int64_t, 1> t(Shape<1>{1}, counter);
  visit(name, t.view());
  if constexpr (std::remove_cvref_t<V>::writes_state) counter = t(0);
}
/// Visits a double scalar.
template <class V>
void visit_scalar(V& visit, const std::string& name, double& value) {
  Tensor<double, 1> t(Shape<1>{1}, value);
  visit(name, t.view());
  if constexpr (std::remove_cvref_t<V>::writes_state) value = t(0);
}

/// Visits a Philox stream as [seed, stream, position] (int64 bit patterns); a loaded stream
/// continues exactly where the saved one stopped.
template <class V>
void visit_stream(V& visit, const std::string& name, PhiloxStream& rng) {
  Tensor<std::int64_t, 1> t(Shape<1>{3});
  t(0) = static_cast<std::int64_t>(rng.seed());
  t(1) = static_cast<std::int64_t>(rng.stream());
  t(2) = static_cast<std::int64_t>(rng.position());
  visit(name, t.view());
  if constexpr (std::remove_cvref_t<V>::writes_state) {
    PhiloxStream restored(static_cast<std::uint64_t>(t(0)), static_cast<std::uint64_t>(t(1)));
    restored.seek(static_cast<std::uint64_t>(t(2)));
    rng = restored;
  }
}

}  // namespace state

/// Visits an optimiser's state (Adam moments, step counters) under "<prefix><name>".
template <class T, class V, class Opt>
void visit_optimizer_state(V& visit, const std::string& prefix, Opt& optimizer) {
  nn::optim::StateVisitor<T> v;
  v.tensor = [&](const std::string& name, Tensor<T, 1>& t) { visit(prefix + name, t.view()); };
  v.counter = [&](const std::string& name, std::int64_t& c) { state::visit_counter(visit, prefix + name, c); };
  optimizer.visit_state(v);
}

/// Saves an agent's visit_state() tensors. The agent is const: module enumeration is a non-const
/// member of every nn module, but a SaveVisitor (writes_state = false) changes nothing.
template <class Agent>
void save_agent_state(const Agent& agent, io::SafetensorsWriter& w, const std::string& prefix) {
  SaveVisitor v{w};
  const_cast<Agent&>(agent).visit_state(v, prefix);
}

/// Loads what save_agent_state wrote: every tensor is checked before anything changes.
template <class Agent>
void load_agent_state(Agent& agent, const io::SafetensorsReader& r, const std::string& prefix) {
  CheckVisitor check{r};
  agent.visit_state(check, prefix);
  LoadVisitor load{r};
  agent.visit_state(load, prefix);
}

// ============================================================================================
// Exploration noise with per-environment state
// ============================================================================================

namespace noise {

/// Independent N(0, σ²) per component in policy units (TD3: σ = 0.1 of the half-range).
struct Gaussian {
  struct Config {
    double sigma = 0.1;
  };
  Gaussian() = default;
  explicit Gaussian(const Config& c) : config(c) {
    RLMED_CHECK(c.sigma >= 0 && std::isfinite(c.sigma), "Gaussian action noise needs a finite sigma >= 0, found ",
                c.sigma);
  }
  void resize(index_t /*envs*/, index_t /*act_dim*/) {}
  void reset(index_t /*env*/) {}
  /// action += σ N(0, 1), 2 words per component.
  template <class T>
  void apply(PhiloxStream& rng, index_t /*env*/, std::span<T> action) const {
    for (auto& a : action) a = static_cast<T>(static_cast<double>(a) + config.sigma * rng.normal_double());
  }
  template <class V>
  void visit_state(V&, const std::string&) {}
  Config config{};
};

/// Ornstein–Uhlenbeck noise (DDPG: θ 0.15, σ 0.2), one process per environment.
struct OrnsteinUhlenbeck {
  using Config = explore::OrnsteinUhlenbeckConfig;
  OrnsteinUhlenbeck() = default;
  explicit OrnsteinUhlenbeck(const Config& c) : config(c) {}
  void resize(index_t envs, index_t act_dim) {
    if (static_cast<index_t>(processes.size()) == envs && (envs == 0 || processes[0].dim() == act_dim)) return;
    processes.assign(static_cast<std::size_t>(envs), explore::OrnsteinUhlenbeck(act_dim, config));
  }
  void reset(index_t env) { processes.at(static_cast<std::size_t>(env)).reset(); }
  template <class T>
  void apply(PhiloxStream& rng, index_t env, std::span<T> action) {
    processes.at(static_cast<std::size_t>(env)).apply(rng, action);
  }
  /// The processes' states as one [envs, A] tensor (restored exactly on load).
  template <class V>
  void visit_state(V& visit, const std::string& prefix) {
    if (processes.empty()) return;
    const index_t n = static_cast<index_t>(processes.size()), a = processes[0].dim();
    Tensor<double, 2> s(Shape<2>{n, a});
    for (index_t i = 0; i < n; ++i)
      for (index_t j = 0; j < a; ++j) s(i, j) = processes[static_cast<std::size_t>(i)].state()(j);
    visit(prefix + "ou_state", s.view());
    if constexpr (!std::remove_cvref_t<V>::writes_state) return;
    // explore::OrnsteinUhlenbeck restores its state only through its own load(): hand it each row.
    for (index_t i = 0; i < n; ++i) {
      io::SafetensorsWriter w;
      w.add("ou_state", s.view().sub(i));
      processes[static_cast<std::size_t>(i)].load(io::SafetensorsReader::from_bytes(w.to_bytes()), "");
    }
  }
  Config config{};
  std::vector<explore::OrnsteinUhlenbeck> processes;
};

}  // namespace noise

/// What an exploration-noise strategy provides.
template <class N>
concept ActionNoise = requires(N& n, PhiloxStream& rng, std::span<float> a, SaveVisitor& v) {
  typename N::Config;
  n.resize(index_t{1}, index_t{1});
  n.reset(index_t{0});
  n.apply(rng, index_t{0}, a);
  n.visit_state(v, std::string{});
};
static_assert(ActionNoise<noise::Gaussian> && ActionNoise<noise::OrnsteinUhlenbeck>);

// ============================================================================================
// Shared numerics
// ============================================================================================

/// Throws rlmed::Error when any observation holds a NaN.
template <std::size_t K>
void check_observations(std::span<const std::array<float, K>> rows) {
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t k = 0; k < K; ++k)
      RLMED_CHECK(!std::isnan(rows[i][k]), "observation ", i, " component ", k, " is NaN");
}

/// Copies a batch of array observations into a [N, K] tensor (resized).
template <class T, std::size_t K>
void stack_into(std::span<const std::array<float, K>> rows, Tensor<T, 2>& out) {
  out.resize(Shape<2>{static_cast<index_t>(rows.size()), static_cast<index_t>(K)});
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t k = 0; k < K; ++k) {
      RLMED_CHECK(!std::isnan(rows[i][k]), "observation ", i, " component ", k, " is NaN");
      out(static_cast<index_t>(i), static_cast<index_t>(k)) = static_cast<T>(rows[i][k]);
    }
}

/// Bootstrapped targets y_b = r_b + γ^{steps_b} (1 − done_b) v_b, with v the next-state value.
template <class T>
void bootstrap_targets_into(TensorView<const float, 1> reward, TensorView<const float, 1> done,
                            TensorView<const std::int32_t, 1> steps, TensorView<const T, 1> next_value, double gamma,
                            TensorView<T, 1> out) {
  const index_t B = reward.size();
  RLMED_CHECK(done.size() == B && steps.size() == B && next_value.size() == B && out.size() == B,
              "bootstrap targets: batch sizes differ (reward ", B, ", done ", done.size(), ", steps ", steps.size(),
              ", value ", next_value.size(), ", out ", out.size(), ")");
  RLMED_CHECK(gamma >= 0 && gamma <= 1, "discount gamma must be in [0, 1], found ", gamma);
  for (index_t b = 0; b < B; ++b) {
    const double discount = std::pow(gamma, static_cast<double>(steps(b)));
    out(b) = static_cast<T>(static_cast<double>(reward(b)) +
                            discount * (1.0 - static_cast<double>(done(b))) * static_cast<double>(next_value(b)));
  }
}


/// Critic regression on targets y: loss = scale · Σ_i mean_b w_b (q_ib − y_b)², written with
/// its gradient dq [N, B] and the per-sample mean |q_ib − y_b| over critics (new priorities).
/// TD3 uses scale 1 (a sum of MSEs), SAC ½ (J_Q = E[½ (Q − y)²]). Empty weights mean 1.
template <class T>
double critic_loss_into(TensorView<const T, 2> q, TensorView<const T, 1> y, std::span<const float> weights,
                        double scale, Tensor<T, 2>& dq, Tensor<float, 1>& td_abs) {
  const index_t N = q.extent(0), B = q.extent(1);
  RLMED_CHECK(y.size() == B && B >= 1, "critic loss: ", B, " predictions per critic but ", y.size(), " targets");
  RLMED_CHECK(weights.empty() || static_cast<index_t>(weights.size()) == B, "critic loss: ", weights.size(),
              " sample weights for a batch of ", B);
  dq.resize(q.shape());
  td_abs.resize(Shape<1>{B});
  double total = 0;
  for (index_t b = 0; b < B; ++b) {
    const double w = weights.empty() ? 1.0 : static_cast<double>(weights[static_cast<std::size_t>(b)]);
    double abs_sum = 0;
    for (index_t i = 0; i < N; ++i) {
      const double d = static_cast<double>(q(i, b)) - static_cast<double>(y(b));
      total += w * d * d;
      abs_sum += std::abs(d);
      dq(i, b) = static_cast<T>(2.0 * scale * w * d / static_cast<double>(B));
    }
    td_abs(b) = static_cast<float>(abs_sum / static_cast<double>(N));
  }
  const double loss = scale * total / static_cast<double>(B);
  RLMED_CHECK(std::isfinite(loss), "critic loss is ", loss, "; expected a finite number (diverging critics?)");
  return loss;
}

/// Builds optimiser Opt<T> over a module with learning rate lr and (L2) weight decay; the rest of
/// its config keeps the torch.optim defaults.
template <template <class> class Opt, class T, class M>
Opt<T> make_optimizer(M& module, double lr, double weight_decay = 0.0) {
  using Config = std::remove_cvref_t<decltype(std::declval<Opt<T>&>().config)>;
  Config c{};
  c.lr = lr;
  c.weight_decay = weight_decay;
  return Opt<T>(module, c);
}

/// What one call of an off-policy agent's update() did (means over its gradient steps); the
/// training loop's UpdateInfo carries the critic loss and the exploration column of it.
struct OffPolicyStats {
  index_t gradient_steps = 0;  ///< 0: nothing was due (warm-up or between train_every steps)
  double critic_loss = 0.0;
  double actor_loss = 0.0;     ///< over the steps that updated the actor
  double alpha = 0.0;          ///< SAC temperature after the update (0 for DDPG/TD3)
  double entropy = 0.0;        ///< SAC: −mean log π of the sampled actions
  double mean_q = 0.0;
};

/// Counts environment steps into gradient steps: every train_every environment steps at or past
/// learning_starts owe gradient_steps updates. Its three integers are part of an agent's state.
struct UpdateClock {
  std::int64_t env_steps = 0;  ///< environment transitions observed
  std::int64_t accounted = 0;  ///< env steps already converted into due updates
  std::int64_t updates = 0;    ///< gradient steps taken

  /// Number of gradient steps owed now (and marks them accounted).
  std::int64_t due(std::int64_t train_every, std::int64_t gradient_steps, std::int64_t learning_starts) {
    RLMED_CHECK(train_every >= 1 && gradient_steps >= 0, "train_every must be >= 1 and gradient_steps >= 0, found ",
                train_every, ", ", gradient_steps);
    std::int64_t n = 0;
    while (env_steps - accounted >= train_every) {
      accounted += train_every;
      if (accounted >= learning_starts) n += gradient_steps;
    }
    return n;
  }
  template <class V>
  void visit_state(V& visit, const std::string& prefix) {
    state::visit_counter(visit, prefix + "env_steps", env_steps);
    state::visit_counter(visit, prefix + "accounted_steps", accounted);
    state::visit_counter(visit, prefix + "updates", updates);
  }
};

}  // namespace rlmed::rl::agents
