#pragma once
// Device-resident datasets (issue 24 item 6): an in-memory dataset small enough to live on the
// training device is copied there once; each epoch's order (the loader's seeded shuffle, made on
// the host exactly as for the other paths) goes there as one i32 copy; and each batch is gathered
// on the device from the order's slice (Backend::gather_rows), so a step costs the host two
// launches and no copy. The batches are the host path's bit for bit, so a run gives the same
// result whichever path feeds it. On a CPU context the "device" is host memory: the dataset is
// shared, not copied, and the same gathers run (this is how the CPU tests prove the batches equal).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cudl/engine/device.hpp"
#include "cudl/engine/io/datasets.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl {

class Context;
struct Augment;

// Whether a loader keeps its dataset on the device. automatic: on a CUDA device, for an in-memory
// dataset without augmentation that resident_fits() the device's free memory and is within the
// loader's whole-copy limit (LoaderOptions::whole_epoch_limit, 1 GiB: MNIST and CIFAR-10 take
// under 200 MiB); on: always (an error where it cannot: a listed folder, augmentation); off: never.
enum class ResidentData { automatic, on, off };
ResidentData parse_resident_data(const std::string& name);  // "auto" | "true" | "false"; throws listing them
std::string resident_data_name(ResidentData r);             // "auto" | "true" | "false"

// The automatic rule: a dataset of `dataset_bytes` fits when it takes at most a quarter of the
// device's `free_bytes`, leaving the rest to the model's activations, workspaces and the pool.
bool resident_fits(std::size_t dataset_bytes, std::size_t free_bytes);

struct ResidentChoice {
  bool resident = false;
  std::string reason;  // one line for the run header: which path feeds the batches, and why
};
// The decision a DataLoader over `data` on `device` makes (and the CLI prints): throws when
// `choice` is on but the dataset cannot be resident.
ResidentChoice choose_resident(const Dataset& data, Device device, const Augment& augment, ResidentData choice,
                               std::size_t whole_copy_limit);

// The dataset on the device and the epoch's order beside it; DataLoader's resident path.
class ResidentSource {
 public:
  // Copies the images and labels to ctx's device (shares them on a CPU context).
  ResidentSource(const Dataset& data, Context& ctx);
  // One copy of the epoch's order (dataset indices, each < 2^31) to the device.
  void start_epoch(const std::vector<std::int64_t>& order);
  // The samples at positions [begin, end) of the epoch's order, gathered on the device.
  void gather(std::int64_t begin, std::int64_t end, Tensor& images, Tensor& labels);

 private:
  Context* ctx_;
  Tensor images_, labels_;  // the whole dataset on ctx's device
  Tensor order_;            // i32 [N]: the epoch's order on ctx's device
  std::vector<std::int32_t> host_order_;
};

}  // namespace cudl
