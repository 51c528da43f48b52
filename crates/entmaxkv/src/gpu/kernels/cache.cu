// Device appends: one decode token per sequence, exactly as `PagedKvCache::append` does it
// for a one-token chunk (same rounding, same f64 accumulator arithmetic, same compact
// statistics, same sketch), so a device pool equals a host cache given the same appends.

struct AppendParams {
    kv_t* k;
    kv_t* v;
    st_t* smin;
    st_t* smax;
    st_t* smean;
    st_t* sstd;
    unsigned char* sketch;
    const u32* block_tables;
    int* seq_lens;
    const int* rows;      // [B] cache row of each appended sequence
    const void* k_new;    // [B, H_kv, D], element type src_dtype
    const void* v_new;
    double* acc_mean;     // [rows, H_kv * D] open-page accumulators
    double* acc_m2;
    float* acc_min;
    float* acc_max;
    int num_kv_heads;
    int page_size;
    int bt_stride;
    int sketch_bits;
    int row_bytes;
    int batch;
    int src_dtype;        // k_new / v_new elements: 0 f32, 1 f16, 2 bf16
};
#ifdef EXPECT_APPEND_SIZE
static_assert(sizeof(AppendParams) == EXPECT_APPEND_SIZE, "AppendParams layout differs from Rust");
#endif

// Element i of an append's new keys or values as f32 (exact for f16 / bf16 sources).
__device__ __forceinline__ float load_new(const void* x, size_t i, int dtype) {
    if (dtype == 1) return h2f(static_cast<const u16*>(x)[i]);
    if (dtype == 2) return bf2f(static_cast<const u16*>(x)[i]);
    return static_cast<const float*>(x)[i];
}

// grid (B, H_kv), block 128.
extern "C" __global__ void cache_append(const AppendParams p) {
    const int b = blockIdx.x, kvh = blockIdx.y;
    const int row = p.rows[b];
    const int len = p.seq_lens[row];
    const int ps = p.page_size;
    const int slot = len / ps;
    const int tt = len - slot * ps;
    const u32 page = p.block_tables[(size_t)row * p.bt_stride + slot];
    const int hd = p.num_kv_heads * HEAD_DIM;
    const size_t kv_base = ((size_t)page * p.num_kv_heads + kvh) * (size_t)ps * HEAD_DIM;
    const size_t st_base = ((size_t)page * p.num_kv_heads + kvh) * HEAD_DIM;
    const double na = (double)tt;
    const double nt = (double)(tt + 1);
    for (int c = threadIdx.x; c < HEAD_DIM; c += blockDim.x) {
        const size_t src = ((size_t)b * p.num_kv_heads + kvh) * HEAD_DIM + c;
        const kv_t kq = KV::from_f(load_new(p.k_new, src, p.src_dtype));
        const kv_t vq = KV::from_f(load_new(p.v_new, src, p.src_dtype));
        p.k[kv_base + (size_t)tt * HEAD_DIM + c] = kq;
        p.v[kv_base + (size_t)tt * HEAD_DIM + c] = vq;
        const float x = KV::to_f(kq);
        const size_t ai = (size_t)row * hd + (size_t)kvh * HEAD_DIM + c;
        double mean = 0.0, m2 = 0.0;
        float mn = pos_inf(), mx = neg_inf();
        if (tt > 0) {
            mean = p.acc_mean[ai];
            m2 = p.acc_m2[ai];
            mn = p.acc_min[ai];
            mx = p.acc_max[ai];
        }
        // OpenPageAcc::merge_chunk with n = 1, operation for operation (no contraction).
        const double xd = (double)x;
        const double sum = __dadd_rn(0.0, xd);
        const double mean_b = __ddiv_rn(sum, 1.0);
        const double dx = __dadd_rn(xd, -mean_b);
        const double m2_b = __dadd_rn(0.0, __dmul_rn(dx, dx));
        const double delta = __dadd_rn(mean_b, -mean);
        mean = __dadd_rn(mean, __ddiv_rn(__dmul_rn(delta, 1.0), nt));
        const double inc = __ddiv_rn(__dmul_rn(__dmul_rn(__dmul_rn(delta, delta), na), 1.0), nt);
        m2 = __dadd_rn(m2, __dadd_rn(m2_b, inc));
        mn = fminf(mn, x);
        mx = fmaxf(mx, x);
        p.acc_mean[ai] = mean;
        p.acc_m2[ai] = m2;
        p.acc_min[ai] = mn;
        p.acc_max[ai] = mx;
        // OpenPageAcc::finalize_head + StatsStorage::write_row.
        const float meanf = __double2float_rn(mean);
        const float stdf = __double2float_rn(__dsqrt_rn(__ddiv_rn(fmax(m2, 0.0), nt)));
        p.smin[st_base + c] = ST::from_f_down(mn);
        p.smax[st_base + c] = ST::from_f_up(mx);
        p.smean[st_base + c] = ST::from_f(meanf);
        p.sstd[st_base + c] = ST::from_f(stdf);
    }
    if (tt + 1 == ps && p.sketch_bits > 0) {
        __syncthreads();
        // sketch::encode_row for every token of the page just closed.
        const int bits = p.sketch_bits;
        const u32 top = (1u << bits) - 1u;
        const int rb = p.row_bytes;
        for (int t2 = threadIdx.x; t2 < ps; t2 += blockDim.x) {
            unsigned char* out =
                p.sketch + ((size_t)page * p.num_kv_heads + kvh) * (size_t)ps * rb + (size_t)t2 * rb;
            for (int i = 0; i < rb; ++i) out[i] = 0;
            for (int c = 0; c < HEAD_DIM; ++c) {
                const double key = (double)KV::to_f(p.k[kv_base + (size_t)t2 * HEAD_DIM + c]);
                const double lo = (double)ST::to_f(p.smin[st_base + c]);
                const double hi = (double)ST::to_f(p.smax[st_base + c]);
                const double s = __ddiv_rn(fmax(__dadd_rn(hi, -lo), 0.0), (double)top);
                u32 code = 0;
                if (s > 0.0) {
                    double r = round(__ddiv_rn(__dadd_rn(key, -lo), s));
                    r = fmin(fmax(r, 0.0), (double)top);
                    code = (u32)r;
                }
                const int bit = c * bits;
                u64 v = ((u64)code) << (bit % 8);
                int byte = bit / 8;
                while (v != 0) {
                    out[byte] |= (unsigned char)(v & 0xffu);
                    v >>= 8;
                    ++byte;
                }
            }
        }
    }
}

// lens[rows[b]] += 1 for every appended sequence (after cache_append, in stream order).
extern "C" __global__ void cache_advance(const AppendParams p) {
    for (int b = threadIdx.x; b < p.batch; b += blockDim.x) p.seq_lens[p.rows[b]] += 1;
}
