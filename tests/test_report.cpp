// `mor report`: the page built from a run folder (trainer_state.json, router_stats.jsonl,
// mola_config.json) and an eval result, checked as text, then loaded in headless Chromium (skipped
// with a message when chromium is absent): the screenshot must not be blank, and the DOM's plotted
// points and heatmap cells must match the input files.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "allocation.h"
#include "helpers.h"
#include "report.h"
#include "routing.h"
#include "svg.h"

using namespace mor;
namespace fs = std::filesystem;

namespace {

size_t count_of(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + needle.size())) ++n;
  return n;
}

// Decoded 8-bit RGB/RGBA PNG (what Chromium writes): width, height, channels, pixels row by row.
struct Image {
  int w = 0, h = 0, ch = 0;
  std::vector<uint8_t> px;
};

uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }

Image decode_png(const std::string& bytes) {
  Image im;
  const auto* b = reinterpret_cast<const uint8_t*>(bytes.data());
  if (bytes.size() < 33 || bytes.compare(1, 3, "PNG") != 0) return im;
  std::string idat;
  int depth = 0, type = 0;
  for (size_t p = 8; p + 12 <= bytes.size();) {
    const uint32_t len = be32(b + p);
    const std::string kind = bytes.substr(p + 4, 4);
    if (kind == "IHDR") im.w = int(be32(b + p + 8)), im.h = int(be32(b + p + 12)), depth = b[p + 16], type = b[p + 17];
    if (kind == "IDAT") idat += bytes.substr(p + 8, len);
    p += 12 + len;
  }
  if (depth != 8 || (type != 2 && type != 6)) return {};
  im.ch = type == 6 ? 4 : 3;
  const size_t stride = size_t(im.w) * im.ch;
  std::vector<uint8_t> raw((stride + 1) * im.h);
  uLongf n = raw.size();
  if (uncompress(raw.data(), &n, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) != Z_OK) return {};
  im.px.assign(stride * im.h, 0);
  for (int y = 0; y < im.h; ++y) {  // undo the per-row filters
    const uint8_t f = raw[y * (stride + 1)];
    const uint8_t* in = &raw[y * (stride + 1) + 1];
    uint8_t* out = &im.px[y * stride];
    const uint8_t* up = y ? &im.px[(y - 1) * stride] : nullptr;
    for (size_t x = 0; x < stride; ++x) {
      int a = x >= size_t(im.ch) ? out[x - im.ch] : 0, u = up ? up[x] : 0, c = up && x >= size_t(im.ch) ? up[x - im.ch] : 0;
      int pred = 0;
      if (f == 1) pred = a;
      else if (f == 2) pred = u;
      else if (f == 3) pred = (a + u) / 2;
      else if (f == 4) {
        int p = a + u - c, pa = std::abs(p - a), pb = std::abs(p - u), pc = std::abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? u : c;
      }
      out[x] = uint8_t(in[x] + pred);
    }
  }
  return im;
}

// A run folder as mor train leaves it: 6 log entries (+ 2 eval), 5 router-stats records over 3 layers
// with per-layer experts, the allocation, training args; and an eval result with groups and routing.
struct Run {
  std::string dir, eval;
  size_t n_log = 6, n_stats = 5;
  std::vector<int64_t> experts = {2, 3, 4};
};

nlohmann::ordered_json stats_record(int64_t step, const Run& r) {
  nlohmann::ordered_json rec;
  rec["step"] = step;
  rec["tokens"] = 100;
  auto layers = nlohmann::ordered_json::array();
  for (size_t l = 0; l < r.experts.size(); ++l) {
    const int64_t E = r.experts[l];
    auto mods = nlohmann::ordered_json::array();
    for (std::string name : {"q_proj", "up_proj"}) {
      std::vector<double> load(E);
      for (int64_t e = 0; e < E; ++e) load[e] = (1.0 + double((e + step + l) % E)) / double(E * (E + 1) / 2);
      mods.push_back({{"module", name}, {"router", l == 2 ? "top_p" : "top_k"}, {"experts", E}, {"top_k", 1},
                      {"counts", std::vector<int64_t>(E, 10)}, {"load", load}, {"prob", load},
                      {"entropy", 0.5 + 0.01 * double(step)}, {"entropy_norm", 0.8 - 0.01 * double(step + l)},
                      {"imbalance", 1.2}, {"active", 1.0 + 0.1 * double(l)}});
    }
    layers.push_back({{"layer", int64_t(l)}, {"balance_loss", 1.0 + 0.01 * double(step)}, {"modules", mods}});
  }
  rec["layers"] = layers;
  return rec;
}

Run make_run(const std::string& name) {
  Run r;
  r.dir = test::scratch_dir(name);
  nlohmann::json log = nlohmann::json::array();
  for (size_t i = 1; i <= r.n_log; ++i) {
    log.push_back({{"loss", 3.0 - 0.2 * double(i)}, {"learning_rate", 1e-4 * double(i)}, {"grad_norm", 0.5 + 0.1 * double(i)},
                   {"tokens_per_second", 1000.0 + 10 * double(i)}, {"aux_loss", 3.1}, {"step", int64_t(i) * 2}, {"epoch", 0.1}});
    if (i % 3 == 0) log.push_back({{"eval_loss", 2.9 - 0.1 * double(i)}, {"step", int64_t(i) * 2}});
  }
  log.push_back({{"train_runtime", 5.0}, {"step", 12}});
  test::write_file(r.dir + "/trainer_state.json", nlohmann::json{{"log_history", log}, {"global_step", 12}}.dump(2));
  std::string lines;
  for (size_t i = 0; i < r.n_stats; ++i) lines += stats_record(int64_t(i + 1) * 2, r).dump() + "\n";
  test::write_file(r.dir + "/router_stats.jsonl", lines);
  auto cfg = ModelConfig::llama(32, 48, 3, 4, 2, 64);
  auto alloc = Allocation::from_flags(cfg, "q_proj,up_proj", "2,3,4", "4", "1", 16, 0.05);
  RoutingFlags rf;
  rf.router = "top_k,top_k,top_p";
  rf.apply(alloc);
  test::write_file(r.dir + "/mola_config.json", alloc.to_json().dump(2));
  test::write_file(r.dir + "/training_args.json", R"({"base_model": "stories<260K>", "learning_rate": 0.0003})");
  nlohmann::ordered_json ev;
  ev["acc"] = 62.5;
  ev["correct"] = 5;
  ev["len"] = 8;
  ev["by_group"] = {{"subject", {{"language science", {{"acc", 50.0}, {"len", 4}}}, {"natural science", {{"acc", 75.0}, {"len", 4}}}}},
                    {"grade", {{"grade2", {{"acc", 100.0}, {"len", 2}}}, {"grade5", {{"acc", 50.0}, {"len", 6}}}}}};
  ev["router_stats"] = {{"all", stats_record(1, r)},
                        {"subject", {{"language science", stats_record(2, r)}, {"natural science", stats_record(3, r)}}}};
  r.eval = r.dir + "/result.json";
  test::write_file(r.eval, ev.dump());
  return r;
}

std::string find_chromium() {
  for (const char* c : {"chromium", "chromium-browser", "google-chrome"}) {
    std::string cmd = std::string("command -v ") + c + " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) == 0) return c;
  }
  return "";
}

}  // namespace

TEST(ReportPage, SvgHelpers) {
  EXPECT_EQ(svg::nice_ticks(0, 1, 5), (std::vector<double>{0, 0.2, 0.4, 0.6, 0.8, 1.0}));
  EXPECT_EQ(svg::nice_ticks(3, 97, 4), (std::vector<double>{20, 40, 60, 80}));
  EXPECT_EQ(svg::tick_label(0.0003), "3e-04");
  EXPECT_EQ(svg::tick_label(12000), "12k");
  EXPECT_EQ(svg::color_scale(0), "#440154");
  EXPECT_EQ(svg::color_scale(1), "#fde725");
  EXPECT_EQ(svg::escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
  auto chart = svg::line_chart("c", "t", {{"s", {1, 2, 3}, {1, NAN, 2}}}, "x", "y");
  EXPECT_EQ(count_of(chart, "class=\"pt\""), 2u);  // the NaN point is skipped
  auto hm = svg::heatmap("h", "t", {"a", "b"}, {"0", "1", "2"}, {{0.1, 0.2, NAN}, {0.3, 0.4, 0.5}});
  EXPECT_EQ(count_of(hm, "class=\"cell\""), 5u);
  EXPECT_EQ(snapshot_indices(10), (std::vector<size_t>{2, 4, 6, 9}));
  EXPECT_EQ(snapshot_indices(3), (std::vector<size_t>{0, 1, 2}));
}

TEST(ReportPage, SelfContainedPageWithEveryPart) {
  auto r = make_run("report_text");
  auto html = report_html({r.dir, {r.eval}, ""});
  EXPECT_EQ(html.find("src="), std::string::npos);  // nothing loaded from anywhere
  EXPECT_EQ(html.find("href="), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  EXPECT_NE(html.find("stories&lt;260K&gt;"), std::string::npos);  // escaped
  EXPECT_EQ(count_of(html, "class=\"pt\" data-chart=\"loss\""), r.n_log);
  EXPECT_EQ(count_of(html, "class=\"pt\" data-chart=\"eval_loss\""), 2u);
  EXPECT_EQ(count_of(html, "class=\"pt\" data-chart=\"entropy\""), r.n_stats * 3);
  EXPECT_EQ(count_of(html, "class=\"pt\" data-chart=\"active\""), r.n_stats * 3);  // a top-p layer
  EXPECT_EQ(count_of(html, "class=\"alloc-row\""), 6u);
  EXPECT_NE(html.find("top_p p=0.8"), std::string::npos);
  EXPECT_EQ(count_of(html, "class=\"bar\" data-chart=\"eval0-subject\""), 2u);
  EXPECT_EQ(count_of(html, "class=\"cell\" data-chart=\"eval0-route-subject\""), 2u * (2 + 3 + 4));
  // Snapshots 2, 3, 4 (indices 1..4 spread: 1, 2, 3, 4 -> steps 4, 6, 8, 10): 2+3+4 cells each.
  for (int step : {4, 6, 8, 10})
    for (std::string m : {"mean", "q_proj", "up_proj"})
      EXPECT_EQ(count_of(html, "class=\"cell\" data-chart=\"load-" + std::to_string(step) + "-" + m + "\""), 9u) << step << m;
  EXPECT_EQ(count_of(html, "data-chart=\"load-2-mean\""), 0u);
  // Errors name the file.
  auto empty = test::scratch_dir("report_empty");
  EXPECT_NE(test::error_of([&] { report_html({empty, {}, ""}); }).find("holds no trainer_state.json"), std::string::npos);
  test::write_file(empty + "/router_stats.jsonl", "{\"step\": 1}\n{oops\n");
  EXPECT_NE(test::error_of([&] { report_html({empty, {}, ""}); }).find("router_stats.jsonl:2: not valid JSON"),
            std::string::npos);
}

TEST(ReportPage, RendersInHeadlessChromium) {
  const std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium not installed (apt-get install chromium; scripts/setup.sh does it optionally)";
  auto r = make_run("report_chromium");
  auto run = test::run_mor("report " + r.dir + " --eval " + r.eval + " --out " + r.dir + "/page.html");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::string page = r.dir + "/page.html", shot = r.dir + "/shot.png", dom = r.dir + "/dom.html";
  const std::string flags = " --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
                            "--disable-component-update --disable-sync --user-data-dir=" + test::scratch_dir("chromium_profile") +
                            " --window-size=1200,2000 ";
  ASSERT_EQ(std::system((chromium + flags + "--screenshot=" + shot + " file://" + page + " >/dev/null 2>&1").c_str()), 0);
  ASSERT_EQ(std::system((chromium + flags + "--dump-dom file://" + page + " > " + dom + " 2>/dev/null").c_str()), 0);
  auto im = decode_png(test::read_file(shot));
  ASSERT_EQ(im.w, 1200);
  ASSERT_EQ(im.h, 2000);
  std::set<uint32_t> colours;
  size_t non_white = 0;
  for (size_t i = 0; i + 2 < im.px.size(); i += im.ch) {
    uint32_t c = uint32_t(im.px[i]) << 16 | uint32_t(im.px[i + 1]) << 8 | im.px[i + 2];
    colours.insert(c);
    non_white += c != 0xffffff;
  }
  EXPECT_GT(colours.size(), 50u);                      // charts, heatmap colours, text
  EXPECT_GT(non_white, size_t(im.w) * im.h / 50);      // not a blank page
  const std::string d = test::read_file(dom);
  EXPECT_EQ(count_of(d, "class=\"pt\" data-chart=\"loss\""), r.n_log);
  EXPECT_EQ(count_of(d, "class=\"pt\" data-chart=\"entropy\""), r.n_stats * 3);
  EXPECT_EQ(count_of(d, "class=\"cell\" data-chart=\"load-10-mean\""), 9u);
  EXPECT_EQ(count_of(d, "class=\"bar\" data-chart=\"eval0-grade\""), 2u);
}
