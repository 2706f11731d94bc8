#include "cudl/engine/io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "cudl/engine/error.hpp"

namespace cudl {

namespace {

// ".NAME.XXXXXX.tmp": the hidden temporary mkstemps makes for target NAME.
bool is_temporary_of(const std::string& entry, const std::string& filename) {
  constexpr std::size_t kRandom = 6;
  const std::string prefix = "." + filename + ".", suffix = ".tmp";
  if (entry.size() != prefix.size() + kRandom + suffix.size() || !entry.starts_with(prefix) || !entry.ends_with(suffix))
    return false;
  for (std::size_t i = prefix.size(); i < prefix.size() + kRandom; ++i) {
    const char c = entry[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) return false;
  }
  return true;
}

// A save killed mid-write leaves its temporary behind (up to a checkpoint's size). Every writer holds
// an exclusive flock on its temporary until the rename, and the kernel drops it when a writer dies:
// a temporary of this target that nobody holds is a dead writer's, and is removed. Best effort: a
// file we cannot open or lock is left alone.
void remove_stale_temporaries(const std::filesystem::path& folder, const std::string& filename) {
  std::error_code ec;
  for (std::filesystem::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
    if (!is_temporary_of(it->path().filename().string(), filename)) continue;
    const int fd = ::open(it->path().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) continue;
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && ::flock(fd, LOCK_EX | LOCK_NB) == 0)
      (void)::unlink(it->path().c_str());
    ::close(fd);
  }
}

// mkstemps + the writer's lock. A cleaner in another process may remove the file between the two
// calls (it was not locked yet); then the lock is on an unlinked file, and we make another.
int create_locked_temporary(std::string& tmp, const std::string& pattern) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    tmp = pattern;
    const int fd = mkstemps(tmp.data(), 4);
    if (fd < 0) return fd;
    struct stat st {};
    if (::flock(fd, LOCK_EX) == 0 && ::fstat(fd, &st) == 0 && st.st_nlink > 0) return fd;
    ::close(fd);
    (void)::unlink(tmp.c_str());
  }
  errno = EEXIST;
  return -1;
}

}  // namespace

void write_file_atomically(const std::string& path, const std::function<void(std::FILE*)>& write) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  CUDL_CHECK(fs::is_directory(folder, ec), "cannot write '{}': folder '{}' does not exist", path, folder.string());
  CUDL_CHECK(!target.filename().empty() && target.filename() != "." && target.filename() != "..",
             "cannot write '{}': the path names a folder, not a file", path);
  std::string hidden_name = ".";
  hidden_name.append(target.filename().string()).append(".XXXXXX.tmp");
  remove_stale_temporaries(folder, target.filename().string());
  std::string tmp;
  const int lock_fd = create_locked_temporary(tmp, (folder / hidden_name).string());
  CUDL_CHECK(lock_fd >= 0, "cannot write '{}': {}", path, std::strerror(errno));
  // The writer's lock lives on `lock_fd` until the rename is done (closing the stream's own
  // descriptor would drop it, and a cleaner could remove the finished file before the rename).
  struct Unlock {
    int fd;
    ~Unlock() { ::close(fd); }
  } unlock{lock_fd};
  const int fd = ::dup(lock_fd);
  std::FILE* file = fd >= 0 ? fdopen(fd, "wb") : nullptr;
  if (!file) {
    const int err = errno;
    if (fd >= 0) ::close(fd);
    std::remove(tmp.c_str());
    CUDL_THROW("cannot write '{}': {}", path, std::strerror(err));
  }
  try {
    write(file);
    CUDL_CHECK(std::fflush(file) == 0 && !std::ferror(file), "writing '{}' failed: {}", path, std::strerror(errno));
    CUDL_CHECK(fsync(fileno(file)) == 0, "writing '{}' failed: {}", path, std::strerror(errno));
  } catch (...) {
    std::fclose(file);
    std::remove(tmp.c_str());
    throw;
  }
  if (std::fclose(file) != 0) {
    std::remove(tmp.c_str());
    CUDL_THROW("writing '{}' failed: {}", path, std::strerror(errno));
  }
  // mkstemps creates the file 0600; a saved result should have the usual permissions (best effort).
  std::error_code perms_error;
  fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read,
                  perms_error);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    CUDL_THROW("cannot write '{}': rename failed: {}", path, std::strerror(err));
  }
  // Make the rename itself durable. Best effort: the file is complete and in place by now.
  if (int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dir >= 0) {
    (void)::fsync(dir);
    ::close(dir);
  }
}

void write_file_atomically(const std::string& path, std::string_view contents) {
  write_file_atomically(path, [&](std::FILE* file) {
    CUDL_CHECK(std::fwrite(contents.data(), 1, contents.size(), file) == contents.size(), "writing '{}' failed: {}",
               path, std::strerror(errno));
  });
}

}  // namespace cudl
