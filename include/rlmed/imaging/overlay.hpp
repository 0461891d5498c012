// rlmed/imaging/overlay.hpp — pictures people can look at: windowed slices, label contours,
// landmark markers, agent trajectories, deformation grids and montages, as 8-bit RGB [H, W, 3]
// canvases that write_png (png.hpp) saves.
//
// Design decisions:
//  * Canvases are plain Tensor<uint8_t, 3> [H, W, 3]; every drawing call takes a view and clips
//    per pixel, so markers and lines may run off the canvas. Pixel positions are (x = column,
//    y = row) integers — the same (x, y) order as voxel indices.
//  * Windowing maps [low, high] linearly onto 0..255, rounding to nearest and clamping outside;
//    NaN pixels are an rlmed::Error (there is no honest grey level for them).
//  * Lines are Bresenham (all octants, endpoints included); circles are midpoint circles. No
//    anti-aliasing and no text: what is drawn is exactly the pixels a test can predict.
//  * A contour pixel is a labelled pixel with a 4-neighbour of a different label (or the canvas
//    edge); label l is drawn in palette[(l − 1) mod size]. Landmark i uses palette[i mod size].
//  * The deformation picture draws the fixed grid's lines (every `step` pixels) through the
//    mapped points p + u(p) of a 2D field [2, H, W] (channel 0 = rows, 1 = columns), joining
//    consecutive samples with lines.
//  * A montage places tiles row-major in equal cells (the largest tile's size), top-left aligned,
//    `gap` pixels between cells, gap colour everywhere else.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "rlmed/core/error.hpp"
#include "rlmed/core/tensor.hpp"
#include "rlmed/imaging/normalize.hpp"

namespace rlmed::imaging {

using Rgb = std::array<std::uint8_t, 3>;
/// A pixel position: x = column, y = row.
using PixelXY = std::array<index_t, 2>;

/// Twelve well-separated colours (label l → entry l − 1, landmark i → entry i).
inline const std::vector<Rgb>& default_palette() {
  static const std::vector<Rgb> palette{
      {230, 25, 75},  {60, 180, 75},  {255, 225, 25}, {0, 130, 200}, {245, 130, 48},  {145, 30, 180},
      {70, 240, 240}, {240, 50, 230}, {210, 245, 60}, {250, 190, 212}, {0, 128, 128}, {170, 110, 40}};
  return palette;
}

/// An intensity window [low, high] (low < high).
struct Window {
  double low = 0.0, high = 1.0;
  static Window center_width(double center, double width) { return {center - 0.5 * width, center + 0.5 * width}; }
};

/// The [p_low, p_high] percentile window of a slice (robust display range).
template <class T>
Window percentile_window(TensorView<const T, 2> slice, double p_low = 1.0, double p_high = 99.0) {
  std::vector<T> scratch;
  const auto p = percentiles<T, 2, 2>(slice, {p_low, p_high}, {}, scratch);
  return {p[0], p[1] > p[0] ? p[1] : p[0] + 1.0};
}

/// Windowed 8-bit grey: round(255 · (v − low) / (high − low)), clamped to 0..255.
template <class T>
void window_to_u8_into(TensorView<std::uint8_t, 2> out, TensorView<const T, 2> slice, const Window& w) {
  RLMED_CHECK(out.shape() == slice.shape(), "window_to_u8_into: output shape ", out.shape(), " differs from slice shape ",
              slice.shape());
  RLMED_CHECK(std::isfinite(w.low) && std::isfinite(w.high) && w.low < w.high, "window must satisfy low < high (finite); found [",
              w.low, ", ", w.high, "]");
  const double scale = 255.0 / (w.high - w.low);
  for (index_t i = 0; i < slice.size(); ++i) {
    const double v = double(slice.data()[i]);
    RLMED_CHECK(!std::isnan(v), "window_to_u8: pixel ", i, " (flat index) is NaN");
    const double g = std::clamp(std::round((v - w.low) * scale), 0.0, 255.0);
    out.data()[i] = static_cast<std::uint8_t>(g);
  }
}

template <class T>
Tensor<std::uint8_t, 2> window_to_u8(TensorView<const T, 2> slice, const Window& w) {
  auto out = Tensor<std::uint8_t, 2>::uninitialized(slice.shape());
  window_to_u8_into<T>(out.view(), slice, w);
  return out;
}

/// Grey [H, W] → RGB [H, W, 3].
inline Tensor<std::uint8_t, 3> gray_to_rgb(TensorView<const std::uint8_t, 2> gray) {
  auto out = Tensor<std::uint8_t, 3>::uninitialized(Shape<3>{gray.extent(0), gray.extent(1), 3});
  for (index_t i = 0; i < gray.size(); ++i) out.data()[3 * i] = out.data()[3 * i + 1] = out.data()[3 * i + 2] = gray.data()[i];
  return out;
}

/// A canvas [H, W, 3] filled with one colour.
inline Tensor<std::uint8_t, 3> blank_canvas(index_t height, index_t width, Rgb colour = {0, 0, 0}) {
  RLMED_CHECK(height >= 1 && width >= 1 && height <= (1 << 16) && width <= (1 << 16), "canvas size must be in [1, 65536]; found ",
              height, "x", width);
  auto out = Tensor<std::uint8_t, 3>::uninitialized(Shape<3>{height, width, 3});
  for (index_t i = 0; i < height * width; ++i)
    for (int c = 0; c < 3; ++c) out.data()[3 * i + c] = colour[std::size_t(c)];
  return out;
}

/// The 2D slice `index` of a volume [D, H, W] across tensor axis `axis` (0: [H, W], 1: [D, W],
/// 2: [D, H]); remaining axes keep their order, nothing is flipped.
template <class T>
Tensor<T, 2> volume_slice(TensorView<const T, 3> volume, std::size_t axis, index_t index) {
  RLMED_CHECK(axis < 3, "volume_slice: axis must be 0, 1 or 2; found ", axis);
  RLMED_CHECK(index >= 0 && index < volume.extent(axis), "volume_slice: index ", index, " out of range [0, ",
              volume.extent(axis), ") on axis ", axis, " of a volume of shape ", volume.shape());
  const index_t d = volume.extent(0), h = volume.extent(1), w = volume.extent(2);
  Shape<2> s = axis == 0 ? Shape<2>{h, w} : axis == 1 ? Shape<2>{d, w} : Shape<2>{d, h};
  auto out = Tensor<T, 2>::uninitialized(s);
  for (index_t r = 0; r < s[0]; ++r)
    for (index_t c = 0; c < s[1]; ++c)
      out(r, c) = axis == 0 ? volume(index, r, c) : axis == 1 ? volume(r, index, c) : volume(r, c, index);
  return out;
}

namespace detail {
inline void check_canvas(TensorView<std::uint8_t, 3> rgb) {
  RLMED_CHECK(rgb.extent(2) == 3, "canvas must be [H, W, 3]; found ", rgb.shape());
}
}  // namespace detail

/// Sets one pixel if it lies on the canvas.
inline void put_pixel(TensorView<std::uint8_t, 3> rgb, index_t x, index_t y, Rgb colour) noexcept {
  if (x < 0 || y < 0 || y >= rgb.extent(0) || x >= rgb.extent(1)) return;
  std::uint8_t* p = rgb.data() + (y * rgb.extent(1) + x) * 3;
  p[0] = colour[0];
  p[1] = colour[1];
  p[2] = colour[2];
}

/// Bresenham line from a to b, both endpoints included, clipped to the canvas.
inline void draw_line(TensorView<std::uint8_t, 3> rgb, PixelXY a, PixelXY b, Rgb colour) {
  detail::check_canvas(rgb);
  // Trim absurd coordinates so the loop length stays bounded (points far off-canvas draw nothing new).
  const index_t limit = 4 * (rgb.extent(0) + rgb.extent(1)) + 16;
  for (auto* p : {&a, &b})
    for (auto& v : *p) v = std::clamp<index_t>(v, -limit, limit);
  index_t x = a[0], y = a[1];
  const index_t dx = std::abs(b[0] - a[0]), dy = -std::abs(b[1] - a[1]);
  const index_t sx = a[0] < b[0] ? 1 : -1, sy = a[1] < b[1] ? 1 : -1;
  index_t err = dx + dy;
  for (;;) {
    put_pixel(rgb, x, y, colour);
    if (x == b[0] && y == b[1]) break;
    const index_t e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y += sy;
    }
  }
}

/// Consecutive points joined by lines (an agent trajectory).
inline void draw_polyline(TensorView<std::uint8_t, 3> rgb, std::span<const PixelXY> points, Rgb colour) {
  detail::check_canvas(rgb);
  if (points.size() == 1) put_pixel(rgb, points[0][0], points[0][1], colour);
  for (std::size_t i = 1; i < points.size(); ++i) draw_line(rgb, points[i - 1], points[i], colour);
}

/// A '+' of arms `half_size` pixels.
inline void draw_cross(TensorView<std::uint8_t, 3> rgb, PixelXY c, index_t half_size, Rgb colour) {
  RLMED_CHECK(half_size >= 0 && half_size <= (1 << 16), "draw_cross: half size must be in [0, 65536]; found ", half_size);
  draw_line(rgb, {c[0] - half_size, c[1]}, {c[0] + half_size, c[1]}, colour);
  draw_line(rgb, {c[0], c[1] - half_size}, {c[0], c[1] + half_size}, colour);
}

/// Midpoint circle of `radius` pixels (outline).
inline void draw_circle(TensorView<std::uint8_t, 3> rgb, PixelXY c, index_t radius, Rgb colour) {
  detail::check_canvas(rgb);
  RLMED_CHECK(radius >= 0 && radius <= (1 << 16), "draw_circle: radius must be in [0, 65536]; found ", radius);
  index_t x = radius, y = 0, err = 1 - radius;
  while (x >= y) {
    for (const auto& [ox, oy] : std::array<std::array<index_t, 2>, 8>{
             {{x, y}, {y, x}, {-y, x}, {-x, y}, {-x, -y}, {-y, -x}, {y, -x}, {x, -y}}})
      put_pixel(rgb, c[0] + ox, c[1] + oy, colour);
    ++y;
    if (err < 0) {
      err += 2 * y + 1;
    } else {
      --x;
      err += 2 * (y - x) + 1;
    }
  }
}

enum class MarkerShape { cross, circle };

/// One marker per landmark, landmark i in palette[i mod size].
inline void draw_landmarks(TensorView<std::uint8_t, 3> rgb, std::span<const PixelXY> points, MarkerShape shape,
                           index_t size_px = 3, const std::vector<Rgb>& palette = default_palette()) {
  RLMED_CHECK(!palette.empty(), "draw_landmarks: the palette is empty");
  for (std::size_t i = 0; i < points.size(); ++i) {
    const Rgb colour = palette[i % palette.size()];
    if (shape == MarkerShape::cross) draw_cross(rgb, points[i], size_px, colour);
    else draw_circle(rgb, points[i], size_px, colour);
  }
}

/// Contours of every non-zero label (see the header) over the canvas.
inline void draw_contours(TensorView<std::uint8_t, 3> rgb, TensorView<const std::uint8_t, 2> labels,
                          const std::vector<Rgb>& palette = default_palette()) {
  detail::check_canvas(rgb);
  RLMED_CHECK(labels.extent(0) == rgb.extent(0) && labels.extent(1) == rgb.extent(1), "draw_contours: labels ",
              labels.shape(), " do not match the canvas ", rgb.shape());
  RLMED_CHECK(!palette.empty(), "draw_contours: the palette is empty");
  const index_t h = labels.extent(0), w = labels.extent(1);
  for (index_t y = 0; y < h; ++y)
    for (index_t x = 0; x < w; ++x) {
      const std::uint8_t l = labels(y, x);
      if (l == 0) continue;
      const bool edge = x == 0 || y == 0 || x == w - 1 || y == h - 1 || labels(y, x - 1) != l || labels(y, x + 1) != l ||
                        labels(y - 1, x) != l || labels(y + 1, x) != l;
      if (edge) put_pixel(rgb, x, y, palette[(l - 1u) % palette.size()]);
    }
}

/// The fixed grid warped by a 2D field [2, H, W] (see the header) on a canvas [H, W, 3].
template <class T>
Tensor<std::uint8_t, 3> deformation_grid_picture(TensorView<const T, 3> field, index_t step_px = 8,
                                                 Rgb line = {255, 255, 255}, Rgb background = {0, 0, 0}) {
  RLMED_CHECK(field.extent(0) == 2, "deformation_grid_picture: field must be [2, H, W]; found ", field.shape());
  RLMED_CHECK(step_px >= 1, "deformation_grid_picture: grid step must be >= 1 pixel; found ", step_px);
  const index_t h = field.extent(1), w = field.extent(2);
  auto canvas = blank_canvas(h, w, background);
  for (index_t i = 0; i < field.size(); ++i)
    RLMED_CHECK(std::isfinite(double(field.data()[i])) && std::abs(double(field.data()[i])) < 1e9,
                "deformation_grid_picture: displacement ", i, " (flat index) is ", double(field.data()[i]),
                "; expected finite values");
  auto mapped = [&](index_t y, index_t x) -> PixelXY {
    return {static_cast<index_t>(std::lround(double(x) + double(field(1, y, x)))),
            static_cast<index_t>(std::lround(double(y) + double(field(0, y, x))))};
  };
  for (index_t y = 0; y < h; y += step_px)
    for (index_t x = 0; x < w; ++x)
      draw_line(canvas.view(), mapped(y, x), mapped(y, x + 1 < w ? x + 1 : x), line);
  for (index_t x = 0; x < w; x += step_px)
    for (index_t y = 0; y < h; ++y)
      draw_line(canvas.view(), mapped(y, x), mapped(y + 1 < h ? y + 1 : y, x), line);
  return canvas;
}

/// Tiles [h_i, w_i, 3] in a grid of `columns` columns, `gap_px` pixels apart (see the header).
inline Tensor<std::uint8_t, 3> montage(std::span<const TensorView<const std::uint8_t, 3>> tiles, index_t columns,
                                       index_t gap_px = 4, Rgb gap_colour = {0, 0, 0}) {
  RLMED_CHECK(!tiles.empty(), "montage: no tiles");
  RLMED_CHECK(columns >= 1, "montage: columns must be >= 1; found ", columns);
  RLMED_CHECK(gap_px >= 0 && gap_px <= 4096, "montage: gap must be in [0, 4096] pixels; found ", gap_px);
  index_t cell_h = 0, cell_w = 0;
  for (std::size_t i = 0; i < tiles.size(); ++i) {
    RLMED_CHECK(tiles[i].extent(2) == 3 && tiles[i].extent(0) >= 1 && tiles[i].extent(1) >= 1, "montage: tile ", i,
                " must be a non-empty [H, W, 3]; found ", tiles[i].shape());
    cell_h = std::max(cell_h, tiles[i].extent(0));
    cell_w = std::max(cell_w, tiles[i].extent(1));
  }
  const auto n = static_cast<index_t>(tiles.size());
  const index_t cols = std::min(columns, n), rows = (n + cols - 1) / cols;
  auto canvas = blank_canvas(rows * cell_h + (rows - 1) * gap_px, cols * cell_w + (cols - 1) * gap_px, gap_colour);
  const index_t canvas_w = canvas.extent(1);
  for (index_t i = 0; i < n; ++i) {
    const auto& t = tiles[std::size_t(i)];
    const index_t y0 = (i / cols) * (cell_h + gap_px), x0 = (i % cols) * (cell_w + gap_px);
    for (index_t r = 0; r < t.extent(0); ++r)
      std::memcpy(canvas.data() + ((y0 + r) * canvas_w + x0) * 3, t.data() + r * t.extent(1) * 3,
                  static_cast<std::size_t>(t.extent(1) * 3));
  }
  return canvas;
}

}  // namespace rlmed::imaging
