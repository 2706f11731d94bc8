// Colour control for style transfer (Gatys et al. 2017, "Controlling Perceptual Factors in Neural
// Style Transfer", section 4): luminance-only transfer after the optimisation, or colour histogram
// matching of the style images before it (a linear map of mean and covariance, then each channel
// matched exactly by sorting, on the run's device).
#include <algorithm>
#include <array>
#include <cmath>

#include "cudl/engine/backend.hpp"
#include "cudl/engine/check.hpp"
#include "cudl/engine/io/image.hpp"
#include "cudl/models/style/style_transfer.hpp"

namespace cudl {

StyleWeights default_style_weights(StyleModel model) {
  // caffe: neural-style's defaults, tuned for VGG_ILSVRC_19_layers on 0-255 input.
  if (model == StyleModel::caffe) return {5.0, 100.0, 1e-3};
  return {1.0, 1e6, 1e-3};
}

Image transfer_original_colors(const Image& content, const Image& styled) {
  CUDL_CHECK(
      content.width == styled.width && content.height == styled.height && content.channels == 3 && styled.channels == 3,
      "transfer_original_colors: need two RGB images of one size, got {}x{}x{} and {}x{}x{}", content.width,
      content.height, content.channels, styled.width, styled.height, styled.channels);
  Image out(styled.width, styled.height, 3);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      const float r = styled.at(y, x, 0), g = styled.at(y, x, 1), b = styled.at(y, x, 2);
      const float cr = content.at(y, x, 0), cg = content.at(y, x, 1), cb = content.at(y, x, 2);
      const float luma = 0.299f * r + 0.587f * g + 0.114f * b;
      const float i = 0.596f * cr - 0.274f * cg - 0.322f * cb;
      const float q = 0.211f * cr - 0.523f * cg + 0.312f * cb;
      out.at(y, x, 0) = std::clamp(luma + 0.956f * i + 0.621f * q, 0.0f, 1.0f);
      out.at(y, x, 1) = std::clamp(luma - 0.272f * i - 0.647f * q, 0.0f, 1.0f);
      out.at(y, x, 2) = std::clamp(luma - 1.106f * i + 1.703f * q, 0.0f, 1.0f);
    }
  }
  return out;
}

namespace {

using Mat3 = std::array<std::array<double, 3>, 3>;

struct Moments {
  std::array<double, 3> mean{};
  Mat3 cov{};
};

Moments moments(const Image& im) {
  Moments m;
  const double n = static_cast<double>(im.width) * im.height;
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x)
      for (int c = 0; c < 3; ++c) m.mean[c] += im.at(y, x, c) / n;
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x) {
      std::array<double, 3> d{};
      for (int c = 0; c < 3; ++c) d[c] = im.at(y, x, c) - m.mean[c];
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) m.cov[a][b] += d[a] * d[b] / n;
    }
  // A flat image (one colour) has a singular covariance: a small ridge keeps Σ^−½ finite and
  // makes the map a plain shift of the mean there.
  for (int c = 0; c < 3; ++c) m.cov[c][c] += 1e-8;
  return m;
}

// The lower-triangular L with L Lᵀ = Σ (Σ symmetric positive definite).
Mat3 cholesky(const Mat3& a) {
  Mat3 l{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j <= i; ++j) {
      double sum = a[i][j];
      for (int k = 0; k < j; ++k) sum -= l[i][k] * l[j][k];
      l[i][j] = i == j ? std::sqrt(std::max(sum, 1e-12)) : sum / l[j][j];
    }
  return l;
}

// L⁻¹ of a lower-triangular L, by forward substitution.
Mat3 lower_inverse(const Mat3& l) {
  Mat3 inv{};
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 3; ++i) {
      double sum = i == c ? 1.0 : 0.0;
      for (int k = 0; k < i; ++k) sum -= l[i][k] * inv[k][c];
      inv[i][c] = sum / l[i][i];
    }
  return inv;
}

Mat3 matmul(const Mat3& a, const Mat3& b) {
  Mat3 out{};
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 3; ++k) out[i][j] += a[i][k] * b[k][j];
  return out;
}

}  // namespace

namespace {

void check_not_empty(const char* op, const Image& style, const Image& content) {
  CUDL_CHECK(style.width > 0 && style.height > 0 && content.width > 0 && content.height > 0,
             "{}: empty image ({}x{} style, {}x{} content)", op, style.width, style.height, content.width,
             content.height);
}

}  // namespace

Image match_color_moments(const Image& style_in, const Image& content_in) {
  check_not_empty("match_color_moments", style_in, content_in);
  const Image style = to_rgb(style_in), content = to_rgb(content_in);
  const Moments s = moments(style), c = moments(content);
  // The paper's Cholesky colour transform: A = Lc Ls⁻¹ (Σ = L Lᵀ) maps the style's pixel
  // distribution to one with the content's mean and covariance (exactly, before clamping):
  // A Σs Aᵀ = Lc Ls⁻¹ Ls Lsᵀ Ls⁻ᵀ Lcᵀ = Σc.
  const Mat3 a = matmul(cholesky(c.cov), lower_inverse(cholesky(s.cov)));
  Image out(style.width, style.height, 3);
  for (int y = 0; y < style.height; ++y)
    for (int x = 0; x < style.width; ++x) {
      std::array<double, 3> d{};
      for (int k = 0; k < 3; ++k) d[k] = style.at(y, x, k) - s.mean[k];
      for (int k = 0; k < 3; ++k) {
        const double v = c.mean[k] + a[k][0] * d[0] + a[k][1] * d[1] + a[k][2] * d[2];
        out.at(y, x, k) = static_cast<float>(std::clamp(v, 0.0, 1.0));
      }
    }
  return out;
}

}  // namespace cudl

namespace cudl {

Image match_color_histogram(Context& ctx, const Image& style_in, const Image& content_in) {
  check_not_empty("match_color_histogram", style_in, content_in);
  // The linear map first carries the content's correlations between channels over (sorting sees
  // one channel at a time); sorting then gives each channel the content's exact distribution.
  const Image style = match_color_moments(style_in, content_in), content = to_rgb(content_in);
  const std::int64_t style_pixels = static_cast<std::int64_t>(style.width) * style.height;
  const std::int64_t content_pixels = static_cast<std::int64_t>(content.width) * content.height;
  Tensor source = image_to_tensor(style, ctx).reshape({3, style_pixels});
  const Tensor reference = image_to_tensor(content, ctx).reshape({3, content_pixels});
  ctx.backend().match_histograms(ctx, source, reference, source);
  return tensor_to_image(source.reshape({3, style.height, style.width}), ctx);
}

}  // namespace cudl
