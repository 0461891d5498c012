# Tests of the imaging metrics area (owner adds rlmed_add_test lines here).
