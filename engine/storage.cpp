#include "cudl/engine/storage.hpp"

namespace cudl {

Storage::Storage(std::shared_ptr<Allocator> allocator, std::size_t bytes, StreamId stream)
    : allocator_(std::move(allocator)), bytes_(bytes), device_(allocator_->device()) {
  ptr_ = allocator_->allocate(bytes, stream);
}

Storage::Storage(void* borrowed, std::size_t bytes, Device device) : ptr_(borrowed), bytes_(bytes), device_(device) {}

Storage::~Storage() {
  if (allocator_) allocator_->deallocate(ptr_);
}

}  // namespace cudl
