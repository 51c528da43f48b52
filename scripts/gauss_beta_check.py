#!/usr/bin/env python3
"""Off-device check of the GPU's generic-β Gaussian moments (crates/entmaxkv/src/gpu/kernels/
gauss_beta.cuh) against the CPU. Needs g++, numpy and cargo; no GPU.

    python3 scripts/gauss_beta_check.py            # builds the reference with cargo
    python3 scripts/gauss_beta_check.py --ref F    # reuses a reference file

1. The CPU reference: `cargo test --release -p entmaxkv --lib gauss_beta_reference_dump
   -- --ignored` writes the adaptive double-exponential rule's ln M_β(t) and M_{β−1}/M_β
   (tau/gaussian.rs std_moment_quad_adaptive) on a (β, t) grid, and the CPU's τ̂ of single
   Gaussians (tau_hat_single, tol 1e-14) for several α.
2. The device code: scripts/gauss_beta_host.cpp includes gauss_beta.cuh as plain C++ (the
   same text NVRTC compiles) and answers the same queries.
3. Independent of both: t = 0 closed forms (M_ν(0) = 2^{(ν−1)/2} Γ((ν+1)/2)/√(2π)) from tiny
   to huge β, where the CPU reference itself is inexact (tiny β: it falls back to the adaptive
   rule, which loses the x^{β−1} mass below 1e-308), and the identity ρ1 = (d ln M_β/dt)/β.

Prints the worst errors; exit status 1 when one exceeds --tol (default 1e-10) or the device
ladder fails anywhere on the grid.
"""
import argparse
import math
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
REQUIRED_BETAS = [0.5, 0.8, 1.3, 4.0, 6.0]


def run_host(exe, queries):
    out = subprocess.run([exe], input="".join(queries), capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def moment_queries(pairs, kind="m"):
    return [f"{kind} {float(b)!r} {float(t)!r}\n" for b, t in pairs]


def parse_m(lines, warp=False):
    rows = [ln.split() for ln in lines]
    if warp:
        return parse_m([" ".join(r[:5]) for r in rows]) + (np.array([int(r[5]) for r in rows]),)
    ok = np.array([int(r[0]) for r in rows])
    lm = np.array([float(r[1]) for r in rows])
    ra = np.array([float(r[2]) for r in rows])
    rule = np.array([int(r[3]) for r in rows])
    level = np.array([int(r[4]) for r in rows])
    return ok, lm, ra, rule, level


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", help="reference file (default: generate with cargo)")
    ap.add_argument("--tol", type=float, default=1e-10)
    a = ap.parse_args()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gbeta_"))
    ref = a.ref
    if ref is None:
        ref = str(tmp / "ref.txt")
        env = dict(os.environ, ENTMAXKV_GBETA_REF=ref)
        subprocess.run(["cargo", "test", "--release", "-p", "entmaxkv", "--lib", "gauss_beta_reference_dump",
                        "--", "--ignored"], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    exe = str(tmp / "gauss_beta_host")
    # the stress build accepts no level before the ones the device adds beyond the CPU's
    # ladder (trapezoid halvings 3-4, tanh-sinh 4-5), which the grid never needs otherwise
    stress = str(tmp / "gauss_beta_host_stress")
    for out, extra in [(exe, []), (stress, ["-DGB_TRAP_FIRST_ACCEPT=3", "-DGB_TS_FIRST_ACCEPT=4"])]:
        subprocess.run(["g++", "-O2", "-std=c++20", "-pthread", "-Wall", "-Wextra", "-Werror", *extra, "-o", out,
                        str(ROOT / "scripts/gauss_beta_host.cpp")], check=True)

    m_rows, tau_rows = [], []
    for ln in pathlib.Path(ref).read_text().splitlines():
        f = ln.split()
        if f[0] == "m":
            m_rows.append([float(x) for x in f[1:6]])
        elif f[0] == "tau":
            tau_rows.append([float(x) for x in f[1:6]])
    m = np.array(m_rows)
    beta, t, lm_ref, ra_ref, fast_ok = m.T
    ok, lm, ra, rule, level = parse_m(run_host(exe, moment_queries(zip(beta, t))))
    bad = 0
    if not ok.all():
        i = np.where(ok == 0)[0]
        print(f"FAIL: device ladder failed at {len(i)} grid points, e.g. beta={beta[i[0]]} t={t[i[0]]}")
        bad = 1
    e_lm = np.abs(lm - lm_ref) / np.maximum(1.0, np.abs(lm_ref))
    e_ra = np.abs(ra - ra_ref) / ra_ref
    # ladder levels beyond the CPU's (trapezoid 3 levels: 0..2; tanh-sinh 4: 0..3)
    extended = ((rule == 0) & (level > 2)) | ((rule == 1) & (level > 3))
    print(f"moments: {len(beta)} (beta, t) points, beta in [{beta.min():g}, {beta.max():g}], "
          f"t in [{t.min():g}, {t.max():g}]; CPU fast rule fell back at {int((fast_ok == 0).sum())}, "
          f"device used its extended levels at {int(extended.sum())}")
    worst = 0.0
    for name, sel in [("required beta {0.5,0.8,1.3,4,6}, |t|<=40",
                       np.isin(beta, REQUIRED_BETAS) & (np.abs(t) <= 40)),
                      ("all grid points", np.ones_like(beta, dtype=bool))]:
        il, ir = np.argmax(np.where(sel, e_lm, -1)), np.argmax(np.where(sel, e_ra, -1))
        print(f"  {name}: worst ln M rel {e_lm[il]:.2e} (beta={beta[il]:g} t={t[il]:g}), "
              f"worst ratio rel {e_ra[ir]:.2e} (beta={beta[ir]:g} t={t[ir]:g})")
        worst = max(worst, e_lm[il], e_ra[ir])
    for b in REQUIRED_BETAS:
        sel = (beta == b) & (np.abs(t) <= 40)
        print(f"    beta={b:g}: ln M {e_lm[sel].max():.2e}, ratio {e_ra[sel].max():.2e}")
    for r, name in [(0, "trapezoid"), (1, "tanh-sinh")]:
        hist = {int(v): int(((rule == r) & (level == v)).sum()) for v in np.unique(level[rule == r])}
        print(f"  {name}: accepted after halvings {hist}")

    # stress build: every point through the extra levels; all must converge and match
    sok, slm, sra, srule, slevel = parse_m(run_host(stress, moment_queries(zip(beta, t))))
    ext = (sok == 1) & (((srule == 0) & (slevel > 2)) | ((srule == 1) & (slevel > 3)))
    s_lm = np.abs(slm - lm_ref) / np.maximum(1.0, np.abs(lm_ref))
    s_ra = np.abs(sra - ra_ref) / ra_ref
    ws = max(s_lm[ext].max(initial=0.0), s_ra[ext].max(initial=0.0))
    print(f"stress (no acceptance before the extra levels): {int(ext.sum())} of {len(beta)} points "
          f"accepted there (trapezoid {int((ext & (srule == 0)).sum())}, tanh-sinh "
          f"{int((ext & (srule == 1)).sum())}), worst rel {ws:.2e}; {int((sok == 0).sum())} not converged")
    if not ext.all():
        print("FAIL: the stress build did not converge in the extra levels everywhere")
        bad = 1
    worst = max(worst, ws)

    # the 32-lane split (gauss_count's warp), emulated by host threads, on every 7th point,
    # with the production and the stress builds
    sub = np.arange(0, len(beta), 7)
    for name, binary in [("production", exe), ("stress", stress)]:
        wok, wlm, wra, _, _, same = parse_m(
            run_host(binary, moment_queries(zip(beta[sub], t[sub]), "m32")), warp=True)
        w_lm = np.abs(wlm - lm_ref[sub]) / np.maximum(1.0, np.abs(lm_ref[sub]))
        w_ra = np.abs(wra - ra_ref[sub]) / ra_ref[sub]
        ww = max(w_lm.max(), w_ra.max())
        print(f"32 lanes, {name} build: {len(sub)} points, worst rel {ww:.2e}; "
              f"lanes bitwise equal: {bool(same.all())}; failed: {int((wok == 0).sum())}")
        if not (wok.all() and same.all()):
            print("FAIL: 32-lane split failed or lanes disagree")
            bad = 1
        worst = max(worst, ww)

    # τ̂ of single Gaussians against tau_hat_single
    tr = np.array(tau_rows)
    qs = [f"tau {float(al)!r} {float(mu)!r} {float(sg)!r} {float(n)!r}\n" for al, mu, sg, n, _ in tr]
    tau = np.array([float(x) for x in run_host(exe, qs)])
    e_tau = np.abs(tau - tr[:, 4]) / np.maximum(1.0, np.abs(tr[:, 4]))
    i = int(np.argmax(e_tau))
    print(f"tau_hat single: {len(tr)} cases, alpha in {sorted(set(float(x) for x in tr[:, 0]))}; worst rel {e_tau[i]:.2e} "
          f"(alpha={tr[i, 0]:g} mu={tr[i, 1]:g} sigma={tr[i, 2]:g} n={tr[i, 3]:g})")
    worst_tau = e_tau[i]
    if not np.isfinite(tau).all():
        print("FAIL: non-finite device tau")
        bad = 1
    rows32 = [ln.split() for ln in run_host(exe, [q.replace("tau ", "tau32 ", 1) for q in qs])]
    tau32 = np.array([float(r[0]) for r in rows32])
    same32 = all(r[1] == "1" for r in rows32)
    e32 = np.abs(tau32 - tr[:, 4]) / np.maximum(1.0, np.abs(tr[:, 4]))
    print(f"tau_hat single, 32 lanes (as gauss_count): worst rel {e32.max():.2e}; lanes bitwise equal: {same32}")
    worst_tau = max(worst_tau, e32.max())
    if not (same32 and np.isfinite(tau32).all()):
        print("FAIL: 32-lane tau")
        bad = 1

    # t = 0 closed forms, tiny to huge β (beyond the CPU reference's accurate range)
    zb = [2e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-3, 0.05, 0.5, 1.7, 10.0, 100.0, 1e4, 1e6, 1e9, 1e12]
    ok0, lm0, ra0, _, _ = parse_m(run_host(exe, moment_queries((b, 0.0) for b in zb)))
    w0 = 0.0
    for b, o, l, r in zip(zb, ok0, lm0, ra0):
        want_l = 0.5 * (b - 1.0) * math.log(2.0) + math.lgamma(0.5 * (b + 1.0)) - 0.5 * math.log(2 * math.pi)
        if b >= 1e4:  # Γ ratio loses precision: ρ1 = β^{−1/2}(1 + 1/(4β) + 1/(32β²) + O(β⁻³))
            want_r = (1.0 + 0.25 / b + 1.0 / (32.0 * b * b)) / math.sqrt(b)
        else:
            want_r = math.exp(math.lgamma(0.5 * b) - math.lgamma(0.5 * (b + 1.0))) / math.sqrt(2.0)
        if not o:
            print(f"FAIL: t=0 beta={b:g}: ladder failed")
            bad = 1
            continue
        w0 = max(w0, abs(l - want_l) / max(1.0, abs(want_l)), abs(r - want_r) / want_r)
    print(f"t=0 closed forms, beta in [{zb[0]:g}, {zb[-1]:g}]: worst rel {w0:.2e}")

    # ρ1 = (d ln M_β/dt)/β by central differences, small β (where the CPU falls back)
    wd = 0.0
    h = 1e-4
    for b in [2e-9, 1e-7, 1e-5, 1.0 / 200.0, 0.3]:
        for tt in [-30.0, -5.0, -1.5, -0.7, 0.0, 1.0, 3.0, 6.0, 15.0]:
            okd, lmd, rad, _, _ = parse_m(run_host(exe, moment_queries([(b, tt - h), (b, tt + h), (b, tt)])))
            if not okd.all():
                print(f"FAIL: beta={b:g} t={tt:g}: ladder failed")
                bad = 1
                continue
            d = (lmd[1] - lmd[0]) / (2 * h) / b
            rounding = 4 * 2.2e-16 * max(1.0, abs(lmd[2])) / (2 * h * b)
            wd = max(wd, abs(rad[2] - d) / (abs(d) + rounding / 1e-7))
    print(f"log-derivative identity, beta in [2e-9, 0.3]: worst rel {wd:.2e} (difference quotient, tol 1e-7)")
    if wd > 1e-7 or w0 > a.tol:
        bad = 1

    if worst > a.tol or worst_tau > a.tol:
        print(f"FAIL: worst {max(worst, worst_tau):.2e} > tol {a.tol:g}")
        bad = 1
    print("ok" if not bad else "FAILED")
    return bad


if __name__ == "__main__":
    sys.exit(main())
