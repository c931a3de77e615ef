"""embedding/pq and embedding/opq: rate accounting, the entropy-constrained quantiser, OPQ, search."""
import importlib
import subprocess
import sys

import numpy as np
import pytest

import nzip
from nzip.codecs import embedding_pq as epq
from nzip.errors import InvalidInputError
from nzip.search import adc_topk, adc_topk_reference

search_mod = importlib.import_module("nzip.search")  # (nzip.search the attribute is the function)


def _clustered(n=3000, d=32, seed=0, rotate=True):
    """Unit vectors from a few hundred anisotropic clusters, mixed by a random rotation."""
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, 0.05, d)
    centres = rng.normal(size=(200, d)) * scales
    x = centres[rng.integers(0, 200, n)] + 0.3 * rng.normal(size=(n, d)) * scales
    if rotate:
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        x = x @ q
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _mse(a, b):
    return float(((a - b) ** 2).sum(1).mean())


def _code_bytes(path):
    with nzip.open(path) as it:
        arr = it.array("codes")
        return int(arr.nbytes_stored())


def test_fixed_rate_pq_round_trip(tmp_path):
    x = _clustered()
    rep = nzip.encode(x, tmp_path / "p.nz", codec="embedding/pq", bytes=8, entropy=0)
    y = nzip.decode(tmp_path / "p.nz")
    assert y.shape == x.shape and y.dtype == np.float32
    assert _mse(x, y) < 0.5 * _mse(x, np.zeros_like(x))
    with nzip.open(tmp_path / "p.nz") as it:
        assert it.params["m"] == 8 and it.params["metric"] == "ip" and it.read("codes").dtype == np.uint8
    assert _code_bytes(tmp_path / "p.nz") <= 8 * len(x) + 2048  # one table per chunk on top
    assert rep.stored_bytes > 8 * len(x)  # the centroids are counted too


def test_entropy_constrained_codes_fit_and_beat_fixed_rate(tmp_path):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(6000, 16)) * np.geomspace(1, 0.1, 16)).astype(np.float32)
    nzip.encode(x, tmp_path / "f.nz", codec="embedding/pq", bytes=4, entropy=0)
    nzip.encode(x, tmp_path / "e.nz", codec="embedding/pq", bytes=4, k=512, entropy=1)
    assert _code_bytes(tmp_path / "e.nz") <= 4 * len(x) + 400  # coded codes fit (+ zarr's array json)
    mse_f = _mse(x, nzip.decode(tmp_path / "f.nz"))
    mse_e = _mse(x, nzip.decode(tmp_path / "e.nz"))
    assert mse_e < 0.85 * mse_f, (mse_e, mse_f)
    # more sub-spaces than bytes: the rate still fits (lambda reaches the popular centroids)
    nzip.encode(x, tmp_path / "m.nz", codec="embedding/pq", bytes=2, m=8, k=64, entropy=1)
    assert _code_bytes(tmp_path / "m.nz") <= 2 * len(x) + 400
    with nzip.open(tmp_path / "e.nz") as it:
        assert max(it.params["sizes"]) > 256  # more centroids than 8 fixed bits allow


def test_opq_rotation_helps_on_redundant_dimensions(tmp_path):
    """Two noisy copies of the same 16 dims: PQ spends bits on both, OPQ rotates the redundancy
    into a few low-variance directions."""
    rng = np.random.default_rng(2)
    u = rng.normal(size=(3000, 16)) * np.geomspace(1, 0.2, 16)
    x = np.concatenate([u, u + 0.05 * rng.normal(size=u.shape)], 1).astype(np.float32)
    nzip.encode(x, tmp_path / "p.nz", codec="embedding/pq", bytes=8, entropy=0)
    nzip.encode(x, tmp_path / "o.nz", codec="embedding/opq", bytes=8, entropy=0)
    assert _mse(x, nzip.decode(tmp_path / "o.nz")) < 0.6 * _mse(x, nzip.decode(tmp_path / "p.nz"))
    with nzip.open(tmp_path / "o.nz") as it:
        assert it.read("rotation").shape == (32, 32)


def test_scan_matches_its_twin():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 50, size=(700, 6)).astype(np.uint16)
    offs = np.arange(6) * 50
    lut = rng.normal(size=(9, 300)).astype(np.float32)
    ids, scores = adc_topk(codes, offs, lut, 7)
    ref_ids, ref_scores = adc_topk_reference(codes, offs, lut, 7)
    assert np.array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)
    ties = rng.integers(0, 3, size=(5, 300)).astype(np.float32)  # many equal sums: lower id first
    for n in (699, 3):  # the four-row loop, its remainder, and fewer rows than k
        ids, scores = adc_topk(codes[:n], offs, ties, min(7, n))
        ref_ids, ref_scores = adc_topk_reference(codes[:n], offs, ties, min(7, n))
        assert np.array_equal(ids, ref_ids) and np.array_equal(scores, ref_scores)


@pytest.mark.skipif(not search_mod.c_scan, reason="the C scan does not run here")
def test_c_scan_gives_the_numba_scans_bits():
    """The C scan (AVX2, eight rows per gather; and its scalar loop) keeps the same ids and the
    same float32 scores as the numba scan, ties and the cosine scale included."""
    rng = np.random.default_rng(11)
    codes = rng.integers(0, 256, size=(1003, 12)).astype(np.uint8)
    offs = np.arange(12) * 256
    for lut, scale in ((rng.normal(size=(9, 12 * 256)).astype(np.float32), None),
                       (rng.normal(size=(4, 12 * 256)).astype(np.float32), rng.uniform(0.5, 2, 1003).astype(np.float32)),
                       (rng.integers(0, 3, size=(5, 12 * 256)).astype(np.float32), None)):  # many equal sums
        for n, k in ((1003, 10), (16, 16), (9, 3)):
            want = adc_topk(codes[:n], offs, lut, k, None if scale is None else scale[:n], force_numba=True)
            got = adc_topk(codes[:n], offs, lut, k, None if scale is None else scale[:n])
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
            ids, sc = np.empty_like(want[0]), np.empty_like(want[1])
            search_mod._c_topk(codes[:n], None, offs, lut, k, np.zeros(0, np.float32) if scale is None
                               else scale[:n], ids, sc, force_scalar=True)
            assert np.array_equal(ids, want[0]) and np.array_equal(sc, want[1])



@pytest.mark.skipif(not search_mod.c_scan, reason="the C scan does not run here")
def test_c_scan_early_exit_keeps_the_bits():
    """The C scan's early exit (a bound from the later columns' table maxima) skips rows on
    residual-shaped tables (later columns small) and still returns the full scan's ids and bits,
    at every cut, with and without the cosine scale, ties and rerank depths included; a negative
    scale turns it off rather than bounding wrongly."""
    rng = np.random.default_rng(12)
    n, m = 5000, 16
    codes = rng.integers(0, 256, size=(n, m)).astype(np.uint8)
    offs = np.arange(m) * 256
    decay = (0.7 ** np.arange(m)).repeat(256).astype(np.float32)
    luts = [(rng.normal(size=(6, m * 256)) * decay).astype(np.float32),
            np.round(rng.normal(size=(3, m * 256)) * decay * 4).astype(np.float32)]  # many equal sums
    scales = [None, rng.uniform(0.5, 2, n).astype(np.float32), rng.uniform(-1, 1, n).astype(np.float32)]
    for lut in luts:
        for scale in scales:
            sc = np.zeros(0, np.float32) if scale is None else scale
            for k in (1, 10, 100):
                want = adc_topk(codes, offs, lut, k, scale, force_numba=True)
                for cut in (0, 1, 5, 8, 12, 15, 16):
                    ids, got = np.empty_like(want[0]), np.empty_like(want[1])
                    full = search_mod._c_topk(codes, None, offs, lut, k, sc, ids, got, prune_at=cut)
                    assert np.array_equal(ids, want[0]) and np.array_equal(got, want[1]), (k, cut)
                    if cut == 12 and k == 10 and (scale is None or scale.min() > 0):
                        assert full < 0.5 * lut.shape[0] * n, full  # the exit does cut rows short
                    if cut == 16 or (scale is not None and scale.min() < 0):
                        assert full == lut.shape[0] * n  # off: every row in full

def test_search_recall_and_rerank(tmp_path):  # (default fixed-rate codes)
    x = _clustered(3000, seed=4)
    rng = np.random.default_rng(5)
    q = x[rng.choice(len(x), 40, replace=False)] + 0.05 * rng.normal(size=(40, 32)).astype(np.float32)
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    nzip.encode(x, tmp_path / "o.nz", codec="embedding/opq", bytes=8, k=256, rounds=8)
    ids, scores = nzip.search(tmp_path / "o.nz", q, k=10)
    assert ids.shape == (40, 10) and (np.diff(scores, axis=1) <= 0).all()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
    assert recall > 0.5, recall
    index = nzip.open_index(tmp_path / "o.nz")
    ids_r, _ = index.search(q, k=10, rerank=x, rerank_factor=20)
    recall_r = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids_r, exact)])
    assert recall_r > max(recall, 0.9), (recall, recall_r)


def test_bad_input(tmp_path):
    x = _clustered(500)
    bad = x.copy()
    bad[17, 3] = np.nan
    with pytest.raises(InvalidInputError, match="row 17"):
        nzip.encode(bad, tmp_path / "a.nz", codec="embedding/pq", bytes=4)
    with pytest.raises(InvalidInputError, match="empty"):
        nzip.encode(np.zeros((0, 8), np.float32), tmp_path / "a.nz", codec="embedding/pq", bytes=4)
    with pytest.raises(InvalidInputError, match="fewer"):
        nzip.encode(x[:100], tmp_path / "a.nz", codec="embedding/pq", bytes=4, k=256)
    with pytest.raises(InvalidInputError, match="--bytes"):
        nzip.encode(x, tmp_path / "a.nz", codec="embedding/pq")
    with pytest.raises(InvalidInputError, match="at least 2 vectors"):
        nzip.encode(x[:1], tmp_path / "a.nz", codec="embedding/pq", bytes=4)
    with pytest.raises(InvalidInputError, match=r"need at least 65536 vectors, these are 500: use --bytes 32"):  # 48 B for 32-d
        nzip.encode(x, tmp_path / "a.nz", codec="embedding/pq", bytes=48)
    assert not (tmp_path / "a.nz").exists()
    nzip.encode(x, tmp_path / "ok.nz", codec="embedding/pq", bytes=4, entropy=0)
    with pytest.raises(InvalidInputError, match="do not match"):
        nzip.search(tmp_path / "ok.nz", np.ones((2, 31), np.float32))
    with pytest.raises(InvalidInputError, match="not an embedding"):
        np.save(tmp_path / "i.npy", np.arange(10))
        nzip.encode(tmp_path / "i.npy", tmp_path / "i.nz")
        nzip.search(tmp_path / "i.nz", np.ones((1, 32), np.float32))


def test_params_queries_and_inputs_a_user_gets_wrong(tmp_path):
    """Found by an audit: huge queries returned ids -1, parameters out of range were numpy's
    ValueErrors (or truncated), bfloat16 matrices and float64 beyond float32 were misreported."""
    import torch

    x = _clustered(600, 32)
    nzip.encode(x, tmp_path / "a.nz", codec="embedding/pq", bytes=4)
    q = x[:2] / np.linalg.norm(x[:2], axis=1, keepdims=True)
    for big in (q * 3e38, q.astype(np.float64) * 1e39):  # scores overflow float32 (or the cast does)
        with pytest.raises(InvalidInputError, match="too large"):
            nzip.search(tmp_path / "a.nz", big, k=3)
    idx = nzip.open_index(tmp_path / "a.nz")
    for kw in ({"k": 2.5}, {"k": 3, "rerank_factor": 0}):
        with pytest.raises(InvalidInputError, match="positive int"):
            idx.search(q, **kw)
    for device in ("gpu",) + (() if torch.cuda.is_available() else ("cuda",)):
        with pytest.raises(InvalidInputError, match="device"):
            nzip.open_index(tmp_path / "a.nz", device=device)
    bad = [("embedding/pq", {"train": 0}, ">= 1"), ("embedding/pq", {"seed": -1}, ">= 0"),
           ("embedding/pq", {"train": 10}, "train=256"), ("embedding/rq", {"stages": 0}, ">= 1"),
           ("embedding/pq", {"m": 8}, "disagree"), ("embedding/rq", {"bytes": 0.5}, "below one residual stage"),
           ("embedding/rq", {"queries": q, "positives": np.array([0, 1]), "epochs": 1.5}, "epochs"),
           ("embedding/rq", {"queries": q, "positives": np.array([0, 1]), "lr": "abc"}, "lr")]
    for codec, params, match in bad:
        with pytest.raises(InvalidInputError, match=match):
            nzip.encode(x, tmp_path / "b.nz", codec=codec, **{"bytes": 4, **params})
    with pytest.raises(InvalidInputError, match="at least 2 vectors"):
        nzip.encode(x[:1], tmp_path / "b.nz", codec="embedding/rq", bytes=4)
    t = torch.from_numpy(x).to(torch.bfloat16)  # numpy has no bfloat16: read as float32
    nzip.encode(t, tmp_path / "t.nz", codec="embedding/pq", bytes=4)
    assert nzip.decode(tmp_path / "t.nz").shape == x.shape
    with pytest.raises(InvalidInputError, match="float32's range"):
        nzip.encode(x.astype(np.float64) * 1e300, tmp_path / "b.nz", codec="embedding/pq", bytes=4)
    assert not (tmp_path / "b.nz").exists()


def test_cli(tmp_path):
    x = _clustered(600)
    np.save(tmp_path / "e.npy", x.astype(np.float16))
    run = [sys.executable, "-m", "nzip.cli"]
    r = subprocess.run(run + ["encode", str(tmp_path / "e.npy"), str(tmp_path / "e.nz"), "--codec",
                              "embedding/opq", "--bytes", "4"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(run + ["info", str(tmp_path / "e.nz")], capture_output=True, text=True)
    assert "bytes per vector" in r.stdout
    r = subprocess.run(run + ["decode", str(tmp_path / "e.nz"), str(tmp_path / "d.npy")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path / "d.npy").dtype == np.float16
    np.save(tmp_path / "n.npy", np.full((5, 4), np.inf, np.float32))
    r = subprocess.run(run + ["encode", str(tmp_path / "n.npy"), str(tmp_path / "n.nz"), "--codec",
                              "embedding/pq", "--bytes", "2"], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" not in r.stderr and "NaN or Inf" in r.stderr


def _mrr(ids, answers):
    rr = [1.0 / (np.flatnonzero(r == a)[0] + 1) if (r == a).any() else 0.0 for r, a in zip(ids, answers)]
    return float(np.mean(rr))


def test_jpq_learns_the_query_side(tmp_path):
    """Queries live in a linearly distorted space: JPQ's ranking loss on training pairs (centroids
    plus the query adapter) must find held-out queries' passages better than OPQ's codes do."""
    x = _clustered(3000, seed=6)
    rng = np.random.default_rng(7)
    A = np.eye(32) + 0.6 * rng.normal(size=(32, 32)) / np.sqrt(32)

    def queries(ids):
        v = x[ids] @ A + 0.08 * rng.normal(size=(len(ids), 32))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    perm = rng.permutation(len(x))
    train_ids, test_ids = perm[:2000], perm[2000:2300]
    nzip.encode(x, tmp_path / "o.nz", codec="embedding/opq", bytes=8, k=256, rounds=6)
    nzip.encode(x, tmp_path / "j.nz", codec="embedding/jpq", bytes=8, k=256, rounds=6, queries=queries(train_ids),
                positives=train_ids)
    tq = queries(test_ids)
    mrr_o = _mrr(nzip.search(tmp_path / "o.nz", tq, k=10)[0], test_ids)
    mrr_j = _mrr(nzip.search(tmp_path / "j.nz", tq, k=10)[0], test_ids)
    assert mrr_j > mrr_o + 0.03, (mrr_o, mrr_j)
    with nzip.open(tmp_path / "j.nz") as it:
        assert it.params["jpq"]["queries"] == 2000 and "query_map" in it.array_names()
    with pytest.raises(InvalidInputError, match="training pairs"):
        nzip.encode(x, tmp_path / "bad.nz", codec="embedding/jpq", bytes=8)
    with pytest.raises(InvalidInputError, match="outside"):
        nzip.encode(x, tmp_path / "bad.nz", codec="embedding/jpq", bytes=8, queries=queries(train_ids[:5]),
                    positives=np.array([0, 1, 2, 3, 99999]))
    # the same query side on residual codes
    nzip.encode(x, tmp_path / "r.nz", codec="embedding/rq", bytes=6)
    nzip.encode(x, tmp_path / "rj.nz", codec="embedding/rq", bytes=6, queries=queries(train_ids),
                positives=train_ids)
    mrr_r = _mrr(nzip.search(tmp_path / "r.nz", tq, k=10)[0], test_ids)
    mrr_rj = _mrr(nzip.search(tmp_path / "rj.nz", tq, k=10)[0], test_ids)
    assert mrr_rj > mrr_r + 0.03, (mrr_r, mrr_rj)
    with pytest.raises(InvalidInputError, match="both"):
        nzip.encode(x, tmp_path / "bad.nz", codec="embedding/rq", bytes=4, queries=queries(train_ids))


def test_safetensors_input_names_its_matrix(tmp_path):
    from safetensors.numpy import save_file

    x = _clustered(600)
    save_file({"a": x, "b": x[:, :16].copy()}, str(tmp_path / "two.safetensors"))
    with pytest.raises(InvalidInputError, match="tensor=NAME"):
        nzip.encode(tmp_path / "two.safetensors", tmp_path / "t.nz", codec="embedding/pq", bytes=4)
    nzip.encode(tmp_path / "two.safetensors", tmp_path / "t.nz", codec="embedding/pq", bytes=4, tensor="b")
    assert nzip.decode(tmp_path / "t.nz").shape == (600, 16)
    with pytest.raises(InvalidInputError, match="no tensor 'c'"):
        nzip.encode(tmp_path / "two.safetensors", tmp_path / "u.nz", codec="embedding/pq", bytes=4, tensor="c")


def test_residual_quantiser_beats_opq_and_searches_exactly(tmp_path):
    from nzip.codecs import embedding_rq as erq

    x = _clustered(n=4000, d=48)
    nzip.encode(x, tmp_path / "o.nz", codec="embedding/opq", bytes=6)
    nzip.encode(x, tmp_path / "r.nz", codec="embedding/rq", bytes=6)
    yo, yr = nzip.decode(tmp_path / "o.nz"), nzip.decode(tmp_path / "r.nz")
    assert yr.shape == x.shape and _mse(x, yr) < 0.7 * _mse(x, yo)
    info = nzip.api.info(tmp_path / "r.nz")
    assert 0 < info["code_bytes_per_vector"] <= 6.1  # one table per stage: at most the fixed 6 bytes
    index = nzip.open_index(tmp_path / "r.nz")
    q = x[:50] + 0.02 * np.random.default_rng(3).normal(size=(50, 48)).astype(np.float32)
    ids, s = index.search(q, k=7)
    lut, offs = index.pq.tables(q.astype(np.float32))
    assert index.pq.scale is not None  # unit-norm data: cosine to the reconstruction
    ref_ids, ref_s = adc_topk_reference(index.pq.codes, offs, lut, 7, index.pq.scale)
    assert np.array_equal(ids, ref_ids) and np.array_equal(s, ref_s)
    cos = np.einsum("qd,qkd->qk", q, yr[ids]) / np.linalg.norm(yr[ids], axis=2)
    assert np.allclose(s, cos, atol=1e-4)  # LUT scores are exact
    # beam search never encodes worse than the greedy encoder with the same codebooks
    books = index.pq.books
    err = [((x - erq.RQIndex(erq.beam_encode(x, books, b), books).reconstruct()) ** 2).sum()
           for b in (1, 4)]
    assert err[1] <= err[0]
    with pytest.raises(InvalidInputError, match="metric=ip"):
        nzip.encode(x, tmp_path / "l.nz", codec="embedding/rq", bytes=4, metric="l2")


def test_table_beam_search_matches_the_residual_one(monkeypatch):
    """The beam search from codeword-product tables (no residual vectors) finds the same codes as
    the one that keeps each path's residual, for every beam width; past the table-size limit the
    residual one runs."""
    from nzip.codecs import embedding_rq as erq

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 24)).astype(np.float32)
    books = (rng.normal(size=(6, 16, 24)) * np.geomspace(0.6, 0.1, 6)[:, None, None]).astype(np.float32)
    for beam in (1, 3, 8, 40):
        lut, ref = erq.beam_encode(x, books, beam), erq.beam_encode_np(x, books, beam)
        err = [((x - books[np.arange(6)[None], c].sum(1)) ** 2).sum(1) for c in (lut, ref)]
        assert np.allclose(err[0], err[1], rtol=1e-5)
        assert (lut == ref).all(1).mean() > 0.99  # (exact ties aside)
    monkeypatch.setattr(erq, "LUT_MAX_CODEWORDS", 50)
    assert np.array_equal(erq.beam_encode(x, books, 3), erq.beam_encode_np(x, books, 3))


def test_progressive_kmeans_keeps_residual_codewords_in_use():
    """On high-dimensional, nearly isotropic residuals, k-means from random rows leaves most
    codewords with their seed alone; grown over the principal components, they stay in use and
    the stage's code carries more bits for less error."""
    from nzip.codecs import embedding_rq as erq

    rng = np.random.default_rng(0)
    r = (rng.normal(size=(3000, 96)) * np.linspace(1.0, 0.3, 96)).astype(np.float32)
    out = {}
    for name, fit in (("plain", epq.kmeans), ("progressive", erq.kmeans_progressive)):
        c = fit(r, 128, 10, np.random.default_rng(1))
        a = ((r @ c.T) * -2 + (c ** 2).sum(1)).argmin(1)
        cnt = np.bincount(a, minlength=128)
        out[name] = ((cnt < 5).sum(), erq._entropy_bits(a, 128), ((r - c[a]) ** 2).sum(1).mean())
    rare_plain, bits_plain, err_plain = out["plain"]
    rare_pd, bits_pd, err_pd = out["progressive"]
    assert rare_pd < rare_plain / 4 and bits_pd > bits_plain + 0.25 and err_pd < err_plain
