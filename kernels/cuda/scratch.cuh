#pragma once
// Byte counts for a scratch buffer carved into consecutive pieces (sort keys, then CUB's temporary
// storage: top_k, match_histograms). Each piece's count is rounded up to 256 bytes, so every piece
// starts as aligned as the scratch itself (the pool's blocks, like cudaMalloc's, are 256-byte
// aligned), which CUB's storage and the 8-byte keys need.
#include <cstddef>
#include <cstdint>

namespace cudl::cuda_detail {

inline constexpr std::size_t kScratchAlign = 256;

inline std::size_t scratch_aligned(std::size_t bytes) {
  return (bytes + kScratchAlign - 1) / kScratchAlign * kScratchAlign;
}

// The aligned bytes of `count` 64-bit sort keys.
inline std::size_t sort_key_bytes(std::int64_t count) {
  return scratch_aligned(static_cast<std::size_t>(count) * sizeof(std::uint64_t));
}

}  // namespace cudl::cuda_detail
