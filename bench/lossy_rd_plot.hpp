// Hand-written SVG rate–distortion plot for bench_lossy: x = bits per element (all side
// information included, log2 axis), y = attention-output relative error (log10 axis).
// Baselines are labelled markers; seqkv configurations are polylines (one per series).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace seqkv::bench {

/// One measured configuration.
struct rd_point {
    std::string series;  // "baseline" for per-vector quantizers, else the seqkv series name
    std::string label;
    double bits = 0;        // bits per element, side information included
    double attn_error = 0;  // attention-output relative error
    double attn_kl = 0;     // nats per query
    double snr_k = 0, snr_v = 0;
    double encode_mb_s = 0, decode_mb_s = 0;
};

/// Writes the plot; returns false if the file cannot be written.
inline bool write_rd_svg(const std::string& path, const std::vector<rd_point>& points, const std::string& title) {
    const double W = 900, H = 600, left = 80, right = 220, top = 50, bottom = 60;
    double xmin = 1e9, xmax = 0, ymin = 1e9, ymax = 0;
    for (const auto& p : points) {
        if (p.bits <= 0 || p.attn_error <= 0) continue;
        xmin = std::min(xmin, p.bits), xmax = std::max(xmax, p.bits);
        ymin = std::min(ymin, p.attn_error), ymax = std::max(ymax, p.attn_error);
    }
    if (xmax <= 0) return false;
    const double lx0 = std::floor(std::log2(xmin)), lx1 = std::ceil(std::log2(xmax));
    const double ly0 = std::floor(std::log10(ymin)), ly1 = std::ceil(std::log10(ymax));
    auto X = [&](double b) { return left + (std::log2(b) - lx0) / std::max(1e-9, lx1 - lx0) * (W - left - right); };
    auto Y = [&](double e) { return H - bottom - (std::log10(e) - ly0) / std::max(1e-9, ly1 - ly0) * (H - top - bottom); };
    std::ofstream out(path);
    if (!out) return false;
    char buf[512];
    out << "<svg xmlns='http://www.w3.org/2000/svg' width='" << W << "' height='" << H << "' font-family='sans-serif' font-size='12'>\n";
    out << "<rect width='100%' height='100%' fill='white'/>\n";
    out << "<text x='" << left << "' y='25' font-size='15'>" << title << "</text>\n";
    for (double lx = lx0; lx <= lx1; ++lx) {
        std::snprintf(buf, sizeof buf, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/><text x='%.1f' y='%.1f' text-anchor='middle'>%g</text>\n",
                      X(std::exp2(lx)), top, X(std::exp2(lx)), H - bottom, X(std::exp2(lx)), H - bottom + 18, std::exp2(lx));
        out << buf;
    }
    for (double ly = ly0; ly <= ly1; ++ly) {
        std::snprintf(buf, sizeof buf, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='#ddd'/><text x='%.1f' y='%.1f' text-anchor='end'>1e%d</text>\n",
                      left, Y(std::pow(10, ly)), W - right, Y(std::pow(10, ly)), left - 6, Y(std::pow(10, ly)) + 4, int(ly));
        out << buf;
    }
    out << "<text x='" << (left + W - right) / 2 << "' y='" << H - 15 << "' text-anchor='middle'>bits per element (all side information included, log scale)</text>\n";
    out << "<text transform='translate(20," << (top + H - bottom) / 2 << ") rotate(-90)' text-anchor='middle'>attention-output relative error (real queries)</text>\n";
    const char* colors[] = {"#1f77b4", "#2ca02c", "#9467bd", "#d62728", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
    std::map<std::string, std::vector<rd_point>> series;
    for (const auto& p : points)
        if (p.bits > 0 && p.attn_error > 0) series[p.series].push_back(p);
    int k = 0, legend = 0;
    for (auto& [name, pts] : series) {
        if (name == "baseline") {
            for (const auto& p : pts) {
                std::snprintf(buf, sizeof buf, "<rect x='%.1f' y='%.1f' width='8' height='8' fill='black'/><text x='%.1f' y='%.1f' font-size='11'>%s</text>\n",
                              X(p.bits) - 4, Y(p.attn_error) - 4, X(p.bits) + 7, Y(p.attn_error) - 6, p.label.c_str());
                out << buf;
            }
            continue;
        }
        std::sort(pts.begin(), pts.end(), [](const rd_point& a, const rd_point& b) { return a.bits < b.bits; });
        const char* color = colors[k++ % 8];
        out << "<polyline fill='none' stroke='" << color << "' stroke-width='2' points='";
        for (const auto& p : pts) {
            std::snprintf(buf, sizeof buf, "%.1f,%.1f ", X(p.bits), Y(p.attn_error));
            out << buf;
        }
        out << "'/>\n";
        for (const auto& p : pts) {
            std::snprintf(buf, sizeof buf, "<circle cx='%.1f' cy='%.1f' r='3' fill='%s'/>\n", X(p.bits), Y(p.attn_error), color);
            out << buf;
        }
        std::snprintf(buf, sizeof buf, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' stroke='%s' stroke-width='3'/><text x='%.1f' y='%.1f'>%s</text>\n",
                      W - right + 10, top + 20.0 * legend, W - right + 30, top + 20.0 * legend, color, W - right + 35,
                      top + 20.0 * legend + 4, name.c_str());
        out << buf;
        ++legend;
    }
    out << "<rect x='" << W - right + 16 << "' y='" << top + 20.0 * legend - 4 << "' width='8' height='8' fill='black'/><text x='"
        << W - right + 35 << "' y='" << top + 20.0 * legend + 4 << "'>per-vector baselines</text>\n";
    out << "</svg>\n";
    return bool(out);
}

/// log-log interpolation of a series' bits at a given error (series sorted by bits); < 0 if out of range.
inline double bits_at_error(std::vector<rd_point> series, double error) {
    std::sort(series.begin(), series.end(), [](const rd_point& a, const rd_point& b) { return a.bits < b.bits; });
    for (std::size_t i = 0; i + 1 < series.size(); ++i) {
        const auto &a = series[i], &b = series[i + 1];
        const double ea = a.attn_error, eb = b.attn_error;
        if ((ea >= error && eb <= error) || (ea <= error && eb >= error)) {
            if (ea == eb) return a.bits;
            const double f = (std::log(error) - std::log(ea)) / (std::log(eb) - std::log(ea));
            return std::exp(std::log(a.bits) + f * (std::log(b.bits) - std::log(a.bits)));
        }
    }
    return -1;
}

}  // namespace seqkv::bench
