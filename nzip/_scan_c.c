/* The asymmetric-distance top-k scan in C with an AVX2 path (nzip.search): the same results as
 * the numba scan in search.py (_scan_one), which stays the reference and the fallback.
 *
 * Score of row r for one query: s = (((0 + lut[offs[0] + c[r,0]]) + lut[offs[1] + c[r,1]]) + ...)
 * in float32, in column order, times scale[r] when a scale is given; the k best are kept with
 * the numba scan's rule (a new score replaces the weakest kept one, lowest score then highest id,
 * when it beats the lowest kept score), then sorted by score, then id. The AVX2 path scores
 * eight rows at a time from stage-major codes (codesT[j * n + r]): one gather per stage and
 * eight rows, the additions in the same order per row, so every score has the same bits.
 *
 * Early exit (residual indexes: the later stages' tables are small): after the first J columns,
 * a row's bound is its partial sum plus each later column's table maximum, added in the same
 * order (then times scale >= 0). Float addition and multiplication are monotone, so the bound is
 * >= the row's full score in float32; a row whose bound does not beat the weakest kept score
 * cannot enter (the threshold only rises), and is skipped. The rest finish one at a time from
 * the row-major codes, in row order, with the same additions: the same ids and bits as the full
 * scan. Where most rows survive (product quantisers), the query stops checking and scans plainly.
 *
 * Built by setup.py as an optional extension and called through ctypes (GIL released).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define NZ_X86 1
#else
#define NZ_X86 0
#endif

/* numba's _insert: replace the weakest kept (lowest score, then highest id); the new lowest */
static float insert(float *bs, int64_t *bi, uint64_t k, float s, int64_t r) {
    uint64_t w = 0;
    for (uint64_t t = 1; t < k; t++)
        if (bs[t] < bs[w] || (bs[t] == bs[w] && bi[t] > bi[w])) w = t;
    bs[w] = s;
    bi[w] = r;
    float worst = bs[0];
    for (uint64_t t = 1; t < k; t++) worst = bs[t] < worst ? bs[t] : worst;
    return worst;
}

/* numba's _finish: selection sort by score (descending), then id (ascending) */
static void finish(float *bs, int64_t *bi, uint64_t k, int64_t *out_i, float *out_s) {
    for (uint64_t t = 0; t < k; t++) {
        uint64_t b = t;
        for (uint64_t u = t + 1; u < k; u++)
            if (bs[u] > bs[b] || (bs[u] == bs[b] && bi[u] < bi[b])) b = u;
        float ts = bs[t];
        bs[t] = bs[b];
        bs[b] = ts;
        int64_t ti = bi[t];
        bi[t] = bi[b];
        bi[b] = ti;
        out_i[t] = bi[t];
        out_s[t] = bs[t];
    }
}

static inline float score_scalar(const uint8_t *codesT, uint64_t n, uint64_t m, const int64_t *offs,
                                 const float *lut, uint64_t r) {
    float s = 0.0f;
    for (uint64_t j = 0; j < m; j++) s += lut[offs[j] + codesT[j * n + r]];
    return s;
}

#if NZ_X86
/* the early exit gives up on a query when more than a quarter of its first PRUNE_TRIAL rows
 * survive the bound */
#define PRUNE_TRIAL 4096
/* rows are scored a block at a time, a few stages per pass over the block, so that the tables of
 * the stages in use stay in L1 (48 stages of tables are 48 KB; measured 0.53 against 0.65 ns a
 * lookup at 48 stages, the same below 32); the partial sums are stored and reloaded between
 * passes, which leaves their bits as they were */
#define ROW_BLOCK 1024
#define STAGE_PASS 12

__attribute__((target("avx2")))
static uint64_t scan_avx2(const uint8_t *codesT, const uint8_t *codes, uint64_t n, uint64_t m, uint64_t J,
                          const float *tmax, const int64_t *offs, const float *lut, const float *scale,
                          uint64_t k, float *bs, int64_t *bi, float *worst_io) {
    float part[ROW_BLOCK] __attribute__((aligned(32)));
    float worst = *worst_io;
    uint64_t seen = 0, kept = 0, full = 0;  /* full: rows scored in all columns */
    uint64_t cut = J < m ? J : m, body = n & ~(uint64_t)7;
    int tried = 0;
    for (uint64_t r0 = 0; r0 < body; r0 += ROW_BLOCK) {
        uint64_t rn = body - r0 < ROW_BLOCK ? body - r0 : ROW_BLOCK;
        if (!cut)
            for (uint64_t i = 0; i < rn; i++) part[i] = 0.0f;
        for (uint64_t s0 = 0; s0 < cut; s0 += STAGE_PASS) {
            uint64_t s1 = s0 + STAGE_PASS < cut ? s0 + STAGE_PASS : cut;
            for (uint64_t i = 0; i < rn; i += 8) {
                __m256 acc = s0 ? _mm256_load_ps(part + i) : _mm256_setzero_ps();
                for (uint64_t j = s0; j < s1; j++) {
                    __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(codesT + j * n + r0 + i)));
                    acc = _mm256_add_ps(acc, _mm256_i32gather_ps(lut + offs[j], c, 4));
                }
                _mm256_store_ps(part + i, acc);
            }
        }
        if (cut == m) {  /* full scores */
            full += rn;
            for (uint64_t i = 0; i < rn; i += 8) {
                __m256 acc = _mm256_load_ps(part + i);
                if (scale) acc = _mm256_mul_ps(acc, _mm256_loadu_ps(scale + r0 + i));
                if (!_mm256_movemask_ps(_mm256_cmp_ps(acc, _mm256_set1_ps(worst), _CMP_GT_OQ))) continue;
                float s8[8];
                _mm256_storeu_ps(s8, acc);
                for (int t = 0; t < 8; t++)
                    if (s8[t] > worst) worst = insert(bs, bi, k, s8[t], (int64_t)(r0 + i + t));
            }
            continue;
        }
        for (uint64_t i = 0; i < rn; i += 8) {  /* the early exit: bound, then the survivors */
            __m256 bound = _mm256_load_ps(part + i);
            for (uint64_t u = cut; u < m; u++) bound = _mm256_add_ps(bound, _mm256_set1_ps(tmax[u]));
            if (scale) bound = _mm256_mul_ps(bound, _mm256_loadu_ps(scale + r0 + i));
            int hit = _mm256_movemask_ps(_mm256_cmp_ps(bound, _mm256_set1_ps(worst), _CMP_GT_OQ));
            for (int t = 0; hit && t < 8; t++) {
                if (!(hit >> t & 1)) continue;
                uint64_t r = r0 + i + t;
                const uint8_t *row = codes + r * m;
                float s = part[i + t];
                for (uint64_t u = cut; u < m; u++) s += lut[offs[u] + row[u]];
                if (scale) s *= scale[r];
                if (s > worst) worst = insert(bs, bi, k, s, (int64_t)r);
                kept++;
            }
        }
        seen += rn;
        if (!tried && seen >= PRUNE_TRIAL) {
            tried = 1;
            if (kept * 4 > seen) cut = m;  /* most rows survive: scan the rest plainly */
        }
    }
    for (uint64_t r = body; r < n; r++) {
        float s = score_scalar(codesT, n, m, offs, lut, r);
        if (scale) s *= scale[r];
        if (s > worst) worst = insert(bs, bi, k, s, (int64_t)r);
    }
    *worst_io = worst;
    return full + kept + (n - body);
}
#endif

static int have_avx2 = -1;

/* 1 when the AVX2 path runs on this CPU */
int nz_scan_simd(void) {
#if NZ_X86
    if (have_avx2 < 0) {
        __builtin_cpu_init();
        have_avx2 = __builtin_cpu_supports("avx2");
    }
    return have_avx2;
#else
    return 0;
#endif
}

/* Queries q0..q1: lut is (queries x ltab) float32, codesT (m x n) uint8 stage-major, codes the
 * same row-major (n x m; read only by the early exit), offs[j] the table offset of column j (256
 * entries from there are read), scale NULL or n floats (>= 0 where J < m); out_i / out_s
 * (queries x k). J: the early exit's check after J columns (J >= m: none). work: k + m floats +
 * k int64 of scratch per call (the caller's). force_scalar: skip the SIMD path (tests). Returns
 * the number of (query, row) scores computed in all m columns (the rest were cut short). */
uint64_t nz_adc_topk(const uint8_t *codesT, const uint8_t *codes, uint64_t n, uint64_t m, const int64_t *offs,
                     const float *lut, uint64_t ltab, const float *scale, uint64_t k, int64_t *out_i,
                     float *out_s, float *work_s, int64_t *work_i, uint64_t q0, uint64_t q1, uint64_t J,
                     int force_scalar) {
    int simd = !force_scalar && nz_scan_simd();
    uint64_t full = 0;
    float *tmax = work_s + k;
    for (uint64_t q = q0; q < q1; q++) {
        const float *lq = lut + q * ltab;
        for (uint64_t t = 0; t < k; t++) {
            work_s[t] = -INFINITY;
            work_i[t] = -1;
        }
        float worst = -INFINITY;
#if NZ_X86
        if (simd) {
            uint64_t cut = codes ? J : m;
            for (uint64_t u = cut; u < m; u++) {  /* each later column's largest entry */
                float mx = lq[offs[u]];
                for (uint64_t c = 1; c < 256; c++) mx = lq[offs[u] + c] > mx ? lq[offs[u] + c] : mx;
                tmax[u] = mx;
            }
            full += scan_avx2(codesT, codes, n, m, cut, tmax, offs, lq, scale, k, work_s, work_i, &worst);
            finish(work_s, work_i, k, out_i + q * k, out_s + q * k);
            continue;
        }
#endif
        for (uint64_t r = 0; r < n; r++) {
            float s = score_scalar(codesT, n, m, offs, lq, r);
            if (scale) s *= scale[r];
            if (s > worst) worst = insert(work_s, work_i, k, s, (int64_t)r);
        }
        full += n;
        finish(work_s, work_i, k, out_i + q * k, out_s + q * k);
    }
    return full;
}

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_scan_c",
                                    "C top-k scan; called through ctypes by nzip.search", -1, NULL};

PyMODINIT_FUNC PyInit__scan_c(void) { return PyModule_Create(&module); }
