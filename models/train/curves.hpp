#pragma once
// Training curves as a PNG, drawn here with no plotting library: `cudl train --plot` redraws them
// after every epoch, in-process, and `cudl plot` draws them from a metrics JSON. Two panels, loss
// and accuracy per epoch, with train, validation and test lines where the metrics have them and
// the best epoch marked; text comes from a built-in 5x7 pixel font, so the picture needs no font
// files and looks the same everywhere.
#include <nlohmann/json.hpp>
#include <string>

#include "cudl/engine/io/image.hpp"

namespace cudl {

// Draws the metrics document (`metrics_document`, the --metrics-json file: "epochs" holds objects
// with epoch, train_loss, train_accuracy and, in the epochs that scored them, val_loss/val_accuracy
// and test_loss/test_accuracy; "model", "best_epoch" and "monitor" are optional). A reconstruction
// run's document ("target": "input") has val_psnr/test_psnr and mean_image_psnr instead of
// accuracies: its second panel is PSNR, with the mean image's as a grey line. `source` names the document in errors.
// Throws a cudl::Error naming the source and the field for anything else.
Image draw_training_curves(const nlohmann::json& metrics, const std::string& source);

// draw_training_curves, written as a PNG atomically (a failed write leaves no partial file).
void write_training_curves(const nlohmann::json& metrics, const std::string& source, const std::string& png_path);

// `cudl bench --json` output as a chart, drawn the same way (issue 23: no matplotlib needed): a
// row per case, its median time on a log scale and its share of the peak measured in the same run
// (model rows: images per second), coloured by backend. Throws naming `source` for a document
// that is not a bench file or holds no results.
bool is_bench_document(const nlohmann::json& doc);
Image draw_bench_chart(const nlohmann::json& bench, const std::string& source);

// The RGB colours of the lines (for tests): train, validation, test.
struct CurveColors {
  static constexpr float train[3] = {0.12f, 0.47f, 0.71f};
  static constexpr float val[3] = {1.0f, 0.50f, 0.05f};
  static constexpr float test[3] = {0.17f, 0.63f, 0.17f};
};

}  // namespace cudl
