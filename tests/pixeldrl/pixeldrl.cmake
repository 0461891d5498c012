# PixelDRL-MG (SYSTEMS.md S6): the per-pixel environment (env/pixel_mask.hpp), the PA3C learner
# (rl/pixel_a3c.hpp) and the network (nn/models/pixeldrl_net.hpp).
#   pixeldrl_unit       environment dynamics, sampling, returns, losses, determinism, A2C update
#   pixeldrl_gradcheck  finite differences of the network and of the full PA3C loss
# Not registered yet: pixeldrl/test_pixeldrl_learning.cpp (greedy Dice collapsed to 0 at the end of
# session 11: the policy learned to carve everything); it joins the suite once the learner is fixed.
rlmed_add_test(pixeldrl_unit SOURCES pixeldrl/test_pixeldrl_unit.cpp LABELS unit)
rlmed_add_test(pixeldrl_gradcheck SOURCES pixeldrl/test_pixeldrl_gradcheck.cpp LABELS gradcheck)
