#pragma once
// A one-line progress bar on stderr: redrawn in place on a terminal, printed as occasional plain
// lines (about every 10%) when stderr is a file or a CI log.
#include <cstdint>
#include <string>

namespace cudl::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  // `done` of `total` units, with a status text after the bar (losses, rates).
  void update(std::int64_t done, std::int64_t total, double elapsed_seconds, const std::string& status);
  // Ends the line (and prints a final line when not on a terminal).
  void finish(const std::string& status);

 private:
  std::string label_;
  bool tty_;
  int last_decile_ = -1;
  std::int64_t last_done_ = 0, last_total_ = 0;
  double last_elapsed_ = 0;
};

std::string format_duration(double seconds);

}  // namespace cudl::cli
