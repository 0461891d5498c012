# Landmark detection (SYSTEMS.md S1): include/rlmed/env/landmark*.hpp, imaging/augment.hpp,
# rl/agents/collab_dqn.hpp.
#   test_landmark_env.cpp        unit: reward sign/size, oscillation + loop answer, coarse-to-fine
#                                hand-over at the same physical point, frame history, zero-padded
#                                borders, replay keys re-render the identical observation, rl-medical
#                                files (good and bad), augmentation consistency, Collab routing, errors
#   test_landmark_gradcheck.cpp  gradcheck: Collab-DQN net (shared trunk, 3 heads), double precision
#   test_landmark_learning.cpp   learning: multi-scale Double-Dueling agent on the head phantom
rlmed_add_test(unit_landmark_env SOURCES landmark/test_landmark_env.cpp LABELS unit)
rlmed_add_test(gradcheck_landmark_collab SOURCES landmark/test_landmark_gradcheck.cpp LABELS gradcheck)
rlmed_add_test(learning_landmark SOURCES landmark/test_landmark_learning.cpp LABELS learning)
set_tests_properties(learning_landmark PROPERTIES TIMEOUT 300 RUN_SERIAL TRUE)
#   test_landmark_brain_data.cpp data: brain protocol landmarks (voxelmorph FreeSurfer, MNI152 AAL)
rlmed_add_test(data_landmark_brain SOURCES landmark/test_landmark_brain_data.cpp LABELS data)
