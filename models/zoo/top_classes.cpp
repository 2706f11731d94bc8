#include "cudl/models/zoo/top_classes.hpp"

#include <algorithm>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/error.hpp"

namespace cudl {

TopClasses top_classes(Context& ctx, const Tensor& logits, int k) {
  CUDL_CHECK(logits.rank() == 2 && logits.dim(0) == 1 && logits.dim(1) > 0,
             "top classes: expected one image's logits [1, K], got {}", logits.shape());
  Backend& be = ctx.backend();
  // softmax is f32-only: half logits (autocast) are widened first.
  Tensor z = logits;
  if (logits.dtype() != DType::f32) {
    z = Tensor::empty(logits.shape(), ctx);
    be.cast(ctx, logits, z);
  }
  Tensor probs = Tensor::empty(z.shape(), ctx);
  be.softmax_forward(ctx, z, probs);
  Tensor total = Tensor::empty({1}, ctx);
  be.sum(ctx, probs, total);
  const std::int64_t kk = std::clamp<std::int64_t>(k, 1, z.dim(1));
  Tensor indices = Tensor::empty({1, kk}, ctx, DType::i32), values = Tensor::empty({1, kk}, ctx);
  be.top_k(ctx, probs, indices, values);
  TopClasses out;
  out.total = total.item(ctx);
  const std::vector<std::int32_t> i = indices.to_int_vector(ctx);
  const std::vector<float> p = values.to_vector(ctx);
  for (std::size_t j = 0; j < i.size(); ++j) out.ranked.push_back({i[j], p[j]});
  return out;
}

}  // namespace cudl
