// rlmed/core/parallel.hpp — parallel_for over OpenMP with deterministic partitioning.
//
// Design decisions:
//  * Static schedule: iteration i always runs once and results never depend on timing; code
//    that reduces must reduce per index (or per fixed chunk) and combine in index order, which
//    keeps training bit-identical across runs on the same machine.
//  * Small ranges (below `grain`) and nested calls run serially: spawning threads costs more
//    than a few thousand flops, and nesting would oversubscribe 2-core machines.
//  * Exceptions thrown by the body are captured (the first one in index order) and rethrown on
//    the calling thread: an exception must never cross an OpenMP region boundary.
#pragma once

#include <exception>
#include <mutex>

#include "rlmed/core/config.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace rlmed {

/// Number of threads parallel_for may use.
inline int max_threads() noexcept {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// Sets the thread count for later parallel regions (n >= 1).
inline void set_num_threads(int n) noexcept {
#if defined(_OPENMP)
  omp_set_num_threads(n > 0 ? n : 1);
#else
  (void)n;
#endif
}

/// Index of the calling thread inside a parallel region (0 outside one).
inline int thread_index() noexcept {
#if defined(_OPENMP)
  return omp_get_thread_num();
#else
  return 0;
#endif
}

inline bool in_parallel_region() noexcept {
#if defined(_OPENMP)
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}

/// Calls body(i) for every i in [begin, end), split statically over the OpenMP threads.
template <class Body>
void parallel_for(index_t begin, index_t end, Body&& body, index_t grain = 1024) {
  if (end <= begin) return;
  const index_t n = end - begin;
  if (n < grain || max_threads() == 1 || in_parallel_region()) {
    for (index_t i = begin; i < end; ++i) body(i);
    return;
  }
#if defined(_OPENMP)
  std::exception_ptr first_error;
  index_t first_error_index = end;
  std::mutex error_mutex;
#pragma omp parallel for schedule(static)
  for (index_t i = begin; i < end; ++i) {
    try {
      body(i);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (i < first_error_index) {
        first_error_index = i;
        first_error = std::current_exception();
      }
    }
  }
  if (first_error) std::rethrow_exception(first_error);
#endif
}

/// Calls body(chunk_begin, chunk_end) over fixed-size chunks of [begin, end), in parallel.
/// Chunk boundaries depend only on `chunk`, never on the thread count.
template <class Body>
void parallel_for_chunks(index_t begin, index_t end, index_t chunk, Body&& body) {
  if (end <= begin) return;
  if (chunk < 1) chunk = 1;
  const index_t chunks = (end - begin + chunk - 1) / chunk;
  parallel_for(
      0, chunks,
      [&](index_t c) {
        const index_t b = begin + c * chunk;
        const index_t e = b + chunk < end ? b + chunk : end;
        body(b, e);
      },
      /*grain=*/2);
}

}  // namespace rlmed
