// rlmed/rlmed.hpp — umbrella header: includes every host-side part of rlmed.
// CUDA parts (rlmed/core/tensor_cuda.hpp, kernels/rlmed/cuda/*.cuh) are included explicitly by
// code built against the rlmed::cuda target.
#pragma once

#include "rlmed/core/arena.hpp"
#include "rlmed/core/config.hpp"
#include "rlmed/core/device.hpp"
#include "rlmed/core/error.hpp"
#include "rlmed/core/file.hpp"
#include "rlmed/core/half.hpp"
#include "rlmed/core/interop.hpp"
#include "rlmed/core/parallel.hpp"
#include "rlmed/core/philox.hpp"
#include "rlmed/core/random.hpp"
#include "rlmed/core/safetensors.hpp"
#include "rlmed/core/shape.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/imaging.hpp"
#include "rlmed/nn/nn.hpp"
#include "rlmed/env/classic/classic.hpp"
#include "rlmed/rl/rl.hpp"

#if defined(RLMED_WITH_CUDA)
#include "rlmed/core/cuda_runtime.hpp"
#include "rlmed/core/tensor_cuda.hpp"
#endif
