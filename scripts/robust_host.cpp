// Host build of the robust criterion's bound arithmetic (gpu/kernels/robust_bound.cuh, the
// text NVRTC compiles) with the 8-lane structure of robust.cu's rb_page_bound / rob_tok
// replayed on arrays (lane j's value combined with lane j ^ off's, as __shfl_xor_sync does),
// checked bit for bit against the CPU's bounds (certificate/bounds.rs) dumped by the ignored
// test `certificate::bounds::tests::robust_device_reference_dump`. Built and run by
// scripts/robust_host_check.py (g++ -O2 -ffp-contract=off: every operation rounds once, as
// the explicit _rn intrinsics do on the device).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#define RB_HOST 1
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline float __double2float_rn(double x) { return (float)x; }

using std::isfinite;
#include "../crates/entmaxkv/src/gpu/kernels/robust_bound.cuh"

static std::vector<std::string> split(const std::string& s, char c) {
    std::vector<std::string> v;
    std::string cur;
    for (char ch : s) {
        if (ch == c) {
            v.push_back(cur);
            cur.clear();
        } else {
            cur += ch;
        }
    }
    v.push_back(cur);
    return v;
}
static float hf(const std::string& s) { return rb_bits_f((unsigned)std::stoul(s, nullptr, 16)); }
static double hd(const std::string& s) { return rb_bits_d(std::stoull(s, nullptr, 16)); }

// rb_page_bound of robust.cu with the lanes as arrays.
static RbBound page_bound(int d, const float* lo, const float* hi, const float* q, float scale, float inv_levels,
                          double gam, double lv, float qmax, float inv_qmax, bool sketch, short* qw) {
    auto ld = [&](int c, float& l, float& h, float& qc) {
        l = lo[c];
        h = hi[c];
        qc = q[c];
    };
    RbLane s[8];
    for (int j = 0; j < 8; ++j) s[j] = rb_lane_sums(j, d, scale, inv_levels, ld);
    for (int k = 0; k < 3; ++k) {
        const int off = rb_sum_off(d, k);
        RbLane n[8];
        for (int j = 0; j < 8; ++j) {
            const RbLane& a = s[j];
            const RbLane& o = s[j ^ off];
            n[j].b = __fadd_rn(a.b, o.b);
            n[j].p = __fadd_rn(a.p, o.p);
            n[j].m = __fadd_rn(a.m, o.m);
            n[j].mg = __fadd_rn(a.mg, o.mg);
            n[j].mx = a.mx > o.mx ? a.mx : o.mx;
            n[j].bad = a.bad | o.bad;
        }
        for (int j = 0; j < 8; ++j) s[j] = n[j];
    }
    for (int j = 1; j < 8; ++j)
        if (memcmp(&s[j], &s[0], sizeof(RbLane)) != 0) {
            fprintf(stderr, "lanes differ after the page sums\n");
            exit(2);
        }
    RbBound r = rb_bound_pre(s[0].bad == 0, sketch, s[0].b, s[0].p, s[0].m, s[0].mg, s[0].mx, gam, lv, qmax,
                             inv_qmax);
    if (r.kind != 2) {
        for (int c = 0; c < d; ++c) qw[c] = 0;
        return r;
    }
    float e[8];
    for (int j = 0; j < 8; ++j) e[j] = rb_lane_quant(j, d, scale, inv_levels, r.inv, r.sc, ld, qw);
    float et;
    if (rb_e_tree(d)) {
        const int offs[3] = {4, 2, 1};
        for (int k = 0; k < 3; ++k) {
            float n[8];
            for (int j = 0; j < 8; ++j) n[j] = __fadd_rn(e[j], e[j ^ offs[k]]);
            memcpy(e, n, sizeof(e));
        }
        for (int j = 1; j < 8; ++j)
            if (rb_f_bits(e[j]) != rb_f_bits(e[0])) {
                fprintf(stderr, "lanes differ after the error sum\n");
                exit(2);
            }
        et = e[0];
    } else {
        et = e[0];
        for (int j = 1; j < 8; ++j) et = __fadd_rn(et, e[j]);
    }
    rb_bound_finish(r, s[0].p, s[0].m, s[0].mg, (double)et, gam, lv);
    if (r.kind == 0)
        for (int c = 0; c < d; ++c) qw[c] = 0;
    return r;
}

int main(int argc, char** argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: robust_host REF\n");
        return 2;
    }
    std::ifstream in(argv[1]);
    std::string line;
    long cases = 0, bad = 0, tokens = 0;
    while (std::getline(in, line)) {
        std::istringstream ss(line);
        int d, bits, ps;
        std::string sl, s0s, los, his, ws, sks, blo, bhi, qs, ups, lws;
        ss >> d >> bits >> ps >> sl >> s0s >> los >> his >> ws >> sks >> blo >> bhi >> qs >> ups >> lws;
        const float slope = hf(sl);
        const double s0 = hd(s0s);
        std::vector<float> lo, hi, w;
        for (auto& x : split(los, ',')) lo.push_back(hf(x));
        for (auto& x : split(his, ',')) hi.push_back(hf(x));
        for (auto& x : split(ws, ',')) w.push_back(hf(x));
        std::vector<unsigned char> sk;
        for (size_t i = 0; i + 1 < sks.size(); i += 2) sk.push_back((unsigned char)std::stoul(sks.substr(i, 2), nullptr, 16));
        // The constants as gpu/decode.rs passes them (bounds.rs device_consts).
        const double U = 1.0 / 16777216.0;
        const double n = (double)(d + 2);
        const double gam = n * U / (1.0 - n * U);
        const unsigned levels = bits > 0 ? (1u << bits) - 1u : 1u;
        const double lv = (double)levels;
        long long lim = 2147483647LL / ((long long)d * (long long)levels);
        const float qmax = (float)(lim < 32767 ? lim : 32767);
        const float inv_qmax = 1.0f / qmax;
        const float inv_levels = 1.0f / (float)levels;
        // The dump holds scaled queries: scale 1 (fl(x·1) = x).
        std::vector<short> qw(d);
        RbBound r = page_bound(d, lo.data(), hi.data(), w.data(), 1.0f, inv_levels, gam, lv, qmax, inv_qmax,
                               bits > 0, qw.data());
        ++cases;
        bool ok = true;
        auto want_lo = hd(blo), want_hi = hd(bhi);
        if (memcmp(&want_lo, &r.box_lo, 8) != 0 || memcmp(&want_hi, &r.box_hi, 8) != 0) {
            fprintf(stderr, "case %ld (d %d bits %d): box [%.17g, %.17g] vs CPU [%.17g, %.17g]\n", cases, d, bits,
                    r.box_lo, r.box_hi, want_lo, want_hi);
            ok = false;
        }
        auto qv = split(qs, ',');
        for (int c = 0; c < d && ok; ++c) {
            const short wq = (short)std::stoul(qv[c], nullptr, 16);
            if (wq != qw[c]) {
                fprintf(stderr, "case %ld (d %d bits %d): q[%d] %d vs CPU %d\n", cases, d, bits, c, qw[c], wq);
                ok = false;
            }
        }
        auto uv = split(ups, ','), lv2 = split(lws, ',');
        const int rb = (d * bits + 7) / 8;
        for (int t = 0; t < ps && ok; ++t) {
            const int s = (bits > 0 && r.kind == 2) ? rb_sketch_dot(sk.data() + (size_t)t * rb, bits, qw.data(), d) : 0;
            float up;
            double lw;
            // x = position − q_pos = s0 + t (exact), as rob_tok forms it.
            rb_token(r, s, (double)slope, s0 + (double)t, &up, &lw);
            const float wu = hf(uv[t]);
            const double wl = hd(lv2[t]);
            ++tokens;
            if (rb_f_bits(up) != rb_f_bits(wu) || memcmp(&lw, &wl, 8) != 0) {
                fprintf(stderr, "case %ld (d %d bits %d) token %d: [%.17g, %.9g] vs CPU [%.17g, %.9g]\n", cases, d,
                        bits, t, lw, up, wl, wu);
                ok = false;
            }
        }
        bad += !ok;
    }
    printf("%ld cases, %ld tokens: %ld differ\n", cases, tokens, bad);
    return bad == 0 && cases > 0 ? 0 : 1;
}
