#pragma once
// The whole `cudl` command line: tools/cudl/main.cpp calls it, and so does the fault-injection
// test driver (tests/drivers/dist_fault.cpp) after installing its hook.

namespace cudl::cli {

// Parses argv (argv[0] the program), runs the command and returns the exit code: 0, or 1 after
// printing one line on stderr. May re-execute the program first (reexec_with_bounded_openmp_spinning).
int run(int argc, char** argv);

}  // namespace cudl::cli
