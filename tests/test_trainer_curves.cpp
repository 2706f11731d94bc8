// The training-curves PNG: the lines the metrics hold are drawn in their colours (and only those),
// and a file that is not a metrics document is refused naming the field.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "cudl/models/train/curves.hpp"
#include "tests/test_util.hpp"

using namespace cudl;
using namespace cudl::testing;

namespace {

nlohmann::json metrics(bool with_val) {
  nlohmann::json epochs = nlohmann::json::array();
  for (int e = 1; e <= 4; ++e) {
    nlohmann::json m = {{"epoch", e},
                        {"train_loss", 1.0 / e},
                        {"train_accuracy", 0.5 + 0.1 * e},
                        {"test_loss", 1.2 / e},
                        {"test_accuracy", 0.45 + 0.1 * e}};
    if (with_val) {
      m["val_loss"] = 1.1 / e;
      m["val_accuracy"] = e == 3 ? 0.9 : 0.5 + 0.05 * e;
    }
    epochs.push_back(m);
  }
  return {{"model", "mlp"}, {"best_epoch", 3}, {"monitor", "val_accuracy"}, {"epochs", epochs}};
}

// Pixels within a small distance of the colour (antialiased edges blend towards white).
int pixels_of(const Image& image, const float (&rgb)[3]) {
  int count = 0;
  for (int y = 0; y < image.height; ++y)
    for (int x = 0; x < image.width; ++x) {
      double d = 0;
      for (int c = 0; c < 3; ++c) d += std::abs(image.at(y, x, c) - rgb[c]);
      count += d < 0.02;
    }
  return count;
}

}  // namespace

TEST(TrainerCurves, DrawsTheSplitsTheMetricsHold) {
  const Image with_val = draw_training_curves(metrics(true), "m.json");
  EXPECT_EQ(with_val.width, 1400);
  EXPECT_EQ(with_val.height, 620);
  EXPECT_EQ(with_val.channels, 3);
  // Two panels of three lines each, plus the legend: hundreds of pixels per colour.
  EXPECT_GT(pixels_of(with_val, CurveColors::train), 500);
  EXPECT_GT(pixels_of(with_val, CurveColors::val), 500);
  EXPECT_GT(pixels_of(with_val, CurveColors::test), 500);
  const Image without_val = draw_training_curves(metrics(false), "m.json");
  EXPECT_GT(pixels_of(without_val, CurveColors::train), 500);
  EXPECT_EQ(pixels_of(without_val, CurveColors::val), 0);
  // One epoch is a point, not an error.
  nlohmann::json one = metrics(true);
  one["epochs"] = nlohmann::json::array({one["epochs"][0]});
  EXPECT_GT(pixels_of(draw_training_curves(one, "m.json"), CurveColors::val), 50);
}

TEST(TrainerCurves, RefusesWhatIsNotAMetricsDocument) {
  expect_error([] { draw_training_curves(nlohmann::json::array(), "x.json"); },
               {"plot: 'x.json' is not a cudl metrics file", "\"epochs\""});
  expect_error([] { draw_training_curves({{"epochs", nlohmann::json::array()}}, "x.json"); }, {"holds no epochs"});
  nlohmann::json m = metrics(true);
  m["epochs"][2]["test_loss"] = "0.5";
  expect_error([&] { draw_training_curves(m, "x.json"); },
               {"'x.json': epochs[2].test_loss is missing or not a number"});
  m = metrics(true);
  m["epochs"][1].erase("train_accuracy");
  expect_error([&] { draw_training_curves(m, "x.json"); }, {"epochs[1].train_accuracy"});
}
