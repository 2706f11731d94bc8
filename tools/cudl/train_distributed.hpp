#pragma once
// `mpirun -np N cudl train ...` (issue 12) runs on the library's data-parallel session
// (engine/dist/session.hpp), which any C++ program can use the same way.
#include "cudl/engine/dist/session.hpp"

namespace cudl::cli {

using DistributedRun = cudl::DistributedSession;

}  // namespace cudl::cli
