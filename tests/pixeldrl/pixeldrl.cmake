# PixelDRL-MG (SYSTEMS.md S6): the per-pixel environment (env/pixel_mask.hpp), the PA3C learner
# (rl/pixel_a3c.hpp, rl/pixel_a3c_async.hpp) and the network (nn/models/pixeldrl_net.hpp).
#   pixeldrl_unit       environment dynamics, sampling, returns, losses, determinism, A2C update
#   pixeldrl_async      A3C workers: deterministic runs bit-identical, 1 worker == A2C, errors
#   pixeldrl_gradcheck  finite differences of the network and of the full PA3C loss
#   pixeldrl_learning   phantoms, paper defaults (t_max 10): greedy Dice >= 0.90 at t_max and above
#                       step 1; same seeds -> bit-identical parameters (~25-130 s on 2 cores)
rlmed_add_test(pixeldrl_unit SOURCES pixeldrl/test_pixeldrl_unit.cpp LABELS unit)
rlmed_add_test(pixeldrl_async SOURCES pixeldrl/test_pixeldrl_async.cpp LABELS unit)
rlmed_add_test(pixeldrl_gradcheck SOURCES pixeldrl/test_pixeldrl_gradcheck.cpp LABELS gradcheck)
rlmed_add_test(pixeldrl_learning SOURCES pixeldrl/test_pixeldrl_learning.cpp LABELS learning)
set_tests_properties(pixeldrl_learning PROPERTIES TIMEOUT 300 RUN_SERIAL TRUE)
