# Builds and runs tests/downstream against rlmed. Called by CTest with
#   -DMODE=install|subdirectory -DRLMED_SOURCE_DIR -DRLMED_BINARY_DIR -DWORK_DIR -DGENERATOR -DCXX_COMPILER
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

function(run_step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "downstream ${MODE}: ${what} failed (${rc})\n${out}\n${err}")
  endif()
  message(STATUS "downstream ${MODE}: ${what} ok\n${out}")
endfunction()

set(configure_args -S "${RLMED_SOURCE_DIR}/tests/downstream" -B "${WORK_DIR}/build" -G "${GENERATOR}"
    -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=Release -DRLMED_DOWNSTREAM_MODE=${MODE})
if(MODE STREQUAL "install")
  run_step("install into ${WORK_DIR}/prefix"
           ${CMAKE_COMMAND} --install "${RLMED_BINARY_DIR}" --prefix "${WORK_DIR}/prefix")
  if(NOT EXISTS "${WORK_DIR}/prefix/include/rlmed/rlmed.hpp")
    message(FATAL_ERROR "install did not place include/rlmed/rlmed.hpp")
  endif()
  list(APPEND configure_args -DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix)
else()
  list(APPEND configure_args -DRLMED_SOURCE_DIR=${RLMED_SOURCE_DIR})
endif()
run_step("configure" ${CMAKE_COMMAND} ${configure_args})
run_step("build" ${CMAKE_COMMAND} --build "${WORK_DIR}/build")
run_step("run" "${WORK_DIR}/build/downstream")
