# Tests of the imaging metrics area: distance transform, segmentation/registration metrics, k-means.
# unit_imaging_metrics also holds the double-precision finite-difference check of the local NCC gradient.
rlmed_add_test(unit_imaging_metrics SOURCES imaging/test_imaging_metrics.cpp LABELS "unit;gradcheck")
rlmed_add_test(golden_imaging_metrics SOURCES imaging/test_golden_metrics.cpp LABELS golden)
target_compile_definitions(golden_imaging_metrics PRIVATE RLMED_GOLDEN_DIR="${CMAKE_CURRENT_SOURCE_DIR}/golden")
