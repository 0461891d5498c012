# Tests of the imaging sampling area (owner adds rlmed_add_test lines here).
