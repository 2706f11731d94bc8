#pragma once
// File plumbing shared by the image and dataset readers: whole-file reads, gzip detection and
// bounded inflation (atomic writes are engine/io/atomic_file.hpp). Every failure is an Error
// naming the file and the OS's reason.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace cudl::io {

// The whole file. `who` names the caller in messages ("read_image").
std::vector<std::uint8_t> read_file(const std::string& path, const char* who);

// True when the bytes start with the gzip magic 1f 8b.
bool is_gzip(std::span<const std::uint8_t> bytes);

// Bytes in memory, raw or gzip (by magic), read front to back. A gzip stream is inflated only as
// far as it is read, so a reader checks a header before inflating the rest and stops at the size
// the header implies: a small file that inflates to gigabytes costs no more than it promised.
class ByteStream {
 public:
  // `bytes` must outlive the stream; `name` and `who` are what messages call the data and the caller.
  ByteStream(std::span<const std::uint8_t> bytes, std::string name, const char* who);
  ~ByteStream();
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;

  bool is_gzip() const { return inflater_ != nullptr; }
  // At most this many bytes can come out: the raw size, or for gzip the most deflate can expand
  // its input (1032:1), so a header promising more can be refused before anything is inflated.
  std::uint64_t max_size() const;
  // Appends up to n bytes to `out` (fewer only at the end of the data), growing it as data arrives
  // rather than by n up front. A corrupt or truncated gzip stream is an Error naming the data.
  std::size_t read(std::size_t n, std::vector<std::uint8_t>& out);
  // True when no byte is left; inflates at most one more byte to know.
  bool at_end();

 private:
  struct Inflater;
  std::size_t read_some(std::uint8_t* out, std::size_t n);

  std::span<const std::uint8_t> bytes_;
  std::string name_;
  const char* who_;
  std::size_t pos_ = 0;  // raw data: bytes consumed
  std::unique_ptr<Inflater> inflater_;
  bool ended_ = false;
  int peeked_ = -1;  // a byte at_end() read ahead, or -1
};

}  // namespace cudl::io
