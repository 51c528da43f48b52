#!/usr/bin/env python3
"""Host simulation of the entmax tail's lean τ solve (attn.cu `lean_solve`), with and without
its closed-form finish (`lean_closed`): passes over the survivors and the error of τ against a
bisection to 1e-15, over random survivor lists for β = 1/(α−1) ∈ {1, 2, 3}. f32 survivors and
thresholds as on the device, f64 sums. Not the device code: a check of the method.

    python3 scripts/lean_closed_sim.py
"""
import numpy as np
def powers(x,B):
    if B==1: return x, np.ones_like(x), 1/x
    if B==2: return x*x, x, np.ones_like(x)
    return x**3, x*x, x
def closed(tf,A0,A1,A2,cnt,lo_in,hi_out,B):
    N=float(cnt)
    if B==1:
        dl=(A0-1)/N; m=A0-N*dl
    elif B==2:
        disc=A1*A1-N*(A0-1)
        if not disc>=0: return None
        dl=(A0-1)/(A1+np.sqrt(disc)); m=A0-dl*(2*A1-dl*N)
    else:
        dl=0.0
        for k in range(40):
            h=A0-dl*(3*A1-dl*(3*A2-dl*N))-1; dh=-3*(A1-dl*(2*A2-dl*N))
            if not dh<0: return None
            st=h/dh; dl-=st
            if abs(st)<=1e-15*(1+abs(dl)): break
        m=A0-dl*(3*A1-dl*(3*A2-dl*N))
    u=float(np.float32(tf))+dl; uf=np.float32(u)
    ok = (np.float32(lo_in)-uf>0) and not (np.float32(hi_out)-uf>0)
    return (u,m) if ok else None
def halley(t,a0,a1,a2,beta):
    r=a0**(1/beta); ia0=1/a0; g=r-1; g1=-r*a1*ia0
    g2=0 if beta==1 else (beta-1)*(r*ia0)*(a2-a1*a1*ia0)
    ig1=1/g1; newton=-g*ig1; corr=0.5*g*g2*ig1*ig1
    step=newton/(1-corr) if (np.isfinite(corr) and abs(corr)<0.5) else newton
    return t+step
def solve(d,B,use_closed):
    n=len(d); lo=-1.0; hi=-np.exp(-(1/B)*np.log(n)); t=lo
    for it in range(60):
        tf=np.float32(t); x=(d-tf).astype(np.float32); s=x>0
        p0,p1,p2=powers(x[s].astype(np.float32),B)
        A0,A1,A2=float(np.sum(p0.astype(np.float64))),float(np.sum(p1.astype(np.float64))),float(np.sum(p2.astype(np.float64)))
        cnt=int(s.sum()); lo_in=d[s].min() if cnt else np.inf; hi_out=d[~s].max() if (~s).any() else -np.inf
        f=A0-1
        if f==0: return t,it+1
        if use_closed:
            r=closed(t,A0,A1,A2,cnt,lo_in,hi_out,B)
            if r: return r[0],it+1
        if f>0: lo=t
        else: hi=t
        nx=halley(t,A0,A1,A2,B)
        if abs(nx-t)<=1e-7: return t,it+1
        nb=nx if (lo<nx<hi) else 0.5*(lo+hi)
        conv=abs(nb-t)<=1e-7 or hi-lo<=1e-7
        t=nb
        if conv: return t,it+2
    return t,60
def exact(d,B):
    ds=np.sort(d.astype(np.float64))[::-1]
    F=lambda t: np.sum(np.clip(ds-t,0,None)**B)-1
    a,b=-1.0,0.0
    for _ in range(200):
        m=0.5*(a+b)
        if F(m)>0: a=m
        else: b=m
    return 0.5*(a+b)
rng=np.random.default_rng(1)
for B in (1,2,3):
  its0=[];its1=[];err0=[];err1=[]
  for trial in range(300):
    n=int(rng.integers(2,1500)); scale=rng.choice([0.05,0.3,1,3])
    s=rng.normal(size=n)*scale; s=s-s.max()
    d=np.float32(s); d=d[d>-1].astype(np.float32)
    if len(d)<1: continue
    te=exact(d,B)
    t0,i0=solve(d,B,False); t1,i1=solve(d,B,True)
    its0.append(i0); its1.append(i1); err0.append(abs(t0-te)); err1.append(abs(t1-te))
  print(B,'passes halley',np.mean(its0),'closed',np.mean(its1),'maxerr',max(err0),max(err1))
