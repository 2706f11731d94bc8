// Issue 23 item 7: ImageNet's class names are bundled, and classify and predict print each class
// as "PROB - INDEX NAME" (the index stays for scripts); predict's items (tests/test_predict.cpp)
// have the same form.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>

#include "cudl/models/zoo/imagenet_classes.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::slurp;
using cudl::testing::TempDir;

TEST(ClassNames, ImageNetsThousandNamesInOrder) {
  const auto& names = imagenet_class_names();
  ASSERT_EQ(names.size(), 1000u);
  EXPECT_EQ(names[0], "tench");
  EXPECT_EQ(names[281], "tabby");
  EXPECT_EQ(names[999], "toilet tissue");
  // The compiled-in list is the repo's file, line for line (the file is installed as a --labels file).
  std::ifstream f(cudl::testing::source_dir() + "/models/zoo/imagenet_classes.txt");
  std::vector<std::string> lines;
  for (std::string line; std::getline(f, line);) lines.push_back(line);
  EXPECT_EQ(lines, names);
  EXPECT_EQ(default_class_names(1000).size(), 1000u);
  EXPECT_TRUE(default_class_names(10).empty());
}

TEST(ClassNamesCli, ClassifyPrintsIndexAndNameOfEachClass) {
  TempDir dir;
  const std::string image = cudl::testing::source_dir() + "/tests/data/chelsea.png";
  const std::string cmd =
      fmt::format("'{}' classify --weights random:1 --image '{}' --top 3 --device cpu > '{}' 2> '{}'",
                  cudl::testing::cli_path(), image, dir.file("out"), dir.file("err"));
  ASSERT_EQ(std::system(cmd.c_str()), 0) << slurp(dir.file("err"));
  const std::string out = slurp(dir.file("out"));
  std::istringstream lines(out);
  const std::regex item(R"(^(\d\.\d{4}) - (\d+) (.+)$)");
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, item)) << line;
    EXPECT_EQ(m[3].str(), imagenet_class_names()[std::stoul(m[2].str())]) << line;
  }
  EXPECT_EQ(n, 3) << out;
}
