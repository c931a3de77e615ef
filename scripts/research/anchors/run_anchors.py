"""Measure the nzip benchmark anchors on all-MiniLM-L6-v2 and print markdown tables.

Usage:  python run_anchors.py [--parts lossless,entropy,rtn,nncodec] [--qps -20,-26,-32,-38]
        [--no-cosine] [--json results.json]
Each part's results are merged into the JSON file, and the markdown for everything in
the JSON is printed at the end (so parts can be run in separate processes).
"""
import argparse, json, os, sys, time
import torch

torch.set_num_threads(2)
import anchors as A


def lossless(res):
    import safetensors.torch as st
    out = []
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        sd = A.load_minilm(dt)
        raw = A.state_dict_bytes(sd)
        fil = st.save(sd) if dt != torch.float32 else open(A.minilm_path() / "model.safetensors", "rb").read()
        for lvl in (3, 19):
            for what, data in (("tensor bytes", raw), ("safetensors file", fil)):
                r = A.zstd_ratio(data, lvl)
                out.append(dict(dtype=name, method=f"zstd -{lvl}", input=what, bytes=len(data), **r))
                print(out[-1], flush=True)
        for mode in ("tensor", "bytes"):
            r = A.zipnn_roundtrip(sd, threads=2, mode=mode)
            out.append(dict(dtype=name, method=f"zipnn 0.5.4 ({mode} API, 2 thr)", input="tensor bytes",
                            bytes=len(raw), **r))
            print(out[-1], flush=True)
    res["lossless"] = out


def entropy(res):
    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        t = time.time()
        fe = A.field_entropies(A.load_minilm(dt))
        out[name] = dict(raw=fe, summary=A.entropy_summary(fe))
        print(name, "entropy done", time.time() - t, flush=True)
    res["entropy"] = out


def rtn(res, cosine):
    sd = A.load_minilm(torch.float32)
    out = []
    ref = None
    for bits, group, lab in ((8, None, "int8 per-channel RTN"), (4, 128, "int4 g128 RTN"), (4, None, "int4 per-channel RTN")):
        q, info = A.rtn(sd, bits, group)
        row = dict(method=lab, **info)
        if cosine:
            row["cos"], ref = A.embedding_cosine(q, ref_emb=ref)
        out.append(row)
        print(row, flush=True)
    res["rtn"] = out


def nncodec(res, qps, cosine):
    sd = A.load_minilm(torch.float32)
    n = sum(v.numel() for v in sd.values() if v.is_floating_point())
    out = []
    ref = None
    for qp in qps:
        t = time.time()
        rec, bs = A.nncodec_roundtrip(sd, qp)
        dt = time.time() - t
        err = sum(float(((rec[k].float() - v.float()) ** 2).sum()) for k, v in sd.items() if v.is_floating_point())
        pw = sum(float((v.float() ** 2).sum()) for v in sd.values() if v.is_floating_point())
        row = dict(qp=qp, bytes=len(bs), bpw=8 * len(bs) / n, rel_mse=err / pw, seconds=dt)
        if cosine:
            row["cos"], ref = A.embedding_cosine(rec, ref_emb=ref)
        out.append(row)
        print(row, flush=True)
    res["nncodec"] = out


def markdown(res):
    L = []
    if "lossless" in res:
        L += ["## Lossless anchors (all-MiniLM-L6-v2, 22,713,216 float params + 512 int64 position_ids)", "",
              "| dtype | method | input | bytes | ratio | comp MB/s | decomp MB/s | bit-exact |", "|---|---|---|---:|---:|---:|---:|:-:|"]
        for r in res["lossless"]:
            L.append(f"| {r['dtype']} | {r['method']} | {r['input']} | {r['bytes']:,} | {r['ratio']:.4f} | "
                     f"{r['comp_MBps']:.1f} | {r['decomp_MBps']:.1f} | {'yes' if r['exact'] else 'NO'} |")
        L.append("")
    if "entropy" in res:
        for name, e in res["entropy"].items():
            n = e["raw"]["n"]
            L += [f"## Entropy bounds, {name} (float tensors only, per tensor, summed)", "",
                  "| scheme | static bpw | static ratio | adaptive bpw | adaptive ratio |", "|---|---:|---:|---:|---:|"]
            for r in e["summary"]:
                ab = "" if r["adaptive_bpw"] is None else f"{r['adaptive_bpw']:.4f}"
                ar = "" if r["adaptive_ratio"] is None else f"{r['adaptive_ratio']:.4f}"
                L.append(f"| {r['scheme']} | {r['static_bpw']:.4f} | {r['static_ratio']:.4f} | {ab} | {ar} |")
            L += ["", f"Per-field bits/weight ({name}):", "", "| quantity | static | adaptive (KT) | side info |", "|---|---:|---:|---:|"]
            S, Ad, side = e["raw"]["static"], e["raw"]["adaptive"], e["raw"]["side_bits"]
            for k in S:
                a = Ad.get(k)
                L.append(f"| {k} | {S[k]/n:.4f} | {'' if a is None else f'{a/n:.4f}'} | {side.get(k, 0)/n:.4f} |")
            L.append("")
    if "rtn" in res:
        L += ["## RTN baselines (fp32 source; codes + fp16 scales; LayerNorm/bias/token-type kept fp16)", "",
              "| method | bpw | quantised params | fp16 params | mean cos |", "|---|---:|---:|---:|---:|"]
        for r in res["rtn"]:
            L.append(f"| {r['method']} | {r['bpw']:.4f} | {r['n_quantised']:,} | {r['n_fp16']:,} | {r.get('cos', float('nan')):.5f} |")
        L.append("")
    if "nncodec" in res:
        L += ["## NNCodec 2.1.3 (nnc.compress, use_dq=True, nonweight_qp=-75, fp32 source)", "",
              "| qp | bytes | bpw | rel. MSE | mean cos | enc+dec s |", "|---:|---:|---:|---:|---:|---:|"]
        for r in res["nncodec"]:
            L.append(f"| {r['qp']} | {r['bytes']:,} | {r['bpw']:.4f} | {r['rel_mse']:.2e} | {r.get('cos', float('nan')):.5f} | {r['seconds']:.0f} |")
        L.append("")
    return "\n".join(L)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="lossless,entropy,rtn,nncodec")
    ap.add_argument("--qps", default="-20,-26,-32,-38")
    ap.add_argument("--no-cosine", action="store_true")
    ap.add_argument("--json", default="results.json")
    a = ap.parse_args()
    res = {}
    parts = [p for p in a.parts.split(",") if p]
    if "lossless" in parts: lossless(res)
    if "entropy" in parts: entropy(res)
    if "rtn" in parts: rtn(res, not a.no_cosine)
    if "nncodec" in parts: nncodec(res, [int(q) for q in a.qps.split(",")], not a.no_cosine)
    old = json.load(open(a.json)) if os.path.exists(a.json) else {}
    old.update(res)
    json.dump(old, open(a.json, "w"), indent=1)
    print(markdown(old))
