// The `certified` strategy on the GPU (certificate/certified.rs): exact dense α-entmax from
// the key sketch, K read only for the tokens that can reach the threshold, V only for the
// support. Launch sequence (selection stage, then the attention stage of any method):
//
//   cert_bounds         per chunk of pages: rigorous score intervals [l, u] of every token
//                       for the TG heads — closed pages from their sketch rows and min/max
//                       rows (no K), the last page from its exact scores (K read; u = +inf,
//                       so it is always a candidate). l folds into the running maximum R
//                       (gmax). Two lists per chunk: the lower ends with a·(l − R) > −1 (the
//                       only ones τ_lb's equation can use; cand_s) and the (u, row) of the
//                       tokens with a·(u − R) > −1 − CERT_PREFILTER (cand_u, cand_pos): since
//                       τ_lb >= a·max l − 1, no other token can reach τ_lb.
//   attn_entmax_filter  cert_phase = 1: the lower ends against the final max, histogram.
//   attn_entmax_tail    cert_phase = 1: τ_lb = the exact entmax τ of the lower ends (a lower
//                       bound of the dense τ: τ is monotone in the scores and in the set).
//   cert_exact          candidates = tokens of the upper-end lists with (α−1)·u + margin >
//                       τ_lb; their K rows, exact scores in place, running maximum of those.
//   attn_entmax_filter, attn_entmax_tail, attn_entmax_values as for any selection: τ solved
//                       on the candidates equals the dense τ (every other token is provably
//                       outside the dense support), V read for the support only.
//
// Rounding (certificate/mod.rs, "Rounding"). With w = fl(scale·q), a page's grid lo/hi and
// step_c = (hi_c − lo_c)/levels, every sketched key satisfies
//   w·k ∈ c0 + Σ_c ws_c·code_c ± r,  c0 = Σ w_c·lo_c,  ws_c = w_c·step_c,  r = Σ|w_c|·step_c/2.
// The page constants are f32 sums and the token dot an f32 FMA chain (generic widths) or an
// exact integer dot with ws quantised to i16 on a power-of-two grid δ (4-bit sketch, dp4a).
// Their errors, in units of 2^-24: the dot ≤ (D + 4)·levels·S, ws and step rounding ≤
// 3·levels·S, c0 ≤ D·W (S = Σ|ws_c|, W = Σ|w_c|·max(|lo_c|, |hi_c|)), all below
// 2^-15·(levels·S + W) for D ≤ 256; the i16 quantisation adds ≤ levels·D·δ/2; the relation to
// the f64 oracle adds BOUND_ERR·W. Every end is assembled with directed rounding (lower ends
// down, upper ends up). The exclusion margin is REL_SLACK·((α−1)·M + |τ_lb|) + 1e-6 (M the
// task's score magnitude); a head whose margin exceeds CERT_PREFILTER is reported
// uncertified.


// (page, head) slots per round of cert_bounds, and the padded f32 weight row of the
// generic path (two pages' rows start in other banks).
constexpr int CERT_SLOTS = HEAD_DIM <= 64 ? 64 : 32;
constexpr int CERT_WS = HEAD_DIM + 4;
constexpr int CERT_SPW = CERT_SLOTS / (BLOCK / 32);  // slots per warp and round
constexpr int CERT_CPL = (HEAD_DIM + 31) / 32;       // channels per lane in the constants
// 4-bit fast path: per slot and 8 channels four words of i16 weight bytes (hi even, hi odd,
// lo even, lo odd channels), matching the nibble order of a sketch word.
constexpr bool CERT_FAST4 = HEAD_DIM % 32 == 0;
constexpr int CERT_PW = HEAD_DIM / 2;  // packed words per slot
constexpr float CERT_E = 1.0f / 32768.0f;  // 2^-15
constexpr int CERT_V4 = HEAD_DIM / 32;             // 16-byte vectors of a 4-bit sketch row
constexpr int CERT_TPT = HEAD_DIM <= 64 ? 4 : 2;   // 4-bit rows a thread has in flight

__device__ __forceinline__ float code_to_float(u32 c) {
    // Exact for c < 2^23: the integer in the mantissa of 2^23 + c.
    return __uint_as_float(0x4B000000u | c) - 8388608.0f;
}

__device__ __forceinline__ int dp4a_su(u32 a_signed, u32 b_unsigned, int c) {
    int r;
    asm("dp4a.s32.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(a_signed), "r"(b_unsigned), "r"(c));
    return r;
}
__device__ __forceinline__ int dp4a_uu(u32 a, u32 b, int c) {
    int r;
    asm("dp4a.u32.u32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}

// Σ_c ws[g][c]·code_c for the TG heads, f32, for a BITS-bit sketch row (row_bytes a
// multiple of 4). `ws` rows are CERT_WS floats apart, TG rows per page slot.
template <int BITS> __device__ __forceinline__ void sketch_dot(const unsigned char* row, const float* ws, float (&dot)[TG]) {
    constexpr int WORDS = HEAD_DIM * BITS / 32;  // whole words (checked when planning)
    constexpr int NW = (HEAD_DIM * BITS + 31) / 32 + 1;
    constexpr u32 MASK = (1u << BITS) - 1u;
    u32 w[NW];
#pragma unroll
    for (int i = 0; i < NW; ++i) w[i] = 0u;
    if constexpr (WORDS % 4 == 0) {
#pragma unroll
        for (int i = 0; i < WORDS / 4; ++i) {
            const uint4 v = __ldcs(reinterpret_cast<const uint4*>(row) + i);
            w[4 * i] = v.x;
            w[4 * i + 1] = v.y;
            w[4 * i + 2] = v.z;
            w[4 * i + 3] = v.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < WORDS; ++i) w[i] = __ldcs(reinterpret_cast<const u32*>(row) + i);
    }
#pragma unroll
    for (int g = 0; g < TG; ++g) dot[g] = 0.f;
#pragma unroll
    for (int c4 = 0; c4 < HEAD_DIM; c4 += 4) {
        float x[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int bit = (c4 + j) * BITS;
            const int wi = bit >> 5, sh = bit & 31;
            u32 code;
            if (sh + BITS <= 32) code = (w[wi] >> sh) & MASK;
            else code = __funnelshift_r(w[wi], w[wi + 1], sh) & MASK;
            x[j] = code_to_float(code);
        }
#pragma unroll
        for (int g = 0; g < TG; ++g) {
            const float4 c = *reinterpret_cast<const float4*>(ws + g * CERT_WS + c4);
            dot[g] = fmaf(c.x, x[0], dot[g]);
            dot[g] = fmaf(c.y, x[1], dot[g]);
            dot[g] = fmaf(c.z, x[2], dot[g]);
            dot[g] = fmaf(c.w, x[3], dot[g]);
        }
    }
}

__device__ __forceinline__ void sketch_dot_bits(int bits, const unsigned char* row, const float* ws, float (&dot)[TG]) {
    switch (bits) {
        case 1: sketch_dot<1>(row, ws, dot); break;
        case 2: sketch_dot<2>(row, ws, dot); break;
        case 3: sketch_dot<3>(row, ws, dot); break;
        case 4: sketch_dot<4>(row, ws, dot); break;
        case 5: sketch_dot<5>(row, ws, dot); break;
        case 6: sketch_dot<6>(row, ws, dot); break;
        case 7: sketch_dot<7>(row, ws, dot); break;
        default: sketch_dot<8>(row, ws, dot); break;
    }
}

// The 4-bit integer dot Σ_c ws_q[c]·code_c for one head: `row` holds the token's HEAD_DIM/8
// sketch words, `pw` the slot's packed weights.
__device__ __forceinline__ int sketch_dot4_int(const u32* row, const u32* pw) {
    int hi = 0, lo = 0;
#pragma unroll
    for (int i = 0; i < HEAD_DIM / 8; ++i) {
        const u32 even = row[i] & 0x0F0F0F0Fu, odd = (row[i] >> 4) & 0x0F0F0F0Fu;
        const uint4 wq = *reinterpret_cast<const uint4*>(pw + 4 * i);
        hi = dp4a_su(wq.x, even, hi);
        hi = dp4a_su(wq.y, odd, hi);
        lo = dp4a_uu(wq.z, even, lo);
        lo = dp4a_uu(wq.w, odd, lo);
    }
    return hi * 256 + lo;  // |.| <= 2^14·15·HEAD_DIM < 2^31
}

__device__ __forceinline__ float warp_sum_f(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}
__device__ __forceinline__ float warp_max_f(float v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, off));
    return v;
}

// grid (nch, tasks), block BLOCK, dynamic smem 2 * TG * caprows * 4 bytes.
extern "C" __global__ void __launch_bounds__(BLOCK) cert_bounds(const AttnParams p) {
    extern __shared__ __align__(16) unsigned char dyn[];
    __shared__ u32 s_page[PPC_CAP];
    __shared__ u32 s_slot[PPC_CAP];
    // Generic path: f32 weights; 4-bit path: packed i16 weight bytes (same storage).
    __shared__ __align__(16) float s_ws[CERT_SLOTS * CERT_WS];
    __shared__ float s_base[CERT_SLOTS][3];  // lower constant, upper constant, δ
    __shared__ float s_wopen[TG];
    __shared__ u32 s_mag[TG];
    __shared__ float s_run;
    const int caprows = p.ppc_max * p.page_size;
    float* sl = reinterpret_cast<float*>(dyn);
    float* su = sl + TG * caprows;
    const int task = blockIdx.y, c = blockIdx.x;
    const TaskInfo ti = task_info(p, task);
    int pbeg, pend;
    chunk_range(p, ti.n, c, pbeg, pend);
    if (pbeg >= pend) {
        if (threadIdx.x < TG) {
            p.cand_cnt[slot_index(p, task, c, threadIdx.x)] = 0;
            p.cert_cnt[slot_index(p, task, c, threadIdx.x)] = 0;
        }
        return;
    }
    const int npg = pend - pbeg;
    const int ps = p.page_size;
    const int bits = p.sketch_bits;
    const bool fast4 = CERT_FAST4 && bits == 4;
    const int rb = p.sketch_row_bytes;
    const int open_slot = ti.npages - 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    load_chunk_pages(p, task, ti, pbeg, npg, s_page, s_slot);
    if (threadIdx.x < TG) s_mag[threadIdx.x] = 0u;
    // This lane's channels of w = fl(scale·q) for the TG heads.
    float wq[TG][CERT_CPL];
#pragma unroll
    for (int g = 0; g < TG; ++g) {
        const float* qh = p.q + ((size_t)ti.b * p.num_heads + ti.h0 + g) * HEAD_DIM;
#pragma unroll
        for (int k = 0; k < CERT_CPL; ++k) {
            const int ch = lane + 32 * k;
            wq[g][k] = ch < HEAD_DIM ? qh[ch] * p.scale : 0.f;
        }
    }
    __syncthreads();
    const float levels = bits > 0 ? (float)((1u << bits) - 1u) : 1.0f;
    const float qpos = (float)ti.len - 1.0f;
    constexpr int SUB = CERT_SLOTS / TG;  // pages per round
    // Token interval of chunk row rr of this round (pl = page in round, t = row in page)
    // from its per-head sketch dots: lower ends rounded down, upper ends up.
    auto store = [&](int p0, int rr, const float (&dot)[TG]) {
        const int pl = rr / ps, t = rr - pl * ps;
        const int r = (p0 + pl) * ps + t;
        const int pos = (int)s_slot[p0 + pl] * ps + t;
#pragma unroll
        for (int g = 0; g < TG; ++g) {
            const int si = pl * TG + g;
            float lo_t = __fadd_rd(s_base[si][0], dot[g]);
            float hi_t = __fadd_ru(s_base[si][1], dot[g]);
            if (p.has_alibi) {
                const float bias = p.slopes[ti.h0 + g] * ((float)pos - qpos);
                const float wb = fabsf(bias) * 1e-6f;  // the kernels' f32 bias vs exact
                lo_t = __fsub_rd(__fadd_rd(lo_t, bias), wb);
                hi_t = __fadd_ru(__fadd_ru(hi_t, bias), wb);
            }
            sl[g * caprows + r] = lo_t;
            su[g * caprows + r] = hi_t;
        }
    };
    // Rows that are not closed-page tokens: past the end (−inf) or the last page (later).
    auto special = [&](int p0, int rr) -> bool {
        const int pl = rr / ps, t = rr - pl * ps;
        const int slot = (int)s_slot[p0 + pl];
        const int pos = slot * ps + t;
        if (pos >= ti.len) {
            const int r = (p0 + pl) * ps + t;
#pragma unroll
            for (int g = 0; g < TG; ++g) {
                sl[g * caprows + r] = neg_inf();
                su[g * caprows + r] = neg_inf();
            }
            return true;
        }
        return slot == open_slot;
    };
    auto row_ptr = [&](int p0, int rr) -> const unsigned char* {
        const int pl = rr / ps, t = rr - pl * ps;
        return p.sketch + (((size_t)s_page[p0 + pl] * p.num_kv_heads + ti.kvh) * ps + t) * (size_t)rb;
    };
    for (int p0 = 0; p0 < npg; p0 += SUB) {
        const int np = min(SUB, npg - p0);
        const int nr = np * ps;
        // 4-bit path: the first CERT_TPT sketch rows of each thread are loaded before the
        // page constants are computed, so both latencies overlap.
        uint4 rows[CERT_TPT][CERT_V4];
        if (fast4) {
#pragma unroll
            for (int u = 0; u < CERT_TPT; ++u) {
                const int rr = threadIdx.x + u * BLOCK;
#pragma unroll
                for (int i = 0; i < CERT_V4; ++i)
                    rows[u][i] = rr < nr ? __ldcs(reinterpret_cast<const uint4*>(row_ptr(p0, rr)) + i) : zero4();
            }
        }
        // (page, head) constants: warp `warp` takes slots warp + 8j; all its min/max loads
        // are issued before any arithmetic.
        float lo[CERT_SPW][CERT_CPL], hi[CERT_SPW][CERT_CPL];
#pragma unroll
        for (int j = 0; j < CERT_SPW; ++j) {
            const int si = warp + j * (BLOCK / 32);
            const int pi = p0 + si / TG;
#pragma unroll
            for (int k = 0; k < CERT_CPL; ++k) {
                const int ch = lane + 32 * k;
                lo[j][k] = hi[j][k] = 0.f;
                if (si < np * TG && ch < HEAD_DIM) {
                    const size_t srow = ((size_t)s_page[pi] * p.num_kv_heads + ti.kvh) * HEAD_DIM;
                    lo[j][k] = ST::to_f(p.smin[srow + ch]);
                    hi[j][k] = ST::to_f(p.smax[srow + ch]);
                }
            }
        }
#pragma unroll
        for (int j = 0; j < CERT_SPW; ++j) {
            const int si = warp + j * (BLOCK / 32);
            if (si >= np * TG) break;  // warp-uniform
            const int g = si % TG;
            float c0 = 0.f, r = 0.f, S = 0.f, W = 0.f, blo = 0.f, bhi = 0.f, wmax = 0.f;
            float ws[CERT_CPL];
#pragma unroll
            for (int k = 0; k < CERT_CPL; ++k) {
                const float w = wq[g][k], l = lo[j][k], h = hi[j][k];
                W = fmaf(fabsf(w), fmaxf(fabsf(l), fabsf(h)), W);
                const float step = fmaxf(h - l, 0.f) / levels;
                ws[k] = w * step;
                c0 = fmaf(w, l, c0);
                r = fmaf(fabsf(w), step, r);
                S += fabsf(ws[k]);
                wmax = fmaxf(wmax, fabsf(ws[k]));
                blo += fminf(w * l, w * h);
                bhi += fmaxf(w * l, w * h);
            }
            c0 = warp_sum_f(c0);
            r = warp_sum_f(r);
            S = warp_sum_f(S);
            W = warp_sum_f(W);
            float delta = 0.f;
            if (bits == 0) {
                blo = warp_sum_f(blo);
                bhi = warp_sum_f(bhi);
            } else if (fast4) {
                // δ: the power of two with max|ws|/δ in [2^13, 2^14): rounded, fits i16.
                wmax = warp_max_f(wmax);
                int e;
                frexpf(wmax, &e);
                delta = wmax > 0.f ? ldexpf(1.0f, e - 14) : 1.0f;
                unsigned char* pb = reinterpret_cast<unsigned char*>(s_ws) + (size_t)si * CERT_PW * 4;
#pragma unroll
                for (int k = 0; k < CERT_CPL; ++k) {
                    const int ch = lane + 32 * k;
                    const int qv = __float2int_rn(ws[k] / delta);  // exact scaling
                    const int i8 = ch >> 3, e8 = ch & 7, kb = e8 >> 1, odd = e8 & 1;
                    pb[(i8 * 4 + odd) * 4 + kb] = (unsigned char)((qv >> 8) & 0xff);
                    pb[(i8 * 4 + 2 + odd) * 4 + kb] = (unsigned char)(qv & 0xff);
                }
            } else {
#pragma unroll
                for (int k = 0; k < CERT_CPL; ++k) {
                    const int ch = lane + 32 * k;
                    if (ch < HEAD_DIM) s_ws[si * CERT_WS + ch] = ws[k];
                }
            }
            if (lane == 0) {
                const float Su = S * 1.001f, Wu = W * 1.001f;
                const float be = (float)CERT_BOUND_ERR * Wu;
                if (bits > 0) {
                    float e = CERT_E * fmaf(levels, Su, Wu);
                    if (fast4) e += levels * (float)HEAD_DIM * 0.5f * delta;
                    const float rad = __fadd_ru(__fmul_ru(r, 0.5f * (1.0f + CERT_E)), __fadd_ru(e, be));
                    s_base[si][0] = __fsub_rd(c0, rad);
                    s_base[si][1] = __fadd_ru(c0, rad);
                } else {
                    const float e = __fadd_ru(CERT_E * Wu, be);
                    s_base[si][0] = __fsub_rd(blo, e);
                    s_base[si][1] = __fadd_ru(bhi, e);
                }
                s_base[si][2] = delta;
                if ((int)s_slot[p0 + si / TG] == open_slot) s_wopen[g] = Wu;
                atomicMax(&s_mag[g], ordered_key(Wu));
            }
        }
        __syncthreads();
        if (fast4) {
            for (int base = 0; base < nr; base += CERT_TPT * BLOCK) {
                if (base > 0) {
#pragma unroll
                    for (int u = 0; u < CERT_TPT; ++u) {
                        const int rr = base + threadIdx.x + u * BLOCK;
#pragma unroll
                        for (int i = 0; i < CERT_V4; ++i)
                            rows[u][i] =
                                rr < nr ? __ldcs(reinterpret_cast<const uint4*>(row_ptr(p0, rr)) + i) : zero4();
                    }
                }
#pragma unroll
                for (int u = 0; u < CERT_TPT; ++u) {
                    const int rr = base + threadIdx.x + u * BLOCK;
                    if (rr >= nr || special(p0, rr)) continue;
                    const int pl = rr / ps;
                    u32 words[HEAD_DIM / 8];
#pragma unroll
                    for (int i = 0; i < CERT_V4; ++i) {
                        words[4 * i] = rows[u][i].x;
                        words[4 * i + 1] = rows[u][i].y;
                        words[4 * i + 2] = rows[u][i].z;
                        words[4 * i + 3] = rows[u][i].w;
                    }
                    float dot[TG];
#pragma unroll
                    for (int g = 0; g < TG; ++g) {
                        const int si = pl * TG + g;
                        const u32* pw = reinterpret_cast<const u32*>(s_ws) + (size_t)si * CERT_PW;
                        dot[g] = (float)sketch_dot4_int(words, pw) * s_base[si][2];
                    }
                    store(p0, rr, dot);
                }
            }
        } else {
            for (int rr = threadIdx.x; rr < nr; rr += BLOCK) {
                if (special(p0, rr)) continue;
                float dot[TG];
                if (bits > 0) {
                    sketch_dot_bits(bits, row_ptr(p0, rr), s_ws + (rr / ps) * TG * CERT_WS, dot);
                } else {
#pragma unroll
                    for (int g = 0; g < TG; ++g) dot[g] = 0.f;
                }
                store(p0, rr, dot);
            }
        }
        __syncthreads();
    }
    // The last page: exact scores (its K read once), lower ends widened by the f32 dot's
    // error bound; upper ends +inf (always a candidate, scored again in cert_exact).
    if ((int)s_slot[npg - 1] == open_slot) {
        float qr[TG][COLS];
        load_q(p, ti.b, ti.h0, threadIdx.x % LANES, qr);
        score_rows(p, ti, ps, s_page + (npg - 1), s_slot + (npg - 1), qr, sl + (npg - 1) * ps, caprows);
        __syncthreads();
        for (int i = threadIdx.x; i < TG * ps; i += BLOCK) {
            const int g = i / ps, t = i - g * ps;
            const int r = (npg - 1) * ps + t;
            const float s = sl[g * caprows + r];
            if (open_slot * ps + t < ti.len) {
                float e = (CERT_E + (float)CERT_BOUND_ERR) * s_wopen[g];
                if (p.has_alibi)
                    e += 1e-6f * fabsf(p.slopes[ti.h0 + g] * ((float)(open_slot * ps + t) - qpos));
                sl[g * caprows + r] = __fsub_rd(s, e);
                su[g * caprows + r] = pos_inf();
            } else {
                su[g * caprows + r] = neg_inf();
            }
        }
        __syncthreads();
    }
    const int nrows = npg * ps;
    for (int g = 0; g < TG; ++g) {
        const float* lg = sl + g * caprows;
        const float* ug = su + g * caprows;
        float m = neg_inf();
        for (int r = threadIdx.x; r < nrows; r += BLOCK) m = fmaxf(m, lg[r]);
        m = block_max<BLOCK>(m);
        if (threadIdx.x == 0) {
            const u32 mk = ordered_key(m);
            const u32 old = atomicMax(p.gmax + (size_t)task * TG + g, mk);
            s_run = old > mk ? key_to_float(old) : m;
            atomicMax(p.gmag + (size_t)task * TG + g, s_mag[g]);
        }
        __syncthreads();
        const float R = s_run;
        // The upper-end list's slack below a·R − 1: at least CERT_PREFILTER and twice the
        // exclusion margin this chunk can foresee; the smallest over the chunks is recorded
        // (gslack) and a head is certified only if its final margin fits in it.
        const double mag_c = (double)key_to_float(s_mag[g]) +
                             (p.has_alibi ? fabs((double)p.slopes[ti.h0 + g]) * (double)(ti.len - 1) : 0.0);
        const float slack = (float)CERT_PREFILTER +
                            (float)(2.0 * cert_margin(p, mag_c, p.a_d * fabs((double)R) + 1.0));
        if (threadIdx.x == 0) atomicMax(p.gslack + (size_t)task * TG + g, ordered_key(-slack));
        const float keep_u = -1.0f - slack;
        const int per = (nrows + BLOCK - 1) / BLOCK;
        const int rb0 = threadIdx.x * per, re = min(rb0 + per, nrows);
        int nl = 0, nu = 0;
        for (int r = rb0; r < re; ++r) {
            nl += (p.a * (lg[r] - R) > -1.0f) ? 1 : 0;
            nu += (p.a * (ug[r] - R) > keep_u) ? 1 : 0;
        }
        int tl, tu;
        int ol = block_excl_scan<BLOCK>(nl, &tl);
        int ou = block_excl_scan<BLOCK>(nu, &tu);
        const size_t idx = slot_index(p, task, c, g);
        float* cs = p.cand_s + idx * (size_t)caprows;
        float* cu = p.cand_u + idx * (size_t)caprows;
        u32* cp = p.cand_pos + idx * (size_t)caprows;
        u32* cl = p.has_alibi ? p.cand_lpos + idx * (size_t)caprows : nullptr;
        for (int r = rb0; r < re; ++r) {
            if (p.a * (lg[r] - R) > -1.0f) cs[ol++] = lg[r];
            if (p.a * (ug[r] - R) > keep_u) {
                const int pi = r / ps;
                cu[ou] = ug[r];
                cp[ou] = s_page[pi] * (u32)ps + (u32)(r - pi * ps);
                if (cl) cl[ou] = s_slot[pi] * (u32)ps + (u32)(r - pi * ps);
                ++ou;
            }
        }
        if (threadIdx.x == 0) {
            p.cand_cnt[idx] = tl;
            p.cert_cnt[idx] = tu;
        }
    }
}

// grid (ceil(nch / CPB), tasks), block BLOCK: warp w takes chunk blockIdx.x·CPB + w. After
// the τ_lb solve: keeps, in place, the upper-end list's tokens that reach τ_lb (with the
// margin), scores them exactly from their K rows into cand_s (the candidate list of the
// attention stage) and folds the chunk maximum into gmax.
extern "C" __global__ void __launch_bounds__(BLOCK) cert_exact(const AttnParams p) {
    const int task = blockIdx.y;
    const TaskInfo ti = task_info(p, task);
    const int caprows = p.ppc_max * p.page_size;
    const int c = blockIdx.x * CPB + (threadIdx.x >> 5);
    if (c >= p.nch) return;
    const int lane = threadIdx.x & 31;
    constexpr int RPW = 32 / LANES;  // rows a warp scores at once
    const int sub = lane % LANES, rs = lane / LANES;
    const float qpos = (float)ti.len - 1.0f;
    for (int g = 0; g < TG; ++g) {
        const int bh = ti.b * p.num_heads + ti.h0 + g;
        const size_t idx = slot_index(p, task, c, g);
        const int cnt = p.cert_cnt[idx];  // the upper-end list of cert_bounds
        const double tlb = p.tau_lb[bh];
        const double thr = tlb - cert_margin(p, cert_mag(p, task, ti, g), tlb);
        float* cs = p.cand_s + idx * (size_t)caprows;
        const float* cu = p.cand_u + idx * (size_t)caprows;
        u32* cp = p.cand_pos + idx * (size_t)caprows;
        u32* cl = p.has_alibi ? p.cand_lpos + idx * (size_t)caprows : nullptr;
        int kept = 0;
        for (int k0 = 0; k0 < cnt; k0 += 32) {
            const int k = k0 + lane;
            float u = neg_inf();
            u32 pos = 0u, lp = 0u;
            if (k < cnt) {
                u = cu[k];
                pos = cp[k];
                if (cl) lp = cl[k];
            }
            const bool keep = k < cnt && p.a_d * (double)u > thr;
            const u32 m = __ballot_sync(FULL_MASK, keep);
            if (keep) {
                const int at = kept + __popc(m & ((1u << lane) - 1u));
                cp[at] = pos;
                if (cl) cl[at] = lp;
            }
            kept += __popc(m);
        }
        __syncwarp();
        // Exact scores of the kept rows, RPW rows at a time (LANES lanes per row).
        float qf[COLS];
        {
            const float* qh = p.q + ((size_t)ti.b * p.num_heads + ti.h0 + g) * HEAD_DIM;
#pragma unroll
            for (int i = 0; i < CPL; ++i) {
                const int ch = sub + i * LANES;
#pragma unroll
                for (int j = 0; j < KV_VEC; ++j) qf[i * KV_VEC + j] = ch < CHUNKS ? qh[ch * KV_VEC + j] * p.scale : 0.f;
            }
        }
        float mx = neg_inf();
        int pages = 0;
        for (int k0 = 0; k0 < kept; k0 += RPW) {
            const int k = k0 + rs;
            float acc = 0.f;
            u32 pos = 0u;
            if (k < kept) {
                pos = cp[k];
                const u32 page = pos / (u32)p.page_size;
                const kv_t* rowp = kv_row(p.k, p, page, ti.kvh, (int)(pos - page * (u32)p.page_size));
#pragma unroll
                for (int i = 0; i < CPL; ++i) {
                    const int ch = sub + i * LANES;
                    if (ch < CHUNKS) {
                        float x[KV_VEC];
                        KV::unpack(ld_nc16(rowp, ch), x);
#pragma unroll
                        for (int j = 0; j < KV_VEC; ++j) acc = fmaf(qf[i * KV_VEC + j], x[j], acc);
                    }
                }
            }
#pragma unroll
            for (int off = LANES / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(FULL_MASK, acc, off);
            if (k < kept && sub == 0) {
                float s = acc;
                if (cl) s += p.slopes[ti.h0 + g] * ((float)cl[k] - qpos);
                cs[k] = s;
                mx = fmaxf(mx, s);
                // Pages touched: a kept row on another page than the row before it.
                const u32 page = pos / (u32)p.page_size;
                if (k == 0 || cp[k - 1] / (u32)p.page_size != page) ++pages;
            }
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) {
            mx = fmaxf(mx, __shfl_xor_sync(FULL_MASK, mx, off));
            pages += __shfl_xor_sync(FULL_MASK, pages, off);
        }
        if (lane == 0) {
            p.cand_cnt[idx] = kept;
            p.cert_cnt[idx] = kept;
            p.cert_pages[idx] = pages;
            if (kept > 0) atomicMax(p.gmax + (size_t)task * TG + g, ordered_key(mx));
        }
        __syncwarp();
    }
}
