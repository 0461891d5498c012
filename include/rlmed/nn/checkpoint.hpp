// rlmed/nn/checkpoint.hpp — a model's parameters, buffers and optimiser state in safetensors.
//
// Design: tensor names are module paths ("backbone.conv1_1.weight"); buffers (batch-norm
// running statistics) sit beside the parameters; optimiser state is under "optim.<param>.<state>"
// and counters under "optim.<counter>" as I64 scalars, so a PyTorch user can read the file and a
// resumed run continues exactly. Values are stored in their own dtype: the round trip is
// bit-exact. Loading checks every expected tensor's presence and shape before changing anything,
// and names the culprit.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "rlmed/core/safetensors.hpp"
#include "rlmed/nn/module.hpp"
#include "rlmed/nn/optim/optimizers.hpp"

namespace rlmed::nn {

struct NoOptimizer {};

/// Writes the module (and optimiser state, if given) atomically to `path`.
template <class M, class Opt = NoOptimizer>
void save_checkpoint(const std::filesystem::path& path, M& module, Opt* optimizer = nullptr,
                     const std::map<std::string, std::string>& metadata = {}) {
  io::SafetensorsWriter w;
  module.parameters([&](const std::string& name, auto& p) { w.add(name, p.value); });
  module.buffers([&](const std::string& name, auto& t) { w.add(name, t); });
  if constexpr (!std::is_same_v<Opt, NoOptimizer>) {
    if (optimizer) {
      using T = typename M::value_type;
      optim::StateVisitor<T> v;
      v.tensor = [&](const std::string& name, Tensor<T, 1>& t) { w.add("optim." + name, t); };
      v.counter = [&](const std::string& name, std::int64_t& c) {
        w.add("optim." + name, Tensor<std::int64_t, 1>(Shape<1>{1}, c));
      };
      optimizer->visit_state(v);
    }
  }
  for (const auto& [k, val] : metadata) w.set_metadata(k, val);
  w.set_metadata("format", "rlmed");
  w.write(path);
}

/// Loads what save_checkpoint wrote into an already set-up module (same architecture).
template <class M, class Opt = NoOptimizer>
std::map<std::string, std::string> load_checkpoint(const std::filesystem::path& path, M& module,
                                                   Opt* optimizer = nullptr) {
  const auto r = io::SafetensorsReader::open(path);
  // Check every expected tensor first, so a mismatch leaves the module untouched.
  auto expect = [&](const std::string& name, const auto& shape) {
    const std::vector<index_t> want(shape.begin(), shape.end());
    RLMED_CHECK(r.info(name).shape == want, r.source(), ": tensor '", name, "' has shape ", r.info(name).shape,
                ", expected ", want);
  };
  module.parameters([&](const std::string& name, auto& p) { expect(name, p.value.shape()); });
  module.buffers([&](const std::string& name, auto& t) { expect(name, t.shape()); });
  if constexpr (!std::is_same_v<Opt, NoOptimizer>) {
    if (optimizer) {
      using T = typename M::value_type;
      optim::StateVisitor<T> v;
      v.tensor = [&](const std::string& name, Tensor<T, 1>& t) { expect("optim." + name, t.shape()); };
      v.counter = [&](const std::string& name, std::int64_t&) { expect("optim." + name, Shape<1>{1}); };
      optimizer->visit_state(v);
    }
  }
  module.parameters([&](const std::string& name, auto& p) { r.read_into(name, p.value.view()); });
  module.buffers([&](const std::string& name, auto& t) { r.read_into(name, t.view()); });
  if constexpr (!std::is_same_v<Opt, NoOptimizer>) {
    if (optimizer) {
      using T = typename M::value_type;
      optim::StateVisitor<T> v;
      v.tensor = [&](const std::string& name, Tensor<T, 1>& t) { r.read_into("optim." + name, t.view()); };
      v.counter = [&](const std::string& name, std::int64_t& c) {
        Tensor<std::int64_t, 1> t(Shape<1>{1});
        r.read_into("optim." + name, t.view());
        c = t(0);
      };
      optimizer->visit_state(v);
    }
  }
  return r.metadata();
}

}  // namespace rlmed::nn
