// Shared helpers for the test suite.
#pragma once

#include <functional>
#include <string>

namespace cocom::test {

// Directory of the copied golden fixtures (tests/data/fixtures).
std::string fixtures_dir();
// A fresh empty temporary directory, removed by the caller (or left in /tmp on failure).
std::string make_temp_dir(const std::string& tag);
// Writes bytes to a file (for hostile-input tests).
void write_bytes(const std::string& path, const std::string& bytes);
// Runs a shell command, returns its exit status and fills `output` with stdout+stderr.
int run_command(const std::string& cmd, std::string* output);
// Path of the built `cocom` binary.
std::string cocom_binary();
// The message of the cocom::Error `fn` throws; a test failure (and "") when it throws none.
std::string error_of(const std::function<void()>& fn);

// Sets an environment variable for a scope, restoring the previous value (or its absence).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value);
  ~ScopedEnv();
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_, old_;
  bool had_ = false;
};

}  // namespace cocom::test
