// A reader/writer lock that prefers writers. std::shared_mutex on glibc prefers readers: with
// a few threads searching back to back, the shared count never drops to zero and a writer
// waits forever. Here a writer that asks for the lock closes the gate to new readers; the
// readers already inside finish, the writer runs, and the gate opens again. Readers therefore
// wait at most for one writer's critical section (plus the readers ahead of it).
//
// Meets the SharedMutex requirements used by std::unique_lock and std::shared_lock.
// Not recursive: a thread holding the shared lock must not take it again (a writer waiting in
// between would deadlock both).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <shared_mutex>  // std::shared_lock, used with this mutex

namespace cocom {

class WriterPriorityMutex {
 public:
  void lock() {
    std::unique_lock<std::mutex> l(mu_);
    ++writers_waiting_;
    writer_cv_.wait(l, [&] { return !writer_ && readers_ == 0; });
    --writers_waiting_;
    writer_ = true;
  }
  bool try_lock() {
    std::lock_guard<std::mutex> l(mu_);
    if (writer_ || readers_ > 0) return false;
    writer_ = true;
    return true;
  }
  void unlock() {
    {
      std::lock_guard<std::mutex> l(mu_);
      writer_ = false;
    }
    // Another writer goes first when one waits; the readers re-check the gate either way.
    writer_cv_.notify_one();
    reader_cv_.notify_all();
  }

  void lock_shared() {
    std::unique_lock<std::mutex> l(mu_);
    reader_cv_.wait(l, [&] { return !writer_ && writers_waiting_ == 0; });
    ++readers_;
  }
  bool try_lock_shared() {
    std::lock_guard<std::mutex> l(mu_);
    if (writer_ || writers_waiting_ > 0) return false;
    ++readers_;
    return true;
  }
  void unlock_shared() {
    bool last = false;
    {
      std::lock_guard<std::mutex> l(mu_);
      last = --readers_ == 0;
    }
    if (last) writer_cv_.notify_one();
  }

 private:
  std::mutex mu_;
  std::condition_variable reader_cv_, writer_cv_;
  int64_t readers_ = 0;
  int64_t writers_waiting_ = 0;
  bool writer_ = false;
};

}  // namespace cocom
