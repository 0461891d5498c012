# Tests of the imaging io area: formats, fuzzing, and the real data in $RLMED_DATA_DIR.
rlmed_add_test(unit_imaging_io SOURCES imaging/test_imaging_io.cpp LABELS unit)
rlmed_add_test(data_imaging_files SOURCES imaging/test_imaging_data.cpp LABELS data)
target_compile_definitions(data_imaging_files PRIVATE
                           RLMED_DATA_FACTS="${CMAKE_CURRENT_SOURCE_DIR}/data/data_facts.json")
rlmed_add_test(unit_imaging_io_fuzz SOURCES imaging/test_imaging_io_fuzz.cpp LABELS "unit;fuzz")
