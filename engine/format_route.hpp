#pragma once
// NCHW stand-ins for the channels_last tensors of one op call, for code that reads NCHW only (the
// op front, engine/backend.cpp, for ops a backend has no channels_last kernel for; a backend's own
// fallbacks). `in` gives an input's contiguous copy, `out` an output's stand-in (holding the
// output's values when the op accumulates into it), and `finish` copies the stand-ins back into the
// outputs' own formats. Tensors that are already contiguous (or undefined) pass through.
// run_routed and on_nchw_copies below wrap the three steps around one call of the op.
#include <deque>
#include <initializer_list>
#include <utility>

#include "cudl/engine/tensor.hpp"

namespace cudl {

// Whether any of the defined tensors is channels_last.
inline bool any_channels_last(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (t->defined() && t->channels_last()) return true;
  return false;
}

// Whether the defined tensors do not all share one format.
inline bool mixed_formats(std::initializer_list<const Tensor*> ts) {
  const Tensor* first = nullptr;
  for (const Tensor* t : ts) {
    if (!t->defined()) continue;
    if (first == nullptr)
      first = t;
    else if (t->format() != first->format())
      return true;
  }
  return false;
}

// `t` stored in `format`: t itself, or a copy.
inline Tensor in_format(Context& ctx, const Tensor& t, MemoryFormat format) {
  return t.defined() ? t.to_format(ctx, format) : t;
}

class NchwRoute {
 public:
  explicit NchwRoute(Context& ctx) : ctx_(ctx) {}
  NchwRoute(const NchwRoute&) = delete;
  NchwRoute& operator=(const NchwRoute&) = delete;

  const Tensor& in(const Tensor& t) {
    if (!t.defined() || !t.channels_last()) return t;
    return inputs_.emplace_back(t.contiguous(ctx_));
  }

  Tensor& out(Tensor& t, bool keep_values = false) {
    if (!t.defined() || !t.channels_last()) return t;
    Tensor stand_in = keep_values ? t.contiguous(ctx_) : Tensor::empty(t.shape(), ctx_, t.dtype());
    return outputs_.emplace_back(std::move(stand_in), &t).first;
  }

  // Copies every output's stand-in back into the output (its channels_last storage).
  void finish();

 private:
  Context& ctx_;
  std::deque<Tensor> inputs_;
  std::deque<std::pair<Tensor, Tensor*>> outputs_;
};

// An op call's tensors as they are stored, behind NchwRoute's interface, so that one call site
// (a generic lambda that passes each image-shaped tensor through in/out) serves both paths.
struct AsStored {
  const Tensor& in(const Tensor& t) const { return t; }
  Tensor& out(Tensor& t, bool /*keep_values*/ = false) const { return t; }
};

// Runs `call(route)` on NCHW stand-ins and copies the outputs back into their own formats: a
// backend's fallback when its channels_last kernel did not take the call.
template <class Call>
void on_nchw_copies(Context& ctx, Call&& call) {
  NchwRoute route(ctx);
  call(route);
  route.finish();
}

// on_nchw_copies where `to_nchw` (the op front's decision, Backend::routes_to_nchw), else `call`
// on the tensors as they are stored.
template <class Call>
void run_routed(Context& ctx, bool to_nchw, Call&& call) {
  if (to_nchw) {
    on_nchw_copies(ctx, call);
    return;
  }
  AsStored as_stored;
  call(as_stored);
}

}  // namespace cudl
