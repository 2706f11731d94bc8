// fit() and evaluate() check every label against the model's outputs on the host, before any step:
// on the GPU a bad label could only be caught by the device fault word, after a step with a wrong
// loss and gradients and with no row to name. Same message on every device.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "cudl/engine/device.hpp"
#include "cudl/layers/elementwise.hpp"
#include "cudl/layers/linear.hpp"
#include "cudl/models/train/trainer.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

// n images [1,2,2] with labels i % classes, except labels[bad_index] = bad_label (when >= 0).
Dataset tiny(std::int64_t n, int classes, std::int64_t bad_index = -1, std::int32_t bad_label = 0) {
  Context cpu{Device::cpu()};
  std::vector<float> pixels(static_cast<std::size_t>(n * 4), 0.25f);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) labels[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i % classes);
  if (bad_index >= 0) labels[static_cast<std::size_t>(bad_index)] = bad_label;
  Dataset d;
  d.images = Tensor::from_host(pixels, {n, 1, 2, 2}, cpu);
  d.labels = Tensor::from_host(std::span<const std::int32_t>(labels), {n}, cpu);
  d.num_classes = classes;
  d.name = "tiny";
  return d;
}

// A 3-class classifier of [1,2,2] images.
Sequential three_class_model(Context& ctx) {
  Sequential net;
  net.add("flatten", std::make_unique<Flatten>()).add("fc", std::make_unique<Linear>(4, 3));
  net.build(ctx, 7);
  return net;
}

std::vector<Device> devices() {
  std::vector<Device> out{Device::cpu()};
  if (cuda_compiled() && cuda_device_count() > 0) out.push_back(Device::cuda(0));
  return out;
}

FitOptions one_epoch(int* steps_reported) {
  FitOptions o;
  o.model_name = "tiny";
  o.epochs = 1;
  o.batch_size = 4;
  o.on_progress = [steps_reported](const TrainProgress&) { ++*steps_reported; };
  return o;
}

}  // namespace

TEST(Trainer, FitRejectsATrainLabelOutsideTheModelsClasses) {
  for (Device device : devices()) {
    SCOPED_TRACE(device.str());
    Context ctx{device};
    Sequential net = three_class_model(ctx);
    int reported = 0;
    std::string message = error_message([&] { fit(ctx, net, tiny(10, 3, 7, 12), tiny(6, 3), one_epoch(&reported)); });
    EXPECT_TRUE(contains(message, "train: label 12 at index 7 is outside [0, 3) (the model has 3 outputs")) << message;
    EXPECT_TRUE(contains(message, "dataset 'tiny'")) << message;
    EXPECT_EQ(reported, 0) << "checked before the first step";
    message = error_message([&] { fit(ctx, net, tiny(10, 3, 0, -1), tiny(6, 3), one_epoch(&reported)); });
    EXPECT_TRUE(contains(message, "train: label -1 at index 0 is outside [0, 3)")) << message;
  }
}

TEST(Trainer, FitChecksTheTestSplitBeforeTraining) {
  for (Device device : devices()) {
    SCOPED_TRACE(device.str());
    Context ctx{device};
    Sequential net = three_class_model(ctx);
    int reported = 0;
    std::string message = error_message([&] { fit(ctx, net, tiny(10, 3), tiny(6, 3, 5, 3), one_epoch(&reported)); });
    EXPECT_TRUE(contains(message, "test: label 3 at index 5 is outside [0, 3) (the model has 3 outputs")) << message;
    EXPECT_EQ(reported, 0) << "no epoch was trained before the error";
  }
}

TEST(Trainer, EvaluateRejectsALabelOutsideTheModelsClasses) {
  for (Device device : devices()) {
    SCOPED_TRACE(device.str());
    Context ctx{device};
    Sequential net = three_class_model(ctx);
    std::string message = error_message([&] { evaluate(ctx, net, tiny(9, 3, 8, 4), 4); });
    EXPECT_TRUE(contains(message, "eval: label 4 at index 8 is outside [0, 3)")) << message;
    EvalResult ok = evaluate(ctx, net, tiny(9, 3), 4);
    EXPECT_EQ(ok.samples, 9);
  }
}
