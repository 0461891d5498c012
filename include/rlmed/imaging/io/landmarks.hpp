// rlmed/imaging/io/landmarks.hpp — landmark and point files: rl-medical's text format and
// elastix point sets.
//
// Design decisions:
//  * rl-medical: one landmark per line, "x,y,z" (commas and/or whitespace), voxel coordinates
//    of the image it belongs to; a dataset is a pair of list files (image paths, landmark-file
//    paths), line i of one matching line i of the other. Relative paths in a list are resolved
//    against the list file's folder (so a dataset folder can be moved as a whole); blank lines
//    and lines starting with '#' are skipped.
//  * elastix: first line "point" (world mm, LPS as ITK) or "index" (voxel (x, y, z)), second the
//    count, then one point per line; the count must match. Written back in the same layout.
//  * Every number must parse completely and be finite; errors name the file and line.
#pragma once

#include <charconv>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "rlmed/core/file.hpp"
#include "rlmed/imaging/image.hpp"

namespace rlmed::imaging {

namespace detail {

inline std::vector<std::string> text_lines(const std::filesystem::path& path, std::size_t max_bytes = std::size_t(1) << 28) {
  const auto bytes = read_file_bytes(path, max_bytes);
  std::vector<std::string> lines;
  std::string cur;
  for (std::byte b : bytes) {
    const char ch = static_cast<char>(b);
    RLMED_CHECK(ch != '\0', "'", path.string(), "' is not a text file (NUL byte on line ", lines.size() + 1, ")");
    if (ch == '\n') { lines.push_back(cur); cur.clear(); }
    else if (ch != '\r') cur += ch;
  }
  if (!cur.empty()) lines.push_back(cur);
  return lines;
}

inline std::vector<double> numbers_on_line(const std::string& line, const std::filesystem::path& path, std::size_t line_no) {
  std::vector<double> v;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == ',' || line[i] == ';')) ++i;
    if (i >= line.size()) break;
    double x = 0;
    const auto r = std::from_chars(line.data() + i, line.data() + line.size(), x);
    RLMED_CHECK(r.ec == std::errc(), "'", path.string(), "' line ", line_no, ": expected a number at '", line.substr(i, 20), "'");
    RLMED_CHECK(std::isfinite(x), "'", path.string(), "' line ", line_no, ": non-finite coordinate");
    v.push_back(x);
    i = std::size_t(r.ptr - line.data());
    RLMED_CHECK(i >= line.size() || line[i] == ' ' || line[i] == '\t' || line[i] == ',' || line[i] == ';', "'", path.string(),
                "' line ", line_no, ": garbage after a number: '", line.substr(i, 20), "'");
  }
  return v;
}

inline bool skippable(const std::string& line) {
  const auto b = line.find_first_not_of(" \t");
  return b == std::string::npos || line[b] == '#';
}

}  // namespace detail

/// rl-medical landmark file: one point (x, y[, z]) per line, voxel coordinates.
template <std::size_t Dim = 3>
std::vector<Vec<Dim>> read_landmarks(const std::filesystem::path& path) {
  std::vector<Vec<Dim>> out;
  const auto lines = detail::text_lines(path);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (detail::skippable(lines[i])) continue;
    const auto v = detail::numbers_on_line(lines[i], path, i + 1);
    RLMED_CHECK(v.size() == Dim, "'", path.string(), "' line ", i + 1, ": expected ", Dim, " coordinates, found ", v.size());
    Vec<Dim> p{};
    for (std::size_t a = 0; a < Dim; ++a) p[a] = v[a];
    out.push_back(p);
  }
  RLMED_CHECK(!out.empty(), "'", path.string(), "' holds no landmarks");
  return out;
}

template <std::size_t Dim>
void write_landmarks(const std::filesystem::path& path, const std::vector<Vec<Dim>>& points) {
  std::ostringstream os;
  os.precision(17);
  for (const auto& p : points) {
    for (std::size_t a = 0; a < Dim; ++a) os << (a ? "," : "") << p[a];
    os << '\n';
  }
  const std::string s = os.str();
  write_file_atomic(path, std::as_bytes(std::span(s.data(), s.size())));
}

/// A list file of paths (rl-medical's image_files.txt / landmark_files.txt); relative paths are
/// resolved against the list's folder.
inline std::vector<std::filesystem::path> read_file_list(const std::filesystem::path& list) {
  std::vector<std::filesystem::path> out;
  const auto lines = detail::text_lines(list);
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (detail::skippable(lines[i])) continue;
    const auto b = lines[i].find_first_not_of(" \t"), e = lines[i].find_last_not_of(" \t");
    std::filesystem::path p = lines[i].substr(b, e - b + 1);
    if (p.is_relative()) p = list.parent_path() / p;
    out.push_back(p);
  }
  RLMED_CHECK(!out.empty(), "'", list.string(), "' lists no files");
  return out;
}

/// One (image, landmarks) pair of an rl-medical dataset.
struct LandmarkCase {
  std::filesystem::path image;
  std::vector<Vec<3>> landmarks_vox;  // (x, y, z) voxel coordinates
};

/// Reads the pair of list files; every landmark file is parsed (errors name it), and both lists
/// must have the same length.
inline std::vector<LandmarkCase> read_landmark_dataset(const std::filesystem::path& image_list,
                                                       const std::filesystem::path& landmark_list) {
  const auto images = read_file_list(image_list);
  const auto marks = read_file_list(landmark_list);
  RLMED_CHECK(images.size() == marks.size(), "'", image_list.string(), "' lists ", images.size(), " images but '",
              landmark_list.string(), "' lists ", marks.size(), " landmark files");
  std::vector<LandmarkCase> out;
  for (std::size_t i = 0; i < images.size(); ++i) out.push_back({images[i], read_landmarks<3>(marks[i])});
  return out;
}

/// An elastix point set.
template <std::size_t Dim>
struct PointSet {
  bool is_index = false;     // "index": voxel (x, y, z); "point": world mm
  std::vector<Vec<Dim>> points;
};

template <std::size_t Dim = 3>
PointSet<Dim> read_elastix_points(const std::filesystem::path& path) {
  const auto lines = detail::text_lines(path);
  std::size_t i = 0;
  auto next = [&]() -> const std::string& {
    while (i < lines.size() && detail::skippable(lines[i])) ++i;
    RLMED_CHECK(i < lines.size(), "'", path.string(), "' ends early (line ", i + 1, ")");
    return lines[i++];
  };
  PointSet<Dim> ps;
  std::string kind = next();
  kind.erase(0, kind.find_first_not_of(" \t"));
  kind.erase(kind.find_last_not_of(" \t") + 1);
  RLMED_CHECK(kind == "point" || kind == "index", "'", path.string(), "': first line must be 'point' or 'index', found '", kind, "'");
  ps.is_index = kind == "index";
  const auto count_line = next();
  const auto cnt = detail::numbers_on_line(count_line, path, i);
  RLMED_CHECK(cnt.size() == 1 && cnt[0] >= 0 && cnt[0] == std::floor(cnt[0]) && cnt[0] <= 1e7, "'", path.string(),
              "': second line must be the number of points, found '", count_line, "'");
  const auto n = std::size_t(cnt[0]);
  for (std::size_t k = 0; k < n; ++k) {
    const auto& line = next();
    const auto v = detail::numbers_on_line(line, path, i);
    RLMED_CHECK(v.size() == Dim, "'", path.string(), "' line ", i, ": expected ", Dim, " coordinates, found ", v.size());
    Vec<Dim> p{};
    for (std::size_t a = 0; a < Dim; ++a) p[a] = v[a];
    ps.points.push_back(p);
  }
  while (i < lines.size()) {
    RLMED_CHECK(detail::skippable(lines[i]), "'", path.string(), "' has more points than its count ", n, " (line ", i + 1, ")");
    ++i;
  }
  return ps;
}

template <std::size_t Dim>
void write_elastix_points(const std::filesystem::path& path, const PointSet<Dim>& ps) {
  std::ostringstream os;
  os.precision(17);
  os << (ps.is_index ? "index" : "point") << '\n' << ps.points.size() << '\n';
  for (const auto& p : ps.points) {
    for (std::size_t a = 0; a < Dim; ++a) os << (a ? " " : "") << p[a];
    os << '\n';
  }
  const std::string s = os.str();
  write_file_atomic(path, std::as_bytes(std::span(s.data(), s.size())));
}

}  // namespace rlmed::imaging
