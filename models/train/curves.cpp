#include "cudl/models/train/curves.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string_view>
#include <type_traits>
#include <vector>

#include "cudl/engine/error.hpp"
#include "cudl/engine/io/json.hpp"

namespace cudl {

namespace {

// ---------------------------------------------------------------- a 5x7 pixel font
// Each glyph is seven rows of five columns, '#' set; g, p, q and y are drawn two rows lower (their
// descenders). Lower case and digits are what axis labels and legends use; upper case letters are
// drawn with the lower-case glyphs.
struct Glyph {
  char c;
  std::array<std::string_view, 7> rows;
  int drop = 0;
};

constexpr Glyph kGlyphs[] = {
    {' ', {".....", ".....", ".....", ".....", ".....", ".....", "....."}},
    {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
    {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
    {'3', {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."}},
    {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
    {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
    {'6', {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}},
    {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
    {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
    {'9', {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}},
    {'a', {".....", ".....", ".###.", "....#", ".####", "#...#", ".####"}},
    {'b', {"#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####."}},
    {'c', {".....", ".....", ".###.", "#....", "#....", "#...#", ".###."}},
    {'d', {"....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"}},
    {'e', {".....", ".....", ".###.", "#...#", "#####", "#....", ".###."}},
    {'f', {"..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#..."}},
    {'g', {".####", "#...#", "#...#", "#...#", ".####", "....#", ".###."}, 2},
    {'h', {"#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#"}},
    {'i', {"..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."}},
    {'j', {"...#.", ".....", "..##.", "...#.", "...#.", "#..#.", ".##.."}},
    {'k', {"#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."}},
    {'l', {".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'m', {".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#"}},
    {'n', {".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"}},
    {'o', {".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."}},
    {'p', {"####.", "#...#", "#...#", "#...#", "####.", "#....", "#...."}, 2},
    {'q', {".####", "#...#", "#...#", "#...#", ".####", "....#", "....#"}, 2},
    {'r', {".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."}},
    {'s', {".....", ".....", ".###.", "#....", ".###.", "....#", "####."}},
    {'t', {".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."}},
    {'u', {".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"}},
    {'v', {".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
    {'w', {".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."}},
    {'x', {".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"}},
    {'y', {"#...#", "#...#", "#...#", "#...#", ".####", "....#", ".###."}, 2},
    {'z', {".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"}},
    {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
    {',', {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."}},
    {':', {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."}},
    {'%', {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"}},
    {'/', {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."}},
    {'-', {".....", ".....", ".....", "#####", ".....", ".....", "....."}},
    {'(', {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."}},
    {')', {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."}},
    {'_', {".....", ".....", ".....", ".....", ".....", ".....", "#####"}},
    {'=', {".....", ".....", "#####", ".....", "#####", ".....", "....."}},
    {'+', {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."}},
    {'[', {".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."}},
    {']', {".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."}},
    {'*', {".....", "#.#.#", ".###.", "#####", ".###.", "#.#.#", "....."}},
    {'?', {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."}},
};

const Glyph& glyph(char c) {
  const char lower = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const Glyph& g : kGlyphs)
    if (g.c == lower) return g;
  return kGlyphs[std::size(kGlyphs) - 1];  // '?'
}

using Rgb = std::array<float, 3>;
constexpr Rgb kBlack{0.1f, 0.1f, 0.1f}, kGrey{0.45f, 0.45f, 0.45f}, kGrid{0.9f, 0.9f, 0.9f};

Rgb rgb(const float (&c)[3]) { return {c[0], c[1], c[2]}; }

// ---------------------------------------------------------------- a canvas
class Canvas {
 public:
  Canvas(int width, int height) : image_(width, height, 3) {
    std::fill(image_.pixels.begin(), image_.pixels.end(), 1.0f);
  }
  Image take() { return std::move(image_); }

  void blend(int x, int y, const Rgb& c, float alpha) {
    if (x < 0 || y < 0 || x >= image_.width || y >= image_.height || alpha <= 0) return;
    alpha = std::min(alpha, 1.0f);
    for (int k = 0; k < 3; ++k)
      image_.at(y, x, k) = image_.at(y, x, k) * (1 - alpha) + c[static_cast<std::size_t>(k)] * alpha;
  }
  void rect(int x0, int y0, int x1, int y1, const Rgb& c) {
    for (int y = y0; y < y1; ++y)
      for (int x = x0; x < x1; ++x) blend(x, y, c, 1.0f);
  }
  // An antialiased segment of the given width: each pixel's coverage from its distance to the
  // segment, so the line is drawn in one pass without overdraw.
  void line(double x0, double y0, double x1, double y1, const Rgb& c, double width) {
    const double r = width / 2;
    const int bx0 = static_cast<int>(std::floor(std::min(x0, x1) - r - 1)),
              bx1 = static_cast<int>(std::ceil(std::max(x0, x1) + r + 1));
    const int by0 = static_cast<int>(std::floor(std::min(y0, y1) - r - 1)),
              by1 = static_cast<int>(std::ceil(std::max(y0, y1) + r + 1));
    const double dx = x1 - x0, dy = y1 - y0, len2 = dx * dx + dy * dy;
    for (int y = by0; y <= by1; ++y)
      for (int x = bx0; x <= bx1; ++x) {
        const double px = x + 0.5, py = y + 0.5;
        const double t = len2 > 0 ? std::clamp(((px - x0) * dx + (py - y0) * dy) / len2, 0.0, 1.0) : 0.0;
        const double d = std::hypot(px - (x0 + t * dx), py - (y0 + t * dy));
        blend(x, y, c, static_cast<float>(std::clamp(r + 0.5 - d, 0.0, 1.0)));
      }
  }
  void dot(double x, double y, const Rgb& c, double radius) { line(x, y, x, y, c, 2 * radius); }
  // Text with its top-left corner at (x, y), each font pixel `scale` pixels wide.
  void text(int x, int y, std::string_view s, const Rgb& c, int scale) {
    for (char ch : s) {
      const Glyph& g = glyph(ch);
      for (int row = 0; row < 7; ++row)
        for (int col = 0; col < 5; ++col)
          if (g.rows[static_cast<std::size_t>(row)][static_cast<std::size_t>(col)] == '#')
            rect(x + col * scale, y + (row + g.drop) * scale, x + (col + 1) * scale, y + (row + g.drop + 1) * scale, c);
      x += 6 * scale;
    }
  }
  static int text_width(std::string_view s, int scale) { return static_cast<int>(s.size()) * 6 * scale - scale; }

 private:
  Image image_;
};

// ---------------------------------------------------------------- axes
// Tick spacing of 1, 2 or 5 times a power of ten giving at most `max_ticks` ticks over [lo, hi].
double nice_step(double span, int max_ticks) {
  const double raw = span / std::max(max_ticks, 1);
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

// lo, lo + step, ... up to hi, by index (a float sum stops moving once the step is below its
// precision: epochs near 1e17 never reached hi). At most 64 ticks; none when the range is not finite.
std::vector<double> ticks(double lo, double hi, double step) {
  std::vector<double> out;
  if (!std::isfinite(lo) || !std::isfinite(hi) || !(step > 0) || !std::isfinite(step)) return out;
  for (int i = 0; i < 64; ++i) {
    const double v = lo + i * step;
    if (v > hi) break;
    out.push_back(v);
  }
  return out;
}

std::string tick_label(double v, double step) {
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step) - 1e-9));
  return fmt::format("{:.{}f}", std::abs(v) < step * 1e-6 ? 0.0 : v, decimals);
}

struct Series {
  std::string name;
  Rgb color;
  std::vector<double> x, y;
};

struct Panel {
  int left, top, width, height;
};

void draw_panel(Canvas& canvas, const Panel& p, const std::string& title, const std::vector<Series>& series,
                double x_lo, double x_hi, std::int64_t best_epoch, bool percent) {
  double y_lo = std::numeric_limits<double>::infinity(), y_hi = -y_lo;
  for (const auto& s : series)
    for (double v : s.y) {
      y_lo = std::min(y_lo, v);
      y_hi = std::max(y_hi, v);
    }
  if (!std::isfinite(y_lo)) y_lo = 0, y_hi = 1;
  if (y_hi - y_lo < 1e-9) y_lo -= 0.5, y_hi += 0.5;
  const double pad = (y_hi - y_lo) * 0.08;
  y_lo -= pad;
  y_hi += pad;
  if (percent) y_hi = std::min(y_hi, 100.0);
  if (!percent) y_lo = std::max(y_lo, 0.0);  // losses here are cross-entropies, never negative
  const double y_step = nice_step(y_hi - y_lo, 6);
  y_lo = std::floor(y_lo / y_step) * y_step;
  y_hi = std::ceil(y_hi / y_step) * y_step;

  auto px = [&](double x) { return p.left + (x - x_lo) / (x_hi - x_lo) * p.width; };
  auto py = [&](double y) { return p.top + p.height - (y - y_lo) / (y_hi - y_lo) * p.height; };

  // Grid and tick labels.
  for (double y : ticks(y_lo, y_hi + y_step * 1e-6, y_step)) {
    const int yy = static_cast<int>(std::lround(py(y)));
    canvas.rect(p.left, yy, p.left + p.width, yy + 1, kGrid);
    const std::string label = tick_label(y, y_step);
    canvas.text(p.left - 8 - Canvas::text_width(label, 2), yy - 7, label, kGrey, 2);
  }
  const double x_step = std::max(1.0, nice_step(x_hi - x_lo, 10));
  for (double x : ticks(std::ceil(x_lo), x_hi, x_step)) {
    const int xx = static_cast<int>(std::lround(px(x)));
    canvas.rect(xx, p.top, xx + 1, p.top + p.height, kGrid);
    const std::string label = tick_label(x, 1);
    canvas.text(xx - Canvas::text_width(label, 2) / 2, p.top + p.height + 10, label, kGrey, 2);
  }
  // The best epoch: a dashed vertical line.
  if (best_epoch >= 1 && best_epoch >= x_lo && best_epoch <= x_hi) {
    const double xx = px(static_cast<double>(best_epoch));
    for (int y = p.top; y < p.top + p.height; y += 12)
      canvas.line(xx, y, xx, std::min(y + 6, p.top + p.height), kGrey, 1.5);
  }
  // Frame.
  canvas.rect(p.left, p.top + p.height, p.left + p.width, p.top + p.height + 2, kBlack);
  canvas.rect(p.left - 2, p.top, p.left, p.top + p.height + 2, kBlack);
  canvas.text(p.left, p.top - 30, title, kBlack, 3);
  canvas.text(p.left + p.width / 2 - Canvas::text_width("epoch", 2) / 2, p.top + p.height + 34, "epoch", kGrey, 2);

  for (const auto& s : series) {
    for (std::size_t i = 1; i < s.x.size(); ++i)
      canvas.line(px(s.x[i - 1]), py(s.y[i - 1]), px(s.x[i]), py(s.y[i]), s.color, 3);
    for (std::size_t i = 0; i < s.x.size(); ++i) canvas.dot(px(s.x[i]), py(s.y[i]), s.color, 4.5);
  }
}

// A top-level field of the metrics file, or `fallback` when absent; the wrong type is an error naming it.
template <class T>
T optional_field(const nlohmann::json& metrics, const char* field, T fallback, const std::string& source) {
  const auto it = metrics.find(field);
  if (it == metrics.end() || it->is_null()) return fallback;
  if constexpr (std::is_same_v<T, std::string>) {
    CUDL_CHECK(it->is_string(), "plot: '{}': \"{}\" must be a string, got {}", source, field, io::json_excerpt(*it));
  } else {
    CUDL_CHECK(it->is_number_integer() && it->get<double>() >= 0 && it->get<double>() < 9.2e18,
               "plot: '{}': \"{}\" must be a whole number >= 0, got {}", source, field, io::json_excerpt(*it));
  }
  return it->get<T>();
}

// Text for the picture: the font has printable ASCII only, and a heading is one line.
std::string printable(std::string text) {
  for (char& c : text)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  if (text.size() > 100) text = text.substr(0, 100) + "...";
  return text;
}

double number(const nlohmann::json& epoch, const char* field, const std::string& source, std::size_t index) {
  const auto it = epoch.find(field);
  CUDL_CHECK(it != epoch.end() && it->is_number(), "plot: '{}': epochs[{}].{} is missing or not a number", source,
             index, field);
  const double v = it->get<double>();
  CUDL_CHECK(std::isfinite(v), "plot: '{}': epochs[{}].{} is {}, not a finite number", source, index, field, v);
  return v;
}

}  // namespace

Image draw_training_curves(const nlohmann::json& metrics, const std::string& source) {
  CUDL_CHECK(metrics.is_object() && metrics.contains("epochs") && metrics["epochs"].is_array(),
             "plot: '{}' is not a cudl metrics file: expected an object with an \"epochs\" list", source);
  const auto& epochs = metrics["epochs"];
  CUDL_CHECK(!epochs.empty(), "plot: '{}' holds no epochs yet", source);
  Series loss[3] = {{"train", rgb(CurveColors::train), {}, {}},
                    {"val", rgb(CurveColors::val), {}, {}},
                    {"test", rgb(CurveColors::test), {}, {}}};
  Series acc[3] = {loss[0], loss[1], loss[2]};
  const char* loss_fields[3] = {"train_loss", "val_loss", "test_loss"};
  const char* acc_fields[3] = {"train_accuracy", "val_accuracy", "test_accuracy"};
  // A reconstruction run (--target input: an autoencoder) has PSNR where a classifier has
  // accuracy, for validation and test, and the mean image's PSNR as the bar to clear.
  const bool reconstruction = metrics.value("target", std::string()) == "input";
  if (reconstruction) acc_fields[0] = nullptr, acc_fields[1] = "val_psnr", acc_fields[2] = "test_psnr";
  Series mean_image{"mean image", kGrey, {}, {}};
  for (std::size_t i = 0; i < epochs.size(); ++i) {
    const auto& e = epochs[i];
    CUDL_CHECK(e.is_object(), "plot: '{}': epochs[{}] is not an object", source, i);
    const double x = number(e, "epoch", source, i);
    for (int k = 0; k < 3; ++k) {
      // A split not scored that epoch (no validation split; the test split of a run with one is
      // scored at the end and every --eval-test-every epochs) is simply not drawn; train is required.
      if (k > 0 && !e.contains(loss_fields[k])) continue;
      loss[k].x.push_back(x);
      loss[k].y.push_back(number(e, loss_fields[k], source, i));
      if (!acc_fields[k]) continue;
      acc[k].x.push_back(x);
      acc[k].y.push_back((reconstruction ? 1.0 : 100.0) * number(e, acc_fields[k], source, i));
    }
    if (reconstruction) {
      mean_image.x.push_back(x);
      mean_image.y.push_back(number(e, "mean_image_psnr", source, i));
    }
  }
  std::vector<Series> loss_series, acc_series;
  for (int k = 0; k < 3; ++k) {
    if (!loss[k].x.empty()) loss_series.push_back(loss[k]);
    if (!acc[k].x.empty()) acc_series.push_back(acc[k]);
  }
  if (reconstruction) acc_series.push_back(mean_image);
  // The axis spans the smallest to the largest epoch, in whatever order the file lists them.
  const auto [lo_it, hi_it] = std::minmax_element(loss[0].x.begin(), loss[0].x.end());
  double x_lo = *lo_it, x_hi = *hi_it;
  if (x_hi - x_lo < 1) x_lo -= 0.5, x_hi += 0.5;
  const std::int64_t best = optional_field<std::int64_t>(metrics, "best_epoch", std::int64_t{0}, source);

  constexpr int kWidth = 1400, kHeight = 620;
  Canvas canvas(kWidth, kHeight);
  std::string heading = printable(optional_field<std::string>(metrics, "model", "training curves", source));
  if (best > 0)
    heading += fmt::format("    best epoch {} ({}) - dashed", best,
                           printable(optional_field<std::string>(metrics, "monitor", "accuracy", source)));
  canvas.text(40, 20, heading, kBlack, 3);
  // Legend.
  int lx = 40;
  std::vector<Series> legend = loss_series;
  if (reconstruction) legend.push_back(mean_image);
  for (const auto& s : legend) {
    canvas.line(lx, 78, lx + 40, 78, s.color, 4);
    canvas.dot(lx + 20, 78, s.color, 5);
    canvas.text(lx + 50, 71, s.name, kBlack, 2);
    lx += 50 + Canvas::text_width(s.name, 2) + 40;
  }
  draw_panel(canvas, Panel{110, 150, 540, 380}, "loss", loss_series, x_lo, x_hi, best, false);
  draw_panel(canvas, Panel{820, 150, 540, 380}, reconstruction ? "psnr (db)" : "accuracy (%)", acc_series, x_lo, x_hi,
             best, !reconstruction);
  return canvas.take();
}

void write_training_curves(const nlohmann::json& metrics, const std::string& source, const std::string& png_path) {
  write_image(png_path, draw_training_curves(metrics, source));
}

bool is_bench_document(const nlohmann::json& doc) {
  return doc.is_object() && doc.contains("results") && doc["results"].is_array();
}

Image draw_bench_chart(const nlohmann::json& bench, const std::string& source) {
  CUDL_CHECK(is_bench_document(bench),
             "plot: '{}' is not a cudl bench file: expected an object with a \"results\" list", source);
  struct Row {
    std::string label, backend, unit;
    double ms = 0, share = -1, rate = 0;
  };
  std::vector<Row> rows;
  const auto& results = bench["results"];
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    CUDL_CHECK(r.is_object(), "plot: '{}': results[{}] is not an object", source, i);
    Row row;
    row.ms = number(r, "median_ms", source, i);
    CUDL_CHECK(row.ms > 0, "plot: '{}': results[{}].median_ms is {}, not a positive time", source, i, row.ms);
    row.backend = r.value("backend", std::string("?"));
    row.unit = r.value("rate_unit", std::string());
    if (r.contains("rate")) row.rate = number(r, "rate", source, i);
    if (r.contains("peak_share")) row.share = 100.0 * number(r, "peak_share", source, i);
    std::string label = r.value("op", std::string("?")) + " " + r.value("shape", std::string());
    if (r.contains("batch")) label += fmt::format(" batch {}", r.value("batch", 0));
    if (label.size() > 44) label = label.substr(0, 43) + "_";
    row.label = label;
    rows.push_back(std::move(row));
  }
  CUDL_CHECK(!rows.empty(), "plot: '{}' holds no bench results", source);

  // Colours per backend, in order of appearance.
  const Rgb palette[] = {rgb(CurveColors::train), rgb(CurveColors::test), rgb(CurveColors::val), {0.55f, 0.35f, 0.7f}};
  std::vector<std::string> backends;
  for (const Row& r : rows)
    if (std::find(backends.begin(), backends.end(), r.backend) == backends.end()) backends.push_back(r.backend);
  auto colour = [&](const std::string& b) {
    const auto i = static_cast<std::size_t>(std::find(backends.begin(), backends.end(), b) - backends.begin());
    return palette[i % std::size(palette)];
  };

  constexpr int kLabel = 560, kTimeWidth = 520, kShareWidth = 360, kRow = 26, kTop = 130;
  const int width = 40 + kLabel + kTimeWidth + 60 + kShareWidth + 140;
  const int height = kTop + kRow * static_cast<int>(rows.size()) + 60;
  Canvas canvas(width, height);
  std::string heading = "cudl bench";
  if (bench.contains("machine") && bench["machine"].is_object())
    heading += "    " + bench["machine"].value("cpu", std::string());
  if (bench.value("under_load", false)) heading += "    under load";
  canvas.text(40, 20, heading.substr(0, 110), kBlack, 3);
  int lx = 40;
  for (const std::string& b : backends) {
    canvas.rect(lx, 66, lx + 30, 82, colour(b));
    canvas.text(lx + 40, 68, b, kBlack, 2);
    lx += 40 + Canvas::text_width(b, 2) + 40;
  }

  // Time: a log scale over whole decades.
  double lo = std::numeric_limits<double>::infinity(), hi = 0;
  for (const Row& r : rows) lo = std::min(lo, r.ms), hi = std::max(hi, r.ms);
  const double d_lo = std::floor(std::log10(lo)), d_hi = std::max(d_lo + 1, std::ceil(std::log10(hi)));
  const int x0 = 40 + kLabel;
  auto tx = [&](double ms) { return x0 + (std::log10(ms) - d_lo) / (d_hi - d_lo) * kTimeWidth; };
  canvas.text(x0, kTop - 40, "median ms (log)", kBlack, 2);
  for (double d = d_lo; d <= d_hi; d += 1) {
    const int xx = static_cast<int>(std::lround(tx(std::pow(10.0, d))));
    canvas.rect(xx, kTop - 6, xx + 1, kTop + kRow * static_cast<int>(rows.size()), kGrid);
    const std::string label =
        d >= 0 ? fmt::format("{:.0f}", std::pow(10.0, d)) : fmt::format("{:g}", std::pow(10.0, d));
    canvas.text(xx - Canvas::text_width(label, 2) / 2, kTop + kRow * static_cast<int>(rows.size()) + 10, label, kGrey,
                2);
  }
  // Share of the measured peak (kernels), or images per second (models).
  const int s0 = x0 + kTimeWidth + 60;
  double share_hi = 100;
  for (const Row& r : rows) share_hi = std::max(share_hi, r.share);
  canvas.text(s0, kTop - 40, "% of peak (models: img/s)", kBlack, 2);
  const int x100 = s0 + static_cast<int>(std::lround(100.0 / share_hi * kShareWidth));
  canvas.rect(x100, kTop - 6, x100 + 1, kTop + kRow * static_cast<int>(rows.size()), kGrey);

  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const int y = kTop + kRow * static_cast<int>(i);
    canvas.text(40, y + 4, r.label, kBlack, 2);
    const Rgb c = colour(r.backend);
    canvas.rect(x0, y + 3, static_cast<int>(std::lround(std::max(tx(r.ms), x0 + 2.0))), y + kRow - 5, c);
    const std::string ms = fmt::format("{:.3g}", r.ms);
    canvas.text(std::min(static_cast<int>(std::lround(tx(r.ms))) + 6, x0 + kTimeWidth - Canvas::text_width(ms, 2)),
                y + 4, ms, kBlack, 2);
    if (r.share >= 0) {
      canvas.rect(s0, y + 3, s0 + std::max(2, static_cast<int>(std::lround(r.share / share_hi * kShareWidth))),
                  y + kRow - 5, c);
      canvas.text(s0 + static_cast<int>(std::lround(r.share / share_hi * kShareWidth)) + 6, y + 4,
                  fmt::format("{:.0f}%", r.share), kBlack, 2);
    } else if (r.unit == "img/s") {
      canvas.text(s0, y + 4, fmt::format("{:.1f} img/s", r.rate), kBlack, 2);
    }
  }
  return canvas.take();
}

}  // namespace cudl
