#include "tools/cudl/checks.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>

#include "cudl/engine/context.hpp"
#include "cudl/engine/device.hpp"
#include "cudl/engine/error.hpp"
#include "cudl/engine/text.hpp"
#include "tools/cudl/commands.hpp"

namespace cudl::cli {

namespace fs = std::filesystem;

Bounds at_least(double lo) { return {lo, std::numeric_limits<double>::infinity(), false, false}; }
Bounds greater_than(double lo) { return {lo, std::numeric_limits<double>::infinity(), true, false}; }
Bounds between(double lo, double hi) { return {lo, hi, false, false}; }

namespace {

constexpr double kFloatMax = std::numeric_limits<float>::max();

std::string trim(const std::string& text) {
  const auto first = text.find_first_not_of(" \t");
  if (first == std::string::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

// "> 0", ">= 0", "in [0, 1]", "in (0, 10]", or "" when unbounded.
std::string describe(const Bounds& b) {
  const bool has_lo = std::isfinite(b.lo), has_hi = std::isfinite(b.hi);
  if (has_lo && has_hi) return fmt::format("in {}{}, {}{}", b.lo_open ? '(' : '[', b.lo, b.hi, b.hi_open ? ')' : ']');
  if (has_lo) return fmt::format("{} {}", b.lo_open ? ">" : ">=", b.lo);
  if (has_hi) return fmt::format("{} {}", b.hi_open ? "<" : "<=", b.hi);
  return {};
}

std::string expected_number(const Bounds& b) {
  const std::string range = describe(b);
  return range.empty() ? "a finite number" : "a finite number " + range;
}

// The value of `text` when it is a finite number within `b` (and within a float when `as_float`),
// else the reason.
std::string check_number(const std::string& raw, const Bounds& b, bool as_float, double& out) {
  const std::string text = trim(raw);
  const std::string expected = expected_number(b);
  if (text.empty()) return fmt::format("'{}' must be {}", raw, expected);
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size()) return fmt::format("'{}' must be {}", raw, expected);
  if (!std::isfinite(v) || (errno == ERANGE && std::abs(v) > 1)) return fmt::format("{} must be {}", text, expected);
  if (as_float && std::abs(v) > kFloatMax)
    return fmt::format("{} must be {} that fits a 32-bit float (magnitude at most {:g})", text, expected, kFloatMax);
  // A float option is checked at the precision it is stored in: 1e-50 becomes 0.
  const double stored = as_float ? static_cast<double>(static_cast<float>(v)) : v;
  const auto within = [&](double x) {
    return (b.lo_open ? x > b.lo : x >= b.lo) && (b.hi_open ? x < b.hi : x <= b.hi);
  };
  if (!within(v)) return fmt::format("{} must be {}", text, expected);
  if (!within(stored)) return fmt::format("{} ({} as a 32-bit float) must be {}", text, stored, expected);
  out = v;
  return {};
}

template <class Int>
std::string check_integer(const std::string& raw, Int lo, Int hi, Int& out) {
  const std::string text = trim(raw);
  const std::string expected = fmt::format("a whole number in [{}, {}]", lo, hi);
  Int v{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v < lo || v > hi)
    return fmt::format("{} must be {}", text.empty() ? std::string("''") : text, expected);
  out = v;
  return {};
}

std::vector<std::string> split_items(const std::string& csv) {
  std::vector<std::string> items = split_list(csv);
  for (std::string& item : items) item = trim(item);
  return items;
}

// Checks each item with `check` (which fills the value); returns the reason of the first failure.
template <class T, class Check>
std::string check_list(const std::string& csv, const std::string& expected, std::vector<T>& out, Check check) {
  const std::vector<std::string> items = split_items(csv);
  if (items.empty()) return fmt::format("'{}' must be {}", csv, expected);
  out.clear();
  for (const std::string& item : items) {
    if (item.empty()) return fmt::format("'{}' has an empty item; expected {}", csv, expected);
    T value{};
    if (std::string why = check(item, value); !why.empty())
      return items.size() == 1 ? why : fmt::format("{} (in '{}')", why, csv);
    out.push_back(value);
  }
  return {};
}

std::string check_int_list(const std::string& csv, std::int64_t lo, std::int64_t hi, std::vector<std::int64_t>& out) {
  return check_list(csv, fmt::format("comma-separated whole numbers in [{}, {}]", lo, hi), out,
                    [&](const std::string& item, std::int64_t& v) { return check_integer(item, lo, hi, v); });
}

std::string check_real_list(const std::string& csv, const Bounds& b, std::vector<double>& out) {
  return check_list(csv, "comma-separated finite numbers " + describe(b), out,
                    [&](const std::string& item, double& v) { return check_number(item, b, false, v); });
}

template <class T>
std::string join(const std::vector<T>& values) {
  std::string out;
  for (const T& v : values) out += (out.empty() ? "" : ",") + fmt::format("{}", v);
  return out;
}

std::string check_seed(const std::string& text, std::uint64_t& out) {
  return check_integer<std::uint64_t>(text, 0, std::numeric_limits<std::uint64_t>::max(), out);
}

// Why `path` is not a readable regular file, or "".
std::string input_file_problem(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    return fmt::format(
        "'{}' does not exist{}", path,
        ec && ec != std::errc::no_such_file_or_directory ? fmt::format(" or cannot be read ({})", ec.message()) : "");
  if (fs::is_directory(st)) return fmt::format("'{}' is a folder, not a file", path);
  if (!fs::is_regular_file(st)) return fmt::format("'{}' is not a regular file", path);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fmt::format("'{}' cannot be read: {}", path, std::strerror(errno));
  ::close(fd);
  return {};
}

}  // namespace

CLI::Validator finite_float(Bounds b) {
  return CLI::Validator(
      [b](std::string& text) {
        double v = 0;
        std::string why = check_number(text, b, /*as_float=*/true, v);
        if (why.empty()) text = fmt::format("{}", static_cast<float>(v));
        return why;
      },
      describe(b));
}

CLI::Validator finite_double(Bounds b) {
  return CLI::Validator(
      [b](std::string& text) {
        double v = 0;
        std::string why = check_number(text, b, /*as_float=*/false, v);
        if (why.empty()) text = fmt::format("{}", v);
        return why;
      },
      describe(b));
}

CLI::Validator whole_number(std::int64_t lo, std::int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) {
        std::int64_t v = 0;
        std::string why = check_integer(text, lo, hi, v);
        if (why.empty()) text = std::to_string(v);
        return why;
      },
      fmt::format("in [{}, {}]", lo, hi));
}

CLI::Validator seed_number() {
  return CLI::Validator(
      [](std::string& text) {
        std::uint64_t v = 0;
        std::string why = check_seed(text, v);
        if (why.empty()) text = std::to_string(v);
        return why;
      },
      "in [0, 2^64-1]");
}

CLI::Validator whole_number_list(std::int64_t lo, std::int64_t hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) {
        std::vector<std::int64_t> values;
        std::string why = check_int_list(text, lo, hi, values);
        if (why.empty()) text = join(values);
        return why;
      },
      fmt::format("comma-separated, each in [{}, {}]", lo, hi));
}

CLI::Validator number_list(Bounds b) {
  return CLI::Validator(
      [b](std::string& text) {
        std::vector<double> values;
        std::string why = check_real_list(text, b, values);
        if (why.empty()) text = join(values);
        return why;
      },
      "comma-separated, each " + describe(b));
}

CLI::Validator device_name(bool list) {
  return CLI::Validator(
      [list](std::string& text) -> std::string {
        const std::vector<std::string> items = list ? split_items(text) : std::vector<std::string>{text};
        if (items.empty()) return "'' is not a device: expected cpu, cuda, cuda:N or auto";
        for (const std::string& item : items) {
          if (item == "auto") continue;  // resolved later: it asks the driver how many GPUs there are
          try {
            (void)Device::parse(item);
          } catch (const Error&) {
            return fmt::format("'{}' is not a device: expected cpu, cuda, cuda:N or auto{}", item,
                               list ? ", comma-separated" : "");
          }
        }
        return {};
      },
      list ? "comma-separated cpu|cuda|cuda:N" : "cpu|cuda|cuda:N|auto");
}

CLI::Validator input_file() {
  return CLI::Validator([](std::string& text) { return input_file_problem(text); }, "an existing file");
}

CLI::Validator weights_source() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        if (text.starts_with("random:")) {
          std::uint64_t seed = 0;
          if (!check_seed(text.substr(7), seed).empty())
            return fmt::format("{} needs a seed, a whole number in [0, {}], after 'random:'", text,
                               std::numeric_limits<std::uint64_t>::max());
          return {};
        }
        return input_file_problem(text);
      },
      "a file or random:SEED");
}

std::vector<std::int64_t> parse_whole_number_list(const std::string& option, const std::string& csv, std::int64_t lo,
                                                  std::int64_t hi) {
  std::vector<std::int64_t> values;
  const std::string why = check_int_list(csv, lo, hi, values);
  CUDL_CHECK(why.empty(), "{}: {}", option, why);
  return values;
}

std::vector<double> parse_number_list(const std::string& option, const std::string& csv, Bounds b) {
  std::vector<double> values;
  const std::string why = check_real_list(csv, b, values);
  CUDL_CHECK(why.empty(), "{}: {}", option, why);
  return values;
}

std::uint64_t parse_seed(const std::string& what, const std::string& text) {
  std::uint64_t seed = 0;
  const std::string why = check_seed(text, seed);
  CUDL_CHECK(why.empty(), "{}: {}", what, why);
  return seed;
}

void check_writable_output(const std::string& option, const std::string& path) {
  if (path.empty()) return;
  const fs::path target(path);
  std::error_code ec;
  const fs::file_status st = fs::status(target, ec);
  CUDL_CHECK(!fs::is_directory(st), "{} '{}' is a folder; give the path of a file to write", option, path);
  // The save renames a temporary over the target: that would replace a device or a pipe (as root,
  // even /dev/null), so only a regular file or nothing may be there.
  CUDL_CHECK(!fs::exists(st) || fs::is_regular_file(st), "{} '{}' exists and is not a regular file", option, path);
  const std::string name = target.filename().string();
  CUDL_CHECK(!name.empty() && name != "." && name != "..", "{} '{}' names a folder; give the path of a file to write",
             option, path);
  const fs::path folder = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const fs::file_status folder_status = fs::status(folder, ec);
  CUDL_CHECK(fs::exists(folder_status), "{} '{}': the folder '{}' does not exist", option, path, folder.string());
  CUDL_CHECK(fs::is_directory(folder_status), "{} '{}': '{}' is not a folder", option, path, folder.string());
  // Permissions alone do not say it (root, read-only mounts, ACLs, a full quota): try it.
  std::string probe = (folder / ".cudl-write-check-XXXXXX").string();
  const int fd = ::mkstemp(probe.data());
  CUDL_CHECK(fd >= 0, "{} '{}': cannot write in the folder '{}': {}", option, path, folder.string(),
             std::strerror(errno));
  ::close(fd);
  ::unlink(probe.c_str());
}

namespace {

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool valid_utf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int extra = 0;
    std::uint32_t cp = 0, min = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      extra = 1, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      extra = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (i + static_cast<std::size_t>(extra) >= s.size()) return false;
    for (int k = 1; k <= extra; ++k) {
      const auto d = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += static_cast<std::size_t>(extra) + 1;
  }
  return true;
}

}  // namespace

std::vector<std::string> read_label_file(const std::string& option, const std::string& path, std::size_t classes,
                                         const std::string& owner) {
  check_input_file(option, path);
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  CUDL_CHECK(f != nullptr, "{} '{}' cannot be read: {}", option, path, std::strerror(errno));
  std::vector<std::string> names;
  std::string line;
  bool pending = false;  // a line has begun (the file does not end right after a newline)
  const auto finish = [&] {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::size_t n = names.size() + 1;
    CUDL_CHECK(n <= classes, "{} '{}' has more than {} lines, but {} has {} classes: give one name per class", option,
               path, classes, owner, classes);
    CUDL_CHECK(!line.empty(), "{} '{}': line {} is blank; give one name per class", option, path, n);
    CUDL_CHECK(valid_utf8(line), "{} '{}': line {} is not UTF-8 text", option, path, n);
    for (char c : line)
      CUDL_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f, "{} '{}': line {} holds a control character",
                 option, path, n);
    names.push_back(std::move(line));
    line.clear();
    pending = false;
  };
  for (int c; (c = std::getc(f.get())) != EOF;) {
    if (c == '\n') {
      finish();
      continue;
    }
    pending = true;
    line.push_back(static_cast<char>(c));
    CUDL_CHECK(line.size() <= kMaxLabelBytes + 1,
               "{} '{}': line {} is longer than {} bytes; give one short name per line", option, path, names.size() + 1,
               kMaxLabelBytes);
  }
  CUDL_CHECK(!std::ferror(f.get()), "{} '{}' cannot be read: {}", option, path, std::strerror(errno));
  if (pending) finish();
  CUDL_CHECK(names.size() == classes, "{} '{}' has {} lines, but {} has {} classes (one name per line)", option, path,
             names.size(), owner, classes);
  return names;
}

void check_image_output(const std::string& option, const std::string& path) {
  if (path.empty()) return;
  std::string ext = fs::path(path).extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  CUDL_CHECK(ext == ".png" || ext == ".jpg" || ext == ".jpeg", "{} '{}' must end in .png, .jpg or .jpeg", option, path);
}

void check_input_file(const std::string& option, const std::string& path) {
  const std::string why = input_file_problem(path);
  CUDL_CHECK(why.empty(), "{} {}", option, why);
}

// Declared in commands.hpp beside the subcommands that take them.
void add_compute_options(CLI::App* cmd, ComputeOptions& options) {
  cmd->add_option("--deterministic", options.deterministic,
                  "true: only cuDNN algorithms that repeat bit for bit (resume ends where an uninterrupted run "
                  "would); false: the fastest, some of which use atomics (CUDA only)")
      ->capture_default_str();
  add_precision_option(cmd, options.precision);
  cmd->add_option("--conv-algo", options.conv_algo,
                  "measured: time every usable algorithm once per shape and keep the fastest (PyTorch's "
                  "cudnn.benchmark), saved in an on-disk cache that later runs on this GPU and cuDNN reuse (where: "
                  "cudl info); heuristic: cuDNN's ranked guess, no timing (CUDA only)")
      ->transform(named_enum({ConvSearch::heuristic, ConvSearch::measured}, conv_search_name))
      ->default_str("measured");
  add_fuse_option(cmd, options.fuse);
  cmd->add_option("--cuda-graphs", options.cuda_graphs,
                  "true: replay fixed-shape steps (the train step, bench's train and inference steps, the style "
                  "iteration's loss and gradient) as CUDA graphs, one launch instead of one per kernel; false: plain "
                  "launches (CUDA only; not yet measured on a GPU, so off by default)")
      ->capture_default_str();
  cmd->add_option_function<std::string>(
         "--memory-format",
         [&options](const std::string& name) { options.memory_format = parse_activation_format(name); },
         "how convolutions store their output activations: channels_last (NHWC, as torch.channels_last), nchw, or "
         "auto: channels_last where the convolutions run natively in it (the CPU's bf16/fp16 oneDNN kernels), "
         "nchw elsewhere")
      ->check(CLI::IsMember({"auto", "nchw", "channels_last"}))
      ->default_str("auto");
}

void add_fuse_option(CLI::App* cmd, bool& fuse) {
  cmd->add_option("--fuse", fuse,
                  "true: run each Conv2d or Linear whose only reader is a ReLU as one op with it (convolution or "
                  "GEMM, bias and ReLU in one pass: oneDNN post-op on the CPU, cudnnConvolutionBiasActivationForward "
                  "or a cuBLASLt epilogue on CUDA), in inference each Conv2d -> BatchNorm2d (-> Add) (-> ReLU) "
                  "chain as one op, and in training each BatchNorm2d whose only reader is a ReLU as one op with it; "
                  "false: layer by layer, to compare")
      ->capture_default_str();
}

void add_precision_option(CLI::App* cmd, Precision& precision) {
  cmd->add_option_function<std::string>(
         "--precision", [&precision](const std::string& name) { precision = parse_precision(name); },
         "fp32: strict float32 everywhere; tf32: cuBLAS and cuDNN may use TF32 tensor cores (CUDA only); bf16, fp16: "
         "mixed precision as torch.autocast (convolutions, linear layers and Gram matrices in half with fp32 sums, "
         "activations stored in half, fp32 master weights, losses and optimizer; fp16 trains with dynamic loss "
         "scaling)")
      ->check(CLI::IsMember({"fp32", "tf32", "bf16", "fp16"}))
      ->default_str("fp32");
}

void apply_compute_options(Context& ctx, const ComputeOptions& options) {
  ctx.set_deterministic(options.deterministic);
  ctx.set_conv_search(options.conv_algo);
  ctx.set_fuse_layers(options.fuse);
  ctx.set_activation_format(options.memory_format);
  ctx.set_cuda_graphs(options.cuda_graphs);
  ctx.set_precision(options.precision);  // throws, naming the GPU, where it lacks the tensor cores
  if (!ctx.device().is_cpu()) return;
  if (options.precision == Precision::tf32 || options.cuda_graphs)
    fmt::print(stderr, "note: --precision tf32 and --cuda-graphs change nothing on the CPU (no TF32, no graphs)\n");
  if (options.precision == Precision::fp16 && !cpu_has_native_f16())
    fmt::print(stderr,
               "note: --precision fp16 on this CPU is computed through fp32 (no f16 kernels for it: {}): "
               "correct fp16 results, not faster; bf16 is this CPU's fast half precision\n",
               cpu_half_support().f16);
}

}  // namespace cudl::cli

namespace cudl::cli {

namespace {

// A path as the file system resolves it: symlinks and "." / ".." gone, no trailing separator,
// and the identity of what it names when that exists.
struct Resolved {
  fs::path path;
  bool exists = false;
  dev_t dev = 0;
  ino_t ino = 0;
};

Resolved resolve(const std::string& text) {
  Resolved r;
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(text, ec), ec);
  if (ec) p = fs::absolute(text).lexically_normal();
  if (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  r.path = p;
  struct stat st {};
  if (::stat(text.c_str(), &st) == 0) {
    r.exists = true;
    r.dev = st.st_dev;
    r.ino = st.st_ino;
  }
  return r;
}

bool same(const Resolved& a, const Resolved& b) {
  return a.path == b.path || (a.exists && b.exists && a.dev == b.dev && a.ino == b.ino);
}

// Whether `inner` lies in the folder `outer`: directly (`direct_only`) or anywhere below it.
bool lies_in(const Resolved& inner, const Resolved& outer, bool direct_only) {
  fs::path p = inner.path;
  while (p.has_parent_path() && p.parent_path() != p) {
    p = p.parent_path();
    if (same(resolve(p.string()), outer)) return true;
    if (direct_only) return false;
  }
  return false;
}

const char* kind_word(PathUse::Kind k) { return k == PathUse::Kind::file ? "" : " folder"; }

}  // namespace

void check_outputs_spare_inputs(const std::vector<PathUse>& inputs, const std::vector<PathUse>& outputs,
                                const std::vector<std::pair<std::string, std::string>>& allowed) {
  const auto is_allowed = [&](const std::string& a, const std::string& b) {
    for (const auto& [x, y] : allowed)
      if ((x == a && y == b) || (x == b && y == a)) return true;
    return false;
  };
  std::vector<std::pair<const PathUse*, Resolved>> ins, outs;
  for (const PathUse& u : inputs)
    if (!u.path.empty()) ins.emplace_back(&u, resolve(u.path));
  for (const PathUse& u : outputs)
    if (!u.path.empty()) outs.emplace_back(&u, resolve(u.path));
  using Kind = PathUse::Kind;
  std::map<fs::path, std::size_t> by_path;
  std::map<std::pair<dev_t, ino_t>, std::size_t> by_id;
  for (std::size_t i = 0; i < outs.size(); ++i) {
    const PathUse* out = outs[i].first;  // not a structured binding: the lambda below captures it
    const Resolved& ro = outs[i].second;
    for (const auto& [in, ri] : ins) {
      if (is_allowed(out->option, in->option)) continue;
      CUDL_CHECK(!same(ro, ri), "{} '{}' is the input {}{} '{}': it would be overwritten; give another path",
                 out->option, out->path, in->option, kind_word(in->kind), in->path);
      if (in->kind != Kind::file) {
        const bool direct = in->kind == Kind::folder;
        // A file in a folder of frames replaces a frame; anything under a dataset's tree changes the data.
        CUDL_CHECK(!(out->kind == Kind::file || !direct) || !lies_in(ro, ri, direct),
                   "{} '{}' lies in the input {} folder '{}': it could overwrite or add to the input; write it "
                   "elsewhere",
                   out->option, out->path, in->option, in->path);
      }
    }
    // Outputs against each other through two indexes (by path, by identity): style may write
    // thousands of intermediate images, and pairs would be quadratic.
    const auto clash = [&](std::size_t j) {
      const PathUse* other = outs[j].first;
      CUDL_CHECK(is_allowed(out->option, other->option),
                 "{} '{}' and {} '{}' are the same path: one would overwrite the other", other->option, other->path,
                 out->option, out->path);
    };
    if (const auto [it, fresh] = by_path.emplace(ro.path, i); !fresh) clash(it->second);
    if (ro.exists)
      if (const auto [it, fresh] = by_id.emplace(std::make_pair(ro.dev, ro.ino), i); !fresh) clash(it->second);
  }
}

}  // namespace cudl::cli
