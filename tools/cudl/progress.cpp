#include "tools/cudl/progress.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>

namespace cudl::cli {

ProgressBar::ProgressBar(std::string label) : label_(std::move(label)), tty_(isatty(fileno(stderr)) != 0) {}

std::string format_duration(double seconds) {
  const auto s = static_cast<std::int64_t>(std::max(seconds, 0.0) + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{}:{:02}", s / 60, s % 60);
}

void ProgressBar::update(std::int64_t done, std::int64_t total, double elapsed_seconds, const std::string& status) {
  last_done_ = done;
  last_total_ = total;
  last_elapsed_ = elapsed_seconds;
  const double fraction =
      total > 0 ? std::clamp(static_cast<double>(done) / static_cast<double>(total), 0.0, 1.0) : 1.0;
  const double eta = done > 0 ? elapsed_seconds * static_cast<double>(total - done) / static_cast<double>(done) : 0.0;
  if (tty_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(fraction * kWidth);
    std::string bar(static_cast<std::size_t>(filled), '=');
    if (filled < kWidth) bar += '>';
    bar.resize(kWidth, ' ');
    fmt::print(stderr, "\r{} [{}] {}/{} {} ETA {}\x1b[K", label_, bar, done, total, status, format_duration(eta));
    std::fflush(stderr);
    return;
  }
  const int decile = static_cast<int>(fraction * 10.0);
  if (decile != last_decile_ && decile < 10) {
    last_decile_ = decile;
    fmt::print(stderr, "{} {:3.0f}% {}/{} {} ETA {}\n", label_, fraction * 100.0, done, total, status,
               format_duration(eta));
  }
}

void ProgressBar::finish(const std::string& status) {
  if (tty_) {
    fmt::print(stderr, "\r{} {}/{} {} in {}\x1b[K\n", label_, last_total_, last_total_, status,
               format_duration(last_elapsed_));
  } else {
    fmt::print(stderr, "{} 100% {}/{} {} in {}\n", label_, last_total_, last_total_, status,
               format_duration(last_elapsed_));
  }
  last_decile_ = -1;
}

}  // namespace cudl::cli
