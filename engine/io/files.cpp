#include "engine/io/files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <utility>

#include "engine/error.hpp"

namespace cudl::io {

namespace {

// Closes the descriptor on every path out of a function.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

}  // namespace

std::vector<std::uint8_t> read_file(const std::string& path, const char* who) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  CUDL_CHECK(fd.get() >= 0, "{}: cannot open '{}': {}", who, path, std::strerror(errno));
  struct stat st {};
  CUDL_CHECK(::fstat(fd.get(), &st) == 0, "{}: cannot stat '{}': {}", who, path, std::strerror(errno));
  CUDL_CHECK(!S_ISDIR(st.st_mode), "{}: '{}' is a directory, expected a file", who, path);
  std::vector<std::uint8_t> bytes;
  bytes.reserve(st.st_size > 0 ? static_cast<std::size_t>(st.st_size) : 0);
  std::uint8_t chunk[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd.get(), chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    CUDL_CHECK(n >= 0, "{}: cannot read '{}': {}", who, path, std::strerror(errno));
    if (n == 0) break;
    bytes.insert(bytes.end(), chunk, chunk + n);
  }
  return bytes;
}

bool is_gzip(std::span<const std::uint8_t> bytes) { return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b; }

std::vector<std::uint8_t> gunzip(std::span<const std::uint8_t> bytes, const std::string& path, const char* who) {
  z_stream z{};
  // 16 + MAX_WBITS: a gzip wrapper (not zlib or raw deflate).
  CUDL_CHECK(inflateInit2(&z, 16 + MAX_WBITS) == Z_OK, "{}: zlib inflateInit2 failed for '{}'", who, path);
  std::vector<std::uint8_t> out;
  out.resize(std::max<std::size_t>(bytes.size() * 4, 1 << 16));
  z.next_in = const_cast<Bytef*>(bytes.data());
  z.avail_in = static_cast<uInt>(bytes.size());  // datasets are far below 4 GiB compressed
  std::size_t produced = 0;
  int status = Z_OK;
  for (;;) {
    if (produced == out.size()) out.resize(out.size() * 2);
    z.next_out = out.data() + produced;
    z.avail_out = static_cast<uInt>(std::min<std::size_t>(out.size() - produced, 1u << 30));
    std::size_t before = z.avail_out;
    status = inflate(&z, Z_NO_FLUSH);
    produced += before - z.avail_out;
    if (status == Z_STREAM_END) {
      // Another gzip member may follow (cat a.gz b.gz is a valid gzip file).
      if (z.avail_in > 0 && z.next_in[0] == 0x1f) {
        inflateReset(&z);
        continue;
      }
      break;
    }
    if (status == Z_OK) continue;
    if (status == Z_BUF_ERROR && z.avail_out > 0) break;  // input ended inside the stream
    break;
  }
  std::string message = z.msg ? z.msg : "";
  inflateEnd(&z);
  CUDL_CHECK(status == Z_STREAM_END, "{}: '{}' is a truncated or corrupt gzip file ({})", who, path,
             status == Z_BUF_ERROR ? std::string("unexpected end of the compressed data")
                                   : fmt::format("zlib: {}", message.empty() ? zError(status) : message));
  out.resize(produced);
  return out;
}

std::vector<std::uint8_t> read_maybe_gzip(const std::string& path, const char* who) {
  std::vector<std::uint8_t> bytes = read_file(path, who);
  if (!is_gzip(bytes)) return bytes;
  return gunzip(bytes, path, who);
}

}  // namespace cudl::io
