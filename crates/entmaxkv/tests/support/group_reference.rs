//! The per-group path a decode step must equal: a selector on one group's pages, then the
//! group kernel over the kept pages (shared by the test files that check the decoder's
//! page-major and union walks against it).

use entmaxkv::attention::cpu::{
    attend_group, GroupTask, HeadResult, PoolGeometry, TauMode, Workspace,
};
use entmaxkv::cache::{PagedKvCache, SeqView};
use entmaxkv::selection::{SelectScratch, Selection, SelectionContext};
use entmaxkv::with_kv;

/// One group of `slopes.len()` query heads of kv head `kv_head`: `select` fills the
/// selection from the context, then [`attend_group`] runs over the kept pages (with the
/// selection's τ̂ unless `mode` is exact). Returns the selection, the outputs `[group, D]`
/// and the per-head results.
#[allow(clippy::too_many_arguments)]
pub fn group_reference(
    cache: &PagedKvCache,
    seq: SeqView<'_>,
    geom: PoolGeometry,
    kv_head: usize,
    q_scaled: &[f32],
    slopes: &[f32],
    alpha: f64,
    mode: TauMode,
    select: impl FnOnce(&SelectionContext<'_>, &mut SelectScratch, &mut Selection),
) -> (Selection, Vec<f32>, Vec<HeadResult>) {
    let (tg, d, ps) = (slopes.len(), geom.head_dim, geom.page_size);
    let ctx = SelectionContext {
        cache,
        seq,
        kv_head,
        q_scaled,
        slopes,
        alpha,
    };
    let mut scratch = SelectScratch::new(seq.pages.len(), d);
    let mut sel = Selection::with_capacity(seq.pages.len(), tg);
    select(&ctx, &mut scratch, &mut sel);
    let task = GroupTask {
        kv_head,
        pages: &sel.pages,
        q_scaled,
        slopes,
        q_pos: seq.len as f32 - 1.0,
        tau_hat: if mode == TauMode::Exact {
            None
        } else {
            Some(&sel.tau_hat)
        },
    };
    let mut ws = Workspace::new(tg, seq.len, ps, d);
    let mut out = vec![0.0f32; tg * d];
    let mut res = vec![HeadResult::default(); tg];
    with_kv!(cache.kv(), |k, v| {
        attend_group(k, v, geom, &task, alpha, mode, &mut ws, &mut out, &mut res)
    })
    .unwrap();
    (sel, out, res)
}
