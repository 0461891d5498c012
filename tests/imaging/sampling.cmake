# Tests of the imaging sampling area: resampling, pyramids, normalisation, patch extraction,
# phantoms and pictures (include/rlmed/imaging/{resample,pyramid,normalize,patches,phantom,overlay}.hpp).
rlmed_add_test(unit_imaging_sampling SOURCES imaging/test_imaging_sampling.cpp LABELS unit)
rlmed_add_test(unit_imaging_phantom SOURCES imaging/test_imaging_phantom.cpp LABELS unit)
rlmed_add_test(golden_imaging_sampling SOURCES imaging/test_golden_sampling.cpp LABELS golden)
target_compile_definitions(golden_imaging_sampling PRIVATE RLMED_GOLDEN_DIR="${CMAKE_CURRENT_SOURCE_DIR}/golden")
