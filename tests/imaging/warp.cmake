# Tests of the imaging warp area (include/rlmed/imaging/warp.hpp).
rlmed_add_test(unit_imaging_warp SOURCES imaging/test_imaging_warp.cpp LABELS unit)
rlmed_add_test(gradcheck_imaging_warp SOURCES imaging/test_gradcheck_warp.cpp LABELS gradcheck)
rlmed_add_test(golden_imaging_warp SOURCES imaging/test_golden_warp.cpp LABELS golden)
target_compile_definitions(golden_imaging_warp PRIVATE RLMED_GOLDEN_DIR="${CMAKE_CURRENT_SOURCE_DIR}/golden")
