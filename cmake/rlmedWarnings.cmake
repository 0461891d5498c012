# Warnings for rlmed's own programs (tests, examples, benchmarks); never imposed on users.
add_library(rlmed_warnings INTERFACE)
target_compile_options(rlmed_warnings INTERFACE
  $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Werror=return-type>)
