// `seqkv bench --svg FILE`: the bench's rows as a chart, hand-written SVG (no plotting library):
// two panels, compression ratio against encode and against decode MB/s (log axis), one marker per
// row: seqkv lossless, seqkv lossy, peers; labelled with the codec and its thread count. Below
// them, when the result has a "context" curve: each preset's ratio against the tokens coded.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <vector>
#include <string>

#include <nlohmann/json.hpp>

#include <seqkv/core/error.hpp>

namespace seqkv::cli {

namespace detail {
inline std::string xml_escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '\'': out += "&apos;"; break;
            default: out += c;
        }
    }
    return out;
}
/// A panel's ratio axis (0 to ytop in halves, with grid lines), its frame and its axis titles.
template <class Y>
void ratio_panel(std::ostream& out, double x0, double y0, double x1, double y1, double ytop, Y&& y_of, const std::string& x_title) {
    char buf[640];
    for (double r = 0; r <= ytop + 1e-9; r += 0.5) {
        std::snprintf(buf, sizeof buf,
                      "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#eee'/><text x='%.1f' y='%.1f' text-anchor='end'>%.1f</text>\n",
                      x0, y_of(r), x1, y_of(r), x0 - 6, y_of(r) + 4, r);
        out << buf;
    }
    std::snprintf(buf, sizeof buf,
                  "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='none' stroke='#888'/>"
                  "<text x='%.1f' y='%.1f' text-anchor='middle'>%s</text>"
                  "<text transform='translate(%.1f,%.1f) rotate(-90)' text-anchor='middle'>compression ratio</text>\n",
                  x0, y1, x1 - x0, y0 - y1, (x0 + x1) / 2, y0 + 40, xml_escape(x_title).c_str(), x0 - 45, (y0 + y1) / 2);
    out << buf;
}
}  // namespace detail

/// Writes the chart of a `seqkv bench` result (its JSON) to path; io_error if it cannot.
inline void write_bench_svg(const std::string& path, const nlohmann::json& result, const std::string& title) {
    const auto& rows = result.at("rows");
    const bool curve = result.contains("context") && !result.at("context").empty();
    const double W = 1100, H = curve ? 1000 : 520, panel_w = 470, top = 60, bottom = 70, left0 = 70, gap = 90;
    const double H1 = 520;  // the speed panels' height
    double smin = 1e18, smax = 0, rmax = 0;
    for (const auto& r : rows) {
        for (const char* k : {"encode_MBps", "decode_MBps"}) {
            const double v = r.at(k).get<double>();
            if (v > 0 && std::isfinite(v)) smin = std::min(smin, v), smax = std::max(smax, v);
        }
        rmax = std::max(rmax, r.at("ratio").get<double>());
    }
    if (!(smax > 0)) throw usage_error("seqkv bench --svg: no speeds to plot");
    const double lx0 = std::floor(std::log10(smin)), lx1 = std::max(lx0 + 1, std::ceil(std::log10(smax)));
    const double ytop = std::ceil(rmax * 1.1 * 2) / 2;  // ratio axis from 0, in halves
    std::ofstream out(path);
    if (!out) throw io_error("cannot open '" + path + "' for writing");
    char buf[640];
    out << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H
        << "' font-family='sans-serif' font-size='12'>\n<rect width='100%' height='100%' fill='white'/>\n";
    out << "<text x='" << left0 << "' y='24' font-size='15'>" << detail::xml_escape(title) << "</text>\n";
    const char* panels[] = {"encode_MBps", "decode_MBps"};
    const char* names[] = {"encode MB/s (log scale)", "decode MB/s (log scale)"};
    for (int p = 0; p < 2; ++p) {
        const double x0 = left0 + p * (panel_w + gap), x1 = x0 + panel_w, y0 = H1 - bottom, y1 = top;
        auto X = [&](double v) { return x0 + (std::log10(v) - lx0) / (lx1 - lx0) * (x1 - x0); };
        auto Y = [&](double r) { return y0 - r / ytop * (y0 - y1); };
        for (double e = lx0; e <= lx1; ++e)
            for (int m : {1, 2, 5}) {
                const double v = m * std::pow(10.0, e);
                if (v < std::pow(10.0, lx0) || v > std::pow(10.0, lx1)) continue;
                std::snprintf(buf, sizeof buf,
                              "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s'/><text x='%.1f' y='%.1f' text-anchor='middle'>%g</text>\n",
                              X(v), y1, X(v), y0, m == 1 ? "#ccc" : "#eee", X(v), y0 + 16, v);
                out << buf;
            }
        detail::ratio_panel(out, x0, y0, x1, y1, ytop, Y, names[p]);
        for (const auto& r : rows) {
            const double v = r.at(panels[p]).get<double>();
            if (!(v > 0) || !std::isfinite(v)) continue;
            const std::string codec = r.at("codec").get<std::string>();
            const bool ours = codec.rfind("seqkv:", 0) == 0;
            const bool lossless = r.at("lossless").get<bool>();
            const char* color = !ours ? "#777" : lossless ? "#1f77b4" : "#2ca02c";
            const unsigned threads = r.at("threads").get<unsigned>();
            const std::string label = detail::xml_escape(codec + (threads > 1 ? " x" + std::to_string(threads) + "t" : ""));
            std::snprintf(buf, sizeof buf, "<circle cx='%.1f' cy='%.1f' r='5' fill='%s'/><text x='%.1f' y='%.1f' font-size='10' fill='%s'>%s</text>\n",
                          X(v), Y(r.at("ratio").get<double>()), color, X(v) + 7, Y(r.at("ratio").get<double>()) - 5, color, label.c_str());
            out << buf;
        }
    }
    if (curve) {  // ratio against context length
        const auto& ctx = result.at("context");
        double tmax = 1, cmax = 0;
        for (const auto& c : ctx) tmax = std::max(tmax, c.at("tokens").get<double>()), cmax = std::max(cmax, c.at("ratio").get<double>());
        const double x0 = left0, x1 = left0 + 2 * panel_w + gap - 260, y0 = H - bottom, y1 = H1 + 10;
        const double l0 = 5, l1 = std::max(6.0, std::ceil(std::log2(tmax))), ctop = std::ceil(cmax * 1.1 * 2) / 2;
        auto X = [&](double t) { return x0 + (std::log2(std::max(t, 1.0)) - l0) / (l1 - l0) * (x1 - x0); };
        auto Y = [&](double r) { return y0 - r / ctop * (y0 - y1); };
        for (double e = l0; e <= l1; ++e) {
            std::snprintf(buf, sizeof buf, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#eee'/><text x='%.1f' y='%.1f' text-anchor='middle'>%g</text>\n",
                          X(std::exp2(e)), y1, X(std::exp2(e)), y0, X(std::exp2(e)), y0 + 16, std::exp2(e));
            out << buf;
        }
        detail::ratio_panel(out, x0, y0, x1, y1, ctop, Y, "tokens coded (context length, log scale)");
        const char* colors[] = {"#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#e377c2"};
        std::vector<std::string> series;
        for (const auto& c : ctx) {
            const std::string key = std::filesystem::path(c.at("file").get<std::string>()).filename().string() + " " + c.at("codec").get<std::string>();
            if (std::find(series.begin(), series.end(), key) == series.end()) series.push_back(key);
        }
        for (std::size_t k = 0; k < series.size(); ++k) {
            const char* color = colors[k % 8];
            out << "<polyline fill='none' stroke='" << color << "' stroke-width='2' points='";
            for (const auto& c : ctx) {
                const std::string key = std::filesystem::path(c.at("file").get<std::string>()).filename().string() + " " + c.at("codec").get<std::string>();
                if (key != series[k]) continue;
                std::snprintf(buf, sizeof buf, "%.1f,%.1f ", X(c.at("tokens").get<double>()), Y(c.at("ratio").get<double>()));
                out << buf;
            }
            out << "'/>\n";
            std::snprintf(buf, sizeof buf, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' stroke-width='3'/><text x='%.1f' y='%.1f' font-size='11'>%s</text>\n",
                          x1 + 20, y1 + 10 + 18.0 * k, x1 + 40, y1 + 10 + 18.0 * k, color, x1 + 45, y1 + 14 + 18.0 * k, detail::xml_escape(series[k]).c_str());
            out << buf;
        }
    }
    std::snprintf(buf, sizeof buf,
                  "<text x='%.1f' y='%.1f' font-size='11'><tspan fill='#1f77b4'>&#9679; seqkv lossless</tspan>  "
                  "<tspan fill='#2ca02c'>&#9679; seqkv lossy</tspan>  <tspan fill='#777'>&#9679; peers (lossless, 1 thread)</tspan>"
                  "  — up and right is better</text>\n",
                  left0, H1 - 12);
    out << buf << "</svg>\n";
    if (!out) throw io_error("write to '" + path + "' failed");
}

}  // namespace seqkv::cli
