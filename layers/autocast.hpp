#pragma once
// Autocast (engine/context.hpp's Precision), for the layers that compute in half precision:
// Conv2d, ConvTranspose2d and Linear take their input and weight in the context's autocast dtype
// and hand back their input gradient in the dtype their input came in. The other layers follow the
// dtype of what they are given, so the activations between two convolutions stay in half.
#include "cudl/layers/layer.hpp"

namespace cudl::autocast {

// x in the context's compute dtype (x itself when it already is).
inline Tensor input(Context& ctx, const Tensor& x) { return x.cast(ctx, ctx.autocast_dtype()); }

// A parameter's value as `dtype`: the f32 master itself, the model's half copy (refreshed once per
// step by Sequential), or, for a layer used outside a model, a copy cast now.
inline Tensor weight(Context& ctx, const Parameter& p, DType dtype) {
  if (p.value.dtype() == dtype) return p.value;
  if (p.half.defined() && p.half.dtype() == dtype) return p.half;
  return p.value.cast(ctx, dtype);
}

}  // namespace cudl::autocast
