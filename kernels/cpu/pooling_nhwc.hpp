#pragma once
// Max and average pooling on channels_last (NHWC) tensors, for the CPU backend's pooling ops
// (pooling.cpp dispatches here when the tensors are channels_last; the op front guarantees that all
// the image-shaped tensors of one call share a format). Same bits as the NCHW kernels.
#include "cudl/engine/backend.hpp"
#include "cudl/engine/tensor.hpp"

namespace cudl::cpu {

void maxpool2d_forward_nhwc(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax);
void maxpool2d_backward_nhwc(const Tensor& dy, const Tensor& argmax, const Pool2dParams& p, Tensor& dx);
void avgpool2d_forward_nhwc(const Tensor& x, const Pool2dParams& p, Tensor& y);
void avgpool2d_backward_nhwc(const Tensor& dy, const Pool2dParams& p, Tensor& dx);

}  // namespace cudl::cpu
