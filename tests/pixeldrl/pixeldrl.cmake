# PixelDRL-MG (SYSTEMS.md S6): the per-pixel environment (env/pixel_mask.hpp), the PA3C learner
# (rl/pixel_a3c.hpp) and the network (nn/models/pixeldrl_net.hpp).
#   pixeldrl_unit       environment dynamics, sampling, returns, losses, determinism, A2C update
# Not registered yet: pixeldrl/test_pixeldrl_gradcheck.cpp (finite differences of the network and
# of the full PA3C loss) did not finish within its time at the end of session 11, and
# pixeldrl/test_pixeldrl_learning.cpp (a small PixelDRL net learning a
# synthetic blob segmentation, <= 3 min). At the end of session 11 it did not reach its Dice
# threshold (greedy Dice collapsed to 0: the policy learns to carve everything), so it stays out
# of the suite until the learner is fixed (issue 6).
rlmed_add_test(pixeldrl_unit SOURCES pixeldrl/test_pixeldrl_unit.cpp LABELS unit)
