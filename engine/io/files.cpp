#include "cudl/engine/io/files.hpp"

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

#include "cudl/engine/error.hpp"

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

struct ByteStream::Inflater {
  z_stream z{};
  ~Inflater() { inflateEnd(&z); }
};

ByteStream::ByteStream(std::span<const std::uint8_t> bytes, std::string name, const char* who)
    : bytes_(bytes), name_(std::move(name)), who_(who) {
  if (!io::is_gzip(bytes)) return;
  auto inflater = std::make_unique<Inflater>();
  // 16 + MAX_WBITS: a gzip wrapper (not zlib or raw deflate).
  CUDL_CHECK(inflateInit2(&inflater->z, 16 + MAX_WBITS) == Z_OK, "{}: zlib inflateInit2 failed for '{}'", who_, name_);
  inflater_ = std::move(inflater);
  inflater_->z.next_in = const_cast<Bytef*>(bytes.data());
  inflater_->z.avail_in = 0;  // fed in chunks of at most 1 GiB by read_some (avail_in is 32 bits)
}

ByteStream::~ByteStream() = default;

std::uint64_t ByteStream::max_size() const {
  if (!inflater_) return bytes_.size();
  // Deflate's best case is 258 bytes from 2 bits: at most 1032 bytes per input byte, per member.
  return static_cast<std::uint64_t>(bytes_.size()) * 1032;
}

std::size_t ByteStream::read_some(std::uint8_t* out, std::size_t n) {
  if (n == 0 || ended_) return 0;
  if (!inflater_) {
    std::size_t take = std::min(n, bytes_.size() - pos_);
    std::memcpy(out, bytes_.data() + pos_, take);
    pos_ += take;
    ended_ = pos_ == bytes_.size();
    return take;
  }
  z_stream& z = inflater_->z;
  z.next_out = out;
  z.avail_out = static_cast<uInt>(std::min<std::size_t>(n, 1u << 30));
  const uInt asked = z.avail_out;
  int status = Z_OK;
  while (z.avail_out > 0) {
    if (z.avail_in == 0) {
      std::size_t consumed = static_cast<std::size_t>(z.next_in - bytes_.data());
      z.avail_in = static_cast<uInt>(std::min<std::size_t>(bytes_.size() - consumed, 1u << 30));
    }
    status = inflate(&z, Z_NO_FLUSH);
    if (status == Z_STREAM_END) {
      // Another gzip member may follow (cat a.gz b.gz is a valid gzip file); anything else after
      // the last member is ignored, as gzip -d does.
      if (z.avail_in > 0 && z.next_in[0] == 0x1f) {
        inflateReset(&z);
        continue;
      }
      ended_ = true;
      break;
    }
    if (status != Z_OK) break;
  }
  if (status != Z_OK && status != Z_STREAM_END) {
    // Z_BUF_ERROR with room left to write: the input ended inside the stream.
    CUDL_THROW("{}: '{}' is a truncated or corrupt gzip file ({})", who_, name_,
               status == Z_BUF_ERROR ? std::string("unexpected end of the compressed data")
                                     : fmt::format("zlib: {}", z.msg ? z.msg : zError(status)));
  }
  return asked - z.avail_out;
}

std::size_t ByteStream::read(std::size_t n, std::vector<std::uint8_t>& out) {
  std::size_t got = 0;
  if (n > 0 && peeked_ >= 0) {
    out.push_back(static_cast<std::uint8_t>(peeked_));
    peeked_ = -1;
    ++got;
  }
  while (got < n && !ended_) {
    // Grow by what has arrived so far (at least 64 KiB), never by an untrusted n at once.
    std::size_t chunk = std::min(n - got, std::max<std::size_t>(out.size(), 1 << 16));
    std::size_t old = out.size();
    out.resize(old + chunk);
    std::size_t produced = read_some(out.data() + old, chunk);
    out.resize(old + produced);
    got += produced;
  }
  return got;
}

bool ByteStream::at_end() {
  if (peeked_ >= 0) return false;
  std::uint8_t byte = 0;
  if (read_some(&byte, 1) == 0) return true;
  peeked_ = byte;
  return false;
}

}  // namespace cudl::io
