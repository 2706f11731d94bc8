// Issue 23 item 4: a new head of the same size as the old one keeps its fresh initialisation
// (the old head is not loaded over it), and training starts by printing trainable and frozen
// parameter counts.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "cudl/models/checkpoint/checkpoint.hpp"
#include "cudl/models/train/finetune.hpp"
#include "cudl/models/zoo/model_file.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "tests/synthetic_data.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using cudl::testing::contains;
using cudl::testing::slurp;
using cudl::testing::TempDir;

namespace {

std::vector<float> values_of(Sequential& m, const std::string& name, Context& ctx) {
  for (const auto& p : m.parameters())
    if (p.name == name) return p.parameter->value.to_vector(ctx);
  ADD_FAILURE() << "no parameter " << name;
  return {};
}

}  // namespace

TEST(FinetuneHead, ANewHeadOfTheOldSizeIsNotOverwrittenByTheOldHead) {
  TempDir dir;
  Context ctx(Device::cpu());
  Sequential source = make_model("mlp");
  source.build(ctx, 5);
  save_weights(dir.file("w.safetensors"), ctx, source);

  Sequential target = make_model("mlp");
  const std::string head = replace_classifier(target, 10);  // the same size as the file's head
  target.build(ctx, 9);
  Sequential fresh = make_model("mlp");
  (void)replace_classifier(fresh, 10);
  fresh.build(ctx, 9);  // what the new head must still hold after init_from

  const InitFromReport r = init_from(dir.file("w.safetensors"), ctx, target, {head});
  EXPECT_EQ(r.loaded, (std::vector<std::string>{"fc1.weight", "fc1.bias"}));
  ASSERT_EQ(r.skipped.size(), 2u);
  EXPECT_EQ(r.skipped[0], head + ".weight (new head)");
  EXPECT_EQ(values_of(target, head + ".weight", ctx), values_of(fresh, head + ".weight", ctx));
  EXPECT_NE(values_of(target, head + ".weight", ctx), values_of(source, head + ".weight", ctx));
  EXPECT_EQ(values_of(target, "fc1.weight", ctx), values_of(source, "fc1.weight", ctx));

  // Without the new head, the same file loads every tensor (the old behaviour, for --init-from alone).
  Sequential plain = make_model("mlp");
  plain.build(ctx, 9);
  EXPECT_EQ(init_from(dir.file("w.safetensors"), ctx, plain).loaded.size(), 4u);
}

TEST(FinetuneHead, CountsTrainableAndFrozenParameters) {
  Sequential m = make_model("mlp");  // fc1 784x128+128, fc2 128x10+10
  ParameterCounts c = count_parameters(m);
  EXPECT_EQ(c.trainable, 101770);
  EXPECT_EQ(c.frozen, 0);
  (void)freeze_layers(m, {"fc1"});
  c = count_parameters(m);
  EXPECT_EQ(c.trainable, 1290);
  EXPECT_EQ(c.frozen, 100480);
}

TEST(FinetuneHeadCli, SameSizedNewHeadIsFreshAndCountsArePrinted) {
  TempDir dir;
  {
    Context ctx(Device::cpu());
    Sequential m = make_model("mlp");
    m.build(ctx, 4);
    save_weights(dir.file("w.safetensors"), ctx, m);
  }
  const std::string data = dir.file("mnist");
  {
    Context ctx(Device::cpu());
    std::filesystem::create_directories(data);
    cudl::testing::write_synthetic_mnist_dir(data, ctx, 64, 32);
  }
  const std::string cmd = fmt::format(
      "'{}' train --model mlp --data '{}' --epochs 1 --batch-size 32 --device cpu --init-from '{}' --num-classes 10 "
      "--freeze fc1 > '{}' 2> '{}'",
      cudl::testing::cli_path(), data, dir.file("w.safetensors"), dir.file("out"), dir.file("err"));
  ASSERT_EQ(std::system(cmd.c_str()), 0) << slurp(dir.file("err"));
  const std::string out = slurp(dir.file("out"));
  EXPECT_TRUE(contains(out, "new head: fc2 with 10 outputs")) << out;
  EXPECT_TRUE(contains(out, "--init-from: loaded 2 tensors")) << out;
  EXPECT_TRUE(contains(out, "fc2.weight (new head)")) << out;
  EXPECT_TRUE(contains(out, "(101770 params: 1290 trainable, 100480 frozen)")) << out;
}
