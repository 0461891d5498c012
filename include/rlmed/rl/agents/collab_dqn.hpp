// rlmed/rl/agents/collab_dqn.hpp — deep-Q landmark agents on rendered cubes: single agents with
// the S1 LandmarkQNet (DQN, Double, Dueling, Dueling Double) and Collab-DQN (Vlontzos et al.
// 2019; Leroy et al. 2020): K agents, one per landmark, with a shared convolutional trunk and one
// fully-connected head per agent.
//
// Design decisions:
//  * One network protocol for both: forward(ctx, x [B, F, *cube], heads, cache) -> Q [B, A], where
//    heads[b] names the agent (head) of row b. The collab net runs the trunk on the whole batch
//    once and routes each row through its agent's head (rows gathered per head, scattered back;
//    backward mirrors it and sums the trunk gradient over agents), so a replay batch can mix the
//    transitions of all agents and each row still learns from its own agent's reward. A single
//    agent is the K = 1 case; SingleHeadQNet adapts nn::LandmarkQNet to the protocol.
//  * The learner reuses the RL core policies: rl::target::Plain / rl::target::Double (from
//    dqn.hpp), explore::EpsilonGreedy, sync::Hard, nn::optim optimisers, Huber loss and global
//    gradient clipping, with dqn.hpp's target formula y = r + γ^steps (1 − done) · bootstrap.
//    It differs from rl::DQN in the observation path only: transitions are stored as
//    env::LandmarkKey pairs in a keyed replay and rendered in batch when sampled.
//  * Three Philox streams under the seed, as rl::DQN: 0 initialisation, 1 exploration, 2 replay.
//    Every buffer is a member reused between steps.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/env/landmark.hpp"
#include "rlmed/nn/layers/activation.hpp"
#include "rlmed/nn/layers/conv.hpp"
#include "rlmed/nn/layers/dueling.hpp"
#include "rlmed/nn/layers/flatten.hpp"
#include "rlmed/nn/layers/linear.hpp"
#include "rlmed/nn/layers/pool.hpp"
#include "rlmed/nn/loss.hpp"
#include "rlmed/nn/models/landmark_qnet.hpp"
#include "rlmed/nn/module.hpp"
#include "rlmed/nn/optim/optimizers.hpp"
#include "rlmed/nn/optim/param_list.hpp"
#include "rlmed/nn/sequential.hpp"
#include "rlmed/rl/agents/dqn.hpp"
#include "rlmed/rl/explore.hpp"
#include "rlmed/rl/replay/keyed.hpp"
#include "rlmed/rl/target_sync.hpp"
#include "rlmed/rl/train_loop.hpp"

namespace rlmed::nn {

/// The S1 convolutional trunk (LandmarkQNet's four convolutions), ending in Flatten.
template <index_t FrameHistory = 4, index_t Width = 32>
using LandmarkConvTrunk =
    Sequential<Conv<3, FrameHistory, Width, 5>, MaxPool<3, 2>, LeakyReLU, Conv<3, Width, Width, 5>, MaxPool<3, 2>,
               LeakyReLU, Conv<3, Width, 2 * Width, 4>, MaxPool<3, 2>, LeakyReLU, Conv<3, 2 * Width, 2 * Width, 3>,
               LeakyReLU, Flatten>;

/// The S1 fully-connected head: 512-256-128 then the (dueling) Q layer.
template <index_t Actions = 6, bool Dueling = true>
using LandmarkFcHead = Sequential<Linear<512>, LeakyReLU, Linear<256>, LeakyReLU, Linear<128>, LeakyReLU,
                                  std::conditional_t<Dueling, DuelingHead<Actions>, Linear<Actions>>>;

/// Paddings of the S1 trunk (1-1-1-0), as in LandmarkQNet.
template <class Trunk>
void configure_s1_trunk(Trunk& trunk) {
  trunk.template layer<0>().config = ConvConfig<3>(1, 1);
  trunk.template layer<3>().config = ConvConfig<3>(1, 1);
  trunk.template layer<6>().config = ConvConfig<3>(1, 1);
  trunk.template layer<9>().config = ConvConfig<3>(1, 0);
}

/// Shared trunk + K heads. TrunkSpec maps [B, F, *cube] to [B, C]; HeadSpec maps [B, C] to [B, A].
template <class T, class TrunkSpec, class HeadSpec, index_t Agents>
class CollabQNet {
  static_assert(Agents >= 1 && Agents <= 127, "Collab-DQN needs 1..127 agents");

 public:
  using value_type = T;
  using Trunk = Model<TrunkSpec, T>;
  using Head = Model<HeadSpec, T, 2>;
  static constexpr std::size_t in_rank = Trunk::in_rank;
  static constexpr std::size_t out_rank = 2;
  static constexpr index_t agents = Agents;
  static_assert(Trunk::out_rank == 2 && Head::out_rank == 2, "CollabQNet: trunk must end flat, heads map [B, C] to [B, A]");

  struct Cache {
    typename Trunk::Cache trunk;
    std::array<typename Head::Cache, static_cast<std::size_t>(Agents)> heads;
    std::array<std::vector<index_t>, static_cast<std::size_t>(Agents)> rows;  // batch rows of each head
    std::array<Tensor<T, 2>, static_cast<std::size_t>(Agents)> head_in, head_dq;  // [n_k, C], [n_k, A]
    Tensor<T, 2> q, d_features;                                            // [B, A], [B, C]
  };

  CollabQNet() = default;
  /// Sets up for cubes of `cube` voxels (side) with `configure(trunk)` applied first (paddings).
  template <class Configure>
  explicit CollabQNet(const Shape<in_rank>& example_input, Configure&& configure) {
    configure(trunk);
    setup(example_input);
  }
  explicit CollabQNet(const Shape<in_rank>& example_input) { setup(example_input); }

  void setup(const Shape<in_rank>& example_input) {
    const Shape<2> f = trunk.setup(example_input);
    features_ = f[1];
    for (auto& h : heads) actions_ = h.setup(Shape<2>{1, features_})[1];
  }
  void initialize(PhiloxStream& rng) {
    trunk.initialize(rng);
    for (auto& h : heads) h.initialize(rng);
  }
  [[nodiscard]] index_t features() const noexcept { return features_; }
  [[nodiscard]] index_t actions() const noexcept { return actions_; }

  /// x [B, F, *cube], heads [B] in [0, K) -> Q [B, A]
  TensorView<const T, 2> forward(Context& ctx, TensorView<const T, in_rank> x, std::span<const int> head_of_row,
                                 Cache& cache) {
    const index_t B = x.extent(0);
    RLMED_CHECK(static_cast<index_t>(head_of_row.size()) == B, "CollabQNet: ", head_of_row.size(),
                " head indices for a batch of ", B);
    for (auto& r : cache.rows) r.clear();
    for (index_t b = 0; b < B; ++b) {
      const int k = head_of_row[static_cast<std::size_t>(b)];
      RLMED_CHECK(k >= 0 && k < Agents, "CollabQNet: row ", b, " names head ", k, ", expected [0, ", Agents, ")");
      cache.rows[static_cast<std::size_t>(k)].push_back(b);
    }
    const auto feat = trunk.forward(ctx, x, cache.trunk);  // [B, C]
    const index_t C = feat.extent(1);
    cache.q.resize(Shape<2>{B, actions_});
    for (std::size_t k = 0; k < cache.rows.size(); ++k) {
      const auto& rows = cache.rows[k];
      if (rows.empty()) continue;
      const auto n = static_cast<index_t>(rows.size());
      cache.head_in[k].resize(Shape<2>{n, C});
      for (index_t i = 0; i < n; ++i)
        std::copy_n(feat.data() + rows[static_cast<std::size_t>(i)] * C, C, cache.head_in[k].data() + i * C);
      const auto qk = heads[k].forward(ctx, cache.head_in[k].view(), cache.heads[k]);  // [n_k, A]
      for (index_t i = 0; i < n; ++i)
        std::copy_n(qk.data() + i * actions_, actions_, cache.q.data() + rows[static_cast<std::size_t>(i)] * actions_);
    }
    return cache.q.view();
  }

  /// dq [B, A] -> dx [B, F, *cube] (empty when ctx.input_grad is false); parameter grads accumulate.
  TensorView<const T, in_rank> backward(Context& ctx, Cache& cache, TensorView<const T, 2> dq) {
    const index_t B = dq.extent(0);
    RLMED_CHECK(dq.shape() == cache.q.shape(), "CollabQNet: dq has shape ", dq.shape(), ", expected ", cache.q.shape());
    cache.d_features.resize(Shape<2>{B, features_});
    fill(cache.d_features.view(), T(0));
    Context inner = ctx;
    inner.input_grad = true;
    for (std::size_t k = 0; k < cache.rows.size(); ++k) {
      const auto& rows = cache.rows[k];
      if (rows.empty()) continue;
      const auto n = static_cast<index_t>(rows.size());
      cache.head_dq[k].resize(Shape<2>{n, actions_});
      for (index_t i = 0; i < n; ++i)
        std::copy_n(dq.data() + rows[static_cast<std::size_t>(i)] * actions_, actions_,
                    cache.head_dq[k].data() + i * actions_);
      const auto dfk = heads[k].backward(inner, cache.heads[k], cache.head_dq[k].view());  // [n_k, C]
      for (index_t i = 0; i < n; ++i) {
        T* dst = cache.d_features.data() + rows[static_cast<std::size_t>(i)] * features_;
        const T* src = dfk.data() + i * features_;
        for (index_t c = 0; c < features_; ++c) dst[c] += src[c];
      }
    }
    return trunk.backward(ctx, cache.trunk, cache.d_features.view());
  }

  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) {
    trunk.parameters(visit, join_name(prefix, "trunk"));
    for (std::size_t k = 0; k < heads.size(); ++k) heads[k].parameters(visit, join_name(prefix, "head" + std::to_string(k)));
  }
  template <class V>
  void buffers(V&&, std::string_view = {}) {}

  Trunk trunk;
  std::array<Head, static_cast<std::size_t>(Agents)> heads;

 private:
  index_t features_ = 0, actions_ = 0;
};

/// The S1 Collab-DQN network for K agents on 3D cubes.
template <class T, index_t Agents, bool Dueling = true, index_t FrameHistory = 4, index_t Width = 32>
using S1CollabQNet = CollabQNet<T, LandmarkConvTrunk<FrameHistory, Width>, LandmarkFcHead<6, Dueling>, Agents>;

template <class T, index_t Agents, bool Dueling = true, index_t FrameHistory = 4, index_t Width = 32>
S1CollabQNet<T, Agents, Dueling, FrameHistory, Width> make_s1_collab_qnet(index_t cube = 45) {
  return S1CollabQNet<T, Agents, Dueling, FrameHistory, Width>(Shape<5>{1, FrameHistory, cube, cube, cube},
                                                               [](auto& trunk) { configure_s1_trunk(trunk); });
}

/// nn::LandmarkQNet (one agent) under the head-routing protocol: every head index must be 0.
template <class Net>
class SingleHeadQNet {
 public:
  using value_type = typename Net::value_type;
  using Cache = typename Net::Cache;
  static constexpr std::size_t in_rank = Net::in_rank;
  static constexpr std::size_t out_rank = Net::out_rank;
  static constexpr index_t agents = 1;

  /// LandmarkQNet set up for cubes of `cube` voxels per side.
  explicit SingleHeadQNet(index_t cube = 45) : net(cube) {}
  void initialize(PhiloxStream& rng) { net.initialize(rng); }

  TensorView<const value_type, 2> forward(Context& ctx, TensorView<const value_type, in_rank> x,
                                          std::span<const int> head_of_row, Cache& cache) {
    RLMED_CHECK(static_cast<index_t>(head_of_row.size()) == x.extent(0), "SingleHeadQNet: ", head_of_row.size(),
                " head indices for a batch of ", x.extent(0));
    for (int k : head_of_row) RLMED_CHECK(k == 0, "SingleHeadQNet: head ", k, " requested; a single agent has head 0 only");
    return net.forward(ctx, x, cache);
  }
  TensorView<const value_type, in_rank> backward(Context& ctx, Cache& cache, TensorView<const value_type, 2> dq) {
    return net.backward(ctx, cache, dq);
  }
  template <class V>
  void parameters(V&& visit, std::string_view prefix = {}) { net.parameters(visit, prefix); }
  template <class V>
  void buffers(V&& visit, std::string_view prefix = {}) { net.buffers(visit, prefix); }

  Net net;
};

}  // namespace rlmed::nn

namespace rlmed::rl {

/// Numbers of a landmark agent (defaults: Alansary et al. 2019 / rl-medical).
struct LandmarkDQNConfig {
  double gamma = 0.9;
  index_t batch_size = 48;
  index_t replay_capacity = 100'000;
  std::int64_t learning_starts = 1000;  ///< transitions stored before the first update
  double huber_delta = 1.0;
  double max_grad_norm = 10.0;          ///< <= 0 disables clipping
  std::uint64_t seed = 0;

  void validate() const {
    RLMED_CHECK(gamma >= 0 && gamma <= 1, "LandmarkDQNConfig: gamma must be in [0, 1]; found ", gamma);
    RLMED_CHECK(batch_size >= 1, "LandmarkDQNConfig: batch_size must be >= 1; found ", batch_size);
    RLMED_CHECK(replay_capacity >= 1, "LandmarkDQNConfig: replay_capacity must be >= 1; found ", replay_capacity);
    RLMED_CHECK(learning_starts >= 1, "LandmarkDQNConfig: learning_starts must be >= 1; found ", learning_starts);
    RLMED_CHECK(huber_delta > 0, "LandmarkDQNConfig: huber_delta must be > 0; found ", huber_delta);
  }
};

/// Deep-Q learner over landmark keys. Net follows the head-routing protocol above (CollabQNet or
/// SingleHeadQNet); TdTarget is target::Plain (DQN) or target::Double; dueling is the Net's head.
template <class Net, class TdTarget = target::Double, class Optimizer = nn::optim::Adam<float>, std::size_t Dim = 3,
          index_t Frames = 4>
class LandmarkDQN {
  using T = typename Net::value_type;
  static_assert(std::is_same_v<T, float>, "LandmarkDQN trains in float32");
  static_assert(Net::in_rank == Dim + 2, "LandmarkDQN: the network takes [B, F, *cube]");

 public:
  using key_type = env::LandmarkKey<Dim, Frames>;
  using renderer_type = env::LandmarkRenderer<Dim, Frames>;
  using replay_type = replay::Keyed<key_type, float, Dim + 1, int>;
  using batch_type = typename replay_type::batch_type;
  using optimizer_config = std::remove_cvref_t<decltype(std::declval<Optimizer&>().config)>;
  using exploration_type = explore::EpsilonGreedy<explore::LinearSchedule>;
  static constexpr int kActions = 2 * static_cast<int>(Dim);

  LandmarkDQN(const LandmarkDQNConfig& config, Net net, renderer_type renderer, exploration_type exploration,
              sync::Hard sync = sync::Hard{1000}, const optimizer_config& optimizer = optimizer_config{})
      : config_(checked(config)),
        renderer_(std::move(renderer)),
        replay_(typename replay_type::config_type{config.replay_capacity, renderer_.obs_shape(), 1}),
        init_rng_(config.seed, 0),
        explore_rng_(config.seed, 1),
        replay_rng_(config.seed, 2),
        online_(initialized(std::move(net), init_rng_)),
        target_(online_),
        optimizer_(online_, optimizer),
        pairs_(online_, target_),
        exploration_(std::move(exploration)),
        sync_(sync),
        batch_(replay_.make_batch(config.batch_size)) {}
  LandmarkDQN(const LandmarkDQN&) = delete;
  LandmarkDQN& operator=(const LandmarkDQN&) = delete;

  [[nodiscard]] const LandmarkDQNConfig& config() const noexcept { return config_; }
  [[nodiscard]] Net& online() noexcept { return online_; }
  [[nodiscard]] Net& target_net() noexcept { return target_; }
  [[nodiscard]] replay_type& replay() noexcept { return replay_; }
  [[nodiscard]] const renderer_type& renderer() const noexcept { return renderer_; }
  [[nodiscard]] double epsilon() const { return exploration_.epsilon(); }
  [[nodiscard]] std::int64_t gradient_steps() const noexcept { return gradient_steps_; }

  /// Q-values of the observations of `keys` [N, A] (a view of an internal buffer).
  TensorView<const T, 2> q_values(std::span<const key_type> keys) {
    render_keys(keys, act_obs_, act_heads_);
    nn::Context ctx;
    ctx.training = false;
    return online_.forward(ctx, TensorView<const T, Dim + 2>(act_obs_.view()), act_heads_, infer_cache_);
  }
  /// ε-greedy actions; advances ε by keys.size().
  void act(std::span<const key_type> keys, std::span<int> actions) {
    RLMED_CHECK(actions.size() == keys.size(), "LandmarkDQN::act: ", actions.size(), " slots for ", keys.size(), " keys");
    exploration_.select_into(explore_rng_, q_values(keys), actions);
    exploration_.advance(static_cast<std::int64_t>(keys.size()));
  }
  /// Greedy actions (lowest index on ties).
  void greedy(std::span<const key_type> keys, std::span<int> actions) {
    RLMED_CHECK(actions.size() == keys.size(), "LandmarkDQN::greedy: ", actions.size(), " slots for ", keys.size(), " keys");
    const auto q = q_values(keys);
    for (index_t b = 0; b < q.extent(0); ++b)
      actions[static_cast<std::size_t>(b)] =
          explore::argmax(std::span<const T>(q.data() + b * q.extent(1), static_cast<std::size_t>(q.extent(1))));
  }

  void observe(const key_type& key, int action, double reward, const key_type& next_key, bool terminated) {
    RLMED_CHECK(action >= 0 && action < kActions, "LandmarkDQN::observe: action ", action, " outside [0, ", kActions, ")");
    RLMED_CHECK(std::isfinite(reward), "LandmarkDQN::observe: reward ", reward, " is not finite");
    RLMED_CHECK(key.head == next_key.head, "LandmarkDQN::observe: a transition changes head (", int(key.head), " -> ",
                int(next_key.head), ")");
    renderer_.check_key(key);
    renderer_.check_key(next_key);
    const int a = action;
    replay_.add(key, std::span<const int>(&a, 1), static_cast<float>(reward), next_key, terminated, 1);
  }

  /// One gradient step when the replay holds learning_starts transitions; returns the loss (NaN if none).
  double learn() {
    if (replay_.size() < config_.learning_starts) return std::nan("");
    replay_.sample_into(replay_rng_, renderer_, batch_);
    return learn_from(batch_);
  }

  double learn_from(const batch_type& batch) {
    const index_t B = batch.size();
    heads_.resize(static_cast<std::size_t>(B));
    for (index_t b = 0; b < B; ++b) heads_[static_cast<std::size_t>(b)] = replay_.key(batch.index(b)).head;
    nn::Context ctx;
    ctx.training = false;
    const auto next = TensorView<const T, Dim + 2>(batch.next_obs.view());
    const auto qt = target_.forward(ctx, next, heads_, next_target_cache_);  // [B, A]
    TensorView<const T, 2> qo;
    if constexpr (TdTarget::needs_online_next) qo = online_.forward(ctx, next, heads_, next_online_cache_);
    y_.resize(Shape<1>{B});
    const auto A = static_cast<std::size_t>(qt.extent(1));
    for (index_t b = 0; b < B; ++b) {
      const std::span<const T> t(qt.data() + b * qt.extent(1), A);
      std::span<const T> o;
      if constexpr (TdTarget::needs_online_next) o = std::span<const T>(qo.data() + b * qo.extent(1), A);
      const double discount = std::pow(config_.gamma, batch.steps(b)) * (1.0 - static_cast<double>(batch.done(b)));
      const double boot = discount != 0 ? static_cast<double>(TdTarget::bootstrap(t, o)) : 0.0;
      y_(b) = static_cast<T>(static_cast<double>(batch.reward(b)) + discount * boot);
    }
    ctx.training = true;
    ctx.input_grad = false;
    optimizer_.zero_grad();
    const auto q = online_.forward(ctx, TensorView<const T, Dim + 2>(batch.obs.view()), heads_, train_cache_);
    q_taken_.resize(Shape<1>{B});
    for (index_t b = 0; b < B; ++b) q_taken_(b) = q(b, batch.action(b, 0));
    const std::span<const T> weights(batch.weight.data(), static_cast<std::size_t>(B));
    const double loss = nn::loss::huber<T, 1>(q_taken_.view(), y_.view(), grad_taken_, config_.huber_delta, weights);
    dq_.resize(q.shape());
    fill(dq_.view(), T(0));
    for (index_t b = 0; b < B; ++b) dq_(b, batch.action(b, 0)) = grad_taken_(b);
    online_.backward(ctx, train_cache_, dq_.view());
    if (config_.max_grad_norm > 0) nn::optim::clip_grad_norm(optimizer_.params(), config_.max_grad_norm);
    optimizer_.step();
    ++gradient_steps_;
    sync_.update(pairs_, gradient_steps_);
    return loss;
  }

  /// Networks, optimiser, ε step, stream positions and counters (the replay is not saved: it
  /// renders from volumes the checkpoint does not hold).
  void save(io::SafetensorsWriter& w, const std::string& prefix = {}) {
    ckpt::save_module(w, prefix + "online.", online_);
    ckpt::save_module(w, prefix + "target.", target_);
    ckpt::save_optimizer(w, prefix + "optim.", optimizer_);
    exploration_.save(w, prefix + "explore.");
    ckpt::save_stream(w, prefix + "rng.init", init_rng_);
    ckpt::save_stream(w, prefix + "rng.explore", explore_rng_);
    ckpt::save_stream(w, prefix + "rng.replay", replay_rng_);
    ckpt::save_i64(w, prefix + "gradient_steps", gradient_steps_);
  }
  /// Loads the networks (and, when present, the training state) written by save.
  void load(const io::SafetensorsReader& r, const std::string& prefix = {}) {
    online_.parameters([&](const std::string& name, auto& p) { ckpt::expect_shape(r, prefix + "online." + name, p.value.shape()); });
    ckpt::load_module(r, prefix + "online.", online_);
    ckpt::load_module(r, prefix + "target.", target_);
    ckpt::load_optimizer(r, prefix + "optim.", optimizer_);
    exploration_.load(r, prefix + "explore.");
    ckpt::load_stream(r, prefix + "rng.init", init_rng_);
    ckpt::load_stream(r, prefix + "rng.explore", explore_rng_);
    ckpt::load_stream(r, prefix + "rng.replay", replay_rng_);
    gradient_steps_ = ckpt::load_i64(r, prefix + "gradient_steps");
  }

 private:
  static const LandmarkDQNConfig& checked(const LandmarkDQNConfig& c) {
    c.validate();
    return c;
  }
  static Net initialized(Net net, PhiloxStream& rng) {
    net.initialize(rng);
    return net;
  }
  void render_keys(std::span<const key_type> keys, Tensor<T, Dim + 2>& obs, std::vector<int>& heads) const {
    RLMED_CHECK(!keys.empty(), "LandmarkDQN: no keys to act on");
    Shape<Dim + 2> s{};
    s[0] = static_cast<index_t>(keys.size());
    const auto one = renderer_.obs_shape();
    for (std::size_t t = 0; t < Dim + 1; ++t) s[t + 1] = one[t];
    obs.resize(s);
    renderer_.render_batch(keys, obs.view());
    heads.resize(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) heads[i] = keys[i].head;
  }

  LandmarkDQNConfig config_;
  renderer_type renderer_;
  replay_type replay_;
  PhiloxStream init_rng_, explore_rng_, replay_rng_;
  Net online_;
  Net target_;
  Optimizer optimizer_;
  sync::TargetPairs<T> pairs_;
  exploration_type exploration_;
  sync::Hard sync_;
  std::int64_t gradient_steps_ = 0;

  batch_type batch_;
  typename Net::Cache train_cache_, next_target_cache_, next_online_cache_, infer_cache_;
  Tensor<T, Dim + 2> act_obs_;
  std::vector<int> act_heads_, heads_;
  Tensor<T, 1> y_, q_taken_, grad_taken_;
  Tensor<T, 2> dq_;
};

}  // namespace rlmed::rl
