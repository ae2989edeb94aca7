// Process-wide runtime settings for libtorch: thread count and compute device.
#pragma once

#include <string>

#include <c10/core/Device.h>

namespace cocom::model {

struct RuntimeOptions {
  int threads = 0;             // 0 = the machine's cores (std::thread::hardware_concurrency)
  std::string device = "cpu";  // "cpu" or "cuda" / "cuda:N"
};

// Applies the thread count (ENVIRONMENT.md trap 2: libtorch defaults to 1 thread here) and
// checks the device is usable. Returns the resolved thread count.
int init_runtime(const RuntimeOptions& opt);

// Parses "cpu", "cuda", "cuda:1"; throws cocom::Error naming the option when the string is
// unknown or CUDA is requested from a CPU-only libtorch build.
c10::Device parse_device(const std::string& name);

}  // namespace cocom::model
