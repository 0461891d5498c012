# On-policy agents (include/rlmed/rl/agents/{on_policy,reinforce,a2c,a3c,ppo}.hpp).
#   test_rl_on_policy.cpp          distributions and PPO loss vs finite differences (double), loss
#                                  terms and returns on constructed cases, bad input, exact resume
#                                  through rl::TrainLoop, A3C deterministic mode and its loop
#   test_rl_on_policy_learning.cpp PPO, A2C and REINFORCE solve CartPole-v1 (>= 475 over 20 greedy
#                                  episodes), A3C with 2 workers reaches >= 400, Gaussian PPO reaches
#                                  Pendulum-v1 >= -200; each within a stated step budget, run twice,
#                                  bit-identical (~20 s in all on 2 cores; budget 120 s)
rlmed_add_test(unit_rl_on_policy SOURCES rl/test_rl_on_policy.cpp LABELS unit)
rlmed_add_test(learning_rl_on_policy SOURCES rl/test_rl_on_policy_learning.cpp LABELS learning)
set_tests_properties(learning_rl_on_policy PROPERTIES TIMEOUT 120 RUN_SERIAL TRUE)
