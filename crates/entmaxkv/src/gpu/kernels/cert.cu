// The `certified` strategy on the GPU (certificate/certified.rs): exact dense α-entmax from
// the key sketch, K read only for the tokens that can reach the threshold, V only for the
// support. Launch sequence (selection stage, then the attention stage of any method):
//
//   cert_bounds         per chunk of pages: rigorous score intervals [l, u] of every token
//                       for the TG heads — closed pages from their sketch rows and min/max
//                       rows (no K), the last page from its exact scores (K read; u = +inf,
//                       so it is always a candidate). l folds into the running maximum
//                       (gmax); the chunk keeps (l, u, row) of the tokens whose u is within
//                       the entmax range of it, with 1/2 of slack in z-space.
//   attn_entmax_filter  cert_phase = 1: kept by u against the final max of l (with the
//                       exclusion margin), histogram of the lower ends.
//   attn_entmax_tail    cert_phase = 1: τ_lb = the exact entmax τ of the lower ends (a lower
//                       bound of the dense τ: τ is monotone in the scores and in the set).
//   cert_exact          candidates = tokens with (α−1)·u + margin > τ_lb; their K rows,
//                       exact scores in place, running maximum of those.
//   attn_entmax_filter, attn_entmax_tail, attn_entmax_values as for any selection: τ solved
//                       on the candidates equals the dense τ (every other token is provably
//                       outside the dense support), V read for the support only.
//
// Rounding (certificate/mod.rs, "Rounding"): per (page, head) the constants are f64 and the
// per-token sketch dot is f32 on exact integer codes; every interval is widened by a proven
// bound on that arithmetic and by BOUND_ERR·Σ|w_d|·max(|kmin_d|, |kmax_d|), then rounded
// outward to f32. The exclusion margin is REL_SLACK·((α−1)·M + |τ_lb|) + 1e-6 (M the task's
// score magnitude); a head whose margin exceeds the bound pass's slack is reported
// uncertified.

__device__ __forceinline__ float code_to_float(u32 c) {
    // Exact for c < 2^23: the integer in the mantissa of 2^23 + c.
    return __uint_as_float(0x4B000000u | c) - 8388608.0f;
}

// Σ_c ws[g][c]·code_c for the TG heads, f32, for a BITS-bit sketch row (row_bytes a
// multiple of 4). `ws` rows are CERT_WS floats apart, TG rows per page slot.
template <int BITS> __device__ __forceinline__ void sketch_dot(const unsigned char* row, const float* ws, float (&dot)[TG]) {
    constexpr int WORDS = HEAD_DIM * BITS / 32;  // whole words (checked when planning)
    constexpr u32 MASK = (1u << BITS) - 1u;
    u32 w[(HEAD_DIM * BITS + 31) / 32 + 1];
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
    for (int i = WORDS; i < (HEAD_DIM * BITS + 31) / 32 + 1; ++i) w[i] = 0u;
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

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}

// grid (nch, tasks), block BLOCK, dynamic smem 2 * TG * caprows * 4 bytes.
extern "C" __global__ void __launch_bounds__(BLOCK) cert_bounds(const AttnParams p) {
    extern __shared__ __align__(16) unsigned char dyn[];
    __shared__ u32 s_page[PPC_CAP];
    __shared__ u32 s_slot[PPC_CAP];
    __shared__ __align__(16) float s_ws[CERT_SLOTS * CERT_WS];
    __shared__ double s_base[CERT_SLOTS][2];
    __shared__ double s_wopen[TG];
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
        if (threadIdx.x < TG) p.cand_cnt[slot_index(p, task, c, threadIdx.x)] = 0;
        return;
    }
    const int npg = pend - pbeg;
    const int ps = p.page_size;
    const int bits = p.sketch_bits;
    const int rb = p.sketch_row_bytes;
    const int open_slot = ti.npages - 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    load_chunk_pages(p, task, ti, pbeg, npg, s_page, s_slot);
    if (threadIdx.x < TG) s_mag[threadIdx.x] = 0u;
    __syncthreads();
    const double levels = bits > 0 ? (double)((1u << bits) - 1u) : 1.0;
    const double qpos = (double)ti.len - 1.0;
    constexpr int SUB = CERT_SLOTS / TG;  // pages per round
    for (int p0 = 0; p0 < npg; p0 += SUB) {
        const int np = min(SUB, npg - p0);
        // (page, head) constants, one warp per slot.
        for (int si = warp; si < np * TG; si += BLOCK / 32) {
            const int pi = p0 + si / TG, g = si % TG;
            const size_t srow = ((size_t)s_page[pi] * p.num_kv_heads + ti.kvh) * HEAD_DIM;
            const float* qh = p.q + ((size_t)ti.b * p.num_heads + ti.h0 + g) * HEAD_DIM;
            double c0 = 0.0, r = 0.0, S = 0.0, W = 0.0, blo = 0.0, bhi = 0.0;
            for (int ch = lane; ch < HEAD_DIM; ch += 32) {
                const double w = (double)(qh[ch] * p.scale);  // the kernels' fl(scale·q)
                const double lo = (double)ST::to_f(p.smin[srow + ch]);
                const double hi = (double)ST::to_f(p.smax[srow + ch]);
                W += fabs(w) * fmax(fabs(lo), fabs(hi));
                if (bits > 0) {
                    const double step = fmax(hi - lo, 0.0) / levels;  // sketch::step
                    const float wsf = (float)(w * step);
                    s_ws[si * CERT_WS + ch] = wsf;
                    c0 += w * lo;
                    r += fabs(w) * step * 0.5;
                    S += fabs((double)wsf);
                } else {
                    blo += fmin(w * lo, w * hi);
                    bhi += fmax(w * lo, w * hi);
                }
            }
            c0 = warp_sum_d(c0);
            r = warp_sum_d(r);
            S = warp_sum_d(S);
            W = warp_sum_d(W);
            blo = warp_sum_d(blo);
            bhi = warp_sum_d(bhi);
            if (lane == 0) {
                const double be = CERT_BOUND_ERR * W;
                if (bits > 0) {
                    // f32 dot of D terms |ws_c·code_c| <= levels·|ws_c|, plus the rounding of
                    // ws_c itself: (D + 2)·2^-24·levels·S; taken as (D + 4); the f64 sums above
                    // are covered by the 1e-12 term.
                    const double e = (double)(HEAD_DIM + 4) * 0x1p-24 * levels * S * 1.000001 + 1e-12 * (fabs(c0) + r);
                    s_base[si][0] = c0 - r - e - be;
                    s_base[si][1] = c0 + r + e + be;
                } else {
                    s_base[si][0] = blo - be - 1e-12 * fabs(blo);
                    s_base[si][1] = bhi + be + 1e-12 * fabs(bhi);
                }
                if ((int)s_slot[pi] == open_slot) s_wopen[g] = W;
                atomicMax(&s_mag[g], ordered_key(__double2float_ru(W)));
            }
        }
        __syncthreads();
        // Token intervals, one thread per closed-page token.
        for (int rr = threadIdx.x; rr < np * ps; rr += BLOCK) {
            const int pl = rr / ps, t = rr - pl * ps;
            const int pi = p0 + pl;
            const int r = pi * ps + t;
            const int slot = (int)s_slot[pi];
            const int pos = slot * ps + t;
            if (slot == open_slot && pos < ti.len) continue;  // exact below
            if (pos >= ti.len) {
#pragma unroll
                for (int g = 0; g < TG; ++g) {
                    sl[g * caprows + r] = neg_inf();
                    su[g * caprows + r] = neg_inf();
                }
                continue;
            }
            float dot[TG];
            if (bits > 0) {
                const unsigned char* row =
                    p.sketch + (((size_t)s_page[pi] * p.num_kv_heads + ti.kvh) * ps + t) * (size_t)rb;
                sketch_dot_bits(bits, row, s_ws + pl * TG * CERT_WS, dot);
            } else {
#pragma unroll
                for (int g = 0; g < TG; ++g) dot[g] = 0.f;
            }
#pragma unroll
            for (int g = 0; g < TG; ++g) {
                const int si = pl * TG + g;
                double bias = 0.0;
                if (p.has_alibi) bias = (double)p.slopes[ti.h0 + g] * ((double)pos - qpos);
                const double wb = fabs(bias) * 1e-6;  // the kernels add the bias in f32
                sl[g * caprows + r] = __double2float_rd(s_base[si][0] + (double)dot[g] + bias - wb);
                su[g * caprows + r] = __double2float_ru(s_base[si][1] + (double)dot[g] + bias + wb);
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
                const double e = ((double)(HEAD_DIM + 4) * 0x1p-24 + CERT_BOUND_ERR) * s_wopen[g] * 1.000001;
                const double bias = p.has_alibi ? fabs((double)p.slopes[ti.h0 + g] * ((double)(open_slot * ps + t) - qpos)) : 0.0;
                sl[g * caprows + r] = __double2float_rd((double)s - e - bias * 1e-6);
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
        const float keep_from = -1.0f - CERT_PREFILTER;
        const int per = (nrows + BLOCK - 1) / BLOCK;
        const int rb0 = threadIdx.x * per, re = min(rb0 + per, nrows);
        int cnt = 0;
        for (int r = rb0; r < re; ++r) cnt += (p.a * (ug[r] - R) > keep_from) ? 1 : 0;
        int total;
        int o = block_excl_scan<BLOCK>(cnt, &total);
        const size_t idx = slot_index(p, task, c, g);
        float* cs = p.cand_s + idx * (size_t)caprows;
        float* cu = p.cand_u + idx * (size_t)caprows;
        u32* cp = p.cand_pos + idx * (size_t)caprows;
        u32* cl = p.has_alibi ? p.cand_lpos + idx * (size_t)caprows : nullptr;
        for (int r = rb0; r < re; ++r) {
            if (p.a * (ug[r] - R) > keep_from) {
                const int pi = r / ps;
                cs[o] = lg[r];
                cu[o] = ug[r];
                cp[o] = s_page[pi] * (u32)ps + (u32)(r - pi * ps);
                if (cl) cl[o] = s_slot[pi] * (u32)ps + (u32)(r - pi * ps);
                ++o;
            }
        }
        if (threadIdx.x == 0) p.cand_cnt[idx] = total;
    }
}

// grid (ceil(nch / CPB), tasks), block BLOCK: warp w takes chunk blockIdx.x·CPB + w. After
// the τ_lb solve: keeps, in place, the candidates whose upper end reaches τ_lb (with the
// margin), scores them exactly from their K rows and folds the chunk maximum into gmax.
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
        const int cnt = p.cand_cnt[idx];
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
