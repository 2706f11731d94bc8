#pragma once
// RAII wrappers of the legacy cuDNN descriptors used by the cuDNN ops (host code). Each one is
// created and set in its constructor (released again when setting fails) and released by its
// destructor, which never throws. They also check cuDNN's own limits, which the front's checks
// (engine/backend.cpp) do not know: every size is an int, and so is every element count.
#include <climits>
#include <string_view>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/channel_dims.hpp"
#include "cudl/engine/tensor.hpp"
#include "cudl/kernels/cuda/op_util.hpp"

namespace cudl::cudnn_detail {

// The legacy API indexes a tensor with 32-bit ints, so a tensor (or filter) of more than INT_MAX
// elements fails inside cuDNN with an opaque BAD_PARAM or NOT_SUPPORTED even when each dimension
// fits. Say so first, naming the op and the tensor. (PyTorch splits such a batch into chunks.)
inline void check_element_count(std::string_view op, std::string_view name, const Shape& s) {
  CUDL_CHECK(s.numel() <= INT_MAX,
             "{}: {}={} has {} elements; cuDNN takes at most {} per tensor: use a smaller batch or image", op, name, s,
             s.numel(), INT_MAX);
}

// The cuDNN data type of a float dtype: f32 FLOAT, bf16 BFLOAT16, f16 HALF.
inline cudnnDataType_t cudnn_data_type(DType t) {
  switch (t) {
    case DType::f32:
      return CUDNN_DATA_FLOAT;
    case DType::bf16:
      return CUDNN_DATA_BFLOAT16;
    case DType::f16:
      return CUDNN_DATA_HALF;
    case DType::i32:
      break;
  }
  CUDL_THROW("cuDNN: {} is not a float dtype", dtype_name(t));
}

// cuDNN's name for a tensor's memory format: NCHW, or NHWC for channels_last (engine/memory_format.hpp).
inline cudnnTensorFormat_t cudnn_format(MemoryFormat f) {
  return f == MemoryFormat::channels_last ? CUDNN_TENSOR_NHWC : CUDNN_TENSOR_NCHW;
}

// ---- convolution: NCHW or NHWC data, KCRS filters, the convolution itself ----
// Half-precision data (bf16 or f16 x, w and y) runs with a float compute type in the convolution
// descriptor: cuDNN's PSEUDO_BFLOAT16 and PSEUDO_HALF configurations, which accumulate in float
// and round each output once, as the CPU does.

// A tensor of logical shape [N, C, H, W] and `dtype`, stored NCHW or (channels_last) NHWC; `name`
// is the op's name for it (x, y, dx, dy), for messages. cuDNN takes the dimensions in NCHW order
// whatever the format and derives the strides from the format.
class TensorDescriptor {
 public:
  TensorDescriptor(std::string_view op, std::string_view name, const Shape& s, DType dtype = DType::f32,
                   MemoryFormat format = MemoryFormat::contiguous) {
    check_element_count(op, name, s);
    CUDL_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc_), "{} {}={}", op, name, s);
    try {
      CUDL_CUDNN_CHECK(
          cudnnSetTensor4dDescriptor(desc_, cudnn_format(format), cudnn_data_type(dtype),
                                     cuda_detail::to_int(op, "N", s[0], s), cuda_detail::to_int(op, "C", s[1], s),
                                     cuda_detail::to_int(op, "H", s[2], s), cuda_detail::to_int(op, "W", s[3], s)),
          "{} {}={}", op, name, s);
    } catch (...) {
      cudnnDestroyTensorDescriptor(desc_);
      throw;
    }
  }
  ~TensorDescriptor() { cudnnDestroyTensorDescriptor(desc_); }
  TensorDescriptor(const TensorDescriptor&) = delete;
  TensorDescriptor& operator=(const TensorDescriptor&) = delete;
  cudnnTensorDescriptor_t get() const { return desc_; }

 private:
  cudnnTensorDescriptor_t desc_ = nullptr;
};

// A KCRS filter of `dtype`; `name` is the op's name for it (w, dw), for messages. Filters stay
// KCRS when the data is NHWC: cuDNN's legacy API documents NCHW and NHWC filters alike as able to
// run its tensor-core kernels (it may transform them itself), and a KRSC copy per call would be a
// pass over every weight. If a GPU run shows NHWC data with KCRS filters slow, that copy goes
// here. A grouped
// convolution's filter is [K, C/G, R, S] as it is stored: cuDNN reads C/G from it and G from the
// convolution descriptor.
class FilterDescriptor {
 public:
  FilterDescriptor(std::string_view op, std::string_view name, const Shape& s, DType dtype = DType::f32) {
    check_element_count(op, name, s);
    CUDL_CUDNN_CHECK(cudnnCreateFilterDescriptor(&desc_), "{} {}={}", op, name, s);
    try {
      CUDL_CUDNN_CHECK(
          cudnnSetFilter4dDescriptor(desc_, cudnn_data_type(dtype), CUDNN_TENSOR_NCHW,
                                     cuda_detail::to_int(op, "K", s[0], s), cuda_detail::to_int(op, "C", s[1], s),
                                     cuda_detail::to_int(op, "R", s[2], s), cuda_detail::to_int(op, "S", s[3], s)),
          "{} {}={}", op, name, s);
    } catch (...) {
      cudnnDestroyFilterDescriptor(desc_);
      throw;
    }
  }
  ~FilterDescriptor() { cudnnDestroyFilterDescriptor(desc_); }
  FilterDescriptor(const FilterDescriptor&) = delete;
  FilterDescriptor& operator=(const FilterDescriptor&) = delete;
  cudnnFilterDescriptor_t get() const { return desc_; }

 private:
  cudnnFilterDescriptor_t desc_ = nullptr;
};

// The compute type is float for every data type (strict fp32, TF32 and the half configurations).
// The group count (Conv2dParams::groups) is set on it; cuDNN's default is 1.
class ConvolutionDescriptor {
 public:
  ConvolutionDescriptor(const Conv2dParams& p, std::string_view op) {
    CUDL_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&desc_), "{}", op);
    try {
      CUDL_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(desc_, p.pad_h, p.pad_w, p.stride_h, p.stride_w, p.dilation_h,
                                                       p.dilation_w, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
                       "{} pad={}x{} stride={}x{} dilation={}x{}", op, p.pad_h, p.pad_w, p.stride_h, p.stride_w,
                       p.dilation_h, p.dilation_w);
      if (p.groups != 1) CUDL_CUDNN_CHECK(cudnnSetConvolutionGroupCount(desc_, p.groups), "{} groups={}", op, p.groups);
    } catch (...) {
      cudnnDestroyConvolutionDescriptor(desc_);
      throw;
    }
  }
  ~ConvolutionDescriptor() { cudnnDestroyConvolutionDescriptor(desc_); }
  ConvolutionDescriptor(const ConvolutionDescriptor&) = delete;
  ConvolutionDescriptor& operator=(const ConvolutionDescriptor&) = delete;
  cudnnConvolutionDescriptor_t get() const { return desc_; }
  void set_math(cudnnMathType_t math, std::string_view op) {
    CUDL_CUDNN_CHECK(cudnnSetConvolutionMathType(desc_, math), "{} math type {}", op, static_cast<int>(math));
  }

 private:
  cudnnConvolutionDescriptor_t desc_ = nullptr;
};

// ---- batch normalisation ----

// x (and y, dy, dx) as a 4-D NCHW descriptor [N, C, inner, 1] of `dtype` (f32 or f16: see
// kernels/cudnn/normalization.cpp for bf16).
class DataDescriptor {
 public:
  DataDescriptor(const Tensor& x, const ChannelDims& d, DType dtype, std::string_view op) {
    check_element_count(op, "x", x.shape());
    CUDL_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc_), "{} x={}", op, x.shape());
    try {
      CUDL_CUDNN_CHECK(cudnnSetTensor4dDescriptor(desc_, CUDNN_TENSOR_NCHW, cudnn_data_type(dtype),
                                                  cuda_detail::to_int(op, "N", d.outer, x.shape()),
                                                  cuda_detail::to_int(op, "C", d.channels, x.shape()),
                                                  cuda_detail::to_int(op, "spatial size", d.inner, x.shape()), 1),
                       "{} x={}", op, x.shape());
    } catch (...) {
      cudnnDestroyTensorDescriptor(desc_);
      throw;
    }
  }
  ~DataDescriptor() { cudnnDestroyTensorDescriptor(desc_); }
  DataDescriptor(const DataDescriptor&) = delete;
  DataDescriptor& operator=(const DataDescriptor&) = delete;
  cudnnTensorDescriptor_t get() const { return desc_; }

 private:
  cudnnTensorDescriptor_t desc_ = nullptr;
};

// gamma, beta and the running and saved statistics: [1, C, 1, 1], derived from x's descriptor
// (float for float and half x: cuDNN's derived type for HALF data is FLOAT).
class ParamDescriptor {
 public:
  ParamDescriptor(const DataDescriptor& x, const Shape& x_shape, std::string_view op) {
    CUDL_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc_), "{} x={}", op, x_shape);
    try {
      CUDL_CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(desc_, x.get(), CUDNN_BATCHNORM_SPATIAL), "{} x={}", op, x_shape);
    } catch (...) {
      cudnnDestroyTensorDescriptor(desc_);
      throw;
    }
  }
  ~ParamDescriptor() { cudnnDestroyTensorDescriptor(desc_); }
  ParamDescriptor(const ParamDescriptor&) = delete;
  ParamDescriptor& operator=(const ParamDescriptor&) = delete;
  cudnnTensorDescriptor_t get() const { return desc_; }

 private:
  cudnnTensorDescriptor_t desc_ = nullptr;
};

}  // namespace cudl::cudnn_detail
