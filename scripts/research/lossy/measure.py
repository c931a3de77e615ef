"""Rate vs fidelity of the lossy weight codecs on all-MiniLM-L6-v2; writes results.md.

    python measure.py [section ...]     sections: base quant qcal vq vqcal hybrid  (default: all)

Rate = real coded bits (nzip rANS for integer codes, raw bytes for float16/float32 side info and
kept tensors) / all 22,713,216 parameters (pooler included). Fidelity = mean cosine between the
original and the restored model's sentence embeddings on the 512 eval sentences
(:mod:`minilm_eval`); calibration uses 2048 *other* sentences.
"""
from __future__ import annotations

import os
import pickle
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

import numpy as np
import torch

torch.set_num_threads(2)

import lr2vq as L
import minilm_eval as M
import quant as Q

HERE = os.path.dirname(os.path.abspath(__file__))
ROWS_DIR = os.path.join(HERE, "rows")  # one pickle per run (runs may go in parallel); merged
QSTEPS = int(os.environ.get("QSTEPS", 120))      # calibration steps (batch 16)
VSTEPS = int(os.environ.get("VSTEPS", 120))
QROWP = float(os.environ.get("QROWP", 0.0))      # row_power of the calibrated quant runs


def main(sections):
    t0 = time.time()
    model = M.load_model()
    ev, cal = M.sentence_sets(2048)
    EV = M.Evaluator(model, ev)
    T = M.state_tensors(model)
    N = Q.n_params(T)
    D = M.Distiller(model, cal)
    fpath = os.path.join(HERE, "fisher.pkl")
    if os.path.exists(fpath):
        F = pickle.load(open(fpath, "rb"))
    else:
        t = time.time()
        F = Q.fisher_sensitivity(T, D, batches=8, batch_size=32)
        print(f"fisher sensitivity: {time.time() - t:.1f}s", flush=True)
        pickle.dump(F, open(fpath, "wb"))
    print(f"setup {time.time() - t0:.1f}s, {N} params", flush=True)
    os.makedirs(ROWS_DIR, exist_ok=True)
    rows_file = os.path.join(ROWS_DIR, "_".join(sections) + ".pkl")
    rows = pickle.load(open(rows_file, "rb")) if os.path.exists(rows_file) else []

    def add(method, settings, bpw, rec, enc_s, calib_s=None):
        cos = EV.score(rec)
        rows[:] = [r for r in rows if not (r[0] == method and r[1] == settings)]
        rows.append((method, settings, bpw, cos, enc_s, calib_s))
        print(f"| {method} | {settings} | {bpw:.3f} | {cos:.5f} | {enc_s:.0f} | "
              f"{'' if calib_s is None else f'{calib_s:.0f}'} |", flush=True)
        pickle.dump(rows, open(rows_file, "wb"))
        write()

    shapes = {k: v.shape for k, v in T.items()}

    if "base" in sections:
        add("fp16", "all tensors float16", 16.0,
            {k: v.astype(np.float16).astype(np.float32) for k, v in T.items()}, 0)
        for bits, group, name in [(8, None, "int8 per-channel RTN"), (4, 128, "int4 g128 RTN"),
                                  (3, 128, "int3 g128 RTN")]:
            t = time.time()
            rec, bpw = Q.rtn(T, bits, group)
            add(name, "absmax, fp16 scales, no entropy coding", bpw, rec, time.time() - t)

    if "quant" in sections:
        rates = [float(x) for x in os.environ.get("QRATES", "2.5,3,4,5,6").split(",")]
        for bpw in rates:
            for label, kw in [("std steps, row RMS", dict(row_power=1.0)),
                              ("Fisher steps", dict(sens=F)),
                              ("Fisher steps, row RMS", dict(sens=F, row_power=1.0)),
                              ("Fisher steps + RDOQ", dict(sens=F, rdoq=0.1155))]:
                if label.startswith("std") and bpw not in (3.0, 5.0):
                    continue
                if "RDOQ" in label and (bpw != 3.0 or os.environ.get("NORDOQ")):
                    continue
                t = time.time()
                a = Q.fit(T, bpw, **kw)
                enc = time.time() - t
                add("quant", f"target {bpw}, {label}", Q.coded_bits(a) / N, Q.reconstruct(a), enc)

    if "qcal" in sections:
        qrates = [float(x) for x in os.environ.get("QCAL_RATES", "3,2.5").split(",")]
        for bpw, steps in [(r, QSTEPS) for r in qrates]:
            t = time.time()
            a = Q.fit(T, bpw, sens=F, row_power=QROWP)
            enc = time.time() - t
            t = time.time()
            a = Q.calibrate(a, D, steps=steps, lr=1e-3, verbose=True)
            cs = time.time() - t
            add("quant + calib", f"target {bpw}, Fisher, row_power={QROWP}, {steps} steps "
                "scales+LN/bias",
                Q.coded_bits(a) / N, Q.reconstruct(a), enc, cs)

    vq_cfgs = [("m=8 k=4096 r=8", dict(m=8, k=4096, rank=8))]
    if "vq" in sections or "vqcal" in sections:
        for label, kw in vq_cfgs:
            if "vq" not in sections and label != "m=8 k=4096 r=8":
                continue
            t = time.time()
            a = L.fit(T, iters=8, **kw)
            enc = time.time() - t
            add("lr2vq", f"{label}, groups shared across layers", Q.coded_bits(a) / N,
                L.reconstruct(a, shapes), enc)
            if "vqcal" in sections:
                t = time.time()
                a = L.calibrate(a, D, steps=VSTEPS, lr=1e-3, verbose=True)
                cs = time.time() - t
                add("lr2vq + calib", f"{label}, {VSTEPS} steps cb/up/mu/scales/LN",
                    Q.coded_bits(a) / N, L.reconstruct(a, shapes), enc, cs)

    if "hybrid" in sections:
        emb = "0.model.embeddings.word_embeddings.weight"
        for lin_bpw, vkw, steps in [(4.5, dict(m=8, k=4096, rank=8), VSTEPS)]:
            t = time.time()
            av = L.fit({emb: T[emb]}, iters=8, keep_rest=False, **vkw)
            rest = {k: v for k, v in T.items() if k != emb}
            aq = Q.fit(rest, lin_bpw, sens=F, rdoq=0.1155)
            a = {**av, **aq}
            enc = time.time() - t
            add("hybrid", f"word emb lr2vq m={vkw['m']} k={vkw['k']}; rest quant {lin_bpw} bpw",
                Q.coded_bits(a) / N, L.reconstruct(a, shapes), enc)
            t = time.time()
            a = L.calibrate(a, D, steps=steps, lr=1e-3, verbose=True)
            cs = time.time() - t
            add("hybrid + calib", f"word emb lr2vq m={vkw['m']} k={vkw['k']}; rest quant "
                f"{lin_bpw} bpw; {steps} steps", Q.coded_bits(a) / N, L.reconstruct(a, shapes),
                enc, cs)
    print(f"total {time.time() - t0:.0f}s")


def write():
    rows = {}
    for fn in sorted(os.listdir(ROWS_DIR)):
        for r in pickle.load(open(os.path.join(ROWS_DIR, fn), "rb")):
            rows[(r[0], r[1])] = r
    rows = list(rows.values())
    with open(os.path.join(HERE, "results.md"), "w") as f:
        f.write("# all-MiniLM-L6-v2: rate vs fidelity\n\n")
        f.write("bpw = every stored bit (rANS-coded codes with tables, float16 scales/codebooks/"
                "projections, float16 LayerNorm/bias/small tensors) / 22,713,216 parameters.\n"
                "cos = mean cosine similarity of sentence embeddings, original vs restored, on the "
                "512 eval sentences (calibration used 2048 disjoint sentences). Times: 2 CPU cores,"
                " shared machine (noisy).\n\n")
        f.write("| method | settings | bpw | mean cos | encode s | calib s |\n|---|---|---|---|---|---|\n")
        order = ["fp16", "int8 per-channel RTN", "int4 g128 RTN", "int3 g128 RTN", "quant",
                 "quant + calib", "lr2vq", "lr2vq + calib", "hybrid", "hybrid + calib"]
        for r in sorted(rows, key=lambda r: (order.index(r[0]) if r[0] in order else 99, r[2])):
            f.write(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.5f} | {r[4]:.0f} | "
                    f"{'' if r[5] is None else f'{r[5]:.0f}'} |\n")


if __name__ == "__main__":
    main(sys.argv[1:] or ["base", "quant", "qcal", "vq", "vqcal", "hybrid"])
