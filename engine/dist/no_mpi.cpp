// A build without MPI: every program is one process. Being started as one of several ranks is an
// error, as each copy would train alone and all would write the same files.
#include <cstdlib>

#include "cudl/engine/dist/job.hpp"
#include "cudl/engine/error.hpp"

namespace cudl {

std::unique_ptr<MpiJob> join_mpi_job() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"}) {
    const char* n = std::getenv(v);
    CUDL_CHECK(!n || std::atoi(n) <= 1,
               "train: started as one of {} ranks ({}={}), but this cudl was built without MPI: rebuild with "
               "libopenmpi-dev installed (CUDL_DISTRIBUTED=ON), or run one process",
               n ? n : "", v, n ? n : "");
  }
  return nullptr;
}

}  // namespace cudl
