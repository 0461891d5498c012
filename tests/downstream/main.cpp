// Downstream smoke program: tensors, Philox, safetensors and errors through the umbrella header.
#include <cstdio>
#include <filesystem>

#include <rlmed/rlmed.hpp>

int main() {
  rlmed::Tensor<float, 2> w(rlmed::Shape<2>{4, 4});
  rlmed::PhiloxStream rng(1, 0);
  rlmed::fill_normal(w.view(), rng);
  const auto path = std::filesystem::temp_directory_path() / "rlmed_downstream.safetensors";
  rlmed::io::SafetensorsWriter writer;
  writer.add("w", w);
  writer.write(path);
  const auto back = rlmed::io::SafetensorsReader::open(path).read<float, 2>("w");
  std::filesystem::remove(path);
  bool caught = false;
  try {
    (void)w.at(4, 0);
  } catch (const rlmed::Error&) {
    caught = true;
  }
  const bool ok = rlmed::bitwise_equal(back, w) && caught;
  std::printf("rlmed downstream: %s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
