#include "engine/io/atomic_file.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "engine/error.hpp"

namespace cudl {

void write_file_atomically(const std::string& path, const std::function<void(std::FILE*)>& write) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  CUDL_CHECK(fs::is_directory(folder), "cannot write '{}': folder '{}' does not exist", path, folder.string());
  std::string hidden_name = ".";
  hidden_name.append(target.filename().string()).append(".XXXXXX.tmp");
  std::string tmp = (folder / hidden_name).string();
  int fd = mkstemps(tmp.data(), 4);
  CUDL_CHECK(fd >= 0, "cannot write '{}': {}", path, std::strerror(errno));
  std::FILE* file = fdopen(fd, "wb");
  if (!file) {
    ::close(fd);
    std::remove(tmp.c_str());
    CUDL_THROW("cannot write '{}': {}", path, std::strerror(errno));
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
  // mkstemps creates the file 0600; a saved result should have the usual permissions.
  fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read | fs::perms::others_read);
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
