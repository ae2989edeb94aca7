#include "model/runtime.h"

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <thread>

#include "common/error.h"

namespace cocom::model {

c10::Device parse_device(const std::string& name) {
  if (name == "cpu") return c10::Device(c10::kCPU);
  if (name == "cuda" || name.rfind("cuda:", 0) == 0) {
    if (!at::hasCUDA()) {
      fail("--device ", name, ": this libtorch build has no CUDA support (use --device cpu)");
    }
    try {
      return c10::Device(name);
    } catch (const c10::Error&) {
      fail("--device ", name, ": not a valid CUDA device name (expected cuda or cuda:N)");
    }
  }
  fail("--device ", name, ": unknown device (expected cpu, cuda or cuda:N)");
}

int init_runtime(const RuntimeOptions& opt) {
  int threads = opt.threads;
  if (threads < 0) fail("--threads ", threads, ": must be 0 (all cores) or positive");
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  parse_device(opt.device);
  return threads;
}

}  // namespace cocom::model
