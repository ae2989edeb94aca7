#include "common/hash.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "common/error.h"

namespace cocom {

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t xxh3_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_io(path, ": cannot open (", std::strerror(errno), ")");
  std::unique_ptr<XXH3_state_t, XXH_errorcode (*)(XXH3_state_t*)> state(XXH3_createState(),
                                                                         XXH3_freeState);
  if (!state || XXH3_64bits_reset(state.get()) != XXH_OK) {
    ::close(fd);
    fail_io(path, ": cannot start a hash");
  }
  std::vector<char> buf(size_t{4} << 20);
  while (true) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      fail_io(path, ": read failed (", std::strerror(e), ")");
    }
    XXH3_64bits_update(state.get(), buf.data(), static_cast<size_t>(n));
  }
  ::close(fd);
  return XXH3_64bits_digest(state.get());
}

}  // namespace cocom
