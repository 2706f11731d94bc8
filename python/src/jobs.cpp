// cudl.style_transfer and cudl.bench: whole jobs, run with the GIL released.
#include <algorithm>

#include "cudl/engine/io/image.hpp"
#include "cudl/models/style/style_transfer.hpp"
#include "cudl/models/train/model_bench.hpp"
#include "cudl/models/zoo/zoo.hpp"
#include "python/src/common.hpp"

namespace cudl::python {
namespace {

// An image argument: a path (read by the library's decoder) or a float32 array (H, W, 3) in [0, 1].
Image image_from(const py::handle& value, const std::string& what) {
  if (py::isinstance<py::str>(value)) {
    const auto path = value.cast<std::string>();
    check_input_file(what, path);
    return reading_file([&] { return read_image(path); });
  }
  if (!py::isinstance<py::array>(value))
    bad_value("{}: expected a file path or a float32 array (H, W, 3) in [0, 1]", what);
  const auto a = py::reinterpret_borrow<py::array>(value);
  if (!a.dtype().is(py::dtype::of<float>()))
    bad_value("{}: dtype {}: expected a float32 array (H, W, 3) in [0, 1]", what, numpy_dtype_name(a.dtype()));
  if (a.ndim() != 3 || a.shape(2) != 3)
    bad_value("{}: shape ({}): expected (H, W, 3), RGB in [0, 1]", what,
              fmt::join(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()), ", "));
  check_contiguous(a, what);
  Image img(static_cast<int>(a.shape(1)), static_cast<int>(a.shape(0)), 3);
  const auto* src = static_cast<const float*>(a.data());
  std::copy(src, src + img.pixels.size(), img.pixels.begin());
  return img;
}

py::array image_to_numpy(const Image& img) {
  py::array_t<float> out({img.height, img.width, img.channels});
  std::copy(img.pixels.begin(), img.pixels.end(), out.mutable_data());
  return out;
}

template <class T>
void take(py::kwargs& kw, const char* key, T& field) {
  if (kw.contains(key)) {
    field = kw[key].cast<T>();
    PyDict_DelItemString(kw.ptr(), key);
  }
}

py::array style_transfer(const py::object& content_arg, const py::object& style_arg, const std::string& weights,
                         const std::string& device, py::kwargs kw) {
  if (weights.empty())
    bad_value(
        "style_transfer: weights: give a VGG19 safetensors file (tools/convert_torchvision_vgg19.py) or "
        "'random:SEED'");
  if (!weights.starts_with("random:")) check_input_file("style_transfer: weights", weights);
  StyleOptions o;
  std::string model = "torchvision", color = "none", optimizer = "lbfgs", init = "content", pooling = "max";
  take(kw, "model", model);
  // The library's parse_* name what they expected; as Python ValueErrors.
  auto parsed = [](auto parse, const std::string& text) {
    try {
      return parse(text);
    } catch (const Error& e) {
      throw ValueError(fmt::format("style_transfer: {}", e.what()));
    }
  };
  o.model = parsed(parse_style_model, model);
  const StyleWeights defaults = default_style_weights(o.model);
  o.content_weight = defaults.content;
  o.style_weight = defaults.style;
  take(kw, "size", o.size);
  take(kw, "style_scale", o.style_scale);
  take(kw, "style_blend_weights", o.style_blend_weights);
  take(kw, "iters", o.iters);
  take(kw, "optimizer", optimizer);
  take(kw, "lr", o.lr);
  take(kw, "lbfgs_history", o.lbfgs_history);
  take(kw, "content_weight", o.content_weight);
  take(kw, "style_weight", o.style_weight);
  take(kw, "tv_weight", o.tv_weight);
  take(kw, "tv_beta", o.tv_beta);
  take(kw, "normalize_gradients", o.normalize_gradients);
  take(kw, "clamp", o.clamp);
  take(kw, "tile", o.tile);
  take(kw, "tile_overlap", o.tile_overlap);
  take(kw, "content_layers", o.content_layers);
  take(kw, "style_layers", o.style_layers);
  take(kw, "init", init);
  take(kw, "pooling", pooling);
  take(kw, "scales", o.scales);
  take(kw, "seed", o.seed);
  take(kw, "color_transfer", color);
  o.color_transfer = parsed(parse_color_transfer, color);
  o.optimizer = parsed(parse_style_optimizer, optimizer);
  o.pooling = parsed(parse_style_pooling, pooling);
  try {
    set_style_init(o, init);
  } catch (const Error& e) {
    throw ValueError(fmt::format("style_transfer: {}", e.what()));
  }
  if (!kw.empty()) {
    std::vector<std::string> unknown;
    for (auto [k, v] : kw) unknown.push_back(py::str(k).cast<std::string>());
    bad_value("style_transfer: unknown option(s) {}: see help(cudl.style_transfer)", fmt::join(unknown, ", "));
  }
  try {
    for (const auto& l : o.content_layers) (void)parse_style_layers(l);
    for (const auto& l : o.style_layers) (void)parse_style_layers(l);
    check_style_options(o);
  } catch (const Error& e) {
    throw ValueError(e.what());
  }
  const Image content = image_from(content_arg, "style_transfer: content");
  std::vector<Image> styles;
  if (py::isinstance<py::list>(style_arg) || py::isinstance<py::tuple>(style_arg)) {
    for (const py::handle s : style_arg) styles.push_back(image_from(s, "style_transfer: style"));
  } else {
    styles.push_back(image_from(style_arg, "style_transfer: style"));
  }
  if (!o.style_blend_weights.empty() && o.style_blend_weights.size() != styles.size())
    bad_value("style_transfer: {} style_blend_weights for {} style images", o.style_blend_weights.size(),
              styles.size());
  Context& ctx = device_context(parse_device(device));
  StyleResult r;
  {
    py::gil_scoped_release release;
    Sequential net = make_style_network(ctx, o, weights);
    try {
      check_style_sizes(net, o, content, styles);
    } catch (const OutOfMemoryError&) {
      throw;
    } catch (const Error& e) {
      throw ValueError(e.what());
    }
    r = run_style_transfer(ctx, net, content, styles, o);
  }
  return image_to_numpy(r.image);
}

// `cudl bench --models`: each model's train step and inference timed on `device`; one dict per
// (model, batch, what), with the keys of the CLI's --json rows.
py::list bench(const std::vector<std::string>& models, const std::vector<std::int64_t>& batch_sizes,
               const std::string& device, int repeat, const std::string& precision) {
  if (models.empty()) bad_value("bench: models: name at least one (e.g. ['mnist_cnn'])");
  if (repeat < 1) bad_value("bench: repeat {} must be >= 1", repeat);
  for (const auto b : batch_sizes)
    if (b < 1) bad_value("bench: batch size {} must be >= 1", b);
  for (const auto& name : models) {
    try {
      (void)model_spec(name);
    } catch (const Error& e) {
      throw ValueError(e.what());
    }
  }
  Context ctx(parse_device(device));
  try {
    ctx.set_precision(parse_precision(precision));
  } catch (const Error& e) {
    throw ValueError(e.what());
  }
  std::vector<ModelBenchResult> results;
  {
    py::gil_scoped_release release;
    for (const auto& name : models)
      bench_model(ctx, name, batch_sizes.empty() ? default_bench_batches(name) : batch_sizes, repeat, false,
                  [&](const ModelBenchResult& r, const Sequential&) { results.push_back(r); });
  }
  py::list rows;
  for (const auto& r : results) {
    py::dict row;
    row["op"] = r.what;
    row["backend"] = ctx.device().str();
    row["shape"] = fmt::format("{} batch {}", r.model, r.batch);
    row["model"] = r.model;
    row["batch"] = r.batch;
    row["median_ms"] = r.timing.median_ms;
    row["min_ms"] = r.timing.min_ms;
    row["cv"] = r.timing.cv;
    row["samples"] = r.timing.samples;
    row["rate"] = r.images_per_second;
    row["rate_unit"] = "img/s";
    row["peak_memory_bytes"] = r.peak_bytes;
    row["noisy"] = r.timing.noisy();
    rows.append(row);
  }
  return rows;
}

}  // namespace

void bind_jobs(py::module_& m) {
  m.def("style_transfer", &style_transfer, py::arg("content"), py::arg("style"), py::kw_only(), py::arg("weights") = "",
        py::arg("device") = "cpu",
        "Gatys neural style transfer (cudl style): content and style are file paths or float32 (H, W, 3) arrays in "
        "[0, 1] (style may be a list); weights a VGG19 safetensors file or 'random:SEED'; options as StyleOptions "
        "(size, iters, optimizer, lr, content_weight, style_weight, tv_weight, init, pooling, scales, seed, "
        "color_transfer, ...). Returns the image as float32 (H, W, 3) in [0, 1].");
  m.def("bench", &bench, py::arg("models") = std::vector<std::string>{"mnist_cnn"},
        py::arg("batch_sizes") = std::vector<std::int64_t>{}, py::arg("device") = "cpu", py::arg("repeat") = 10,
        py::arg("precision") = "fp32",
        "cudl bench --models: each model's train step and inference timed; a list of dicts (op, model, batch, "
        "median_ms, min_ms, cv, samples, rate in img/s, peak_memory_bytes, noisy)");
}

}  // namespace cudl::python
