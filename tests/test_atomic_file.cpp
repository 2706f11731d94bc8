// write_file_atomically: a save killed mid-write leaves its hidden temporary (.NAME.XXXXXX.tmp)
// behind; the next save of the same target removes it, and touches nothing else: not another
// target's temporaries, not near-miss names, not a temporary a live writer still holds.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "cudl/engine/io/atomic_file.hpp"
#include "tests/test_util.hpp"

using cudl::testing::TempDir;
namespace fs = std::filesystem;

namespace {

std::set<std::string> entries(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.insert(e.path().filename().string());
  return out;
}

TEST(AtomicFile, NextSaveRemovesStaleTemporariesOfTheSameTargetOnly) {
  TempDir dir;
  const std::set<std::string> stale{".run.st.AbC123.tmp", ".run.st.zzzzzz.tmp"};
  const std::set<std::string> kept{".other.st.AbC123.tmp",   // another target's
                                   ".run.st.AbC12.tmp",      // five random characters, not six
                                   ".run.st.AbC123.tmpx",    // another suffix
                                   "run.st.AbC123.tmp",      // not hidden
                                   ".run.st.AbC-23.tmp",     // not a mkstemps character
                                   ".run.st.x.AbC123.tmp"};  // the temporary of a target named run.st.x
  for (const auto& name : stale) cudl::testing::write_string(dir.file(name), "half a checkpoint");
  for (const auto& name : kept) cudl::testing::write_string(dir.file(name), "not ours");
  // A live writer of the same target: it holds the lock, so its temporary must survive.
  const std::string live = ".run.st.LiVe00.tmp";
  cudl::testing::write_string(dir.file(live), "being written");
  const int fd = ::open(dir.file(live).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX), 0);

  cudl::write_file_atomically(dir.file("run.st"), "new contents");

  std::set<std::string> expected = kept;
  expected.insert("run.st");
  expected.insert(live);
  EXPECT_EQ(entries(dir.path()), expected);
  ::close(fd);
  std::ifstream in(dir.file("run.st"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text, "new contents");

  // Once its writer is gone (the lock dropped), the next save removes it too.
  cudl::write_file_atomically(dir.file("run.st"), "again");
  expected.erase(live);
  EXPECT_EQ(entries(dir.path()), expected);
}

TEST(AtomicFile, AStaleTemporaryThatIsAFolderOrALinkIsLeftAlone) {
  TempDir dir;
  fs::create_directories(dir.path() / ".run.st.AbC123.tmp");
  cudl::testing::write_string(dir.file("elsewhere"), "keep me");
  fs::create_symlink(dir.path() / "elsewhere", dir.path() / ".run.st.Link00.tmp");
  cudl::write_file_atomically(dir.file("run.st"), "x");
  EXPECT_TRUE(fs::is_directory(dir.path() / ".run.st.AbC123.tmp"));
  EXPECT_TRUE(fs::is_symlink(dir.path() / ".run.st.Link00.tmp"));
  EXPECT_TRUE(fs::exists(dir.file("elsewhere")));
}

TEST(AtomicFile, APathEndingInASlashIsRefused) {
  TempDir dir;
  const std::string msg =
      cudl::testing::error_message([&] { cudl::write_file_atomically(dir.path().string() + "/", "x"); });
  EXPECT_TRUE(cudl::testing::contains(msg, "names a folder")) << msg;
  EXPECT_TRUE(entries(dir.path()).empty());
}

}  // namespace
