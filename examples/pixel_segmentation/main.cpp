// pixel_segmentation — trains and evaluates PixelDRL-MG (SYSTEMS.md S6), its ablations (PA3C,
// +SAM, +DC) and the baselines of seg/method.hpp (U-Net, PixelRL, per-pixel DQN / Double DQN /
// Dueling DQN, plain actor-critic) on phantoms, the ISBI 2012 EM set, the brain protocol or a
// folder of image/mask pairs; prints the paper's metric table.
//
// Without arguments: PixelDRL-MG (CPU width) on 64×64 phantoms, a few minutes on 2 cores.
// --out gets: metrics.csv (one row per test image, then the mean and sd), dice_per_step.csv (mean
// Dice after step t = 1..t_max; RL methods), overlays/<image>.png (the image, the mask after each
// step with the label's contour, as the paper's Fig. 4), checkpoint.safetensors (--eval reloads it,
// give the same --method/--width) and summary.csv (the table row).
// Data protocols: docs/systems/pixeldrl.md. Exit status 0, or 1 with a message on an error.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "brain_data.hpp"
#include "pixeldrl_method.hpp"
#include "rlmed/core/file.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/imaging/metrics.hpp"
#include "rlmed/imaging/overlay.hpp"
#include "rlmed/imaging/png.hpp"
#include "rlmed/seg/dataset.hpp"
#include "rlmed/seg/method.hpp"

namespace {

using namespace rlmed;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Metrics {
  double dice = 0, ppv = 0, sen = 0, iou = 0, biou = 0, hd95 = 0;
};

Metrics metrics_of(const Tensor<float, 2>& pred, const Tensor<float, 2>& label) {
  Metrics m;
  const auto s = imaging::overlap_scores(pred.view(), label.view());
  m.dice = s.dice;
  m.ppv = s.ppv;
  m.sen = s.sensitivity;
  m.iou = s.iou;
  m.biou = imaging::boundary_iou(pred.view(), label.view());
  m.hd95 = imaging::hd95(pred.view(), label.view());
  return m;
}

Tensor<std::uint8_t, 3> overlay_tile(const Tensor<float, 2>& image, const Tensor<float, 2>* mask,
                                     const Tensor<float, 2>& label) {
  const auto gray = imaging::window_to_u8(image.view(), imaging::percentile_window(image.view()));
  auto rgb = imaging::gray_to_rgb(gray.view());
  const index_t H = image.extent(0), W = image.extent(1);
  Tensor<std::uint8_t, 2> l(Shape<2>{H, W});
  if (mask) {  // prediction filled in translucent red
    for (index_t y = 0; y < H; ++y)
      for (index_t x = 0; x < W; ++x)
        if ((*mask)(y, x) > 0.5f) {
          rgb(y, x, 0) = static_cast<std::uint8_t>(std::min(255, rgb(y, x, 0) / 2 + 128));
          rgb(y, x, 1) = static_cast<std::uint8_t>(rgb(y, x, 1) / 2);
          rgb(y, x, 2) = static_cast<std::uint8_t>(rgb(y, x, 2) / 2);
        }
  }
  for (index_t i = 0; i < l.size(); ++i) l.data()[i] = label.data()[i] > 0.5f ? 1 : 0;
  imaging::draw_contours(rgb.view(), l.view(), {imaging::Rgb{0, 255, 0}});  // label contour in green
  return rgb;
}

double mean_of(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? std::nan("") : s / double(v.size());
}
double sd_of(const std::vector<double>& v) {
  if (v.size() < 2) return 0;
  const double m = mean_of(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / double(v.size() - 1));
}

void write_text(const fs::path& path, const std::string& text) {
  write_file_atomic(path, std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"PixelDRL-MG pixel-level actor-critic segmentation, its ablations and baselines (rlmed)"};
  std::string method = "pixeldrl", data = "phantom", width = "cpu", out = "pixel_segmentation_run", eval_path,
              device = "cpu";
  int t_max = 10, shots = 0, fold = 0, folds = 5, updates = 0, workers = 1, threads = 0, overlays = 4;
  int phantom_train = 64, phantom_test = 16, decay_every = 0;
  index_t size = 64, batch = 4, crop = 0;
  double lr = 0, gamma = 0.95, beta = 0.01;
  std::uint64_t seed = 1;
  bool async_nondeterministic = false;
  app.add_option("--method", method, "pixeldrl | pa3c | pa3c_sam | pa3c_dc | unet | pixelrl | dqn | ddqn | dueling | ac")
      ->capture_default_str();
  app.add_option("--data", data, "phantom | isbi2012 | brain | <folder of image/mask pairs>")->capture_default_str();
  app.add_option("--tmax", t_max, "steps per episode (paper 10)")->capture_default_str();
  app.add_option("--shots", shots, "train on the first N training images only (0 = all)")->capture_default_str();
  app.add_option("--fold", fold, "cross-validation fold (isbi2012 / folder)")->capture_default_str();
  app.add_option("--folds", folds, "number of folds (isbi2012: 5, train 24 / test 6)")->capture_default_str();
  app.add_option("--width", width, "PixelDRL-MG width: cpu (Base 8, heads 16) | paper (Base 32, heads 64)")
      ->capture_default_str();
  app.add_option("--size", size, "phantom side in pixels (multiple of 8)")->capture_default_str();
  app.add_option("--phantoms", phantom_train, "phantom training images")->capture_default_str();
  app.add_option("--test-phantoms", phantom_test, "phantom test images")->capture_default_str();
  app.add_option("--updates", updates, "training updates / steps (0 = the method's default)")->capture_default_str();
  app.add_option("--batch", batch, "crops per update (paper 2)")->capture_default_str();
  app.add_option("--crop", crop, "training crop side, multiple of 8 (0 = phantom 32, else min(64, smallest image))")->capture_default_str();
  app.add_option("--lr", lr, "learning rate (0 = the method's default: RL 1e-3, U-Net 3e-3)")->capture_default_str();
  app.add_option("--decay-every", decay_every, "PixelDRL: lr x 0.9 every N updates (0 = off)")->capture_default_str();
  app.add_option("--gamma", gamma, "discount (paper 0.95)")->capture_default_str();
  app.add_option("--beta", beta, "PixelDRL: entropy bonus (paper 0.01)")->capture_default_str();
  app.add_option("--workers", workers, "PixelDRL: 1 = synchronous A2C, > 1 = A3C worker threads")->capture_default_str();
  app.add_flag("--async", async_nondeterministic, "PixelDRL A3C: apply updates as workers finish (not reproducible)");
  app.add_option("--seed", seed, "seed of every random stream")->capture_default_str();
  app.add_option("--out", out, "output folder")->capture_default_str();
  app.add_option("--eval", eval_path, "evaluate this checkpoint instead of training");
  app.add_option("--device", device, "cpu (cuda: not built yet)")->capture_default_str();
  app.add_option("--threads", threads, "OpenMP threads (0 = default)")->capture_default_str();
  app.add_option("--overlays", overlays, "test images to draw step-by-step overlays for")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  try {
    RLMED_CHECK(device == "cpu", "--device ", device, ": the CUDA path of pixel_segmentation is not built yet; use --device cpu");
    if (threads > 0) set_num_threads(threads);
    const bool pixeldrl = pixel_segmentation::is_pixeldrl_method(method);
    const auto& others = seg::seg_method_names();
    RLMED_CHECK(pixeldrl || std::find(others.begin(), others.end(), method) != others.end(), "--method ", method,
                ": expected pixeldrl, pa3c, pa3c_sam, pa3c_dc, unet, pixelrl, dqn, ddqn, dueling or ac");

    // ---- data ----
    seg::SegmentationSet train, test;
    std::string protocol;
    const fs::path root = seg::default_data_dir();
    if (data == "phantom") {
      RLMED_CHECK(size >= 16 && size % 8 == 0, "--size must be a multiple of 8 and >= 16, found ", size);
      seg::PhantomSetOptions po;
      po.height = po.width = size;
      train = seg::make_phantom_set(static_cast<std::size_t>(phantom_train), seed * 100000 + 1000, po);
      test = seg::make_phantom_set(static_cast<std::size_t>(phantom_test), seed * 100000 + 1, po);
      protocol = "phantom " + std::to_string(size) + "x" + std::to_string(size) + ", train " +
                 std::to_string(phantom_train) + " / test " + std::to_string(phantom_test);
    } else if (data == "isbi2012") {
      auto split = seg::k_fold_split(seg::load_isbi2012_em(root, 2), folds, fold);
      train = std::move(split.train);
      test = std::move(split.test);
      protocol = "ISBI 2012 EM at 256x256, fold " + std::to_string(fold) + "/" + std::to_string(folds);
    } else if (data == "brain") {
      train = pixel_segmentation::load_brain_train(root);
      test = pixel_segmentation::load_brain_test(root);
      protocol = "brain: voxelmorph subject (FreeSurfer 10-13, 49-52) -> MNI152 (AAL 71-78), axial slices";
    } else {
      RLMED_CHECK(fs::is_directory(data), "--data ", data, ": not phantom, isbi2012, brain or an existing folder");
      auto split = seg::k_fold_split(seg::load_pair_folder(data), folds, fold);
      train = std::move(split.train);
      test = std::move(split.test);
      protocol = "folder " + data + ", fold " + std::to_string(fold) + "/" + std::to_string(folds);
    }
    if (shots > 0) {
      RLMED_CHECK(static_cast<std::size_t>(shots) <= train.size(), "--shots ", shots, " exceeds the ", train.size(),
                  " training images");
      std::vector<std::size_t> first(static_cast<std::size_t>(shots));
      for (std::size_t i = 0; i < first.size(); ++i) first[i] = i;
      train = train.subset(first);
      protocol += ", " + std::to_string(shots) + "-shot";
    }
    if (crop == 0) {
      const auto [h, w] = train.min_size();
      crop = std::min<index_t>(data == "phantom" ? 32 : 64, std::min(h, w) / 8 * 8);
    }
    std::printf("data: %s (%zu train, %zu test images)\n", protocol.c_str(), train.size(), test.size());

    // ---- method ----
    pixel_segmentation::PixelDrlTrainExtras extras;
    extras.workers = workers;
    extras.deterministic = !async_nondeterministic;
    extras.decay_every = decay_every;
    extras.entropy_beta = beta;
    std::unique_ptr<seg::SegMethod> m = pixeldrl ? pixel_segmentation::make_pixeldrl_method(method, width, seed, extras)
                                                 : seg::make_seg_method(method, seed);
    const index_t params = m->parameter_count();
    std::printf("method: %s%s, %lld parameters\n", method.c_str(), pixeldrl ? (" (width " + width + ")").c_str() : "",
                static_cast<long long>(params));

    fs::create_directories(out);
    double train_s = 0;
    if (!eval_path.empty()) {
      m->load(eval_path);
      std::printf("loaded %s\n", eval_path.c_str());
    } else {
      seg::TrainOptions o;
      o.steps = updates;
      o.batch = batch;
      o.crop = crop;
      o.lr = lr;
      o.t_max = t_max;
      o.gamma = gamma;
      const auto t0 = Clock::now();
      double loss_acc = 0, dice_acc = 0;
      int n_acc = 0;
      m->train(train, o, [&](const seg::TrainReport& r) {
        loss_acc += r.loss;
        if (std::isfinite(r.dice)) dice_acc += r.dice;
        ++n_acc;
        if (r.step % 25 == 0 || r.step == r.total) {
          const double s = std::chrono::duration<double>(Clock::now() - t0).count();
          std::printf("  [%s] %5d/%d  loss %+.4f  train Dice %.4f  (%.0f s)\n", r.phase.c_str(), r.step, r.total,
                      loss_acc / n_acc, std::isfinite(r.dice) ? dice_acc / n_acc : std::nan(""), s);
          std::fflush(stdout);
          loss_acc = dice_acc = 0;
          n_acc = 0;
        }
      });
      train_s = std::chrono::duration<double>(Clock::now() - t0).count();
      m->save(fs::path(out) / "checkpoint.safetensors");
    }

    // ---- evaluation ----
    std::vector<double> dice, ppv, sen, iou, biou, hd, ms;
    std::vector<std::vector<double>> step_dice;
    std::ostringstream rows;
    rows << "image,dice,ppv,sen,iou,biou,hd95,inference_ms\n";
    fs::create_directories(fs::path(out) / "overlays");
    for (std::size_t i = 0; i < test.size(); ++i) {
      const auto t0 = Clock::now();
      const auto p = m->predict(test.images[i].view());
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      const auto mt = metrics_of(p.mask, test.masks[i]);
      dice.push_back(mt.dice);
      ppv.push_back(mt.ppv);
      sen.push_back(mt.sen);
      iou.push_back(mt.iou);
      biou.push_back(mt.biou);
      hd.push_back(mt.hd95);
      rows << test.names[i] << ',' << mt.dice << ',' << mt.ppv << ',' << mt.sen << ',' << mt.iou << ',' << mt.biou
           << ',' << mt.hd95 << ',' << ms.back() << '\n';
      if (step_dice.size() < p.steps.size()) step_dice.resize(p.steps.size());
      for (std::size_t t = 0; t < p.steps.size(); ++t)
        step_dice[t].push_back(imaging::dice(p.steps[t].view(), test.masks[i].view()));
      if (static_cast<int>(i) < overlays) {
        std::vector<Tensor<std::uint8_t, 3>> tiles;
        tiles.push_back(overlay_tile(test.images[i], nullptr, test.masks[i]));
        if (p.steps.empty()) tiles.push_back(overlay_tile(test.images[i], &p.mask, test.masks[i]));
        for (const auto& s : p.steps) tiles.push_back(overlay_tile(test.images[i], &s, test.masks[i]));
        std::vector<TensorView<const std::uint8_t, 3>> views;
        for (const auto& t : tiles) views.push_back(t.view());
        const auto pic = imaging::montage(views, static_cast<index_t>(std::min<std::size_t>(views.size(), 6)));
        imaging::write_png(fs::path(out) / "overlays" / (test.names[i] + ".png"), pic.view());
      }
    }
    rows << "mean," << mean_of(dice) << ',' << mean_of(ppv) << ',' << mean_of(sen) << ',' << mean_of(iou) << ','
         << mean_of(biou) << ',' << mean_of(hd) << ',' << mean_of(ms) << '\n';
    rows << "sd," << sd_of(dice) << ',' << sd_of(ppv) << ',' << sd_of(sen) << ',' << sd_of(iou) << ',' << sd_of(biou)
         << ',' << sd_of(hd) << ',' << sd_of(ms) << '\n';
    write_text(fs::path(out) / "metrics.csv", rows.str());
    std::ostringstream curve;
    curve << "step,mean_dice\n";
    for (std::size_t t = 0; t < step_dice.size(); ++t) curve << t + 1 << ',' << mean_of(step_dice[t]) << '\n';
    write_text(fs::path(out) / "dice_per_step.csv", curve.str());
    std::ostringstream summary;
    summary << "method,width,data,dice,ppv,sen,iou,biou,hd95,parameters,train_s,inference_ms\n"
            << method << ',' << (pixeldrl ? width : "-") << ',' << data << ',' << mean_of(dice) << ',' << mean_of(ppv)
            << ',' << mean_of(sen) << ',' << mean_of(iou) << ',' << mean_of(biou) << ',' << mean_of(hd) << ','
            << params << ',' << train_s << ',' << mean_of(ms) << '\n';
    write_text(fs::path(out) / "summary.csv", summary.str());

    if (!step_dice.empty()) {
      std::printf("mean Dice after step t:");
      for (std::size_t t = 0; t < step_dice.size(); ++t) std::printf(" %zu:%.4f", t + 1, mean_of(step_dice[t]));
      std::printf("\n");
    }
    std::printf("\n| method | DICE | PPV | SEN | IoU | BIoU | HD95 (px) | parameters | train time (s) | inference (ms/image) |\n");
    std::printf("|---|---|---|---|---|---|---|---|---|---|\n");
    std::printf("| %s | %.4f ± %.4f | %.4f | %.4f | %.4f | %.4f | %.2f | %lld | %.1f | %.1f |\n", method.c_str(),
                mean_of(dice), sd_of(dice), mean_of(ppv), mean_of(sen), mean_of(iou), mean_of(biou), mean_of(hd),
                static_cast<long long>(params), train_s, mean_of(ms));
    std::printf("\nwrote %s/{metrics.csv, dice_per_step.csv, summary.csv, overlays/, %s}\n", out.c_str(),
                eval_path.empty() ? "checkpoint.safetensors" : "(no checkpoint: --eval)");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pixel_segmentation: %s\n", e.what());
    return 1;
  }
}
