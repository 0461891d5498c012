# Tests of the imaging warp area (owner adds rlmed_add_test lines here).
