// The Python module interpgan_ext._C: importing it registers the ops (ops.cpp); it also reports how it was built.
#include <torch/extension.h>

#include <mutex>
#include <set>
#include <thread>

#include "cpu/buffer_cache.h"
#include "cpu/simd.h"

#ifdef INTERPGAN_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

// Set by setup.py. INTERPGAN_NO_CUDA_BECAUSE says why a build has no CUDA kernels (CMake builds leave it out).
#ifndef INTERPGAN_CUDA_ARCHS
#define INTERPGAN_CUDA_ARCHS ""
#endif
#ifndef INTERPGAN_NO_CUDA_BECAUSE
#define INTERPGAN_NO_CUDA_BECAUSE "built without INTERPGAN_WITH_CUDA"
#endif
// INTERPGAN_NO_OPENMP_BECAUSE: why a build where torch's thread pool is OpenMP has no OpenMP (setup.py's probe).
#ifndef INTERPGAN_NO_OPENMP_BECAUSE
#define INTERPGAN_NO_OPENMP_BECAUSE "built without OpenMP"
#endif
#ifndef INTERPGAN_BUILT_WITH_TORCH
#define INTERPGAN_BUILT_WITH_TORCH ""
#endif

// The torch this file was built against, readable from the file without loading it: when loading fails (another
// torch's symbols), interpgan_ext/_backend.py reads it to say which torch to rebuild against.
static const char kBuildStamp[] = "interpgan_ext-built-with-torch=" INTERPGAN_BUILT_WITH_TORCH ";";

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "interpgan_ext compiled kernels (ops are registered under torch.ops.interpgan)";
#ifdef INTERPGAN_WITH_CUDA
  m.attr("with_cuda") = true;
  m.attr("cuda_version") = CUDART_VERSION;  // e.g. 13000 for CUDA 13.0
#else
  m.attr("with_cuda") = false;
  m.attr("cuda_version") = py::none();
  m.attr("no_cuda_because") = std::string(INTERPGAN_NO_CUDA_BECAUSE);
#endif
  m.attr("cuda_archs") = std::string(INTERPGAN_CUDA_ARCHS);
  m.attr("torch_version") = std::string(INTERPGAN_BUILT_WITH_TORCH);
  m.attr("build_stamp") = py::str(kBuildStamp);  // its address, read at import: the bytes stay whole in the file
  // at::parallel_for is a header template: compiled without OpenMP (where torch's pool is OpenMP) it runs serially.
#ifdef _OPENMP
  m.attr("cpu_parallel") = "OpenMP";
#else
  m.attr("cpu_parallel") = py::none();
  m.attr("no_openmp_because") = std::string(INTERPGAN_NO_OPENMP_BECAUSE);
#endif
  m.def(
      "cpu_parallel_threads",
      [] {
        // Which threads run the chunks of a parallel_for as the kernels run it: torch's, if the extension's OpenMP
        // runtime is torch's; a pool of its own (not following torch.set_num_threads) if it is another; one if none.
        std::mutex mutex;
        std::set<std::thread::id> threads;
        at::parallel_for(0, 1024, 1, [&](int64_t, int64_t) {
          std::lock_guard<std::mutex> lock(mutex);
          threads.insert(std::this_thread::get_id());
        });
        return threads.size();
      },
      "The number of threads that run an at::parallel_for of the CPU kernels (each gets a chunk of its 1024 items).");
  m.attr("cpu_vector_code") = interpgan::simd::vector_code();
  m.def(
      "cpu_cache_stats",
      [] {
        const auto s = interpgan::buffer_cache::stats();
        py::dict d;
        d["cached_bytes"] = s.cached_bytes;
        d["cached_blocks"] = s.cached_blocks;
        d["in_use_bytes"] = s.in_use_bytes;
        d["hits"] = s.hits;
        d["misses"] = s.misses;
        d["limit_bytes"] = s.limit_bytes;
        return d;
      },
      "The CPU buffer cache of the ops' large outputs (csrc/cpu/buffer_cache.h).");
  m.def("empty_cpu_cache", &interpgan::buffer_cache::release_cached,
        "Frees the cached CPU buffers that no tensor uses.");
  m.def("_cpu_cache_hold_lock_for_testing", &interpgan::buffer_cache::hold_lock_for_testing,
        "Tests only: a background thread holds the CPU buffer cache's lock for the given seconds.");
}
