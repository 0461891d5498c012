# Tests of the RL foundation (include/rlmed/rl, include/rlmed/env/classic).
#   test_rl_spaces_envs.cpp     spaces, Environment, classic-control envs vs golden trajectories
#                               (tests/rl/make_classic_golden.py -> tests/rl/golden), VectorEnv
#   test_rl_replay.cpp          sum tree, uniform / prioritized / n-step / HER / keyed replay, save/load
#   test_rl_returns_explore.cpp returns, GAE, exploration, target-network sync
rlmed_add_test(unit_rl_spaces_envs SOURCES rl/test_rl_spaces_envs.cpp LABELS unit)
target_compile_definitions(unit_rl_spaces_envs PRIVATE RLMED_RL_GOLDEN_DIR="${CMAKE_CURRENT_LIST_DIR}/golden")
rlmed_add_test(unit_rl_replay SOURCES rl/test_rl_replay.cpp LABELS unit)
rlmed_add_test(unit_rl_returns_explore SOURCES rl/test_rl_returns_explore.cpp LABELS unit)
