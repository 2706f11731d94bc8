#pragma once
// Times work queued on a context: CUDA events on the GPU (device time, no host overhead in it),
// a steady clock on the CPU.
#include <memory>

#include "cudl/engine/context.hpp"

namespace cudl {

class Timer {
 public:
  explicit Timer(Context& ctx);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void start();
  // Milliseconds since start(); waits for the work queued in between.
  double stop_ms();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cudl
