// Inline-SVG chart helpers (see svg.h): ticks, colours, line chart, heatmap, bar chart. Plain text
// output, no scripts; coordinates rounded to 0.1 px to keep the page small.
#include "svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <tuple>

namespace mor::svg {

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

std::string full(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// Finite min/max of all values; (0, 1) when there are none; widened when flat.
std::pair<double, double> extent(const std::vector<double>& v) {
  double lo = INFINITY, hi = -INFINITY;
  for (double x : v)
    if (std::isfinite(x)) lo = std::min(lo, x), hi = std::max(hi, x);
  if (!std::isfinite(lo)) return {0, 1};
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {
    double d = std::max(std::abs(hi) * 0.05, 1e-9);
    return {lo - d, hi + d};
  }
  return {lo, hi};
}

}  // namespace

std::string escape(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': o += "&amp;"; break;
      case '<': o += "&lt;"; break;
      case '>': o += "&gt;"; break;
      case '"': o += "&quot;"; break;
      case '\'': o += "&#39;"; break;
      default: o += c;
    }
  }
  return o;
}

std::vector<double> nice_ticks(double lo, double hi, int n) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / std::max(1, n);
  const int e = int(std::floor(std::log10(raw)));
  // The step among 1, 2, 5 (x 10^e, or 10 x 10^e) closest to the raw step, in ratio.
  double m = 1;
  for (double c : {1.0, 2.0, 5.0, 10.0})
    if (std::abs(std::log(c * std::pow(10.0, e) / raw)) < std::abs(std::log(m * std::pow(10.0, e) / raw))) m = c;
  // k * m * 10^e formed as an integer times or over a power of ten, so 3 x 0.2 prints (and compares) as 0.6.
  auto value = [&](double k) { return e >= 0 ? k * m * std::pow(10.0, e) : k * m / std::pow(10.0, -e); };
  const double step = value(1);
  std::vector<double> t;
  for (double k = std::ceil(lo / step - 1e-9); value(k) <= hi + step * 1e-9; k += 1) t.push_back(k == 0 ? 0.0 : value(k));
  return t;
}

std::string tick_label(double v) {
  char buf[32];
  const double a = std::abs(v);
  if (a == 0) return "0";
  if (a >= 1e4 && a < 1e6 && std::fmod(a, 1000) == 0) std::snprintf(buf, sizeof buf, "%gk", v / 1000);
  else if (a >= 1e-3 && a < 1e5) std::snprintf(buf, sizeof buf, "%g", v);
  else std::snprintf(buf, sizeof buf, "%.0e", v);
  return buf;
}

std::string color_scale(double t) {
  static const double a[][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
  if (!std::isfinite(t)) t = 0;
  t = std::clamp(t, 0.0, 1.0) * 4;
  const int i = std::min(3, int(t));
  const double f = t - i;
  char buf[8];
  std::snprintf(buf, sizeof buf, "#%02x%02x%02x", int(std::lround(a[i][0] + f * (a[i + 1][0] - a[i][0]))),
                int(std::lround(a[i][1] + f * (a[i + 1][1] - a[i][1]))), int(std::lround(a[i][2] + f * (a[i + 1][2] - a[i][2]))));
  return buf;
}

std::string series_color(size_t i) {
  static const char* c[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  return c[i % 10];
}

std::string line_chart(const std::string& id, const std::string& title, const std::vector<Series>& series,
                       const std::string& x_label, const std::string& y_label, int width, int height) {
  const double ml = 58, mr = 12, mt = 26, mb = 40;
  const double pw = width - ml - mr, ph = height - mt - mb;
  std::vector<double> xs, ys;
  for (const auto& s : series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (std::isfinite(s.y[i]) && std::isfinite(s.x[i])) xs.push_back(s.x[i]), ys.push_back(s.y[i]);
  const auto xe = extent(xs), ye = extent(ys);
  const double x0 = xe.first, x1 = xe.second, y0 = ye.first, y1 = ye.second;
  auto sx = [&](double x) { return ml + (x - x0) / (x1 - x0) * pw; };
  auto sy = [&](double y) { return mt + ph - (y - y0) / (y1 - y0) * ph; };
  std::ostringstream o;
  o << "<svg class=\"chart\" data-chart=\"" << escape(id) << "\" width=\"" << width << "\" height=\"" << height
    << "\" viewBox=\"0 0 " << width << " " << height << "\" xmlns=\"http://www.w3.org/2000/svg\">";
  o << "<text x=\"" << ml << "\" y=\"16\" class=\"title\">" << escape(title) << "</text>";
  o << "<rect x=\"" << ml << "\" y=\"" << mt << "\" width=\"" << num(pw) << "\" height=\"" << num(ph)
    << "\" fill=\"#fafafa\" stroke=\"#ccc\"/>";
  for (double t : nice_ticks(x0, x1, 6)) {
    o << "<line x1=\"" << num(sx(t)) << "\" x2=\"" << num(sx(t)) << "\" y1=\"" << num(mt + ph) << "\" y2=\""
      << num(mt + ph + 4) << "\" stroke=\"#333\"/><text x=\"" << num(sx(t)) << "\" y=\"" << num(mt + ph + 16)
      << "\" text-anchor=\"middle\" class=\"tick\">" << tick_label(t) << "</text>";
  }
  for (double t : nice_ticks(y0, y1, 5)) {
    o << "<line x1=\"" << num(ml - 4) << "\" x2=\"" << num(ml + pw) << "\" y1=\"" << num(sy(t)) << "\" y2=\"" << num(sy(t))
      << "\" stroke=\"#e4e4e4\"/><text x=\"" << num(ml - 6) << "\" y=\"" << num(sy(t) + 4)
      << "\" text-anchor=\"end\" class=\"tick\">" << tick_label(t) << "</text>";
  }
  o << "<text x=\"" << num(ml + pw / 2) << "\" y=\"" << height - 6 << "\" text-anchor=\"middle\" class=\"label\">"
    << escape(x_label) << "</text>";
  o << "<text transform=\"translate(12," << num(mt + ph / 2) << ") rotate(-90)\" text-anchor=\"middle\" class=\"label\">"
    << escape(y_label) << "</text>";
  for (size_t si = 0; si < series.size(); ++si) {
    const auto& s = series[si];
    const std::string col = series_color(si);
    std::string pts;
    std::ostringstream marks;
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i]) || !std::isfinite(s.x[i])) continue;
      pts += num(sx(s.x[i])) + "," + num(sy(s.y[i])) + " ";
      marks << "<circle class=\"pt\" data-chart=\"" << escape(id) << "\" data-series=\"" << escape(s.name) << "\" data-x=\""
            << full(s.x[i]) << "\" data-y=\"" << full(s.y[i]) << "\" cx=\"" << num(sx(s.x[i])) << "\" cy=\""
            << num(sy(s.y[i])) << "\" r=\"2.5\" fill=\"" << col << "\"><title>" << escape(s.name) << " "
            << full(s.x[i]) << ": " << full(s.y[i]) << "</title></circle>";
    }
    if (!pts.empty()) o << "<polyline fill=\"none\" stroke=\"" << col << "\" stroke-width=\"1.5\" points=\"" << pts << "\"/>";
    o << marks.str();
    if (series.size() > 1) {  // legend, top right, one row per series
      const double ly = mt + 12 + 13 * double(si);
      o << "<rect x=\"" << num(ml + pw - 92) << "\" y=\"" << num(ly - 8) << "\" width=\"9\" height=\"9\" fill=\"" << col
        << "\"/><text x=\"" << num(ml + pw - 79) << "\" y=\"" << num(ly) << "\" class=\"tick\">" << escape(s.name) << "</text>";
    }
  }
  if (xs.empty())
    o << "<text x=\"" << num(ml + pw / 2) << "\" y=\"" << num(mt + ph / 2) << "\" text-anchor=\"middle\" class=\"label\">no data</text>";
  o << "</svg>";
  return o.str();
}

std::string heatmap(const std::string& id, const std::string& title, const std::vector<std::string>& rows,
                    const std::vector<std::string>& cols, const std::vector<std::vector<double>>& values, double lo,
                    double hi, int cell) {
  std::vector<double> all;
  for (const auto& r : values) all.insert(all.end(), r.begin(), r.end());
  if (!(hi > lo)) std::tie(lo, hi) = extent(all);
  size_t label_chars = 4;
  for (const auto& r : rows) label_chars = std::max(label_chars, r.size());
  const double ml = 8 + 6.5 * double(std::min<size_t>(label_chars, 28)), mt = 44;
  const double gw = cell * double(cols.size()), gh = cell * double(rows.size());
  const int width = int(ml + gw + 90), height = int(mt + gh + 12);
  std::ostringstream o;
  o << "<svg class=\"heatmap\" data-chart=\"" << escape(id) << "\" width=\"" << width << "\" height=\"" << height
    << "\" viewBox=\"0 0 " << width << " " << height << "\" xmlns=\"http://www.w3.org/2000/svg\">";
  o << "<text x=\"4\" y=\"16\" class=\"title\">" << escape(title) << "</text>";
  for (size_t c = 0; c < cols.size(); ++c)
    if (cols.size() <= 40 || c % ((cols.size() + 39) / 40) == 0)
      o << "<text x=\"" << num(ml + cell * (double(c) + 0.5)) << "\" y=\"" << num(mt - 5)
        << "\" text-anchor=\"middle\" class=\"tick\">" << escape(cols[c]) << "</text>";
  for (size_t r = 0; r < rows.size(); ++r) {
    o << "<text x=\"" << num(ml - 4) << "\" y=\"" << num(mt + cell * (double(r) + 0.7)) << "\" text-anchor=\"end\" class=\"tick\">"
      << escape(rows[r]) << "</text>";
    for (size_t c = 0; c < cols.size(); ++c) {
      double v = r < values.size() && c < values[r].size() ? values[r][c] : NAN;
      if (!std::isfinite(v)) continue;
      o << "<rect class=\"cell\" data-chart=\"" << escape(id) << "\" data-row=\"" << r << "\" data-col=\"" << c
        << "\" data-value=\"" << full(v) << "\" x=\"" << num(ml + cell * double(c)) << "\" y=\"" << num(mt + cell * double(r))
        << "\" width=\"" << cell - 1 << "\" height=\"" << cell - 1 << "\" fill=\"" << color_scale((v - lo) / (hi - lo))
        << "\"><title>" << escape(rows[r]) << ", " << escape(cols[c]) << ": " << full(v) << "</title></rect>";
    }
  }
  // Colour bar: 10 steps from lo (bottom) to hi (top).
  const double bx = ml + gw + 14, bh = std::max(60.0, gh);
  for (int i = 0; i < 10; ++i)
    o << "<rect x=\"" << num(bx) << "\" y=\"" << num(mt + bh * (9 - i) / 10.0) << "\" width=\"12\" height=\"" << num(bh / 10.0 + 0.5)
      << "\" fill=\"" << color_scale((i + 0.5) / 10.0) << "\"/>";
  o << "<text x=\"" << num(bx + 16) << "\" y=\"" << num(mt + 8) << "\" class=\"tick\">" << tick_label(hi) << "</text>";
  o << "<text x=\"" << num(bx + 16) << "\" y=\"" << num(mt + bh) << "\" class=\"tick\">" << tick_label(lo) << "</text>";
  o << "</svg>";
  return o.str();
}

std::string bar_chart(const std::string& id, const std::string& title, const std::vector<std::string>& labels,
                      const std::vector<double>& values, double max_value, const std::string& unit) {
  const double ml = 190, bw = 300, row = 18, mt = 26;
  const int width = int(ml + bw + 70), height = int(mt + row * double(labels.size()) + 8);
  if (!(max_value > 0)) max_value = 1;
  std::ostringstream o;
  o << "<svg class=\"bars\" data-chart=\"" << escape(id) << "\" width=\"" << width << "\" height=\"" << height
    << "\" viewBox=\"0 0 " << width << " " << height << "\" xmlns=\"http://www.w3.org/2000/svg\">";
  o << "<text x=\"4\" y=\"16\" class=\"title\">" << escape(title) << "</text>";
  for (size_t i = 0; i < labels.size(); ++i) {
    const double v = i < values.size() ? values[i] : 0, y = mt + row * double(i);
    const double w = std::clamp(v / max_value, 0.0, 1.0) * bw;
    o << "<text x=\"" << num(ml - 6) << "\" y=\"" << num(y + 12) << "\" text-anchor=\"end\" class=\"tick\">" << escape(labels[i])
      << "</text><rect class=\"bar\" data-chart=\"" << escape(id) << "\" data-label=\"" << escape(labels[i])
      << "\" data-value=\"" << full(v) << "\" x=\"" << ml << "\" y=\"" << num(y + 2) << "\" width=\"" << num(std::max(w, 0.5))
      << "\" height=\"" << row - 4 << "\" fill=\"" << series_color(0) << "\"/><text x=\"" << num(ml + w + 4) << "\" y=\""
      << num(y + 12) << "\" class=\"tick\">" << full(std::round(v * 100) / 100) << unit << "</text>";
  }
  o << "</svg>";
  return o.str();
}

}  // namespace mor::svg
