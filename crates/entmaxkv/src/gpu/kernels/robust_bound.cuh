// Scalar arithmetic of the CPU's page and token score bounds (certificate/bounds.rs:
// `bound_pre`, `bound_finish`, `quantise`, `PageBound::interval`, `token_ends`, `f32_up`),
// ported operation for operation so the device produces the same bits: every f32/f64
// operation is an explicit round-to-nearest intrinsic (NVRTC would otherwise contract a·b + c
// into one FMA where the CPU rounds twice), fused multiply-adds only where the CPU uses them.
// The per-lane sums and their combination order live in robust.cu (`rb_page_bound`).
//
// Also compiled as host C++ by scripts/robust_host.cpp (RB_HOST defined: the intrinsics
// become plain operations, built with -ffp-contract=off) to check the port against the CPU.

#ifdef RB_HOST
#define RB_FN static inline
#else
#define RB_FN __device__ __forceinline__
#endif

// f32 unit roundoff and the widening constants of bounds.rs.
constexpr double RB_U = 1.0 / 16777216.0;
constexpr double RB_K403U = 4.03 * RB_U;       // 4.03·u (an exact power-of-two scaling of 4.03)
constexpr double RB_ONE5U = 1.0 + 5.0 * RB_U;  // exact
constexpr double RB_TAIL = 1.0 / 1099511627776.0;  // 2^-40
constexpr double RB_BOUND_ERR = 1.0 / 4194304.0;   // certificate::BOUND_ERR = 2^-22
constexpr float RB_MAGIC = 12582912.0f;             // 1.5·2^23

RB_FN double rb_bits_d(unsigned long long b) {
#ifdef RB_HOST
    double d;
    memcpy(&d, &b, 8);
    return d;
#else
    return __longlong_as_double((long long)b);
#endif
}
// 2^-120 (bounds.rs f64::powi(2.0, -120)) and ±∞.
RB_FN double rb_tiny() { return rb_bits_d(0x3870000000000000ULL); }
RB_FN double rb_inf() { return rb_bits_d(0x7ff0000000000000ULL); }

RB_FN float rb_bits_f(unsigned int b) {
#ifdef RB_HOST
    float f;
    memcpy(&f, &b, 4);
    return f;
#else
    return __uint_as_float(b);
#endif
}
RB_FN unsigned int rb_f_bits(float f) {
#ifdef RB_HOST
    unsigned int b;
    memcpy(&b, &f, 4);
    return b;
#else
    return __float_as_uint(f);
#endif
}

// `f32_up`: x rounded to an f32 ≥ x (bounds.rs); −f32::MAX below it or NaN.
RB_FN float rb_f32_up(double x) {
    const double c = x > -3.4028234663852886e38 ? x : -3.4028234663852886e38;
    const float y = __double2float_rn(c);
    const float t = __fadd_rn(y, __fmul_rn(fabsf(y), 1.1920928955078125e-7f));
    return __fadd_rn(t, rb_bits_f(1u));
}
RB_FN float rb_f32_down(double x) { return -rb_f32_up(-x); }

// `pow2_inv` / `pow2_at_least` of bounds.rs.
RB_FN float rb_pow2_inv(float p) {
    const unsigned int e = (rb_f_bits(p) >> 23) & 0xffu;
    return rb_bits_f((254u - e) << 23);
}
RB_FN float rb_pow2_at_least(float x) {
    const unsigned int b = rb_f_bits(x);
    const unsigned int e = (b >> 23) & 0xffu;
    return (b & 0x7fffffu) == 0u ? x : rb_bits_f((e + 1u) << 23);
}

// A page's bounds for one head (bounds.rs `PageBound`, plus the quantisation scale of
// `BoundPre`): kind 0 unbounded, 1 box only, 2 box and sketch.
struct RbBound {
    double box_lo, box_hi, base, half, scale;
    float sc, inv;
    int kind;
};

RB_FN RbBound rb_unbounded() {
    RbBound r;
    r.box_lo = -rb_inf();
    r.box_hi = rb_inf();
    r.base = 0.0;
    r.half = rb_inf();
    r.scale = 0.0;
    r.sc = 0.f;
    r.inv = 0.f;
    r.kind = 0;
    return r;
}

// `bound_pre` from the page sums (b = Σw·lo, p = Σmax(ŵs,0), m = Σmin(ŵs,0), mg = Σ|w|·amax,
// mx = max|ŵs|) of finite rows (`finite`); `sketch`: token intervals from the sketch.
RB_FN RbBound rb_bound_pre(bool finite, bool sketch, float b, float p, float m, float mg, float mx, double gam,
                           double lv, float qmax, float inv_qmax) {
    if (!finite || !(isfinite(b) && isfinite(p) && isfinite(m) && isfinite(mg))) return rb_unbounded();
    const double m_up = __dmul_rn((double)mg, __dadd_rn(1.0, __dmul_rn(3.0, gam)));
    const double s_up = __dmul_rn(__dsub_rn((double)p, (double)m), __dadd_rn(1.0, __dmul_rn(2.0, gam)));
    const double box_err =
        __dadd_rn(__dmul_rn(gam, m_up), __dmul_rn(__dmul_rn(lv, __dadd_rn(gam, RB_K403U)), s_up));
    const double widen = __dadd_rn(
        __dadd_rn(__dadd_rn(box_err, __dmul_rn(RB_TAIL, __dadd_rn(box_err, m_up))), __dmul_rn(RB_BOUND_ERR, m_up)),
        rb_tiny());
    RbBound r;
    r.box_lo = __dsub_rn(__dadd_rn((double)b, __dmul_rn(lv, (double)m)), widen);
    r.box_hi = __dadd_rn(__dadd_rn((double)b, __dmul_rn(lv, (double)p)), widen);
    r.base = (double)b;
    r.half = rb_inf();
    r.scale = 0.0;
    r.sc = 0.f;
    r.inv = 0.f;
    r.kind = 1;
    // Kept for bound_finish: m_up and s_up ride in half/scale until then.
    if (!sketch) return r;
    r.kind = 2;
    const float lo_mx = rb_bits_f((127u - 110u) << 23), hi_mx = rb_bits_f((127u + 100u) << 23);
    if (mx >= lo_mx && mx <= hi_mx) {
        float s = rb_pow2_at_least(__fmul_rn(mx, inv_qmax));
        if (__fmul_rn(mx, rb_pow2_inv(s)) > qmax) s = __fmul_rn(s, 2.0f);
        r.sc = s;
        r.inv = rb_pow2_inv(s);
    }
    return r;
}

// `quantise`: (q, |ŵs − scale·q|) with q = round(ŵs·inv) by the 1.5·2^23 trick.
RB_FN float rb_quantise(float ws, float inv, float sc, short* q) {
    const float y = __fadd_rn(__fmul_rn(ws, inv), RB_MAGIC);
    const float qf = __fsub_rn(y, RB_MAGIC);
    *q = (short)((int)rb_f_bits(y) - (int)rb_f_bits(RB_MAGIC));
    return fabsf(__fsub_rn(ws, __fmul_rn(qf, sc)));
}

// `bound_finish`: the half-width from the quantisation error sum `e` (kind 2 only; m_up and
// s_up recomputed from the page sums exactly as rb_bound_pre formed them).
RB_FN void rb_bound_finish(RbBound& r, float p, float m, float mg, double e, double gam, double lv) {
    const double m_up = __dmul_rn((double)mg, __dadd_rn(1.0, __dmul_rn(3.0, gam)));
    const double s_up = __dmul_rn(__dsub_rn((double)p, (double)m), __dadd_rn(1.0, __dmul_rn(2.0, gam)));
    const double h0 = __dadd_rn(
        __dadd_rn(__dadd_rn(__dmul_rn(__dmul_rn(s_up, RB_ONE5U), 0.5),
                            __dmul_rn(__dmul_rn(lv, e), __dadd_rn(1.0, __dmul_rn(2.0, gam)))),
                  __dmul_rn(__dmul_rn(RB_K403U, lv), s_up)),
        __dmul_rn(gam, m_up));
    const double half =
        __dadd_rn(__dadd_rn(__dadd_rn(h0, __dmul_rn(RB_TAIL, __dadd_rn(h0, m_up))), __dmul_rn(RB_BOUND_ERR, m_up)),
                  rb_tiny());
    if (!isfinite(half)) {
        r = rb_unbounded();
        return;
    }
    r.half = half;
    r.scale = (double)r.sc;
}

// `PageBound::interval` and `token_ends` for a token with sketch dot `s` at offset `x` =
// position − q_pos (an integer, exact): the f32 upper end (rounded up) and the f64 lower end,
// the ALiBi bias slope·x added.
RB_FN void rb_token(const RbBound& r, int s, double slope, double x, float* up, double* lo) {
    const double c = __dadd_rn(r.base, __dmul_rn(r.scale, (double)s));
    double l = __dsub_rn(c, r.half), u = __dadd_rn(c, r.half);
    l = l > r.box_lo ? l : r.box_lo;
    u = u < r.box_hi ? u : r.box_hi;
    const double al = __dmul_rn(slope, x);
    *up = rb_f32_up(__dadd_rn(u, al));
    *lo = __dadd_rn(l, al);
}

// One lane's page sums (lane `sub` of 8 sums channels sub, sub + 8, ...: the CPU's SIMD
// lane j): `ld(c, l, h, q)` gives channel c's min, max and unscaled query.
struct RbLane {
    float b, p, m, mg, mx;
    int bad;
};
template <class LD> RB_FN RbLane rb_lane_sums(int sub, int d, float scale, float inv_levels, const LD& ld) {
    RbLane s = {0.f, 0.f, 0.f, 0.f, 0.f, 0};
    for (int c = sub; c < d; c += 8) {
        float l, h, qc;
        ld(c, l, h, qc);
        const float w = __fmul_rn(qc, scale);
        s.bad |= !(fabsf(l) <= 3.40282347e38f && fabsf(h) <= 3.40282347e38f);
        const float r = __fsub_rn(h, l);
        const float st = __fmul_rn(r > 0.f ? r : 0.f, inv_levels);
        const float am = fabsf(l) > fabsf(h) ? fabsf(l) : fabsf(h);
        s.b = __fmaf_rn(w, l, s.b);
        s.mg = __fmaf_rn(fabsf(w), am, s.mg);
        const float ws = __fmul_rn(w, st);
        s.p = __fadd_rn(s.p, ws > 0.f ? ws : 0.f);
        s.m = __fadd_rn(s.m, ws < 0.f ? ws : 0.f);
        s.mx = s.mx > fabsf(ws) ? s.mx : fabsf(ws);
    }
    return s;
}

// One lane's quantised weights (into qw[c]) and its share of Σ|e_c|, channels in order.
template <class LD>
RB_FN float rb_lane_quant(int sub, int d, float scale, float inv_levels, float inv, float sc, const LD& ld,
                          short* qw) {
    float e = 0.f;
    for (int c = sub; c < d; c += 8) {
        float l, h, qc;
        ld(c, l, h, qc);
        const float w = __fmul_rn(qc, scale);
        const float r = __fsub_rn(h, l);
        const float st = __fmul_rn(r > 0.f ? r : 0.f, inv_levels);
        short qv;
        e = __fadd_rn(e, rb_quantise(__fmul_rn(w, st), inv, sc, &qv));
        qw[c] = qv;
    }
    return e;
}

// xor offsets of the three combining steps of the page sums: the CPU's AVX2 horizontal sum
// ((x0+x1)+(x2+x3))+((x4+x5)+(x6+x7)) for D a multiple of 8, else its portable
// ((x0+x4)+(x1+x5))+((x2+x6)+(x3+x7)). Lane j adds lane j ^ off's value at each step.
RB_FN int rb_sum_off(int d, int k) {
    if (d % 8 == 0) return k == 0 ? 1 : (k == 1 ? 2 : 4);
    return k == 0 ? 4 : (k == 1 ? 1 : 2);
}
// The quantisation error sum: AVX2 ((e0+e4)+(e2+e6))+((e1+e5)+(e3+e7)) for D a multiple of
// 16 (offsets 4, 2, 1); else (portable) e0 + e1 + ... + e7 left to right.
RB_FN bool rb_e_tree(int d) { return d % 16 == 0; }

// Sketch dot Σ_c q_c·code_c (exact int) of one token's row (codes LSB-first).
RB_FN int rb_sketch_dot(const unsigned char* row, int bits, const short* qw, int d) {
    int s = 0;
    if (bits == 8) {
        for (int c = 0; c < d; ++c) s += (int)qw[c] * (int)row[c];
    } else if (bits == 4 && d % 8 == 0) {
        // Whole 4-byte words (rows of d/2 bytes, a multiple of 4, 4-byte aligned): nibble k of
        // word j is channel 8j + k (little-endian bytes, low nibble first). Exact in any order.
        const unsigned int* w = reinterpret_cast<const unsigned int*>(row);
        for (int j = 0; j < d / 8; ++j) {
            const unsigned int x = w[j];
            for (int k = 0; k < 8; ++k) s += (int)qw[8 * j + k] * (int)((x >> (4 * k)) & 15u);
        }
    } else if (bits == 4) {
        for (int j = 0; j < d / 2; ++j) {
            const int byte = row[j];
            s += (int)qw[2 * j] * (byte & 15) + (int)qw[2 * j + 1] * (byte >> 4);
        }
        if (d % 2 == 1) s += (int)qw[d - 1] * (row[d / 2] & 15);
    } else {
        const int mask = (1 << bits) - 1;
        for (int c = 0; c < d; ++c) {
            const int bit = c * bits, by = bit >> 3, sh = bit & 7;
            int v = row[by];
            if (sh + bits > 8) v |= (int)row[by + 1] << 8;
            s += (int)qw[c] * ((v >> sh) & mask);
        }
    }
    return s;
}

// The 4-bit dot by dp4a (rows of d/2 bytes, d a multiple of 8): each i16 weight split as
// q = 256·(q >> 8) + (q & 255) (arithmetic shift: a signed high byte, an unsigned low one),
// so Σ q_c·code_c = 256·Σ hi_c·code_c + Σ lo_c·code_c, both exact in 32 bits (|Σ| below
// 128·15·d and 255·15·d): the same int as rb_sketch_dot, in 4 dp4a per 8 channels instead
// of 8 multiply-adds and 16 shifts/masks.
RB_FN int rb_dp4a_su(unsigned a_signed, unsigned b_unsigned, int c) {
#ifdef RB_HOST
    for (int k = 0; k < 4; ++k)
        c += (int)(signed char)((a_signed >> (8 * k)) & 0xffu) * (int)((b_unsigned >> (8 * k)) & 0xffu);
    return c;
#else
    int r;
    asm("dp4a.s32.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(a_signed), "r"(b_unsigned), "r"(c));
    return r;
#endif
}
RB_FN int rb_dp4a_uu(unsigned a, unsigned b, int c) {
#ifdef RB_HOST
    for (int k = 0; k < 4; ++k) c += (int)((a >> (8 * k)) & 0xffu) * (int)((b >> (8 * k)) & 0xffu);
    return c;
#else
    int r;
    asm("dp4a.u32.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#endif
}

// Packed weights of sketch word j (channels 8j .. 8j + 7; nibble k of the word is channel
// 8j + k): w[0] / w[1] the high bytes of the even / odd channels, w[2] / w[3] their low
// bytes, byte m holding channel 8j + 2m (+ 1).
RB_FN void rb_pack4(const short* qw, int j, unsigned (&w)[4]) {
    w[0] = w[1] = w[2] = w[3] = 0u;
    for (int k = 0; k < 8; ++k) {
        const int q = qw[8 * j + k];
        const int sh = 8 * (k >> 1);
        w[k & 1] |= ((unsigned)(q >> 8) & 0xffu) << sh;
        w[2 + (k & 1)] |= ((unsigned)q & 0xffu) << sh;
    }
}

// Σ_c q_c·code_c of one 4-bit row (nw = d/8 words) from rb_pack4's words pw[4j .. 4j + 4).
RB_FN int rb_sketch_dot4_packed(const unsigned* row, const unsigned* pw, int nw) {
    int hi = 0, lo = 0;
    for (int j = 0; j < nw; ++j) {
        const unsigned x = row[j];
        const unsigned even = x & 0x0F0F0F0Fu, odd = (x >> 4) & 0x0F0F0F0Fu;
        hi = rb_dp4a_su(pw[4 * j], even, hi);
        hi = rb_dp4a_su(pw[4 * j + 1], odd, hi);
        lo = rb_dp4a_uu(pw[4 * j + 2], even, lo);
        lo = rb_dp4a_uu(pw[4 * j + 3], odd, lo);
    }
    return hi * 256 + lo;
}

// τ with Σ_k [z_k − τ]_+^β = 1 (z_k = a·l_k, the lower ends within 1/a of the largest, aM =
// a·max l): safeguarded Newton from the left end of [aM − 1, aM] (the sum is ≥ 1 there and
// 0 at the right end). `ev(τ, f, df)` returns Σ [z − τ]_+^β and Σ [z − τ]_+^(β−1) (the
// device: a fixed-order block reduction; every thread gets the same bits, so every thread
// takes the same steps). Stops at a zero, when a step is below 1e-15·max(1, |τ|), or when
// the bracket closes; 200 steps at most (bisection alone needs ~60).
// `start` (in [aM − 1, aM]) is the first point evaluated: the device starts at a histogram
// bracket's lower end (rob_solve), which leaves the same bracket and steps, only fewer.
template <class EV> RB_FN double rb_entmax_solve_from(double aM, double beta, double start, const EV& ev) {
    double lo = aM - 1.0, hi = aM, tau = (start >= lo && start < hi) ? start : lo;
    for (int it = 0; it < 200; ++it) {
        double f, df;
        ev(tau, f, df);
        f -= 1.0;
        if (f == 0.0) break;
        if (f > 0.0) lo = tau;
        else hi = tau;
        double nt = tau + f / (beta * df);
        // Converged: the Newton step is at rounding level. (Tested before the bracket: a step
        // that rounds onto the end just set would otherwise bisect the whole bracket again.)
        if (fabs(nt - tau) <= 1e-15 * fmax(1.0, fabs(tau))) {
            if (nt > lo && nt < hi) tau = nt;
            break;
        }
        if (!(nt > lo && nt < hi)) nt = 0.5 * (lo + hi);
        const bool done = fabs(nt - tau) <= 1e-15 * fmax(1.0, fabs(tau)) || !(hi > lo);
        tau = nt;
        if (done) break;
    }
    return tau;
}
template <class EV> RB_FN double rb_entmax_solve(double aM, double beta, const EV& ev) {
    return rb_entmax_solve_from(aM, beta, aM - 1.0, ev);
}

// x^(β−1) for x > 0: integer powers for β ∈ {1, 2, 3} (kint), else pow.
RB_FN double rb_pow_bm1_k(int kint, double beta, double x) {
    switch (kint) {
        case 1: return 1.0;
        case 2: return x;
        case 3: return x * x;
        default: return pow(x, beta - 1.0);
    }
}

// Softmax mode (α = 1; selection/gaussian/robust.rs `select_softmax`).
// Pass 1 bounds a page per token iff some head has box ≥ (its best box) − 2.
RB_FN bool rb_sm_near_best(double box, double best_box) { return box >= best_box - 2.0; }
// Whether a page whose scores are at most `u` may carry more than its share `per_page`
// (= SOFTMAX_DROP_MASS / closed) of the mass against the log-sum-exp lower bound L: the
// CPU's `ps as f64 * (u − L).exp() > per_page` (exp from the device's libm: ≤ 1 ulp off).
RB_FN bool rb_sm_heavy(int ps, double u, double L, double per_page) {
    return __dmul_rn((double)ps, exp(__dsub_rn(u, L))) > per_page;
}
// L from the largest lower end M and S = Σ exp(l − M) over the bounded tokens' lower ends:
// the CPU's `logsumexp` (tau/entmax.rs: max + ln Σ exp(x − max), in f64); −∞ without any.
RB_FN double rb_sm_lse(double M, double S) { return __dadd_rn(M, log(S)); }
