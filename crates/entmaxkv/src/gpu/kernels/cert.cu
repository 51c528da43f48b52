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
constexpr int CERT_L = pow2_ceil((HEAD_DIM + 7) / 8) < 32 ? pow2_ceil((HEAD_DIM + 7) / 8) : 32;
constexpr int CERT_GPW = 32 / CERT_L;  // slots a warp takes at once
static_assert(CERT_L * 8 >= HEAD_DIM, "HEAD_DIM up to 256");
// 4-bit fast path: per slot and 8 channels four words of i16 weight bytes (hi even, hi odd,
// lo even, lo odd channels), matching the nibble order of a sketch word.
constexpr bool CERT_FAST4 = HEAD_DIM % 32 == 0;
constexpr int CERT_PW = HEAD_DIM / 2;  // packed words per slot
constexpr float CERT_E = 1.0f / 32768.0f;  // 2^-15
constexpr int CERT_V4 = HEAD_DIM / 32;             // 16-byte vectors of a 4-bit sketch row
constexpr int CERT_TPT = 2;                        // 4-bit rows a thread has in flight
constexpr int CERT_XU = 4;                         // cert_exact: row batches in flight

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


// grid (nch, tasks), block BLOCK, dynamic smem 2 * TG * caprows * 4 bytes.
extern "C" __global__ void __launch_bounds__(BLOCK, 3) cert_bounds(const AttnParams p) {
    PDL_ENTRY();
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
    __syncthreads();
    const float levels = bits > 0 ? (float)((1u << bits) - 1u) : 1.0f;
    const float inv_levels = 1.0f / levels;
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
        // (page, head) constants: CERT_L lanes per slot, 8 consecutive channels per lane (one
        // word group of the 4-bit sketch), CERT_GPW slots per warp at a time.
        for (int s0 = warp * CERT_GPW; s0 < np * TG; s0 += (BLOCK / 32) * CERT_GPW) {
            const int si = s0 + lane / CERT_L;  // this lane's slot
            const int sub = lane % CERT_L;
            const bool live = si < np * TG;
            const int pl = live ? si / TG : 0, g = live ? si % TG : 0;
            const int c8 = sub * 8;
            float lo[8], hi[8], w[8];
            {
                const size_t srow = ((size_t)s_page[p0 + pl] * p.num_kv_heads + ti.kvh) * HEAD_DIM;
                const float* qh = p.q + ((size_t)ti.b * p.num_heads + ti.h0 + g) * HEAD_DIM;
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    const int ch = c8 + j;
                    const bool ok = live && ch < HEAD_DIM;
                    lo[j] = ok ? ST::to_f(p.smin[srow + ch]) : 0.f;
                    hi[j] = ok ? ST::to_f(p.smax[srow + ch]) : 0.f;
                    w[j] = ok ? qh[ch] * p.scale : 0.f;  // the kernels' fl(scale·q)
                }
            }
            float c0 = 0.f, r = 0.f, W = 0.f, blo = 0.f, bhi = 0.f, wmax = 0.f;
            float ws[8];
#pragma unroll
            for (int j = 0; j < 8; ++j) {
                W = fmaf(fabsf(w[j]), fmaxf(fabsf(lo[j]), fabsf(hi[j])), W);
                const float step = fmaxf(hi[j] - lo[j], 0.f) * inv_levels;
                ws[j] = w[j] * step;
                c0 = fmaf(w[j], lo[j], c0);
                r = fmaf(fabsf(w[j]), step, r);
                wmax = fmaxf(wmax, fabsf(ws[j]));
                blo += fminf(w[j] * lo[j], w[j] * hi[j]);
                bhi += fmaxf(w[j] * lo[j], w[j] * hi[j]);
            }
#pragma unroll
            for (int off = CERT_L / 2; off > 0; off >>= 1) {
                c0 += __shfl_xor_sync(FULL_MASK, c0, off);
                r += __shfl_xor_sync(FULL_MASK, r, off);
                W += __shfl_xor_sync(FULL_MASK, W, off);
                wmax = fmaxf(wmax, __shfl_xor_sync(FULL_MASK, wmax, off));
                if (bits == 0) {
                    blo += __shfl_xor_sync(FULL_MASK, blo, off);
                    bhi += __shfl_xor_sync(FULL_MASK, bhi, off);
                }
            }
            float delta = 1.0f;
            if (live && fast4) {
                // δ: the power of two with max|ws|/δ in [2^13, 2^14): rounded, fits i16.
                const int ex = max((int)((__float_as_uint(wmax) >> 23) & 0xffu), 14);  // tiny: coarser δ
                const float inv_delta = wmax > 0.f ? __uint_as_float((u32)(127 + 140 - ex) << 23) : 1.0f;
                delta = wmax > 0.f ? __uint_as_float((u32)(ex - 13) << 23) : 1.0f;
                u32 hw[2] = {0u, 0u}, lw[2] = {0u, 0u};
#pragma unroll
                for (int j = 0; j < 8; ++j) {
                    const int qv = __float2int_rn(ws[j] * inv_delta);  // exact scaling
                    hw[j & 1] |= ((u32)(qv >> 8) & 0xffu) << (8 * (j >> 1));
                    lw[j & 1] |= ((u32)qv & 0xffu) << (8 * (j >> 1));
                }
                *reinterpret_cast<uint4*>(reinterpret_cast<u32*>(s_ws) + (size_t)si * CERT_PW + 4 * sub) =
                    make_uint4(hw[0], hw[1], lw[0], lw[1]);
            } else if (live && bits > 0) {
#pragma unroll
                for (int j = 0; j < 8; ++j)
                    if (c8 + j < HEAD_DIM) s_ws[si * CERT_WS + c8 + j] = ws[j];
            }
            if (live && sub == 0) {
                // S = Σ|ws| <= r up to rounding: r·1.001 bounds it.
                const float Su = r * 1.001f, Wu = W * 1.001f;
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
                if ((int)s_slot[p0 + pl] == open_slot) s_wopen[g] = Wu;
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
        // By FMA: the widening below is that dot's error bound (attn.cu, FMA_SCORER).
        FMA_SCORER(p, ti, ps, s_page + (npg - 1), s_slot + (npg - 1), qr, sl + (npg - 1) * ps, caprows);
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
        // Both lists in row order: warp w takes rows [w·span, (w + 1)·span), 32 at a time
        // (ballots), after a block scan of the warps' counts.
        const int span = (nrows + BLOCK / 32 - 1) / (BLOCK / 32);
        const int r0 = warp * span, r1 = min(r0 + span, nrows);
        int nl = 0, nu = 0;
        for (int rb = r0; rb < r1; rb += 32) {
            const int r = rb + lane;
            const bool kl = r < r1 && p.a * (lg[r] - R) > -1.0f;
            const bool ku = r < r1 && p.a * (ug[r] - R) > keep_u;
            nl += __popc(__ballot_sync(FULL_MASK, kl));
            nu += __popc(__ballot_sync(FULL_MASK, ku));
        }
        int tl, tu;
        int ol = block_excl_scan<BLOCK>(lane == 0 ? nl : 0, &tl);
        int ou = block_excl_scan<BLOCK>(lane == 0 ? nu : 0, &tu);
        ol = __shfl_sync(FULL_MASK, ol, 0);
        ou = __shfl_sync(FULL_MASK, ou, 0);
        const size_t idx = slot_index(p, task, c, g);
        float* cs = p.cand_s + idx * (size_t)caprows;
        float* cu = p.cand_u + idx * (size_t)caprows;
        u32* cp = p.cand_pos + idx * (size_t)caprows;
        u32* cl = p.has_alibi ? p.cand_lpos + idx * (size_t)caprows : nullptr;
        const u32 below = (1u << lane) - 1u;
        for (int rb = r0; rb < r1; rb += 32) {
            const int r = rb + lane;
            const float lv = r < r1 ? lg[r] : neg_inf(), uv = r < r1 ? ug[r] : neg_inf();
            const bool kl = r < r1 && p.a * (lv - R) > -1.0f;
            const bool ku = r < r1 && p.a * (uv - R) > keep_u;
            const u32 ml = __ballot_sync(FULL_MASK, kl), mu = __ballot_sync(FULL_MASK, ku);
            if (kl) cs[ol + __popc(ml & below)] = lv;
            if (ku) {
                const int at = ou + __popc(mu & below);
                const int pi = r / ps;
                cu[at] = uv;
                cp[at] = s_page[pi] * (u32)ps + (u32)(r - pi * ps);
                if (cl) cl[at] = s_slot[pi] * (u32)ps + (u32)(r - pi * ps);
            }
            ol += __popc(ml);
            ou += __popc(mu);
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
    PDL_ENTRY();
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
        // CERT_XU batches of RPW rows in flight: positions, then every K row, then the dots.
        for (int k0 = 0; k0 < kept; k0 += RPW * CERT_XU) {
            u32 pos[CERT_XU];
            uint4 buf[CERT_XU][CPL];
#pragma unroll
            for (int u = 0; u < CERT_XU; ++u) {
                const int k = k0 + u * RPW + rs;
                pos[u] = k < kept ? cp[k] : 0xffffffffu;
            }
#pragma unroll
            for (int u = 0; u < CERT_XU; ++u) {
                const u32 page = pos[u] / (u32)p.page_size;
                const kv_t* rowp = kv_row(p.k, p, page, ti.kvh, (int)(pos[u] - page * (u32)p.page_size));
#pragma unroll
                for (int i = 0; i < CPL; ++i) {
                    const int ch = sub + i * LANES;
                    buf[u][i] = (pos[u] != 0xffffffffu && ch < CHUNKS) ? ld_nc16(rowp, ch) : zero4();
                }
            }
#pragma unroll
            for (int u = 0; u < CERT_XU; ++u) {
                const int k = k0 + u * RPW + rs;
                float acc = 0.f;
#pragma unroll
                for (int i = 0; i < CPL; ++i) {
                    float x[KV_VEC];
                    KV::unpack(buf[u][i], x);
#pragma unroll
                    for (int j = 0; j < KV_VEC; ++j) acc = fmaf(qf[i * KV_VEC + j], x[j], acc);
                }
#pragma unroll
                for (int off = LANES / 2; off > 0; off >>= 1) acc += __shfl_xor_sync(FULL_MASK, acc, off);
                if (k < kept && sub == 0) {
                    float sc = acc;
                    if (cl) sc += p.slopes[ti.h0 + g] * ((float)cl[k] - qpos);
                    sc = finite_or_inf(sc);  // reported by the tail (attn.cu)
                    cs[k] = sc;
                    mx = fmaxf(mx, sc);
                }
            }
        }
        // Pages touched: kept rows on another page than the row before them.
        int pages = 0;
        for (int k = lane; k < kept; k += 32) {
            const u32 page = cp[k] / (u32)p.page_size;
            if (k == 0 || cp[k - 1] / (u32)p.page_size != page) ++pages;
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
