#pragma once
#include <cstddef>
#include <memory>

#include "cudl/engine/allocator.hpp"

namespace cudl {

// One allocation, returned to its allocator when the last tensor viewing it goes away.
class Storage {
 public:
  Storage(std::shared_ptr<Allocator> allocator, std::size_t bytes, StreamId stream);
  // Wraps memory owned elsewhere (a slice of a model's parameter block, say); never freed here.
  Storage(void* borrowed, std::size_t bytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  std::shared_ptr<Allocator> allocator_;
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
  Device device_;
};

}  // namespace cudl
