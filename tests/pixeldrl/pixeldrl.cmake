# PixelDRL-MG (SYSTEMS.md S6): the per-pixel environment (env/pixel_mask.hpp), the PA3C learner
# (rl/pixel_a3c.hpp) and the network (nn/models/pixeldrl_net.hpp).
#   pixeldrl_unit       environment dynamics, sampling, returns, losses, determinism, A2C update
#   pixeldrl_gradcheck  finite differences of the network and of the full PA3C loss
#   pixeldrl_learning   a small PixelDRL net learns a synthetic blob segmentation (<= 3 min, 2 cores)
rlmed_add_test(pixeldrl_unit SOURCES pixeldrl/test_pixeldrl_unit.cpp LABELS unit)
rlmed_add_test(pixeldrl_gradcheck SOURCES pixeldrl/test_pixeldrl_gradcheck.cpp LABELS gradcheck)
rlmed_add_test(pixeldrl_learning SOURCES pixeldrl/test_pixeldrl_learning.cpp LABELS learning)
set_tests_properties(pixeldrl_learning PROPERTIES TIMEOUT 180 RUN_SERIAL TRUE)
