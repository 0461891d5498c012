# PixelDRL-MG baselines (issue 6): segmentation data (include/rlmed/seg/dataset.hpp), the U-Net
# trainer, PixelRL (include/rlmed/rl/pixel_rl.hpp), per-pixel DQN/Double/Dueling
# (include/rlmed/rl/pixel_dqn.hpp), the plain actor-critic and the SegMethod interface
# (include/rlmed/seg/method.hpp).
#   seg_unit       loaders on a temp folder, PixelRL 3x3 step, Q targets plain vs Double, dueling,
#                  ε-greedy, determinism and checkpoint round trip of every method
#   seg_gradcheck  the per-pixel Q loss through the dueling combination and a PixelFcn (double)
#   seg_learning   phantoms: U-Net Dice >= 0.9, PixelRL improves its coarse map, Double DQN Dice
#   seg_data_em    the ISBI 2012 EM loader on $RLMED_DATA_DIR (30 pairs, membranes foreground)
rlmed_add_test(seg_unit SOURCES seg/test_seg_unit.cpp LABELS unit)
rlmed_add_test(seg_gradcheck SOURCES seg/test_seg_gradcheck.cpp LABELS gradcheck)
rlmed_add_test(seg_learning SOURCES seg/test_seg_learning.cpp LABELS learning)
set_tests_properties(seg_learning PROPERTIES TIMEOUT 240 RUN_SERIAL TRUE)
rlmed_add_test(seg_data_em SOURCES seg/test_seg_data.cpp LABELS data)
