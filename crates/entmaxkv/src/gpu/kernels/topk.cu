// Top-k page selection on the device (selection/topk.rs): the key-range bound of every
// closed page (or, topk_sketch_score, a score from the key sketch), then an exact top-k
// (higher bound first, ties to the lower page) by a three-digit radix select over order-preserving keys, written as an ascending slot list
// with the last page appended. No host round trip.

struct TopkParams {
    const st_t* kmin;
    const st_t* kmax;
    const u32* block_tables;
    const int* seq_lens;
    const int* rows;      // [B]
    const float* q;       // [B, H, D]
    const float* slopes;  // [H] or null
    u32* keys;            // [tasks, list_stride] ordered bound per closed page
    u32* lists;           // [tasks, list_stride] kept slots
    int* list_counts;     // [tasks]
    const unsigned char* sketch;  // [pages, H_kv, page_size, sketch_rb] key sketch (scoring 1, 2)
    double budget_frac;
    float scale;
    int budget_mode;      // 0: fraction of closed pages, 1: tokens
    int budget_tokens;
    int num_heads;
    int num_kv_heads;
    int group;            // H / H_kv
    int per_head;         // 1: a task per query head; 0: a task per kv head (shared)
    int page_size;
    int bt_stride;
    int list_stride;
    int ppb;              // closed pages per scoring CTA
    int has_alibi;
    int sinks;            // the first `sinks` closed pages always kept (key +inf)
    int recent;           // the last `recent` closed pages always kept (key f32::MAX)
    int scoring;          // selection/topk_sketch.rs TopkScoring: 0 box, 1 sketch, 2 sketch mass
    int sketch_bits;
    int sketch_rb;        // bytes of a sketch row
    int kv_fast;          // scoring grid is (B * H_kv, grid_x): kv heads of a page range side by side
};
#ifdef EXPECT_TOPK_SIZE
static_assert(sizeof(TopkParams) == EXPECT_TOPK_SIZE, "TopkParams layout differs from Rust");
#endif

// Budget::pages(closed, page_size), bit for bit.
__device__ __forceinline__ int topk_budget_pages(const TopkParams& p, int closed) {
    if (p.budget_mode == 1) {
        const int k = p.budget_tokens / p.page_size;
        return k < closed ? k : closed;
    }
    const double x = ceil(p.budget_frac * (double)closed);
    long long k = x > 0.0 ? (long long)x : 0;  // `as usize` saturates at 0
    const long long hi = closed > 1 ? closed : 1;
    if (k < 1) k = 1;
    if (k > hi) k = hi;
    if (k > closed) k = closed;
    return (int)k;
}

// grid (ceil(max_pages / ppb), B * H_kv), block BLOCK. Dynamic smem: group * HEAD_DIM floats.
// Pinned pages (selection/topk.rs `select_pinned`): sinks outrank recent pages, which
// outrank every bound.
__device__ __forceinline__ u32 pinned_key(const TopkParams& p, int pi, int closed, float bound) {
    if (pi < p.sinks) return ordered_key(pos_inf());
    if (pi >= closed - p.recent) return ordered_key(3.40282347e38f);
    return ordered_key(bound);
}

extern "C" __global__ void __launch_bounds__(BLOCK) topk_score(const TopkParams p) {
    PDL_ENTRY();
    extern __shared__ __align__(16) float qs[];  // [group, HEAD_DIM], scaled
    const StatCta sc = stat_cta(p);
    const int part = sc.part, b = sc.b, kvh = sc.kvh, row = sc.row, len = sc.len, closed = sc.closed;
    const int ps = p.page_size;
    const int k = topk_budget_pages(p, closed);
    if (k >= closed) return;
    const int p0 = part * p.ppb;
    if (p0 >= closed) return;
    const int p1 = min(closed, p0 + p.ppb);
    const int G = p.group;
    const int h0 = kvh * G;
    for (int i = threadIdx.x; i < G * HEAD_DIM; i += BLOCK)
        qs[i] = p.q[((size_t)b * p.num_heads + h0) * HEAD_DIM + i] * p.scale;
    __syncthreads();
    __shared__ u32 s_pages[256];
    for (int i = threadIdx.x; i < p1 - p0; i += BLOCK) s_pages[i] = p.block_tables[(size_t)row * p.bt_stride + p0 + i];
    __syncthreads();
    const float qpos = (float)(len - 1);
    const int lane = threadIdx.x % ST_LANES;
    const int rg = threadIdx.x / ST_LANES;
    constexpr int PU = 4;  // pages in flight per row group
    for (int pi0 = p0; pi0 < p1; pi0 += PU * ST_ROWGROUPS) {
        uint4 mn[PU][ST_CPL], mx[PU][ST_CPL];
#pragma unroll
        for (int u = 0; u < PU; ++u) {
            const int pi = pi0 + u * ST_ROWGROUPS + rg;
            if (pi < p1) {
                const size_t base = ((size_t)s_pages[pi - p0] * p.num_kv_heads + kvh) * HEAD_DIM;
#pragma unroll
                for (int i = 0; i < ST_CPL; ++i) {
                    const int ch = lane + i * ST_LANES;
                    mn[u][i] = ch < ST_CHUNKS ? ld_nc16(p.kmin + base, ch) : zero4();
                    mx[u][i] = ch < ST_CHUNKS ? ld_nc16(p.kmax + base, ch) : zero4();
                }
            } else {
#pragma unroll
                for (int i = 0; i < ST_CPL; ++i) {
                    mn[u][i] = zero4();
                    mx[u][i] = zero4();
                }
            }
        }
#pragma unroll
        for (int u = 0; u < PU; ++u) {
            const int pi = pi0 + u * ST_ROWGROUPS + rg;
            float lo[ST_CPL][ST_VEC], hi[ST_CPL][ST_VEC];
#pragma unroll
            for (int i = 0; i < ST_CPL; ++i) {
                ST::unpack(mn[u][i], lo[i]);
                ST::unpack(mx[u][i], hi[i]);
            }
            const float last_pos = (float)(pi * ps + ps - 1);
            float best = neg_inf();
            for (int g = 0; g < G; ++g) {
                const float* qg = qs + g * HEAD_DIM;
                float acc = 0.f;
#pragma unroll
                for (int i = 0; i < ST_CPL; ++i) {
                    const int ch = lane + i * ST_LANES;
                    if (ch < ST_CHUNKS) {
#pragma unroll
                        for (int j = 0; j < ST_VEC; ++j) {
                            const float qv = qg[ch * ST_VEC + j];
                            acc += fmaxf(qv * lo[i][j], qv * hi[i][j]);
                        }
                    }
                }
#pragma unroll
                for (int off = ST_LANES / 2; off > 0; off >>= 1)
                    acc += __shfl_xor_sync(FULL_MASK, acc, off);
                if (p.has_alibi) acc += p.slopes[h0 + g] * (last_pos - qpos);
                if (p.per_head) {
                    if (lane == 0 && pi < p1)
                        p.keys[((size_t)b * p.num_heads + h0 + g) * p.list_stride + pi] = pinned_key(p, pi, closed, acc);
                } else {
                    best = fmaxf(best, acc);
                }
            }
            if (!p.per_head && lane == 0 && pi < p1)
                p.keys[((size_t)b * p.num_kv_heads + kvh) * p.list_stride + pi] = pinned_key(p, pi, closed, best);
        }
    }
}

// Page scores from the key sketch (selection/topk_sketch.rs), in place of topk_score. Per
// token t of a closed page the interval of q·k: centre c_t = Σ w_c·lo_c + Σ w_c·step_c·code_t,c
// ± r = Σ|w_c|·step_c/2, intersected with the page's key-range box, plus the token's ALiBi
// bias. Sketch (1): the page's largest upper end; SketchMass (2): log Σ_t exp(midpoint of
// the token's interval). Without a sketch the intervals are the box. These are estimates for
// ranking: f32, not widened as the certificate's rigorous ends are (they differ from the
// CPU's by rounding, ~1e-6 of the score scale). The maximum over the group with a shared
// selection. grid (ceil(max_pages / ppb), B * H_kv), block BLOCK, dynamic smem
// (group + BLOCK/32) * HEAD_DIM floats: the scaled queries, then a step-weight row per warp.
__device__ __forceinline__ u32 sketch_code(const unsigned char* row, int c, int bits) {
    const int bit = c * bits, byte = bit >> 3, sh = bit & 7;
    u32 v = row[byte];
    if (sh + bits > 8) v |= (u32)row[byte + 1] << 8;
    return (v >> sh) & ((1u << bits) - 1u);
}

// Σ_c ws[c]·code_c of one sketch row: 32 channels at a time from BITS whole words (the
// chunk starts on a word: 32·BITS bits), codes cut out by funnel shifts. Rows must be whole
// words and HEAD_DIM a multiple of 32.
template <int BITS> __device__ __forceinline__ float sketch_row_dot(const unsigned char* row, const float* ws) {
    constexpr u32 MASK = (1u << BITS) - 1u;
    const u32* rw = reinterpret_cast<const u32*>(row);
    float dot = 0.f;
#pragma unroll
    for (int c0 = 0; c0 < HEAD_DIM; c0 += 32) {
        u32 w[BITS + 1];
#pragma unroll
        for (int i = 0; i < BITS; ++i) w[i] = __ldcs(rw + c0 * BITS / 32 + i);
        w[BITS] = 0u;
#pragma unroll
        for (int j = 0; j < 32; ++j) {
            const int bit = j * BITS, wi = bit >> 5, sh = bit & 31;
            const u32 code = (sh + BITS <= 32 ? (w[wi] >> sh) : __funnelshift_r(w[wi], w[wi + 1], sh)) & MASK;
            dot = fmaf(ws[c0 + j], (float)code, dot);
        }
    }
    return dot;
}

__device__ __forceinline__ float sketch_dot_any(const unsigned char* row, const float* ws, int bits, bool words) {
    if constexpr (HEAD_DIM % 32 == 0) {
        if (words) {
            switch (bits) {
                case 1: return sketch_row_dot<1>(row, ws);
                case 2: return sketch_row_dot<2>(row, ws);
                case 3: return sketch_row_dot<3>(row, ws);
                case 4: return sketch_row_dot<4>(row, ws);
                case 5: return sketch_row_dot<5>(row, ws);
                case 6: return sketch_row_dot<6>(row, ws);
                case 7: return sketch_row_dot<7>(row, ws);
                default: return sketch_row_dot<8>(row, ws);
            }
        }
    }
    float dot = 0.f;
    for (int c = 0; c < HEAD_DIM; ++c) dot = fmaf(ws[c], (float)sketch_code(row, c, bits), dot);
    return dot;
}

// Online log-sum-exp (max, Σ e^{x − max}) and its merge.
__device__ __forceinline__ void lse_add(float& m, float& s, float x) {
    if (x > m) {
        s = s * __expf(m - x) + 1.f;
        m = x;
    } else {
        s += __expf(x - m);
    }
}

extern "C" __global__ void __launch_bounds__(BLOCK) topk_sketch_score(const TopkParams p) {
    PDL_ENTRY();
    extern __shared__ __align__(16) float qs[];  // [group, HEAD_DIM] scaled, then [warps, HEAD_DIM]
    const StatCta sc = stat_cta(p);
    const int part = sc.part, b = sc.b, kvh = sc.kvh, row = sc.row, len = sc.len, closed = sc.closed;
    const int ps = p.page_size;
    const int k = topk_budget_pages(p, closed);
    if (k >= closed) return;
    const int p0 = part * p.ppb;
    if (p0 >= closed) return;
    const int p1 = min(closed, p0 + p.ppb);
    const int G = p.group;
    const int h0 = kvh * G;
    for (int i = threadIdx.x; i < G * HEAD_DIM; i += BLOCK)
        qs[i] = p.q[((size_t)b * p.num_heads + h0) * HEAD_DIM + i] * p.scale;
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float* wsm = qs + G * HEAD_DIM + warp * HEAD_DIM;
    const int bits = p.sketch_bits;
    const bool words = (p.sketch_rb & 3) == 0;
    const float inv_l = bits > 0 ? 1.0f / (float)((1u << bits) - 1u) : 1.0f;
    const float q_pos = (float)(len - 1);
    // A warp per page: lanes over channels for the page constants, lanes over tokens after.
    for (int pi = p0 + warp; pi < p1; pi += BLOCK / 32) {
        const u32 page = p.block_tables[(size_t)row * p.bt_stride + pi];
        const size_t sbase = ((size_t)page * p.num_kv_heads + kvh) * HEAD_DIM;
        const unsigned char* sk = p.sketch + ((size_t)page * p.num_kv_heads + kvh) * ps * (size_t)p.sketch_rb;
        float lo_r[(HEAD_DIM + 31) / 32], d_r[(HEAD_DIM + 31) / 32];
#pragma unroll
        for (int i = 0; i < (HEAD_DIM + 31) / 32; ++i) {
            const int c = lane + 32 * i;
            lo_r[i] = c < HEAD_DIM ? ST::to_f(p.kmin[sbase + c]) : 0.f;
            d_r[i] = c < HEAD_DIM ? ST::to_f(p.kmax[sbase + c]) - lo_r[i] : 0.f;
        }
        float best = neg_inf();
        for (int g = 0; g < G; ++g) {
            const float* w = qs + g * HEAD_DIM;
            // Page constants: Σ w·lo, the box's negative and positive parts, the radius.
            float blo = 0.f, bneg = 0.f, bpos = 0.f, rr = 0.f;
#pragma unroll
            for (int i = 0; i < (HEAD_DIM + 31) / 32; ++i) {
                const int c = lane + 32 * i;
                if (c < HEAD_DIM) {
                    const float wd = w[c] * d_r[i];
                    blo = fmaf(w[c], lo_r[i], blo);
                    bneg += fminf(wd, 0.f);
                    bpos += fmaxf(wd, 0.f);
                    const float ws = bits > 0 ? w[c] * (d_r[i] * inv_l) : 0.f;
                    wsm[c] = ws;
                    rr += fabsf(bits > 0 ? ws : wd);
                }
            }
            blo = warp_sum_f(blo);
            bneg = warp_sum_f(bneg);
            bpos = warp_sum_f(bpos);
            rr = 0.5f * warp_sum_f(rr);
            // Without a sketch every token's interval is the box (centre its midpoint).
            const float c0 = bits > 0 ? blo : blo + 0.5f * (bneg + bpos);
            const float box_lo = blo + bneg, box_hi = blo + bpos;
            __syncwarp();
            const float slope = p.has_alibi ? p.slopes[h0 + g] : 0.f;
            float mx_up = neg_inf(), lm = neg_inf(), ls = 0.f;
            for (int t = lane; t < ps; t += 32) {
                const float dot = bits > 0 ? sketch_dot_any(sk + (size_t)t * p.sketch_rb, wsm, bits, words) : 0.f;
                const float ctr = c0 + dot;
                const float al = slope * ((float)(pi * ps + t) - q_pos);
                const float u = fminf(ctr + rr, box_hi) + al;
                const float l = fmaxf(ctr - rr, box_lo) + al;
                mx_up = fmaxf(mx_up, u);
                lse_add(lm, ls, 0.5f * (u + l));
            }
            float score = warp_max_f(mx_up);
            if (p.scoring == 2) {
                const float m = warp_max_f(lm);
                const float sum = warp_sum_f(lm > neg_inf() ? ls * __expf(lm - m) : 0.f);
                score = m + __logf(sum);
            }
            __syncwarp();
            if (p.per_head) {
                if (lane == 0) p.keys[((size_t)b * p.num_heads + h0 + g) * p.list_stride + pi] = pinned_key(p, pi, closed, score);
            } else {
                best = fmaxf(best, score);
            }
        }
        if (!p.per_head && lane == 0)
            p.keys[((size_t)b * p.num_kv_heads + kvh) * p.list_stride + pi] = pinned_key(p, pi, closed, best);
    }
}

constexpr int SEL_THREADS = 1024;
constexpr int SEL_STAGE = 8192;  // keys staged in shared memory (32 KB)

// Warp-contiguous key ranges: warp w owns [w·WR, (w+1)·WR) (WR a multiple of 1024); each
// step the warp reads 1024 consecutive keys as 8 coalesced 512-byte vector loads and calls
// f(key, i, valid) on every lane for keys i = base + u·128 + 4·lane + e, in index order
// within the lane's group of 4 (order across lanes is by the caller's scans).
template <class F> __device__ __forceinline__ void warp_keys(const u32* K, int beg, int end, F f) {
    const int lane = threadIdx.x & 31;
    for (int i0 = beg; i0 < end; i0 += 1024) {
        uint4 v[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
            const int i = i0 + u * 128 + 4 * lane;
            v[u] = i < end ? *reinterpret_cast<const uint4*>(K + i) : zero4();
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
            const int i = i0 + u * 128 + 4 * lane;
            f(v[u].x, i, i < end);
            f(v[u].y, i + 1, i + 1 < end);
            f(v[u].z, i + 2, i + 2 < end);
            f(v[u].w, i + 3, i + 3 < end);
        }
    }
}

// Keeps the keys selected by `keep(key, i)` in index order: per-warp counts, a block scan of
// the warp totals, then in-warp ballots. Writes L[0..total) and returns total.
template <class P> __device__ int compact_keys(const u32* K, int beg, int end, u32* L, P keep) {
    __shared__ int s_wt[32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    int mine = 0;
    warp_keys(K, beg, end, [&](u32 key, int i, bool ok) { mine += (ok && keep(key, i)) ? 1 : 0; });
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mine += __shfl_xor_sync(FULL_MASK, mine, off);
    int total;
    const int wbase = block_excl_scan<SEL_THREADS>(lane == 0 ? mine : 0, &total);
    if (lane == 0) s_wt[w] = wbase;
    __syncthreads();
    int o = s_wt[w];
    // Index order: groups of 128 keys, inside a group lane-major (4 consecutive keys a lane).
    for (int i0 = beg; i0 < end; i0 += 1024) {
        uint4 v[8];
#pragma unroll
        for (int u = 0; u < 8; ++u) {
            const int i = i0 + u * 128 + 4 * lane;
            v[u] = i < end ? *reinterpret_cast<const uint4*>(K + i) : zero4();
        }
#pragma unroll
        for (int u = 0; u < 8; ++u) {
            const int i = i0 + u * 128 + 4 * lane;
            const u32 kk[4] = {v[u].x, v[u].y, v[u].z, v[u].w};
            int f[4], n = 0;
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                f[e] = (i + e < end && keep(kk[e], i + e)) ? 1 : 0;
                n += f[e];
            }
            // Exclusive scan of n over the warp's lanes.
            int x = n;
#pragma unroll
            for (int off = 1; off < 32; off <<= 1) {
                const int y = __shfl_up_sync(FULL_MASK, x, off);
                if (lane >= off) x += y;
            }
            int at = o + x - n;
#pragma unroll
            for (int e = 0; e < 4; ++e)
                if (f[e]) L[at++] = (u32)(i + e);
            o += __shfl_sync(FULL_MASK, x, 31);
        }
    }
    return total;
}

// grid (tasks), block SEL_THREADS.
extern "C" __global__ void __launch_bounds__(SEL_THREADS) topk_select(const TopkParams p) {
    __shared__ int hist[2048];
    __shared__ int s_digit, s_cum;
    __shared__ u32 s_idx;
    __shared__ u32 s_mn[32], s_mx[32];
    const int task = blockIdx.x;
    const int tpb = p.per_head ? p.num_heads : p.num_kv_heads;
    const int b = task / tpb;
    // The length before the wait (PDL_PRE: topk_score, the previous launch, writes only keys).
    const int row = __ldcg(p.rows + b);
    const int len = __ldcg(p.seq_lens + row);
    PDL_ENTRY();
    const int ps = p.page_size;
    const int npages = (len + ps - 1) / ps;
    const int closed = npages - 1;
    const int k = topk_budget_pages(p, closed);
    u32* L = p.lists + (size_t)task * p.list_stride;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (k >= closed) {
        for (int i = tid; i < npages; i += SEL_THREADS) L[i] = (u32)i;
        if (tid == 0) p.list_counts[task] = npages;
        return;
    }
    if (k == 0) {
        if (tid == 0) {
            L[0] = (u32)closed;
            p.list_counts[task] = 1;
        }
        return;
    }
    // Short key rows are staged in shared memory once; every pass then reads them there.
    __shared__ __align__(16) u32 s_keys[SEL_STAGE];
    const u32* K = p.keys + (size_t)task * p.list_stride;
    if (closed <= SEL_STAGE) {
        // 16-byte copies, then the last partial vector element by element: the key row is
        // written only up to `closed`, and reading past it would read unwritten memory.
        for (int i = tid * 4; i < closed; i += SEL_THREADS * 4) {
            if (i + 4 <= closed) {
                *reinterpret_cast<uint4*>(s_keys + i) = *reinterpret_cast<const uint4*>(K + i);
            } else {
                for (int j = i; j < closed; ++j) s_keys[j] = K[j];
            }
        }
        __syncthreads();
        K = s_keys;
    }
    constexpr int NW = SEL_THREADS / 32;
    const int WR = ((closed + NW - 1) / NW + 1023) & ~1023;
    const int beg = min(warp * WR, closed), end = min(beg + WR, closed);
    // Key range, so the radix digits span the keys actually present (iid bounds share
    // their sign, exponent and leading mantissa bits).
    u32 kmn = 0xffffffffu, kmx = 0u;
    warp_keys(K, beg, end, [&](u32 key, int, bool ok) {
        if (ok) {
            kmn = min(kmn, key);
            kmx = max(kmx, key);
        }
    });
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
        kmn = min(kmn, __shfl_xor_sync(FULL_MASK, kmn, off));
        kmx = max(kmx, __shfl_xor_sync(FULL_MASK, kmx, off));
    }
    if (lane == 0) {
        s_mn[warp] = kmn;
        s_mx[warp] = kmx;
    }
    __syncthreads();
    kmn = s_mn[0];
    kmx = s_mx[0];
    for (int w = 1; w < NW; ++w) {
        kmn = min(kmn, s_mn[w]);
        kmx = max(kmx, s_mx[w]);
    }
    const u32 range = kmx - kmn;
    u32 prefix = 0, mask = 0;
    int rem = k, cnt_eq = closed;
    // Radix select on key − kmin, 11 bits at a time from the top bit of the range.
    for (int hi_bit = range ? 32 - __clz(range) : 0; hi_bit > 0;) {
        const int shift = hi_bit > 11 ? hi_bit - 11 : 0;
        const int bins = 1 << (hi_bit - shift);
        for (int i = tid; i < 2048; i += SEL_THREADS) hist[i] = 0;
        __syncthreads();
        warp_keys(K, beg, end, [&](u32 key, int, bool ok) {
            const u32 kk = key - kmn;
            if (ok && (kk & mask) == prefix) atomicAdd(&hist[(kk >> shift) & (u32)(bins - 1)], 1);
        });
        __syncthreads();
        // Descending digit order: thread t covers descending positions 2t, 2t+1.
        const int j0 = 2 * tid, j1 = 2 * tid + 1;
        const int c0 = j0 < bins ? hist[bins - 1 - j0] : 0;
        const int c1 = j1 < bins ? hist[bins - 1 - j1] : 0;
        int tot;
        const int ex = block_excl_scan<SEL_THREADS>(c0 + c1, &tot);
        if (ex < rem && rem <= ex + c0) {
            s_digit = bins - 1 - j0;
            s_cum = ex;
        } else if (ex + c0 < rem && rem <= ex + c0 + c1) {
            s_digit = bins - 1 - j1;
            s_cum = ex + c0;
        }
        __syncthreads();
        const int dgt = s_digit;
        rem -= s_cum;
        cnt_eq = hist[dgt];
        prefix |= ((u32)dgt) << shift;
        mask |= ((u32)(bins - 1)) << shift;
        hi_bit = shift;
        __syncthreads();
    }
    const u32 T = prefix + kmn;
    // `rem` keys equal to T are kept, the lowest pages first: the index of the rem-th tie.
    u32 thr = 0xffffffffu;
    if (rem < cnt_eq) {
        // The ties in index order (into L, overwritten below); the rem-th is the last kept.
        compact_keys(K, beg, end, L, [&](u32 key, int) { return key == T; });
        __syncthreads();
        if (tid == 0) s_idx = L[rem - 1];
        __syncthreads();
        thr = s_idx;
    }
    const int total =
        compact_keys(K, beg, end, L, [&](u32 key, int i) { return key > T || (key == T && (u32)i <= thr); });
    if (tid == 0) {
        L[total] = (u32)closed;
        p.list_counts[task] = total + 1;
    }
}
