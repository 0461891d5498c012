// Downstream smoke program: tensors, Philox, safetensors, errors and one training step of a
// small network, through the umbrella header.
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
  // A tiny network trained for one step, the way the README shows it.
  namespace nn = rlmed::nn;
  using QNet = nn::Sequential<nn::Conv<3, 4, 8, 3>, nn::ReLU, nn::MaxPool<3, 2>, nn::Flatten, nn::Linear<16>, nn::ReLU,
                              nn::DuelingHead<6>>;
  nn::Model<QNet> net;
  net.setup({2, 4, 9, 9, 9});
  net.initialize(rng);
  nn::optim::Adam<float> adam(net, {1e-3});
  rlmed::Tensor<float, 5> x(rlmed::Shape<5>{2, 4, 9, 9, 9});
  rlmed::fill_normal(x.view(), rng);
  rlmed::Tensor<float, 2> target(rlmed::Shape<2>{2, 6}), dq;
  nn::Context ctx;
  decltype(net)::Cache cache;
  adam.zero_grad();
  const double before = nn::loss::huber<float, 2>(net.forward(ctx, x.view(), cache), target.view(), dq);
  net.backward(ctx, cache, dq.view());
  adam.step();
  const double after = nn::loss::huber<float, 2>(net.forward(ctx, x.view(), cache), target.view(), dq);
  std::printf("rlmed downstream: Huber loss %.4f -> %.4f after one Adam step\n", before, after);
  // Imaging (libtiff, libjpeg, zlib come with the package): a phantom slice through NIfTI and back.
  namespace im = rlmed::imaging;
  const auto slice = im::make_slice_phantom({}, 7);
  im::Image<float, 2> img(rlmed::Tensor<float, 2>::copy_of(slice.image.view()), {0.5, 0.5});
  const auto nii = std::filesystem::temp_directory_path() / "rlmed_downstream.nii.gz";
  im::write_nifti(nii, img);
  const bool image_ok = rlmed::bitwise_equal(im::read_nifti<float, 2>(nii).voxels, img.voxels);
  std::filesystem::remove(nii);
  std::printf("rlmed downstream: phantom slice %s through .nii.gz\n", image_ok ? "round-tripped" : "CHANGED");
  const bool ok = rlmed::bitwise_equal(back, w) && caught && after < before && image_ok;
  std::printf("rlmed downstream: %s\n", ok ? "OK" : "FAILED");
  return ok ? 0 : 1;
}
