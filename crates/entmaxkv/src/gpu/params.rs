//! `#[repr(C)]` mirrors of the kernels' parameter structs (see `kernels/*.cu`): plain device
//! addresses and scalars, one struct per kernel family, passed by value. Field order and
//! types must match the CUDA structs; every module is compiled with a `static_assert` on
//! the sizes computed here.

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AppendParams {
    pub k: u64,
    pub v: u64,
    pub smin: u64,
    pub smax: u64,
    pub smean: u64,
    pub sstd: u64,
    pub sketch: u64,
    pub block_tables: u64,
    pub seq_lens: u64,
    pub rows: u64,
    pub k_new: u64,
    pub v_new: u64,
    pub acc_mean: u64,
    pub acc_m2: u64,
    pub acc_min: u64,
    pub acc_max: u64,
    pub num_kv_heads: i32,
    pub page_size: i32,
    pub bt_stride: i32,
    pub sketch_bits: i32,
    pub row_bytes: i32,
    pub batch: i32,
    /// `k_new` / `v_new` elements: 0 f32, 1 f16, 2 bf16.
    pub src_dtype: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TopkParams {
    pub kmin: u64,
    pub kmax: u64,
    pub block_tables: u64,
    pub seq_lens: u64,
    pub rows: u64,
    pub q: u64,
    pub slopes: u64,
    pub keys: u64,
    pub lists: u64,
    pub list_counts: u64,
    pub sketch: u64,
    pub budget_frac: f64,
    pub scale: f32,
    pub budget_mode: i32,
    pub budget_tokens: i32,
    pub num_heads: i32,
    pub num_kv_heads: i32,
    pub group: i32,
    pub per_head: i32,
    pub page_size: i32,
    pub bt_stride: i32,
    pub list_stride: i32,
    pub ppb: i32,
    pub has_alibi: i32,
    pub sinks: i32,
    pub recent: i32,
    pub scoring: i32,
    pub sketch_bits: i32,
    pub sketch_rb: i32,
    pub kv_fast: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GaussParams {
    pub smean: u64,
    pub sstd: u64,
    pub block_tables: u64,
    pub seq_lens: u64,
    pub rows: u64,
    pub q: u64,
    pub mu: u64,
    pub var: u64,
    pub lists: u64,
    pub list_counts: u64,
    pub tau_hat: u64,
    pub part: u64,
    pub chunk_cnt: u64,
    pub chunk_cap: u64,
    pub head_floor: u64,
    pub head_z: u64,
    pub task_bad: u64,
    pub slopes: u64,
    pub tau_mix: u64,
    /// `[tstar_n, 3]` f64 nodes of t*(c) (tau::TstarTable), or 0: Newton.
    pub tstar: u64,
    pub a: f64,
    pub beta: f64,
    pub zp_low: f64,
    pub zp_high: f64,
    pub z_clamp: f64,
    pub excess_frac: f64,
    pub clamp_scale: f64,
    pub smz: f64,
    pub tstar_c0: f64,
    pub tstar_inv_h: f64,
    pub scale: f32,
    pub kint: i32,
    pub clamp_tau: i32,
    pub num_heads: i32,
    pub num_kv_heads: i32,
    pub group: i32,
    pub tg: i32,
    pub page_size: i32,
    pub bt_stride: i32,
    pub list_stride: i32,
    pub ws_stride: i32,
    pub ppb: i32,
    pub n_part: i32,
    pub spc: i32,
    pub nsel: i32,
    pub has_alibi: i32,
    pub within_page: i32,
    pub kv_fast: i32,
    pub robust: i32,
    pub tstar_n: i32,
}

/// `RobustParams` of `kernels/robust.cu` (the robust Gaussian criterion's kernels).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RobustParams {
    pub smin: u64,
    pub smax: u64,
    pub sketch: u64,
    pub block_tables: u64,
    pub seq_lens: u64,
    pub rows: u64,
    pub q: u64,
    pub slopes: u64,
    pub tau_hat: u64,
    pub task_bad: u64,
    pub box_hi: u64,
    pub best: u64,
    pub lmax: u64,
    pub mass: u64,
    pub lows: u64,
    pub cand: u64,
    pub want: u64,
    pub thr: u64,
    pub trust: u64,
    pub lists: u64,
    pub list_counts: u64,
    pub bounded: u64,
    pub cmax: u64,
    pub ccnt: u64,
    pub pcnt: u64,
    pub a: f64,
    pub beta: f64,
    pub gam: f64,
    pub lv: f64,
    pub drop_mass: f64,
    pub scale: f32,
    pub inv_levels: f32,
    pub qmax: f32,
    pub inv_qmax: f32,
    pub kint: i32,
    pub num_heads: i32,
    pub num_kv_heads: i32,
    pub group: i32,
    pub tg: i32,
    pub page_size: i32,
    pub bt_stride: i32,
    pub list_stride: i32,
    pub ws_stride: i32,
    pub sketch_bits: i32,
    pub sketch_rb: i32,
    pub sinks: i32,
    pub has_alibi: i32,
    pub nch_stride: i32,
    pub softmax: i32,
    /// 1: rob_solve starts Newton one histogram bin below τ_lb (else at aM − 1).
    pub hist_start: i32,
    /// 1: rob_tok1 forms the box bounds (one query head per task, α > 1); rob_box does not run.
    pub fuse_box: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AttnParams {
    pub k: u64,
    pub v: u64,
    pub block_tables: u64,
    pub seq_lens: u64,
    pub rows: u64,
    pub lists: u64,
    pub list_counts: u64,
    pub q: u64,
    pub slopes: u64,
    pub cand_s: u64,
    pub cand_pos: u64,
    pub cand_cnt: u64,
    pub gmax: u64,
    pub hist: u64,
    pub prof: u64,
    pub counters: u64,
    pub vcounters: u64,
    pub vflag: u64,
    pub part_o: u64,
    pub part_m: u64,
    pub part_l: u64,
    pub part_flag: u64,
    pub head_m: u64,
    pub head_t: u64,
    pub head_inv: u64,
    pub tau: u64,
    pub support: u64,
    pub out: u64,
    pub cand_u: u64,
    pub cand_lpos: u64,
    pub tau_lb: u64,
    pub gmag: u64,
    pub gslack: u64,
    pub cert_cnt: u64,
    pub cert_pages: u64,
    pub cert_flag: u64,
    pub smin: u64,
    pub smax: u64,
    pub sketch: u64,
    pub tau_hat: u64,
    /// `[2]` u32: non-finite flags and `!(first b·H + h)` (`GpuDecoder::check_finite`).
    pub status: u64,
    pub a_d: f64,
    pub beta_d: f64,
    pub scale: f32,
    pub a: f32,
    pub beta: f32,
    pub alpha_code: i32,
    pub num_heads: i32,
    pub num_kv_heads: i32,
    pub group: i32,
    pub tasks_per_b: i32,
    pub page_size: i32,
    pub bt_stride: i32,
    pub list_stride: i32,
    pub nch: i32,
    pub ppc_max: i32,
    pub cap: i32,
    pub small_support: i32,
    pub has_alibi: i32,
    pub sketch_bits: i32,
    pub sketch_row_bytes: i32,
    pub cert_phase: i32,
    pub tau_mode: i32,
    pub tau_iters: i32,
    pub wave_chunks: i32,
    /// 1: the tail solves the exact τ for β ∈ {1, 2, 3} from power sums (attn.cu
    /// `solve_closed`), Halley otherwise or when that does not apply.
    pub tau_closed: i32,
    /// The longest survivor list the tail solves by its lean path (attn.cu `lean_solve`);
    /// 0: none.
    pub tail_lean: i32,
    /// 1: the lean path ends as soon as a pass's support is the root's, with the root of
    /// that support in closed form (attn.cu `lean_closed`), not after a further pass.
    pub lean_closed: i32,
    /// 1: `attn_entmax_scores` follows a selection kernel, so it reads the row and length
    /// before `griddepcontrol.wait` (common.cuh PDL_PRE); 0: it is the step's first.
    pub pre_wait: i32,
    /// 1: the K pass's CTAs take their (task, chunk) chunk-major, so a selection's short
    /// lists fill the first resident wave (attn.cu `cta_task_chunk`; one head a task only).
    pub chunk_major: i32,
}

/// `kernels/gauss_fused.cu`: the Gaussian selection fused with the entmax K pass (short
/// caches); the attention and Gaussian parameters of the plan plus the fused workspaces.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FusedGaussParams {
    pub a: AttnParams,
    pub g: GaussParams,
    /// `[B * H, nmom, 4]` f64 moment partial sums per moment CTA.
    pub part: u64,
    /// `[tasks, keep_stride]` u8 keep flag of each page.
    pub keep: u64,
    /// `[tasks, nch]` i32 kept pages per chunk.
    pub ccnt: u64,
    /// `[tasks, nch, tg]` f64 clamp maximum over a chunk's kept pages.
    pub ccap: u64,
    /// `[tasks]` u64 moment CTAs that published, over all steps (only grows).
    pub arrived: u64,
    /// `[tasks]` u64 step + 1 of the task's last solve (only grows).
    pub ready: u64,
    /// `[tasks]` u64 chunk CTAs that finished, over all steps (only grows).
    pub done: u64,
    /// `[1]` u64 CTAs started, over all steps (only grows: role = ticket mod grid).
    pub ticket: u64,
    /// Null, or `[16]` u64 global-timer stamps of the last step (development aid).
    pub prof: u64,
    /// Moment CTAs per task.
    pub nmom: i32,
    /// Closed pages per moment CTA.
    pub ppb: i32,
    /// Bytes per task in `keep` (a multiple of 4).
    pub keep_stride: i32,
    pub pad_: i32,
}
