# Tests of the imaging io area: formats, fuzzing, and the real data in $RLMED_DATA_DIR.
rlmed_add_test(unit_imaging_io SOURCES imaging/test_imaging_io.cpp LABELS unit)
