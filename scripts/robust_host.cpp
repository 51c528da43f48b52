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

// The token dot as rob_tok forms it: dp4a on packed weights for 4-bit rows with d a multiple
// of 8, else rb_sketch_dot; both must give the same int (checked on every call).
static long dot_mismatches = 0;
static int dev_dot(const unsigned char* row, int bits, const short* qw, int d) {
    const int s = rb_sketch_dot(row, bits, qw, d);
    if (bits == 4 && d % 8 == 0) {
        std::vector<unsigned> pw((size_t)d / 2);
        for (int j = 0; j < d / 8; ++j) {
            unsigned w[4];
            rb_pack4(qw, j, w);
            for (int k = 0; k < 4; ++k) pw[(size_t)4 * j + k] = w[k];
        }
        unsigned words[64];
        memcpy(words, row, (size_t)d / 2);
        const int s4 = rb_sketch_dot4_packed(words, pw.data(), d / 8);
        if (s4 != s) ++dot_mismatches;
        return s4;
    }
    return s;
}

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

struct Consts {
    double gam, lv;
    float qmax, inv_qmax, inv_levels;
};
static Consts consts(int d, int bits) {
    // As gpu/decode.rs passes them (bounds.rs device_consts).
    const double U = 1.0 / 16777216.0;
    const double n = (double)(d + 2);
    Consts c;
    c.gam = n * U / (1.0 - n * U);
    const unsigned levels = bits > 0 ? (1u << bits) - 1u : 1u;
    c.lv = (double)levels;
    long long lim = 2147483647LL / ((long long)d * (long long)levels);
    c.qmax = (float)(lim < 32767 ? lim : 32767);
    c.inv_qmax = 1.0f / c.qmax;
    c.inv_levels = 1.0f / (float)levels;
    return c;
}

// The selection of robust.cu (rob_box, rob_tok1, rob_solve1, rob_tok2, rob_solve2, rob_pack)
// replayed for one task on the host, with the CPU's τ̂ given; compared with the CPU's kept
// pages and T. α = 1 (the softmax mode: rob_box, rob_bmax, rob_tok1, rob_solve1, rob_tok2,
// rob_solve2, rob_pack with softmax = 1): no τ̂; compared with the CPU's kept pages and L.
static int sel_main(const char* path) {
    std::ifstream in(path);
    std::string line;
    long tasks = 0, bad = 0, pages_total = 0, bounded_total = 0, pass2_total = 0, kept_total = 0, heads = 0,
         trusted = 0;
    // Softmax-mode tasks, their closed pages, kept pages and pass-2 pages.
    long sm_tasks = 0, sm_pages = 0, sm_kept = 0, sm_pass2 = 0;
    double worst_t = 0.0;
    while (std::getline(in, line)) {
        std::istringstream ss(line);
        int d, bits, ps, closed, tg, sinks;
        std::string als, qps, ths, qs, sls, rows, sks, kept_s, ts;
        ss >> d >> bits >> ps >> als >> closed >> tg >> sinks >> qps >> ths >> qs >> sls >> rows >> sks >> kept_s >> ts;
        const double alpha = hd(als), q_pos = hd(qps);
        const bool softmax = alpha == 1.0;
        const double a = alpha - 1.0, beta = softmax ? 1.0 : 1.0 / a;
        const double kr = std::round(beta);
        const int kint = (kr >= 1.0 && kr <= 3.0 && std::fabs(beta - kr) <= 1e-12 * kr) ? (int)kr : 0;
        const double bt = kint ? (double)kint : beta;
        std::vector<double> that, tcpu;
        for (auto& x : split(ths, ',')) that.push_back(hd(x));
        for (auto& x : split(ts, ',')) tcpu.push_back(hd(x));
        std::vector<float> q, sl;
        for (auto& x : split(qs, ',')) q.push_back(hf(x));
        for (auto& x : split(sls, ',')) sl.push_back(hf(x));
        auto rv = split(rows, ';');
        std::vector<float> lo((size_t)closed * d), hi((size_t)closed * d);
        for (int i = 0; i < closed; ++i) {
            auto l = split(rv[2 * i], ','), h = split(rv[2 * i + 1], ',');
            for (int c = 0; c < d; ++c) {
                lo[(size_t)i * d + c] = hf(l[c]);
                hi[(size_t)i * d + c] = hf(h[c]);
            }
        }
        std::vector<unsigned char> sk;
        if (sks != "-")
            for (size_t i = 0; i + 1 < sks.size(); i += 2) sk.push_back((unsigned char)std::stoul(sks.substr(i, 2), nullptr, 16));
        const int rb = (d * bits + 7) / 8;
        const Consts K = consts(d, bits);
        std::vector<int> cpu_kept;
        if (kept_s != "-")
            for (auto& x : split(kept_s, ',')) cpu_kept.push_back(std::stoi(x));
        // rob_box (the kernels' scale is applied to unscaled q; the dump holds fl(scale·q):
        // scale 1 here).
        std::vector<double> box_hi((size_t)tg * closed), best((size_t)tg * closed), mass((size_t)tg * closed);
        std::vector<float> lmax((size_t)tg * closed), lows((size_t)tg * closed * ps);
        std::vector<short> qw(d);
        for (int i = 0; i < closed; ++i)
            for (int g = 0; g < tg; ++g) {
                RbBound r = page_bound(d, &lo[(size_t)i * d], &hi[(size_t)i * d], &q[(size_t)g * d], 1.0f, K.inv_levels,
                                       K.gam, K.lv, K.qmax, K.inv_qmax, false, qw.data());
                const double slope = (double)sl[g];
                const double start = (double)i * ps;
                const double b0 = __dmul_rn(slope, start - q_pos);
                const double b1 = __dmul_rn(slope, (start + (double)(ps - 1)) - q_pos);
                box_hi[(size_t)g * closed + i] = __dadd_rn(r.box_hi, std::fmax(b0, b1));
            }
        std::vector<int> want(closed, 0);
        auto tok = [&](int pass, int i, int g) {
            RbBound r = page_bound(d, &lo[(size_t)i * d], &hi[(size_t)i * d], &q[(size_t)g * d], 1.0f, K.inv_levels,
                                   K.gam, K.lv, K.qmax, K.inv_qmax, bits > 0, qw.data());
            float um[8], lm[8];
            double ms[8];
            for (int sub = 0; sub < 8; ++sub) {
                um[sub] = -INFINITY;
                lm[sub] = -INFINITY;
                ms[sub] = 0.0;
                for (int t = sub; t < ps; t += 8) {
                    const int s = (bits > 0 && r.kind == 2) ? dev_dot(sk.data() + ((size_t)i * ps + t) * rb, bits, qw.data(), d) : 0;
                    float up;
                    double lw;
                    rb_token(r, s, (double)sl[g], (double)(i * ps + t) - q_pos, &up, &lw);
                    const float lf = rb_f32_down(lw);
                    lows[((size_t)g * closed + i) * ps + t] = lf;
                    um[sub] = um[sub] > up ? um[sub] : up;
                    lm[sub] = lm[sub] > lf ? lm[sub] : lf;
                    if (pass == 1 && !softmax) {
                        const double z = __dsub_rn(__dmul_rn(a, (double)up), that[g]);
                        if (z > 0.0) ms[sub] += rb_pow_bm1_k(kint, bt, z) * z;
                    }
                }
            }
            for (int off = 1; off < 8; off <<= 1) {
                float nu[8], nl[8];
                double nm[8];
                for (int j = 0; j < 8; ++j) {
                    nu[j] = um[j] > um[j ^ off] ? um[j] : um[j ^ off];
                    nl[j] = lm[j] > lm[j ^ off] ? lm[j] : lm[j ^ off];
                    nm[j] = ms[j] + ms[j ^ off];
                }
                memcpy(um, nu, sizeof(um));
                memcpy(lm, nl, sizeof(lm));
                memcpy(ms, nm, sizeof(ms));
            }
            best[(size_t)g * closed + i] = (double)um[0];
            lmax[(size_t)g * closed + i] = lm[0];
            if (pass == 1) mass[(size_t)g * closed + i] = ms[0];
        };
        if (softmax) {
            // rob_bmax: the best box per head, the task's "box not finite" flag.
            std::vector<double> bbox(tg, -INFINITY);
            bool tbad = false;
            for (int g = 0; g < tg; ++g)
                for (int i = 0; i < closed; ++i) {
                    const double v = box_hi[(size_t)g * closed + i];
                    tbad |= !std::isfinite(v);
                    bbox[g] = std::fmax(bbox[g], v);
                }
            // SOFTMAX_DROP_MASS (selection/gaussian/robust.rs; gpu/decode.rs passes it).
            const double per_page = 1e-3 / (double)closed;
            // rob_solve (softmax): L over the lower ends of the pages of the phase.
            auto lse = [&](int g, bool phase1) -> double {
                float M = -INFINITY;
                for (int i = 0; i < closed; ++i)
                    if (phase1 ? want[i] == 1 : want[i] != 0) M = std::fmax(M, lmax[(size_t)g * closed + i]);
                if (!(M > -INFINITY)) return -(double)INFINITY;
                const double Md = (double)M;
                double S = 0.0;
                for (int i = 0; i < closed; ++i)
                    if (phase1 ? want[i] == 1 : want[i] != 0)
                        for (int k = 0; k < ps; ++k)
                            S += std::exp(__dsub_rn((double)lows[((size_t)g * closed + i) * ps + k], Md));
                return rb_sm_lse(Md, S);
            };
            std::vector<double> L(tg, -INFINITY);
            std::vector<int> kept;
            if (tbad) {
                for (int i = 0; i < closed; ++i) kept.push_back(i);
            } else {
                for (int i = 0; i < closed; ++i) {  // rob_tok1
                    bool w = i < sinks;
                    for (int g = 0; g < tg; ++g) w |= rb_sm_near_best(box_hi[(size_t)g * closed + i], bbox[g]);
                    want[i] = w ? 1 : 0;
                    if (w)
                        for (int g = 0; g < tg; ++g) tok(1, i, g);
                }
                for (int g = 0; g < tg; ++g) L[g] = lse(g, true);
                for (int i = 0; i < closed; ++i) {  // rob_tok2
                    if (want[i] == 1) continue;
                    bool w = false;
                    for (int g = 0; g < tg; ++g) w |= rb_sm_heavy(ps, box_hi[(size_t)g * closed + i], L[g], per_page);
                    if (w) {
                        want[i] = 2;
                        for (int g = 0; g < tg; ++g) tok(2, i, g);
                    }
                }
                for (int g = 0; g < tg; ++g) L[g] = lse(g, false);
                for (int i = 0; i < closed; ++i) {  // rob_pack
                    bool k = i < sinks;
                    for (int g = 0; g < tg && !k; ++g) {
                        double mu = box_hi[(size_t)g * closed + i];
                        if (want[i] != 0) mu = std::fmin(best[(size_t)g * closed + i], mu);
                        k |= rb_sm_heavy(ps, mu, L[g], per_page);
                    }
                    if (k) kept.push_back(i);
                    sm_pass2 += want[i] == 2;
                }
            }
            ++sm_tasks;
            ++tasks;
            sm_pages += closed;
            sm_kept += (long)kept.size();
            bool ok = kept == cpu_kept;
            for (int g = 0; g < tg; ++g) {
                if (L[g] == tcpu[g]) continue;  // both −∞ included
                const double e = std::fabs(L[g] - tcpu[g]) / std::fmax(1.0, std::fabs(tcpu[g]));
                worst_t = std::fmax(worst_t, e);
                ok &= e <= 1e-12;
            }
            if (!ok) {
                ++bad;
                fprintf(stderr, "softmax task %ld (d %d bits %d ps %d closed %d tg %d): kept %zu vs CPU %zu, L[0] %.17g vs %.17g\n",
                        tasks, d, bits, ps, closed, tg, kept.size(), cpu_kept.size(), L[0], tcpu[0]);
            }
            continue;
        }
        // rob_tok1
        for (int i = 0; i < closed; ++i) {
            bool w = i < sinks;
            for (int g = 0; g < tg; ++g) w |= a * box_hi[(size_t)g * closed + i] > that[g];
            want[i] = w ? 1 : 0;
            if (w)
                for (int g = 0; g < tg; ++g) tok(1, i, g);
        }
        // rob_solve: τ_lb over the pages of `in_set`.
        auto solve = [&](int g, bool phase1, double* msum) -> double {
            float M = -INFINITY;
            double m = 0.0;
            for (int i = 0; i < closed; ++i)
                if (phase1 ? want[i] == 1 : want[i] != 0) {
                    M = std::fmax(M, lmax[(size_t)g * closed + i]);
                    m += mass[(size_t)g * closed + i];
                }
            *msum = m;
            if (!(M > -INFINITY)) return -(double)INFINITY;
            std::vector<float> cand;
            const double Md = (double)M;
            for (int i = 0; i < closed; ++i)
                if ((phase1 ? want[i] == 1 : want[i] != 0) && a * ((double)lmax[(size_t)g * closed + i] - Md) > -1.0)
                    for (int k = 0; k < ps; ++k) {
                        const float l = lows[((size_t)g * closed + i) * ps + k];
                        if (a * ((double)l - Md) > -1.0) cand.push_back(l);
                    }
            auto ev = [&](double tau, double& f, double& df) {
                f = 0.0;
                df = 0.0;
                for (float c : cand) {
                    const double x = a * (double)c - tau;
                    if (x > 0.0) {
                        const double pw = rb_pow_bm1_k(kint, bt, x);
                        f += pw * x;
                        df += pw;
                    }
                }
            };
            return rb_entmax_solve(a * Md, bt, ev);
        };
        std::vector<double> thr(tg), T(tg);
        std::vector<int> trust(tg);
        for (int g = 0; g < tg; ++g) {
            double ms;
            const double tlb = solve(g, true, &ms);
            trust[g] = ms >= 1.0;
            thr[g] = trust[g] ? std::fmax(tlb, that[g]) : tlb;
        }
        // rob_tok2
        for (int i = 0; i < closed; ++i) {
            if (want[i] == 1) continue;
            bool w = false;
            for (int g = 0; g < tg; ++g) w |= a * box_hi[(size_t)g * closed + i] > thr[g];
            if (w) {
                want[i] = 2;
                for (int g = 0; g < tg; ++g) tok(2, i, g);
            }
        }
        for (int g = 0; g < tg; ++g) {
            double ms;
            const double tlb = solve(g, false, &ms);
            T[g] = trust[g] ? std::fmax(tlb, that[g]) : tlb;
        }
        // rob_pack
        std::vector<int> kept;
        for (int i = 0; i < closed; ++i) {
            bool k = i < sinks;
            if (!k) {
                for (int g = 0; g < tg; ++g) {
                    double mu = box_hi[(size_t)g * closed + i];
                    if (want[i] != 0) mu = std::fmin(best[(size_t)g * closed + i], mu);
                    k |= a * mu > T[g];
                }
            }
            if (k) kept.push_back(i);
            bounded_total += want[i] != 0;
            pass2_total += want[i] == 2;
        }
        pages_total += closed;
        kept_total += (long)kept.size();
        for (int g = 0; g < tg; ++g) trusted += trust[g];
        heads += tg;
        ++tasks;
        bool ok = kept == cpu_kept;
        for (int g = 0; g < tg; ++g) {
            const double e = std::fabs(T[g] - tcpu[g]) / std::fmax(1.0, std::fabs(tcpu[g]));
            worst_t = std::fmax(worst_t, e);
            ok &= e <= 1e-12;
        }
        if (!ok) {
            ++bad;
            fprintf(stderr, "task %ld (d %d bits %d ps %d closed %d tg %d alpha %.4f): kept %zu vs CPU %zu, T[0] %.17g vs %.17g\n",
                    tasks, d, bits, ps, closed, tg, alpha, kept.size(), cpu_kept.size(), T[0], tcpu[0]);
        }
    }
    printf("%ld tasks (%ld closed pages, %ld bounded per token, %ld of them in pass 2, %ld kept; tau-hat trusted "
           "in %ld of %ld heads; softmax mode: %ld tasks, %ld closed pages, %ld in pass 2, %ld kept): %ld differ; "
           "worst T (L) rel %.2e\n",
           tasks, pages_total, bounded_total, pass2_total, kept_total, trusted, heads, sm_tasks, sm_pages, sm_pass2,
           sm_kept, bad, worst_t);
    printf("dp4a sketch dots differing from rb_sketch_dot: %ld\n", dot_mismatches);
    return bad == 0 && dot_mismatches == 0 && tasks > sm_tasks && sm_tasks > 0 ? 0 : 1;
}

int main(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "sel") return sel_main(argv[2]);
    if (argc < 2) {
        fprintf(stderr, "usage: robust_host REF | robust_host sel SEL_REF\n");
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
            const int s = (bits > 0 && r.kind == 2) ? dev_dot(sk.data() + (size_t)t * rb, bits, qw.data(), d) : 0;
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
    printf("%ld cases, %ld tokens: %ld differ; dp4a sketch dots differing from rb_sketch_dot: %ld\n", cases,
           tokens, bad, dot_mismatches);
    return bad == 0 && dot_mismatches == 0 && cases > 0 ? 0 : 1;
}
