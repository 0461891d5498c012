# Finds nvcc even when it is not on PATH (the CUDA toolkit's standard prefix is
# /usr/local/cuda[-X.Y]/bin) and checks that it works. Sets RLMED_CUDA_COMPILER_FOUND.
include(CheckLanguage)

if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
  file(GLOB _rlmed_versioned_cuda_bins LIST_DIRECTORIES true "/usr/local/cuda-*/bin")
  list(SORT _rlmed_versioned_cuda_bins COMPARE NATURAL ORDER DESCENDING)
  find_program(RLMED_NVCC nvcc
    HINTS ENV CUDA_PATH ENV CUDA_HOME
    PATH_SUFFIXES bin
    PATHS /usr/local/cuda/bin ${_rlmed_versioned_cuda_bins} /opt/cuda/bin)
  if(RLMED_NVCC)
    # check_language() probes in a child CMake process, which reads CUDACXX.
    set(ENV{CUDACXX} "${RLMED_NVCC}")
  endif()
endif()

check_language(CUDA)
if(CMAKE_CUDA_COMPILER)
  set(RLMED_CUDA_COMPILER_FOUND ON)
else()
  set(RLMED_CUDA_COMPILER_FOUND OFF)
endif()
