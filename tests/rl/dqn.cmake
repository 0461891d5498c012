# The shared training loop (include/rlmed/rl/train_loop.hpp) and the DQN family
# (include/rlmed/rl/agents/dqn.hpp).
#   test_rl_dqn.cpp           unit: TD targets (plain vs Double) on a constructed case, PER weights and
#                             priorities, Huber, exact resume through the loop, evaluation not perturbing
#                             training, CSV truncation on resume, bad inputs -> rlmed::Error
#   test_rl_dqn_learning.cpp  learning: Double + Dueling + PER (+ 3-step) DQN solves CartPole-v1
#                             (mean greedy return >= 475 over 20 episodes) within 50k env steps at seed 3,
#                             and the same run twice is bit-identical
rlmed_add_test(unit_rl_dqn SOURCES rl/test_rl_dqn.cpp LABELS unit)
rlmed_add_test(learning_rl_dqn SOURCES rl/test_rl_dqn_learning.cpp LABELS learning)
set_tests_properties(learning_rl_dqn PROPERTIES TIMEOUT 240 RUN_SERIAL TRUE)
