# Off-policy continuous control (include/rlmed/rl/agents/{ddpg,td3,sac,actor_critic_common}.hpp) and
# GRPO (include/rlmed/rl/agents/grpo.hpp) on the toy task include/rlmed/env/toy/digit_sum.hpp.
#   test_rl_ac.cpp              unit: squashed-Gaussian log-prob (change of variables, finite
#                               differences), temperature loss gradient, SAC/TD3 actor gradients by
#                               finite differences, TD3 target smoothing / clipped double-Q / bootstrap
#                               on constructed cases, delayed updates, determinism, exact resume through
#                               the training loop (SAC, TD3, DDPG), bad inputs -> rlmed::Error
#   test_rl_grpo.cpp            unit: group advantages, clipped surrogate and k3 KL on hand cases,
#                               loss gradient by finite differences, the toy task, determinism, resume
#   test_rl_sac_learning.cpp    learning: SAC reaches Pendulum-v1 mean return >= -200 (20 episodes)
#   test_rl_td3_learning.cpp    learning: TD3 reaches Pendulum-v1 mean return >= -200 (20 episodes)
#   test_rl_grpo_learning.cpp   learning: GRPO answers >= 95 % of all DigitSum<4> prompts greedily
# Each learning test runs its training twice and checks the runs are bit-identical; budgets below.
rlmed_add_test(unit_rl_ac SOURCES rl/test_rl_ac.cpp LABELS unit)
rlmed_add_test(unit_rl_grpo SOURCES rl/test_rl_grpo.cpp LABELS unit)
rlmed_add_test(learning_rl_sac SOURCES rl/test_rl_sac_learning.cpp LABELS learning)
set_tests_properties(learning_rl_sac PROPERTIES TIMEOUT 120 RUN_SERIAL TRUE)
rlmed_add_test(learning_rl_td3 SOURCES rl/test_rl_td3_learning.cpp LABELS learning)
set_tests_properties(learning_rl_td3 PROPERTIES TIMEOUT 120 RUN_SERIAL TRUE)
rlmed_add_test(learning_rl_grpo SOURCES rl/test_rl_grpo_learning.cpp LABELS learning)
set_tests_properties(learning_rl_grpo PROPERTIES TIMEOUT 90 RUN_SERIAL TRUE)
