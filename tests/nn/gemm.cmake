# The packed single-precision GEMM (include/rlmed/core/gemm.hpp) and the packed-GEMM
# convolution path (include/rlmed/nn/layers/conv_gemm.hpp).
#   test_gemm.cpp  unit: every supported kernel family (generic, AVX2+FMA, AVX-512) against a
#                  double triple loop (odd sizes, transposes, accumulate, bias, row stride);
#                  bit-identical repeats and 1 vs 2 threads; bad arguments -> rlmed::Error;
#                  convolutions (1D/2D/3D, stride, dilation, 1x1) against the Eigen path.
rlmed_add_test(unit_gemm SOURCES nn/test_gemm.cpp LABELS unit)
