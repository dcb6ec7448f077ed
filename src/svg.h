// Small inline-SVG chart helpers for `mor report`: nice axis ticks, a line chart with point markers,
// a heatmap with a colour scale, and a horizontal bar chart. Every plotted element carries a class
// and data attributes (class "pt" / "cell" / "bar", data-chart=ID) so tests can count them in the DOM.
#pragma once
#include <string>
#include <vector>

namespace mor::svg {

// &, <, >, " and ' escaped for HTML text and attribute values.
std::string escape(const std::string& s);

// About `n` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten).
std::vector<double> nice_ticks(double lo, double hi, int n = 5);
// A short tick label: "0.5", "1e-04", "12k".
std::string tick_label(double v);

// Colour for t in [0, 1] on a perceptual scale (viridis anchors, linearly interpolated): "#rrggbb".
std::string color_scale(double t);
// One of 10 distinct series colours.
std::string series_color(size_t i);

struct Series {
  std::string name;
  std::vector<double> x, y;  // same length; non-finite y values are skipped
};

// A line chart (one polyline and one <circle class="pt"> per finite point per series), axes with
// ticks, axis labels and a legend. id names the chart in data-chart.
std::string line_chart(const std::string& id, const std::string& title, const std::vector<Series>& series,
                       const std::string& x_label, const std::string& y_label, int width = 520, int height = 260);

// A heatmap: rows x cols; values[r][c] in data units, NaN = no cell (e.g. a layer with fewer experts).
// Colour from lo..hi (min..max of the finite values when lo >= hi). One <rect class="cell"> per finite
// value with data-row, data-col, data-value; a colour bar beside it.
std::string heatmap(const std::string& id, const std::string& title, const std::vector<std::string>& row_labels,
                    const std::vector<std::string>& col_labels, const std::vector<std::vector<double>>& values,
                    double lo = 0, double hi = 0, int cell = 18);

// Horizontal bars (value in 0..max_value), one <rect class="bar"> each with data-label, data-value.
std::string bar_chart(const std::string& id, const std::string& title, const std::vector<std::string>& labels,
                      const std::vector<double>& values, double max_value, const std::string& unit = "");

}  // namespace mor::svg
