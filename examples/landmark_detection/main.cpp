// landmark_detection — multi-scale deep-Q landmark agents (SYSTEMS.md S1): DQN, Double, Dueling,
// Dueling Double (one agent per landmark) and Collab-DQN (one agent per landmark, shared trunk),
// trained and evaluated on the 3D head phantom (default), the brain protocol (--data brain: train
// on one real brain with augmentation, test on the other; docs/systems/landmarks.md) or an
// rl-medical dataset.
//
// Everything is a function of --seed (wall times aside). --out gets results.csv (one row per test
// search), a checkpoint per trained agent (agent_<landmark>.safetensors or collab.safetensors) and
// trajectory PNGs (axial slice through the target, path in red, target in green). --eval loads
// such a checkpoint instead of training (same --agent, --scales and landmark ids).
// The network is the CPU-sized one of the learning test (11³ cubes; see docs/systems/landmarks.md).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "rlmed/core/file.hpp"
#include "rlmed/core/safetensors.hpp"
#include "rlmed/env/landmark.hpp"
#include "rlmed/env/landmark_data.hpp"
#include "rlmed/env/landmark_train.hpp"
#include "rlmed/imaging/overlay.hpp"
#include "rlmed/imaging/png.hpp"
#include "rlmed/rl/agents/collab_dqn.hpp"

namespace {

using namespace rlmed;
constexpr index_t kCube = 11;
constexpr index_t kMaxAgents = 12;
using Trunk = nn::Sequential<nn::Conv<3, 4, 8, 3>, nn::MaxPool<3, 2>, nn::LeakyReLU, nn::Conv<3, 8, 16, 3>,
                             nn::LeakyReLU, nn::Flatten>;
template <bool Dueling>
using Head = nn::Sequential<nn::Linear<64>, nn::LeakyReLU, std::conditional_t<Dueling, nn::DuelingHead<6>, nn::Linear<6>>>;

struct Options {
  std::string data = "phantom", images, landmarks, agent = "dueling-double", out, eval;
  std::string train_on = "voxelmorph", test_on = "mni", data_dir;
  index_t augmentations = 6, test_augmentations = 4;
  std::vector<int> ids;
  index_t scales = 3;
  std::int64_t steps = 12'000;
  std::uint64_t seed = 1;
};

struct Data {
  env::LandmarkVolumes<3> volumes;
  std::vector<index_t> train, test;
};

Data load_data(const Options& o) {
  auto vols = std::make_shared<std::vector<env::LandmarkVolume<3>>>();
  Data d;
  imaging::AugmentOptions aug;
  if (o.data == "phantom") {
    imaging::HeadPhantomOptions ph;
    ph.size_xyz = {64, 64, 64};
    const auto base = env::phantom_landmark_volumes(4, o.seed, ph, o.scales);
    for (std::size_t i = 0; i < base.size(); ++i) {
      auto sel = base[i];
      sel.landmarks_mm = env::select_landmarks<3>(base[i].landmarks_mm, o.ids, base[i].name);
      vols->push_back(sel);
      for (auto& a : env::augmented_volumes(sel, 5, aug, o.seed + 17, i, o.scales)) vols->push_back(std::move(a));
    }
    for (index_t i = 0; i < static_cast<index_t>(vols->size()); ++i) d.train.push_back(i);
    const auto held = env::phantom_landmark_volumes(2, o.seed + 1000, ph, o.scales);
    for (std::size_t i = 0; i < held.size(); ++i) {
      auto sel = held[i];
      sel.landmarks_mm = env::select_landmarks<3>(held[i].landmarks_mm, o.ids, held[i].name);
      for (auto& a : env::augmented_volumes(sel, 5, aug, o.seed + 23, i, o.scales)) {
        d.test.push_back(static_cast<index_t>(vols->size()));
        vols->push_back(std::move(a));
      }
    }
  } else if (o.data == "files") {
    auto all = env::load_rlmedical_volumes(o.images, o.landmarks, o.ids, o.scales);
    RLMED_CHECK(all.size() >= 2, "an rl-medical dataset needs >= 2 cases (train and test); found ", all.size());
    const std::size_t n_test = std::max<std::size_t>(1, all.size() / 5);  // last 20 % are the test set
    for (std::size_t i = 0; i < all.size(); ++i) {
      (i + n_test < all.size() ? d.train : d.test).push_back(static_cast<index_t>(vols->size()));
      vols->push_back(std::move(all[i]));
    }
  } else {  // brain
    const auto load = [&](const std::string& which) {
      return which == "mni" ? env::load_mni_brain(o.data_dir) : env::load_voxelmorph_brain(o.data_dir);
    };
    const auto train = load(o.train_on);
    const auto base = env::brain_landmark_volume(train, o.ids, o.scales);
    vols->push_back(base);
    for (auto& a : env::augmented_volumes(base, o.augmentations, aug, o.seed + 17, 0, o.scales)) vols->push_back(std::move(a));
    for (index_t i = 0; i < static_cast<index_t>(vols->size()); ++i) d.train.push_back(i);
    // The test brain itself, then augmented copies of it (moved by up to ±10 mm, ±15°, ±10 %) so
    // that the tested searches start farther from their targets than the ~4 mm that separate
    // the two centred brains.
    const auto test = env::brain_landmark_volume(load(o.test_on), o.ids, o.scales);
    d.test.push_back(static_cast<index_t>(vols->size()));
    vols->push_back(test);
    for (auto& a : env::augmented_volumes(test, o.test_augmentations, aug, o.seed + 23, 1, o.scales)) {
      d.test.push_back(static_cast<index_t>(vols->size()));
      vols->push_back(std::move(a));
    }
  }
  d.volumes = vols;
  return d;
}

void write_trajectory_png(const std::filesystem::path& path, const env::LandmarkVolume<3>& v,
                          const env::LandmarkResult<3>& r) {
  const auto& img = v.pyramid.level(0);
  const auto t = img.physical_to_index(r.target_mm);
  const index_t z = std::clamp<index_t>(static_cast<index_t>(std::lround(t[2])), 0, img.shape()[0] - 1);
  const auto slice = imaging::volume_slice<float>(img.view(), 0, z);
  const auto gray = imaging::window_to_u8<float>(slice.view(), imaging::percentile_window<float>(slice.view()));
  auto rgb = imaging::gray_to_rgb(gray.view());
  std::vector<imaging::PixelXY> path_px;
  for (const auto& p : r.trajectory_mm) {
    const auto i = img.physical_to_index(p);
    path_px.push_back({static_cast<index_t>(std::lround(i[0])), static_cast<index_t>(std::lround(i[1]))});
  }
  imaging::draw_polyline(rgb.view(), path_px, {255, 40, 40});
  imaging::draw_cross(rgb.view(), {static_cast<index_t>(std::lround(t[0])), static_cast<index_t>(std::lround(t[1]))}, 2,
                      {40, 255, 40});
  const auto a = img.physical_to_index(r.answer_mm);
  imaging::draw_circle(rgb.view(), {static_cast<index_t>(std::lround(a[0])), static_cast<index_t>(std::lround(a[1]))}, 2,
                       {255, 255, 0});
  imaging::write_png(path, TensorView<const std::uint8_t, 3>(rgb.view()));
}

template <class Net, class Target>
std::vector<env::LandmarkResult<3>> run_group(const Options& o, const Data& d, const std::vector<int>& agent_ids,
                                              const std::string& name) {
  using Agent = rl::LandmarkDQN<Net, Target>;
  env::LandmarkEnvConfig ec;
  ec.cube = kCube;
  ec.levels = o.scales;
  ec.max_steps = 60;
  ec.start_radius_mm = 20.0;
  rl::LandmarkDQNConfig c;
  c.gamma = 0.9;
  c.batch_size = 32;
  c.replay_capacity = 50'000;
  c.learning_starts = 500;
  c.seed = o.seed;
  rl::explore::EpsilonGreedy<rl::explore::LinearSchedule> eps(rl::explore::LinearSchedule{1.0, 0.1, o.steps * 6 / 10});
  Agent agent(c, Net(Shape<5>{1, 4, kCube, kCube, kCube}), env::LandmarkRenderer<3, 4>(d.volumes, kCube), eps,
              rl::sync::Hard{250}, nn::optim::AdamConfig{1e-3});
  // Agent k of this group searches volume landmark agent_ids[k] (an index into the selected ids).
  if (!o.eval.empty()) {
    const auto r = io::SafetensorsReader::open(std::filesystem::path(o.eval) / (name + ".safetensors"));
    agent.load(r);
  } else {
    env::LandmarkTrainConfig tc;
    tc.steps = o.steps;
    tc.groups = 4;
    tc.train_every = 2;
    tc.landmark_ids = agent_ids;
    tc.seed = o.seed;
    tc.log_every = std::max<std::int64_t>(1, o.steps / 6);
    const auto t0 = std::chrono::steady_clock::now();
    env::train_landmark_agent<Agent, 3, 4>(agent, d.volumes, d.train, ec, tc, [&](const env::LandmarkTrainProgress& p) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("[%s] steps %lld  updates %lld  eps %.2f  loss %.4f  final distance %.2f mm  (%.0f s)\n", name.c_str(),
                  (long long)p.steps, (long long)p.gradient_steps, p.epsilon, p.mean_loss, p.mean_final_distance_mm, s);
      std::fflush(stdout);
    });
    if (!o.out.empty()) {
      io::SafetensorsWriter w;
      agent.save(w);
      w.write(std::filesystem::path(o.out) / (name + ".safetensors"));
    }
  }
  env::LandmarkEnvConfig eval_cfg = ec;
  eval_cfg.max_steps = 100;
  const auto starts = env::mean_landmarks_mm<3>(*d.volumes, d.train, agent_ids);
  return env::evaluate_landmark_agent<Agent, 3, 4>(agent, d.volumes, d.test, eval_cfg, agent_ids, starts,
                                                   /*keep_trajectories=*/!o.out.empty());
}

template <bool Dueling, class Target>
std::vector<env::LandmarkResult<3>> run_independent(const Options& o, const Data& d) {
  using Net = nn::CollabQNet<float, Trunk, Head<Dueling>, 1>;
  std::vector<env::LandmarkResult<3>> all;
  for (std::size_t k = 0; k < o.ids.size(); ++k) {
    auto r = run_group<Net, Target>(o, d, {static_cast<int>(k)}, "agent_" + std::to_string(o.ids[k]));
    all.insert(all.end(), r.begin(), r.end());
  }
  return all;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Multi-scale deep-Q landmark detection (rlmed, SYSTEMS.md S1)"};
  Options o;
  app.add_option("--data", o.data, "phantom (default) | brain; --images/--landmarks select rl-medical files")
      ->check(CLI::IsMember({"phantom", "brain"}));
  app.add_option("--train-on", o.train_on, "brain protocol: the brain trained on (with augmentation)")
      ->check(CLI::IsMember({"voxelmorph", "mni"}));
  app.add_option("--test-on", o.test_on, "brain protocol: the brain tested on")->check(CLI::IsMember({"voxelmorph", "mni"}));
  app.add_option("--augmentations", o.augmentations, "brain protocol: augmented copies of the training brain")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--test-augmentations", o.test_augmentations,
                 "brain protocol: augmented copies of the test brain tested besides the brain itself")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--data-dir", o.data_dir, "data folder (default: $RLMED_DATA_DIR, else ../shared/data)");
  app.add_option("--images", o.images, "rl-medical image list (one NIfTI path per line)");
  app.add_option("--landmarks", o.landmarks, "rl-medical landmark list (one x,y,z voxel file per image)");
  app.add_option("--landmark-ids", o.ids,
                 "landmark indices in the files (phantom default: 0 1 2 3; brain default: all 12, in the order "
                 "thalamus, caudate, putamen, pallidum, hippocampus, amygdala, each L then R)");
  app.add_option("--agent", o.agent, "dqn | double | dueling | dueling-double | collab")
      ->check(CLI::IsMember({"dqn", "double", "dueling", "dueling-double", "collab"}));
  app.add_option("--scales", o.scales, "pyramid levels searched: 1 or 3")->check(CLI::IsMember({1, 3}));
  app.add_option("--steps", o.steps, "agent steps of training per agent group")->check(CLI::PositiveNumber);
  app.add_option("--seed", o.seed, "seed of everything");
  app.add_option("--out", o.out, "folder for checkpoints, results.csv and trajectory PNGs");
  app.add_option("--eval", o.eval, "folder of checkpoints to evaluate instead of training");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!o.images.empty() || !o.landmarks.empty()) {
      RLMED_CHECK(!o.images.empty() && !o.landmarks.empty(), "--images and --landmarks go together");
      o.data = "files";
    }
    if (o.data_dir.empty()) {
      const char* env_dir = std::getenv("RLMED_DATA_DIR");
      o.data_dir = env_dir ? env_dir : "../shared/data";
    }
    if (o.ids.empty()) {
      if (o.data == "brain") o.ids = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
      else o.ids = {0, 1, 2, 3};
    }
    RLMED_CHECK(static_cast<index_t>(o.ids.size()) <= kMaxAgents, "at most ", kMaxAgents, " landmarks; found ", o.ids.size());
    if (!o.out.empty()) std::filesystem::create_directories(o.out);
    const Data d = load_data(o);
    std::printf("%zu training volumes, %zu test volumes, %zu landmarks, agent %s, %lld scales\n", d.train.size(),
                d.test.size(), o.ids.size(), o.agent.c_str(), (long long)o.scales);
    // The selected landmarks are renumbered 0..K-1 in the volumes.
    std::vector<env::LandmarkResult<3>> results;
    if (o.agent == "dqn") results = run_independent<false, rl::target::Plain>(o, d);
    else if (o.agent == "double") results = run_independent<false, rl::target::Double>(o, d);
    else if (o.agent == "dueling") results = run_independent<true, rl::target::Plain>(o, d);
    else if (o.agent == "dueling-double") results = run_independent<true, rl::target::Double>(o, d);
    else {
      std::vector<int> all;
      for (std::size_t k = 0; k < o.ids.size(); ++k) all.push_back(static_cast<int>(k));
      results = run_group<nn::CollabQNet<float, Trunk, Head<true>, kMaxAgents>, rl::target::Double>(o, d, all, "collab");
    }
    std::vector<int> local;
    for (std::size_t k = 0; k < o.ids.size(); ++k) local.push_back(static_cast<int>(k));
    const auto sum = env::summarize_landmarks<3>(results, local);
    std::printf("\n%-9s %5s %16s %8s %8s %8s %8s %8s %10s\n", "landmark", "n", "error mm", "<=2mm", "<=4mm", "<=10mm",
                "start mm", "steps", "ms/lmk");
    double total = 0;
    for (const auto& s : sum) {
      std::printf("%-9d %5lld %7.2f ± %6.2f %8.2f %8.2f %8.2f %8.2f %8.1f %10.2f\n", o.ids[static_cast<std::size_t>(s.landmark)],
                  (long long)s.count, s.mean_mm, s.sd_mm, s.within2, s.within4, s.within10, s.mean_start_mm, s.mean_steps,
                  s.mean_ms);
      total += s.mean_mm / double(sum.size());
    }
    std::printf("mean error over landmarks: %.2f mm\n", total);
    if (!o.out.empty()) {
      std::string csv = "volume,landmark,error_mm,start_error_mm,steps,ms\n";
      for (const auto& r : results) {
        char line[256];
        std::snprintf(line, sizeof line, "%s,%d,%.4f,%.4f,%lld,%.3f\n", (*d.volumes)[static_cast<std::size_t>(r.volume)].name.c_str(),
                      o.ids[static_cast<std::size_t>(r.landmark)], r.error_mm, r.start_error_mm, (long long)r.steps, r.ms);
        csv += line;
      }
      AtomicFileWriter w(std::filesystem::path(o.out) / "results.csv");
      w.write(csv.data(), csv.size());
      w.commit();
      for (std::size_t i = 0; i < results.size() && i < 8; ++i)
        write_trajectory_png(std::filesystem::path(o.out) / ("trajectory_" + std::to_string(i) + ".png"),
                             (*d.volumes)[static_cast<std::size_t>(results[i].volume)], results[i]);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
