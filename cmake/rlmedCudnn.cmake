# Defines the imported target rlmed::cudnn from a cuDNN installed beside the CUDA toolkit
# (or under $CUDNN_ROOT). Needs CUDAToolkit to have been found first. Installed with rlmed's
# package config so downstream projects resolve it the same way.
if(NOT TARGET rlmed::cudnn)
  find_path(RLMED_CUDNN_INCLUDE_DIR cudnn.h
    HINTS ENV CUDNN_ROOT ${CUDAToolkit_INCLUDE_DIRS} ${CUDAToolkit_LIBRARY_ROOT}
    PATH_SUFFIXES include)
  find_library(RLMED_CUDNN_LIBRARY cudnn
    HINTS ENV CUDNN_ROOT ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}
    PATH_SUFFIXES lib64 lib lib/x64)
  if(RLMED_CUDNN_INCLUDE_DIR AND RLMED_CUDNN_LIBRARY)
    add_library(rlmed::cudnn UNKNOWN IMPORTED)
    set_target_properties(rlmed::cudnn PROPERTIES
      IMPORTED_LOCATION "${RLMED_CUDNN_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${RLMED_CUDNN_INCLUDE_DIR}")
  endif()
endif()
