#pragma once
// Which checks cover which ops of the op table (engine/op_table.hpp). A test file names the ops
// its tests check with CUDL_OP_COVERAGE at namespace scope; test_op_table.cpp then compares the
// registrations with the table, so an op added to the table without its checks fails there.
#include <initializer_list>
#include <map>
#include <set>
#include <string>

namespace cudl::testing {

enum class OpCheck { cuda_vs_cpu, cuda_vs_cpu_half, gradient };

inline std::map<OpCheck, std::set<std::string>>& op_coverage() {
  static std::map<OpCheck, std::set<std::string>> registry;
  return registry;
}

inline bool cover_ops(OpCheck check, std::initializer_list<const char*> ops) {
  for (const char* op : ops) op_coverage()[check].insert(op);
  return true;
}

}  // namespace cudl::testing

#define CUDL_OP_COVERAGE_CAT2(a, b) a##b
#define CUDL_OP_COVERAGE_CAT(a, b) CUDL_OP_COVERAGE_CAT2(a, b)
// CUDL_OP_COVERAGE(gradient, "conv2d", "gram"): these ops are checked by this file's tests.
#define CUDL_OP_COVERAGE(check, ...)                                                     \
  [[maybe_unused]] static const bool CUDL_OP_COVERAGE_CAT(cudl_op_coverage_, __LINE__) = \
      ::cudl::testing::cover_ops(::cudl::testing::OpCheck::check, {__VA_ARGS__})
