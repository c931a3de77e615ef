/* The lane rANS decoder in C with an AVX2 path (nzip.entropy.lanes_c): static and context blobs.
 *
 * The same format and the same results as the numba kernels in lanes.py (_decode_block,
 * _decode_block_ctx, _decode_block_packed), which stay the reference and the fallback: every
 * output symbol and every status code match them. Built by
 * setup.py as an optional extension; Python calls the plain C entry points below through ctypes
 * (which releases the GIL, so blocks decode on several threads). The module init only exists so
 * that setuptools can build and install it like any extension.
 *
 * One block: ``lanes`` states; symbol j belongs to lane j % lanes; a slot gives the symbol, its
 * frequency and the slot's bias (one packed uint32, or a symbol table beside a frequency<<16|bias
 * table); after each lane's
 * step, the lanes whose state fell below 2**16 read one 16-bit word each from the shared stream,
 * in lane order. The AVX2 path decodes 8 lanes at a time: gathers for the table entries, and
 * for the refill a popcount of the lanes that need a word plus a permutation that hands the next
 * words out to them in lane order (a 256-entry table of permutations).
 *
 * nz_decode_join is the fused float decode of weights/lossless: a sign+mantissa blob whose
 * contexts come from the exponents, written straight out as the floats' bits (no context array,
 * no byte array, no separate join pass). nz_decode_joint is the same for weights/lossless's joint
 * layout: (exponent, top 2 mantissa bits) symbols joined with the raw sign and low mantissa bits. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define NZ_X86 1
#else
#define NZ_X86 0
#endif

#define RANS_L 65536u
#define ERR_OVERRUN (-2)
#define ERR_STATE (-3)
#define ERR_SLOT (-4)
#define MAX_LANES 32

/* refill lanes x[0..m) that fell below 2**16, one word each in lane order (reads clamped to the
 * last word, as in the numba kernel) */
static inline uint64_t renorm_scalar(uint32_t *x, uint64_t m, const uint16_t *words, uint64_t nwords,
                                     uint64_t ptr) {
    uint64_t last = nwords - 1;
    for (uint64_t lane = 0; lane < m; lane++) {
        uint32_t v = x[lane];
        uint32_t need = v < RANS_L;
        uint32_t w = words[ptr < last ? ptr : last];
        x[lane] = need ? ((v << 16) | w) : v;
        ptr += need;
    }
    return ptr;
}

static inline int64_t end_status(const uint32_t *x, uint64_t lanes, uint64_t ptr, uint64_t end) {
    if (ptr != end) return ERR_OVERRUN;
    for (uint64_t lane = 0; lane < lanes; lane++)
        if (x[lane] != RANS_L) return ERR_STATE;
    return 0;
}

/* A blob's decode tables: ``symtab`` NULL means ``table`` is packed (symbol in bits 0-7,
 * frequency - 1 in bits 8-19, bias in bits 20-31: byte alphabets, precision <= 12); otherwise
 * ``symtab`` holds each slot's symbol and ``table`` (frequency << 16 | bias). ``out_bytes``: 1 or 2. */
typedef struct {
    const uint32_t *table, *symtab;
    uint32_t prec, nctx;
    int ctx_bytes, out_bytes;
} Tables;

static inline __attribute__((always_inline)) uint32_t step(const Tables *t, uint32_t x, uint32_t c, uint32_t *sym) {
    uint32_t s = (c << t->prec) | (x & ((1u << t->prec) - 1));
    uint32_t e = t->table[s];
    if (!t->symtab) {
        *sym = e & 0xFF;
        return (((e >> 8) & 0xFFF) + 1) * (x >> t->prec) + (e >> 20);
    }
    *sym = t->symtab[s];
    return (e >> 16) * (x >> t->prec) + (e & 0xFFFF);
}

/* The fused float decode (``nz_decode_join``): a sign+mantissa blob whose context is e - emin + 1
 * for an exponent e (``ectx``) in emin .. emin + ecount - 1 and 0 for any other, written straight
 * out as the float's top bits: ((s & 0x80) << 8 | e << eshift | (s & 0x7F) << mshift), as uint16
 * (bf16, fp16) or shifted to the top half of a uint32 (fp32), with the low bits ORed in when given
 * (lo1, lo0: fp16's 3 low mantissa bits; fp32's low 16 bits). Packed tables only; the caller
 * checks ecount < nctx. (Computing the context beats a lookup: a table gather per 8 values
 * measured slower than the separate passes this replaces.) */
typedef struct {
    uint32_t emin, ecount, eshift, mshift;
    int out_bytes;
    const uint8_t *lo1, *lo0;  /* the low bits, or NULL: fp16's 3 (lo1); fp32's 16 (lo1 << 8 | lo0) */
} Join;

static inline uint32_t join_ctx(const Join *jn, uint32_t e) {
    uint32_t d = e - jn->emin;  /* wraps below emin */
    return d < jn->ecount ? d + 1 : 0;
}

static inline uint32_t join_value(const Join *jn, uint32_t s, uint32_t e) {
    return ((s & 0x80u) << 8) | (e << jn->eshift) | ((s & 0x7Fu) << jn->mshift);
}

/* The joint float decode (``nz_decode_joint``): symbol s = (e - base + 1) << 2 | m2 (s >= 4), or
 * an escape (s < 4: exponent and m2 left 0 here, filled in by the caller, and counted), joined
 * with the value's raw 6-bit field r (sign << 5 | low 5 mantissa bits) into
 * r >> 5 << 15 | e << eshift | (m2 << 5 | r & 31) << mshift (uint16). The fields lie in three
 * byte planes of q bytes: values i < 3q in the low 6 bits of planes[i], value 3q + k spread over
 * the top 2 bits of planes[k], planes[q + k] and planes[2q + k]. Packed tables, uint8 contexts. */
typedef struct {
    uint32_t base, eshift, mshift;
    const uint8_t *planes;
    uint64_t q, lost;
    /* the scale contexts computed here instead of read from an array (rowoff NULL: the array):
     * value i of a rows x cols matrix has context min(max(rowoff[i / cols] + coloff[i % cols], 0),
     * hi), coloff holding the column offsets plus the bias (weights/lossless's _scale_contexts) */
    const int32_t *rowoff, *coloff;
    uint64_t cols;
    int32_t hi;
    /* fp32: the low 16 bits of each value (lo1: bits 8-15, lo0: bits 0-7); out then holds uint32
     * v << 16 | lo1 << 8 | lo0 for each 16-bit top half v. NULL: out is uint16 (bf16, fp16). */
    const uint8_t *lo1, *lo0;
} Joint;

static inline uint32_t joint_ctx(const Joint *jt, uint64_t i) {
    int32_t c = jt->rowoff[i / jt->cols] + jt->coloff[i % jt->cols];
    return (uint32_t)(c < 0 ? 0 : c > jt->hi ? jt->hi : c);
}

static inline uint32_t joint_field(const Joint *jt, uint64_t i) {
    const uint8_t *p = jt->planes;
    uint64_t q = jt->q;
    if (i < 3 * q) return p[i] & 63u;
    uint64_t k = i - 3 * q;
    return (uint32_t)(p[k] >> 6) | (uint32_t)(p[q + k] >> 6) << 2 | (uint32_t)(p[2 * q + k] >> 6) << 4;
}

static inline uint32_t joint_value(const Joint *jt, uint32_t s, uint32_t r) {
    uint32_t keep = s >= 4 ? ~0u : 0u;
    uint32_t ev = ((s >> 2) + jt->base - 1) & keep;
    uint32_t m7 = (((s & 3u) << 5) & keep) | (r & 31u);
    return (r >> 5) << 15 | ev << jt->eshift | m7 << jt->mshift;
}

/* one group of m <= lanes symbols starting at j, scalar; with ``jn`` the fused float decode
 * (ctx: the exponents) */
static inline int64_t group_scalar(uint32_t *x, uint64_t m, uint64_t j, void *out, const void *ctx,
                                   const Tables *t, const Join *jn, Joint *jt) {
    if (jn) {
        const uint8_t *ectx = (const uint8_t *)ctx;
        for (uint64_t lane = 0; lane < m; lane++) {
            uint32_t e = ectx[j + lane], sym;
            x[lane] = step(t, x[lane], join_ctx(jn, e), &sym);
            uint32_t v = join_value(jn, sym, e);
            if (jn->out_bytes == 2) ((uint16_t *)out)[j + lane] = (uint16_t)(jn->lo1 ? v | jn->lo1[j + lane] : v);
            else ((uint32_t *)out)[j + lane] = jn->lo1 ? v << 16 | (uint32_t)jn->lo1[j + lane] << 8 | jn->lo0[j + lane]
                                                      : v << 16;
        }
        return 0;
    }
    for (uint64_t lane = 0; lane < m; lane++) {
        uint32_t c = 0, sym;
        if (jt && jt->rowoff) c = joint_ctx(jt, j + lane);
        else if (t->ctx_bytes == 1) c = ((const uint8_t *)ctx)[j + lane];
        else if (t->ctx_bytes == 2) c = ((const uint16_t *)ctx)[j + lane];
        if (c >= t->nctx) return ERR_SLOT;
        x[lane] = step(t, x[lane], c, &sym);
        if (jt) {
            uint32_t v = joint_value(jt, sym, joint_field(jt, j + lane));
            if (jt->lo1) ((uint32_t *)out)[j + lane] = v << 16 | (uint32_t)jt->lo1[j + lane] << 8 | jt->lo0[j + lane];
            else ((uint16_t *)out)[j + lane] = (uint16_t)v;
            jt->lost += sym < 4;
        } else if (t->out_bytes == 1) ((uint8_t *)out)[j + lane] = (uint8_t)sym;
        else ((uint16_t *)out)[j + lane] = (uint16_t)sym;
    }
    return 0;
}

/* the scalar decode of a block from value j on, lane states x, word pointer ptr, to its final check
 * (the whole block for the scalar path; the SIMD paths' short last group) */
static int64_t finish_scalar(uint32_t *x, const uint16_t *words, uint64_t nwords, uint64_t ptr, uint64_t wend,
                             void *out, const void *ctx, const Tables *t, const Join *jn, Joint *jt, uint64_t j,
                             uint64_t stop, uint64_t lanes) {
    while (j < stop) {
        uint64_t m = stop - j < lanes ? stop - j : lanes;
        int64_t st = group_scalar(x, m, j, out, ctx, t, jn, jt);
        if (st < 0) return st;
        ptr = renorm_scalar(x, m, words, nwords, ptr);
        if (ptr > wend) return ERR_OVERRUN;
        j += m;
    }
    return end_status(x, lanes, ptr, wend);
}

static int64_t decode_block_scalar(const uint16_t *words, uint64_t nwords, uint64_t wstart, uint64_t wend,
                                   const uint32_t *states, void *out, const void *ctx, const Tables *t,
                                   const Join *jn, Joint *jt, uint64_t start, uint64_t stop, uint64_t lanes) {
    uint32_t x[MAX_LANES];
    for (uint64_t lane = 0; lane < lanes; lane++) x[lane] = states[lane];
    return finish_scalar(x, words, nwords, wstart, wend, out, ctx, t, jn, jt, start, stop, lanes);
}

#if NZ_X86
/* (eight scalar loads instead of the gather measured the same on this project's machine) */
#define GATHER(t, idx) _mm256_i32gather_epi32((const int *)(t), (idx), 4)
static int32_t perm_table[256][8];

static void init_perm(void) {
    for (int mask = 0; mask < 256; mask++) {
        int rank = 0;
        for (int lane = 0; lane < 8; lane++) {
            perm_table[mask][lane] = (mask >> lane) & 1 ? rank : 0;
            rank += (mask >> lane) & 1;
        }
    }
}

/* the refill of 8 lanes whose states fell below 2**16 (``need``), in lane order, from the shared
 * word stream at *ptr: the next words permuted to those lanes (no branch on none needing one) */
__attribute__((target("avx2,popcnt"), always_inline))
static inline __m256i refill8(__m256i x, __m256i need, const uint16_t *words, uint64_t nwords, uint64_t *ptr) {
    int nm = _mm256_movemask_ps(_mm256_castsi256_ps(need));
    if (*ptr + 8 <= nwords) {
        __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(words + *ptr)));
        w = _mm256_permutevar8x32_epi32(w, _mm256_loadu_si256((const __m256i *)perm_table[nm]));
        *ptr += (uint64_t)_mm_popcnt_u32((unsigned)nm);
        return _mm256_blendv_epi8(x, _mm256_or_si256(_mm256_slli_epi32(x, 16), w), need);
    }
    /* the last words of the array: the scalar refill clamps its reads */
    uint32_t tmp[8];
    _mm256_storeu_si256((__m256i *)tmp, x);
    *ptr = renorm_scalar(tmp, 8, words, nwords, *ptr);
    return _mm256_loadu_si256((const __m256i *)tmp);
}

__attribute__((target("avx2,popcnt"), always_inline))
static inline int64_t decode_block_avx2(const uint16_t *words, uint64_t nwords, uint64_t wstart, uint64_t wend,
                                        const uint32_t *states, void *out, const void *ctx, const Tables *t,
                                        uint64_t start, uint64_t stop, uint64_t lanes, const int split,
                                        const int out_bytes, const int ctx_bytes, const Join *jn, Joint *jt) {
    /* jn (a constant NULL or not in each variant): the fused float decode, ctx the exponents,
     * out_bytes 2 or 4; jt (likewise): the joint float decode, out_bytes 2, uint8 contexts */
    const uint32_t prec = t->prec, nctx = t->nctx;
    const uint32_t *table = t->table;
    /* lanes is 8, 16 or 32: nv vectors of 8 states */
    uint64_t nv = lanes / 8;
    __m256i xv[MAX_LANES / 8];
    for (uint64_t v = 0; v < nv; v++) xv[v] = _mm256_loadu_si256((const __m256i *)(states + 8 * v));
    const __m256i maskv = _mm256_set1_epi32((int)((1u << prec) - 1));
    const __m128i pc = _mm_cvtsi32_si128((int)prec);
    const __m256i lowbyte = _mm256_set1_epi32(0xFF);
    const __m256i fmask = _mm256_set1_epi32(0xFFF);
    const __m256i lowhalf = _mm256_set1_epi32(0xFFFF);
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i ctxmax = _mm256_set1_epi32((int)nctx - 1);
    const __m128i esh = _mm_cvtsi32_si128(jn ? (int)jn->eshift : 0);
    const __m128i msh = _mm_cvtsi32_si128(jn ? (int)jn->mshift : 0);
    const __m256i signbit = _mm256_set1_epi32(0x80);
    const __m256i mant = _mm256_set1_epi32(0x7F);
    const __m256i eminv = _mm256_set1_epi32(jn ? (int)jn->emin - 1 : 0);
    const __m256i ecntv = _mm256_set1_epi32(jn ? (int)jn->ecount + 1 : 0);
    const __m128i jesh = _mm_cvtsi32_si128(jt ? (int)jt->eshift : 0);
    const __m128i jmsh = _mm_cvtsi32_si128(jt ? (int)jt->mshift : 0);
    const __m256i jbase = _mm256_set1_epi32(jt ? (int)jt->base - 1 : 0);
    const __m256i three = _mm256_set1_epi32(3), six3 = _mm256_set1_epi32(63), low5 = _mm256_set1_epi32(31);
    const uint64_t jq = jt ? jt->q : 0;
    const int scale = jt && jt->rowoff;  /* the joint decode's contexts computed, not read */
    const uint64_t cols = scale ? jt->cols : 1;
    const __m256i hiv = _mm256_set1_epi32(scale ? jt->hi : 0);
    uint64_t row = scale ? start / cols : 0, col = scale ? start % cols : 0;  /* of value j + 8v */
    uint64_t jlost = 0;
    uint64_t ptr = wstart, j = start;
    while (j + lanes <= stop) {
        /* the table steps of all lanes first (independent: their gathers overlap), then the
         * refills in lane order (serial through ptr) */
        __m256i need[MAX_LANES / 8];
        for (uint64_t v = 0; v < nv; v++) {
            uint64_t jj = j + 8 * v;
            __m256i x = xv[v];
            __m256i idx = _mm256_and_si256(x, maskv), ev = zero;
            if (jn) {  /* context e - emin + 1 where 1 <= that <= ecount, else 0 */
                ev = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((const uint8_t *)ctx + jj)));
                __m256i d = _mm256_sub_epi32(ev, eminv);
                __m256i c = _mm256_and_si256(d, _mm256_and_si256(_mm256_cmpgt_epi32(d, zero),
                                                                 _mm256_cmpgt_epi32(ecntv, d)));
                idx = _mm256_or_si256(idx, _mm256_sll_epi32(c, pc));
            } else if (scale) {  /* row offset + column offset (+ bias), clipped to 0..hi */
                __m256i c;
                if (col + 8 <= cols) {
                    c = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(jt->coloff + col)),
                                         _mm256_set1_epi32(jt->rowoff[row]));
                } else {  /* eight values across the end of a row (cols >= 8: one wrap at most) */
                    int32_t c8[8];
                    for (int u = 0; u < 8; u++) {
                        uint64_t cc = col + (uint64_t)u;
                        c8[u] = cc < cols ? jt->rowoff[row] + jt->coloff[cc] : jt->rowoff[row + 1] + jt->coloff[cc - cols];
                    }
                    c = _mm256_loadu_si256((const __m256i *)c8);
                }
                col += 8;
                if (col >= cols) { col -= cols; row++; }
                c = _mm256_min_epi32(_mm256_max_epi32(c, zero), hiv);
                __m256i bad = _mm256_cmpgt_epi32(c, ctxmax);
                if (!_mm256_testz_si256(bad, bad)) return ERR_SLOT;
                idx = _mm256_or_si256(idx, _mm256_sll_epi32(c, pc));
            } else if (ctx_bytes) {
                __m256i c = ctx_bytes == 1
                    ? _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)((const uint8_t *)ctx + jj)))
                    : _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)ctx + jj)));
                __m256i bad = _mm256_cmpgt_epi32(c, ctxmax);
                if (!_mm256_testz_si256(bad, bad)) return ERR_SLOT;
                idx = _mm256_or_si256(idx, _mm256_sll_epi32(c, pc));
            }
            __m256i e = GATHER(table, idx);
            __m256i s, f, bias;
            if (split) {
                s = GATHER(t->symtab, idx);
                f = _mm256_srli_epi32(e, 16);
                bias = _mm256_and_si256(e, lowhalf);
            } else {
                s = _mm256_and_si256(e, lowbyte);
                f = _mm256_add_epi32(_mm256_and_si256(_mm256_srli_epi32(e, 8), fmask), one);
                bias = _mm256_srli_epi32(e, 20);
            }
            if (jn) {  /* the float's bits, the low bits ORed in */
                __m256i val = _mm256_or_si256(
                    _mm256_or_si256(_mm256_slli_epi32(_mm256_and_si256(s, signbit), 8), _mm256_sll_epi32(ev, esh)),
                    _mm256_sll_epi32(_mm256_and_si256(s, mant), msh));
                __m256i l1 = zero, l0 = zero;
                if (jn->lo1) l1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(jn->lo1 + jj)));
                if (jn->lo0) l0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(jn->lo0 + jj)));
                if (out_bytes == 2) {  /* (the low 16 bits, as the scalar path's cast: packus saturates) */
                    val = _mm256_and_si256(_mm256_or_si256(val, l1), lowhalf);
                    _mm_storeu_si128((__m128i *)((uint16_t *)out + jj),
                                     _mm_packus_epi32(_mm256_castsi256_si128(val), _mm256_extracti128_si256(val, 1)));
                } else {
                    _mm256_storeu_si256((__m256i *)((uint32_t *)out + jj),
                                        _mm256_or_si256(_mm256_slli_epi32(val, 16),
                                                        _mm256_or_si256(_mm256_slli_epi32(l1, 8), l0)));
                }
            } else if (jt) {  /* the joint float decode: the raw field, then the float's bits */
                __m256i r;
                if (jj + 8 <= 3 * jq) {
                    r = _mm256_and_si256(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(jt->planes + jj))), six3);
                } else if (jj >= 3 * jq) {
                    const uint8_t *pk = jt->planes + (jj - 3 * jq);
                    __m256i a = _mm256_srli_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)pk)), 6);
                    __m256i b = _mm256_srli_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(pk + jq))), 6);
                    __m256i c = _mm256_srli_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(pk + 2 * jq))), 6);
                    r = _mm256_or_si256(a, _mm256_or_si256(_mm256_slli_epi32(b, 2), _mm256_slli_epi32(c, 4)));
                } else {  /* eight values across the planes' seam */
                    uint32_t f8[8];
                    for (int u = 0; u < 8; u++) f8[u] = joint_field(jt, jj + (uint64_t)u);
                    r = _mm256_loadu_si256((const __m256i *)f8);
                }
                __m256i keep = _mm256_cmpgt_epi32(s, three);
                __m256i ev = _mm256_and_si256(_mm256_add_epi32(_mm256_srli_epi32(s, 2), jbase), keep);
                __m256i m7 = _mm256_or_si256(_mm256_and_si256(_mm256_slli_epi32(_mm256_and_si256(s, three), 5), keep),
                                             _mm256_and_si256(r, low5));
                __m256i val = _mm256_or_si256(_mm256_or_si256(_mm256_slli_epi32(_mm256_srli_epi32(r, 5), 15),
                                                              _mm256_sll_epi32(ev, jesh)),
                                              _mm256_sll_epi32(m7, jmsh));
                val = _mm256_and_si256(val, lowhalf);
                if (out_bytes == 4) {  /* fp32: the low 16 bits joined in */
                    __m256i l1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(jt->lo1 + jj)));
                    __m256i l0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(jt->lo0 + jj)));
                    _mm256_storeu_si256((__m256i *)((uint32_t *)out + jj),
                                        _mm256_or_si256(_mm256_slli_epi32(val, 16),
                                                        _mm256_or_si256(_mm256_slli_epi32(l1, 8), l0)));
                } else {
                    _mm_storeu_si128((__m128i *)((uint16_t *)out + jj),
                                     _mm_packus_epi32(_mm256_castsi256_si128(val), _mm256_extracti128_si256(val, 1)));
                }
                jlost += 8 - (uint64_t)_mm_popcnt_u32((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(keep)));
            } else {
                __m128i s16 = _mm_packus_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
                if (out_bytes == 1) _mm_storel_epi64((__m128i *)((uint8_t *)out + jj), _mm_packus_epi16(s16, s16));
                else _mm_storeu_si128((__m128i *)((uint16_t *)out + jj), s16);
            }
            x = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srl_epi32(x, pc)), bias);
            need[v] = _mm256_cmpeq_epi32(_mm256_srli_epi32(x, 16), zero);
            xv[v] = x;
        }
        for (uint64_t v = 0; v < nv; v++) xv[v] = refill8(xv[v], need[v], words, nwords, &ptr);
        if (ptr > wend) return ERR_OVERRUN;
        j += lanes;
    }
    if (jt) jt->lost += jlost;
    uint32_t x[MAX_LANES];
    for (uint64_t v = 0; v < nv; v++) _mm256_storeu_si256((__m256i *)(x + 8 * v), xv[v]);
    return finish_scalar(x, words, nwords, ptr, wend, out, ctx, t, jn, jt, j, stop, lanes);  /* a short last group */
}

/* the variants, each compiled with its layout known */
#define NZ_VARIANT(name, split, ob, cb)                                                              \
    __attribute__((target("avx2,popcnt"))) static int64_t name(                                     \
        const uint16_t *w, uint64_t nw, uint64_t ws, uint64_t we, const uint32_t *st, void *out,     \
        const void *ctx, const Tables *t, uint64_t a, uint64_t b, uint64_t lanes) {                 \
        if (lanes == 32) /* the default for large inputs: the lane loops unroll, states in registers */ \
            return decode_block_avx2(w, nw, ws, we, st, out, ctx, t, a, b, 32, split, ob, cb, NULL, NULL); \
        return decode_block_avx2(w, nw, ws, we, st, out, ctx, t, a, b, lanes, split, ob, cb, NULL, NULL); \
    }
NZ_VARIANT(avx2_p0, 0, 1, 0)
NZ_VARIANT(avx2_p1, 0, 1, 1)
NZ_VARIANT(avx2_p2, 0, 1, 2)
NZ_VARIANT(avx2_s10, 1, 1, 0)
NZ_VARIANT(avx2_s11, 1, 1, 1)
NZ_VARIANT(avx2_s12, 1, 1, 2)
NZ_VARIANT(avx2_s20, 1, 2, 0)
NZ_VARIANT(avx2_s21, 1, 2, 1)
NZ_VARIANT(avx2_s22, 1, 2, 2)

/* the fused float decode (packed tables, uint8 exponents), uint16 or uint32 out */
#define NZ_JOIN(name, ob)                                                                              \
    __attribute__((target("avx2,popcnt"))) static int64_t name(                                     \
        const uint16_t *w, uint64_t nw, uint64_t ws, uint64_t we, const uint32_t *st, void *out,     \
        const uint8_t *e, const Tables *t, const Join *jn, uint64_t a, uint64_t b, uint64_t lanes) { \
        if (lanes == 32) return decode_block_avx2(w, nw, ws, we, st, out, e, t, a, b, 32, 0, ob, 1, jn, NULL); \
        return decode_block_avx2(w, nw, ws, we, st, out, e, t, a, b, lanes, 0, ob, 1, jn, NULL);            \
    }
NZ_JOIN(join_avx2_2, 2)
NZ_JOIN(join_avx2_4, 4)

/* the joint float decode (packed tables, uint8 contexts, uint16 out or, with the low bytes, uint32) */
#define NZ_JOINT(name, ob)                                                                             \
    __attribute__((target("avx2,popcnt"))) static int64_t name(                                     \
        const uint16_t *w, uint64_t nw, uint64_t ws, uint64_t we, const uint32_t *st, void *out,     \
        const uint8_t *ctx, const Tables *t, Joint *jt, uint64_t a, uint64_t b, uint64_t lanes) {    \
        if (lanes == 32) return decode_block_avx2(w, nw, ws, we, st, out, ctx, t, a, b, 32, 0, ob, 1, NULL, jt); \
        return decode_block_avx2(w, nw, ws, we, st, out, ctx, t, a, b, lanes, 0, ob, 1, NULL, jt);            \
    }
NZ_JOINT(joint_avx2, 2)
NZ_JOINT(joint_avx2_4, 4)

/* The joint float decode with computed scale contexts in AVX-512 (AVX512F/BW/VL and VBMI2), the
 * hot loop of weights/lossless's mode=best: 32 lanes as two vectors of 16 states; the refill is one
 * expand-load of the next words into the lanes that need one (lane order, as the format says),
 * so no permutation table; every constant stays in a register. Same results and status as the
 * AVX2 and scalar paths (tests compare the three). Blocks of 32 lanes, matrices of >= 16 columns. */
#define NZ_AVX512 "avx512f,avx512bw,avx512vl,avx512vbmi2,popcnt"
static int have_avx512 = -1;

__attribute__((target(NZ_AVX512), always_inline))
static inline __m512i refill16(__m512i x, __mmask16 need, const uint16_t *words, uint64_t nwords, uint64_t *ptr) {
    if (*ptr + 16 <= nwords) {
        __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_expandloadu_epi16(need, words + *ptr));
        *ptr += (uint64_t)_mm_popcnt_u32((unsigned)need);
        return _mm512_mask_or_epi32(x, need, _mm512_slli_epi32(x, 16), w);
    }
    uint32_t tmp[16];
    _mm512_storeu_si512(tmp, x);
    *ptr = renorm_scalar(tmp, 16, words, nwords, *ptr);
    return _mm512_loadu_si512(tmp);
}

__attribute__((target(NZ_AVX512)))
static int64_t joint_avx512(const uint16_t *words, uint64_t nwords, uint64_t wstart, uint64_t wend,
                            const uint32_t *states, void *out, const Tables *t, Joint *jt, uint64_t start,
                            uint64_t stop) {
    const uint32_t prec = t->prec;
    const uint32_t *table = t->table;
    const uint64_t cols = jt->cols, q = jt->q;
    const int32_t *rowoff = jt->rowoff, *coloff = jt->coloff;
    const uint8_t *planes = jt->planes;
    const __m128i pc = _mm_cvtsi32_si128((int)prec);
    const __m128i esh = _mm_cvtsi32_si128((int)jt->eshift), msh = _mm_cvtsi32_si128((int)jt->mshift);
    const __m512i maskv = _mm512_set1_epi32((int)((1u << prec) - 1));
    const __m512i zero = _mm512_setzero_si512(), hiv = _mm512_set1_epi32(jt->hi);
    const __m512i ctxmax = _mm512_set1_epi32((int)t->nctx - 1);
    const __m512i lowbyte = _mm512_set1_epi32(0xFF), fmask = _mm512_set1_epi32(0xFFF), one = _mm512_set1_epi32(1);
    const __m512i three = _mm512_set1_epi32(3), six3 = _mm512_set1_epi32(63), low5 = _mm512_set1_epi32(31);
    const __m512i jbase = _mm512_set1_epi32((int)jt->base - 1), big = _mm512_set1_epi32((int)RANS_L);
    const int check = jt->hi > (int32_t)t->nctx - 1;  /* contexts can exceed the tables: test each */
    __m512i xv[2] = {_mm512_loadu_si512(states), _mm512_loadu_si512(states + 16)};
    uint64_t row = start / cols, col = start % cols;  /* of value j + 16v */
    uint64_t lost = 0, ptr = wstart, j = start;
    while (j + 32 <= stop) {
        __mmask16 need[2];
        for (int v = 0; v < 2; v++) {
            uint64_t jj = j + 16 * (uint64_t)v;
            __m512i c;
            if (col + 16 <= cols) {
                c = _mm512_add_epi32(_mm512_loadu_si512(coloff + col), _mm512_set1_epi32(rowoff[row]));
                col += 16;
            } else {  /* across the end of a row (cols >= 16: one wrap at most): the rest of this
                       * row's offsets, then the next row's from column 0 */
                __mmask16 here = (__mmask16)((1u << (cols - col)) - 1);
                c = _mm512_maskz_loadu_epi32(here, coloff + col);
                c = _mm512_mask_expandloadu_epi32(c, (__mmask16)~here, coloff);
                c = _mm512_add_epi32(c, _mm512_mask_blend_epi32(here, _mm512_set1_epi32(rowoff[row + 1]),
                                                                _mm512_set1_epi32(rowoff[row])));
                col += 16 - cols;
                row++;
            }
            if (col == cols) { col = 0; row++; }
            c = _mm512_min_epi32(_mm512_max_epi32(c, zero), hiv);
            if (check && _mm512_cmpgt_epi32_mask(c, ctxmax)) return ERR_SLOT;
            __m512i x = xv[v];
            __m512i e = _mm512_i32gather_epi32(_mm512_or_si512(_mm512_and_si512(x, maskv), _mm512_sll_epi32(c, pc)),
                                               (const void *)table, 4);
            __m512i s = _mm512_and_si512(e, lowbyte);
            __m512i f = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(e, 8), fmask), one);
            __m512i r;
            if (jj + 16 <= 3 * q) {
                r = _mm512_and_si512(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(planes + jj))), six3);
            } else if (jj >= 3 * q) {
                const uint8_t *pk = planes + (jj - 3 * q);
                __m512i a = _mm512_srli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)pk)), 6);
                __m512i b = _mm512_srli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(pk + q))), 6);
                __m512i d = _mm512_srli_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(pk + 2 * q))), 6);
                r = _mm512_or_si512(a, _mm512_or_si512(_mm512_slli_epi32(b, 2), _mm512_slli_epi32(d, 4)));
            } else {  /* sixteen values across the planes' seam */
                uint32_t f16[16];
                for (int u = 0; u < 16; u++) f16[u] = joint_field(jt, jj + (uint64_t)u);
                r = _mm512_loadu_si512(f16);
            }
            __mmask16 keep = _mm512_cmpgt_epu32_mask(s, three);
            __m512i ev = _mm512_maskz_add_epi32(keep, _mm512_srli_epi32(s, 2), jbase);
            __m512i m7 = _mm512_or_si512(_mm512_maskz_slli_epi32(keep, _mm512_and_si512(s, three), 5),
                                         _mm512_and_si512(r, low5));
            __m512i val = _mm512_or_si512(_mm512_or_si512(_mm512_slli_epi32(_mm512_srli_epi32(r, 5), 15),
                                                          _mm512_sll_epi32(ev, esh)),
                                          _mm512_sll_epi32(m7, msh));
            if (jt->lo1) {  /* fp32: the low 16 bits joined in */
                __m512i l1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(jt->lo1 + jj)));
                __m512i l0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(jt->lo0 + jj)));
                _mm512_storeu_si512((uint32_t *)out + jj,
                                    _mm512_or_si512(_mm512_slli_epi32(val, 16), _mm512_or_si512(_mm512_slli_epi32(l1, 8), l0)));
            } else {
                _mm256_storeu_si256((__m256i *)((uint16_t *)out + jj), _mm512_cvtepi32_epi16(val));
            }
            lost += 16 - (uint64_t)_mm_popcnt_u32((unsigned)keep);
            x = _mm512_add_epi32(_mm512_mullo_epi32(f, _mm512_srl_epi32(x, pc)), _mm512_srli_epi32(e, 20));
            need[v] = _mm512_cmplt_epu32_mask(x, big);
            xv[v] = x;
        }
        xv[0] = refill16(xv[0], need[0], words, nwords, &ptr);
        xv[1] = refill16(xv[1], need[1], words, nwords, &ptr);
        if (ptr > wend) return ERR_OVERRUN;
        j += 32;
    }
    jt->lost += lost;
    uint32_t x[MAX_LANES];
    _mm512_storeu_si512(x, xv[0]);
    _mm512_storeu_si512(x + 16, xv[1]);
    return finish_scalar(x, words, nwords, ptr, wend, out, NULL, t, NULL, jt, j, stop, 32);  /* a short last group */
}

/* Static blobs (no contexts) in AVX-512: 32 lanes as two vectors of 16, the expand-load refill
 * of the joint decode; packed tables (uint8 out) or a symbol table beside the frequency | bias
 * one (uint8 or uint16 out). Same results and status as the AVX2 and scalar paths. */
__attribute__((target(NZ_AVX512), always_inline))
static inline int64_t static_avx512(const uint16_t *words, uint64_t nwords, uint64_t wstart, uint64_t wend,
                                    const uint32_t *states, void *out, const Tables *t, uint64_t start,
                                    uint64_t stop, const int split, const int out_bytes) {
    const uint32_t prec = t->prec;
    const uint32_t *table = t->table, *symtab = t->symtab;
    const __m128i pc = _mm_cvtsi32_si128((int)prec);
    const __m512i maskv = _mm512_set1_epi32((int)((1u << prec) - 1)), big = _mm512_set1_epi32((int)RANS_L);
    const __m512i lowbyte = _mm512_set1_epi32(0xFF), fmask = _mm512_set1_epi32(0xFFF), one = _mm512_set1_epi32(1);
    const __m512i lowhalf = _mm512_set1_epi32(0xFFFF);
    __m512i xv[2] = {_mm512_loadu_si512(states), _mm512_loadu_si512(states + 16)};
    uint64_t ptr = wstart, j = start;
    while (j + 32 <= stop) {
        __mmask16 need[2];
        for (int v = 0; v < 2; v++) {
            uint64_t jj = j + 16 * (uint64_t)v;
            __m512i x = xv[v], idx = _mm512_and_si512(x, maskv);
            __m512i e = _mm512_i32gather_epi32(idx, (const void *)table, 4), sym, f, bias;
            if (split) {
                sym = _mm512_i32gather_epi32(idx, (const void *)symtab, 4);
                f = _mm512_srli_epi32(e, 16);
                bias = _mm512_and_si512(e, lowhalf);
            } else {
                sym = _mm512_and_si512(e, lowbyte);
                f = _mm512_add_epi32(_mm512_and_si512(_mm512_srli_epi32(e, 8), fmask), one);
                bias = _mm512_srli_epi32(e, 20);
            }
            if (out_bytes == 1) _mm_storeu_si128((__m128i *)((uint8_t *)out + jj), _mm512_cvtepi32_epi8(sym));
            else _mm256_storeu_si256((__m256i *)((uint16_t *)out + jj), _mm512_cvtepi32_epi16(sym));
            x = _mm512_add_epi32(_mm512_mullo_epi32(f, _mm512_srl_epi32(x, pc)), bias);
            need[v] = _mm512_cmplt_epu32_mask(x, big);
            xv[v] = x;
        }
        xv[0] = refill16(xv[0], need[0], words, nwords, &ptr);
        xv[1] = refill16(xv[1], need[1], words, nwords, &ptr);
        if (ptr > wend) return ERR_OVERRUN;
        j += 32;
    }
    uint32_t x[MAX_LANES];
    _mm512_storeu_si512(x, xv[0]);
    _mm512_storeu_si512(x + 16, xv[1]);
    return finish_scalar(x, words, nwords, ptr, wend, out, NULL, t, NULL, NULL, j, stop, 32);  /* a short last group */
}

#define NZ_STATIC512(name, split, ob)                                                                 \
    __attribute__((target(NZ_AVX512))) static int64_t name(                                          \
        const uint16_t *w, uint64_t nw, uint64_t ws, uint64_t we, const uint32_t *st, void *out,      \
        const Tables *t, uint64_t a, uint64_t b) {                                                    \
        return static_avx512(w, nw, ws, we, st, out, t, a, b, split, ob);                             \
    }
NZ_STATIC512(static512_p1, 0, 1)
NZ_STATIC512(static512_s1, 1, 1)
NZ_STATIC512(static512_s2, 1, 2)

typedef int64_t (*block_fn)(const uint16_t *, uint64_t, uint64_t, uint64_t, const uint32_t *, void *,
                            const void *, const Tables *, uint64_t, uint64_t, uint64_t);

static block_fn pick_avx2(const Tables *t) {
    static const block_fn packed[3] = {avx2_p0, avx2_p1, avx2_p2};
    static const block_fn split[2][3] = {{avx2_s10, avx2_s11, avx2_s12}, {avx2_s20, avx2_s21, avx2_s22}};
    return t->symtab ? split[t->out_bytes - 1][t->ctx_bytes] : packed[t->ctx_bytes];
}
#endif

static int have_avx2 = -1;

/* 1 when the AVX2 path runs on this CPU (for tests and benchmarks to report) */
int nz_simd(void) {
#if NZ_X86
    if (have_avx2 < 0) {
        __builtin_cpu_init();
        have_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
        if (have_avx2) init_perm();
        have_avx512 = have_avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi2");
    }
    return have_avx2;
#else
    return 0;
#endif
}

/* the widest SIMD path here: 0 none, 1 AVX2, 2 AVX-512 (the joint decode's) */
int nz_simd_level(void) {
#if NZ_X86
    return nz_simd() ? 1 + have_avx512 : 0;
#else
    return 0;
#endif
}

/* Decode blocks b0..b1 of a blob into out (n symbols of out_bytes each); status[b] per block.
 * table/symtab as in Tables (symtab NULL: packed table); ntable: entries of table (contexts x
 * 2**prec); ctx_bytes: 0 (no contexts), 1 (uint8 contexts) or 2 (uint16). force_scalar: 1 skips the
 * SIMD paths, 2 the AVX-512 one (tests compare them). */
void nz_decode_blocks(const uint16_t *words, uint64_t nwords, const int64_t *woffsets, const uint32_t *states,
                      void *out, int out_bytes, uint64_t n, const void *ctx, int ctx_bytes, uint64_t block,
                      uint64_t lanes, uint32_t prec, const uint32_t *table, const uint32_t *symtab,
                      uint64_t ntable, int64_t *status, uint64_t b0, uint64_t b1, int force_scalar) {
    Tables t = {table, symtab, prec, (uint32_t)(ntable >> prec), ctx_bytes, out_bytes};
    int simd = force_scalar != 1 && nz_simd() && lanes % 8 == 0 && lanes <= MAX_LANES;
#if NZ_X86
    block_fn fn = simd ? pick_avx2(&t) : NULL;
    int64_t (*wide)(const uint16_t *, uint64_t, uint64_t, uint64_t, const uint32_t *, void *, const Tables *,
                    uint64_t, uint64_t) = NULL;
    if (simd && force_scalar != 2 && have_avx512 && lanes == 32 && !ctx_bytes)
        wide = !symtab ? (out_bytes == 1 ? static512_p1 : NULL) : out_bytes == 1 ? static512_s1 : static512_s2;
#endif
    for (uint64_t b = b0; b < b1; b++) {
        uint64_t start = b * block, stop = start + block < n ? start + block : n;
        uint64_t ws = (uint64_t)woffsets[b], we = (uint64_t)woffsets[b + 1];
#if NZ_X86
        if (wide) {
            status[b] = wide(words, nwords, ws, we, states + b * lanes, out, &t, start, stop);
            continue;
        }
        if (simd) {
            status[b] = fn(words, nwords, ws, we, states + b * lanes, out, ctx, &t, start, stop, lanes);
            continue;
        }
#endif
        status[b] = decode_block_scalar(words, nwords, ws, we, states + b * lanes, out, ctx, &t, NULL, NULL,
                                        start, stop, lanes);
    }
}

/* The fused float decode of blocks b0..b1 (see Join): a packed-table context blob of
 * sign+mantissa bytes, contexts lut[ectx[i]], written joined with the exponents ectx into out
 * (uint16 for out_bytes 2, uint32 top halves for 4). status[b] per block as nz_decode_blocks. */
void nz_decode_join(const uint16_t *words, uint64_t nwords, const int64_t *woffsets, const uint32_t *states,
                    void *out, int out_bytes, uint64_t n, const uint8_t *ectx, uint32_t emin,
                    uint32_t ecount, uint32_t eshift, uint32_t mshift, const uint8_t *lo1, const uint8_t *lo0,
                    uint64_t block, uint64_t lanes, uint32_t prec,
                    const uint32_t *table, uint64_t ntable, int64_t *status, uint64_t b0, uint64_t b1,
                    int force_scalar) {
    Tables t = {table, NULL, prec, (uint32_t)(ntable >> prec), 1, out_bytes};
    Join jn = {emin, ecount, eshift, mshift, out_bytes, lo1, out_bytes == 4 ? lo0 : NULL};
    if (out_bytes == 4 && !lo0) jn.lo1 = NULL;
    int simd = force_scalar != 1 && nz_simd() && lanes % 8 == 0 && lanes <= MAX_LANES;
    for (uint64_t b = b0; b < b1; b++) {
        uint64_t start = b * block, stop = start + block < n ? start + block : n;
        uint64_t ws = (uint64_t)woffsets[b], we = (uint64_t)woffsets[b + 1];
#if NZ_X86
        if (simd) {
            status[b] = (out_bytes == 2 ? join_avx2_2 : join_avx2_4)(words, nwords, ws, we, states + b * lanes,
                                                                    out, ectx, &t, &jn, start, stop, lanes);
            continue;
        }
#endif
        status[b] = decode_block_scalar(words, nwords, ws, we, states + b * lanes, out, ectx, &t, &jn, NULL,
                                        start, stop, lanes);
    }
}

/* The joint float decode of blocks b0..b1 (see Joint): a packed-table blob with uint8 contexts
 * ctx (or, where ctx is NULL, the scale contexts of a matrix of ``cols`` columns computed from
 * rowoff and coloff, see Joint), written joined with the raw fields of ``planes`` (3 * q bytes) into
 * out: uint16, or (lo1 and lo0 given: fp32's low 16 bits) uint32; status[b] per block as
 * nz_decode_blocks, lost[b] the block's escaped values (symbols < 4). */
void nz_decode_joint(const uint16_t *words, uint64_t nwords, const int64_t *woffsets, const uint32_t *states,
                     void *out, uint64_t n, const uint8_t *ctx, const int32_t *rowoff, const int32_t *coloff,
                     uint64_t cols, int32_t hi, uint32_t base, uint32_t eshift, uint32_t mshift,
                     const uint8_t *planes, uint64_t q, const uint8_t *lo1, const uint8_t *lo0, uint64_t block,
                     uint64_t lanes, uint32_t prec, const uint32_t *table, uint64_t ntable, int64_t *status,
                     int64_t *lost, uint64_t b0, uint64_t b1, int force_scalar) {
    Tables t = {table, NULL, prec, (uint32_t)(ntable >> prec), 1, 2};
    if (!lo1 || !lo0) lo1 = lo0 = NULL;
    int simd = force_scalar != 1 && nz_simd() && lanes % 8 == 0 && lanes <= MAX_LANES;
#if NZ_X86
    int wide = simd && force_scalar != 2 && have_avx512 && lanes == 32 && !ctx && cols >= 16;
#endif
    for (uint64_t b = b0; b < b1; b++) {
        uint64_t start = b * block, stop = start + block < n ? start + block : n;
        uint64_t ws = (uint64_t)woffsets[b], we = (uint64_t)woffsets[b + 1];
        Joint jt = {base, eshift, mshift, planes, q, 0, ctx ? NULL : rowoff, coloff, cols, hi, lo1, lo0};
#if NZ_X86
        if (wide) {
            status[b] = joint_avx512(words, nwords, ws, we, states + b * lanes, out, &t, &jt, start, stop);
            lost[b] = (int64_t)jt.lost;
            continue;
        }
        if (simd) {
            status[b] = (lo1 ? joint_avx2_4 : joint_avx2)(words, nwords, ws, we, states + b * lanes, out, ctx, &t, &jt,
                                                          start, stop, lanes);
            lost[b] = (int64_t)jt.lost;
            continue;
        }
#endif
        status[b] = decode_block_scalar(words, nwords, ws, we, states + b * lanes, out, ctx, &t, NULL, &jt, start,
                                        stop, lanes);
        lost[b] = (int64_t)jt.lost;
    }
}

/* ------------------------------------------------------------------------------------------
 * Parsing and the small passes of a restore, so that a restore the C decoder runs needs no numba
 * at all (importing numba and its first call cost a command-line restore ~1 s). Each is the twin
 * of a numba function (named with each), which stays the fallback and the reference: the same
 * results, the same status codes.
 * ------------------------------------------------------------------------------------------ */
#define PARSE_TRUNCATED (-1)
#define PARSE_HEADER (-2)
#define PARSE_VARINT (-3)
#define PARSE_TABLE (-4)
#define SMALL_DECLINED 1
#define UNUSED_PACKED 0xFFFFFF00u

/* nbits bits (MSB first) from *bitpos, -1 past the end (lanes._get) */
static int64_t get_bits(const uint8_t *buf, int64_t len, int64_t *bitpos, int64_t nbits) {
    int64_t bp = *bitpos;
    if ((bp + nbits + 7) >> 3 > len) return -1;
    int64_t v = 0;
    while (nbits > 0) {
        int64_t off = bp & 7, take = nbits < 8 - off ? nbits : 8 - off;
        v = (v << take) | (((int64_t)buf[bp >> 3] >> (8 - off - take)) & (((int64_t)1 << take) - 1));
        bp += take;
        nbits -= take;
    }
    *bitpos = bp;
    return v;
}

/* the 64 bits from bit bp on (MSB first; zeros past the end) */
static inline uint64_t window64(const uint8_t *buf, int64_t len, int64_t bp) {
    int64_t i = bp >> 3;
    uint64_t w = 0;
    if (i + 8 <= len) {
        memcpy(&w, buf + i, 8);
        w = __builtin_bswap64(w);
    } else {
        for (int64_t j = i; j < i + 8; j++) w = w << 8 | (j < len ? buf[j] : 0u);
    }
    return w << (bp & 7);
}

/* an order-k exp-Golomb code, -1 if malformed or past the end (lanes._get_eg): its zeros counted
 * at once in a 64-bit window, the same results as the bit-by-bit reader below (kept for k > 16) */
static int64_t get_eg_slow(const uint8_t *buf, int64_t len, int64_t *bitpos, int64_t k);

static inline __attribute__((always_inline)) int64_t get_eg(const uint8_t *buf, int64_t len, int64_t *bitpos, int64_t k) {
    if (k > 16) return get_eg_slow(buf, len, bitpos, k);
    int64_t bp = *bitpos;
    uint64_t w = window64(buf, len, bp);
    int64_t zeros = w ? __builtin_clzll(w) : 64;
    if (zeros > 40) return -1;  /* (more zeros than a code has, or the end of the buffer first) */
    int64_t nb = zeros + k, used = zeros + 1 + nb;  /* (nb <= 56) */
    if (bp + used > 8 * len) return -1;
    /* the nb bits after the terminating 1, from the same window where it holds them (it holds >= 57
     * bits); shifted in two steps so that nb = 0 gives 0 without a branch */
    uint64_t rest = used <= 57 ? w << (zeros + 1) : window64(buf, len, bp + zeros + 1);
    int64_t v = (int64_t)((rest >> 1) >> (63 - nb));
    *bitpos = bp + used;
    return ((((int64_t)1 << zeros) | (v >> k)) - 1) << k | (v & (((int64_t)1 << k) - 1));
}

static int64_t get_eg_slow(const uint8_t *buf, int64_t len, int64_t *bitpos, int64_t k) {
    int64_t zeros = 0;
    for (;;) {
        int64_t b = get_bits(buf, len, bitpos, 1);
        if (b < 0 || zeros > 40) return -1;
        if (b == 1) break;
        zeros++;
    }
    int64_t rest = get_bits(buf, len, bitpos, zeros);
    if (rest < 0) return -1;
    int64_t low = get_bits(buf, len, bitpos, k);
    if (low < 0) return -1;
    return ((((int64_t)1 << zeros) | rest) - 1) << k | low;
}

/* A frequency table's code (zero runs EG0, frequencies - 1 EGk) into freqs (zeroed by the caller):
 * the bits read, or -1 if malformed or not summing to total (lanes.read_table). */
int64_t nz_read_table(const uint8_t *buf, int64_t len, int64_t k, int64_t nalpha, int64_t total, int64_t *freqs) {
    int64_t bitpos = 0, s = 0, acc = 0;
    while (acc < total) {
        /* the common case in one window: a short zero run and a short frequency, both within the
         * 57 bits a window surely holds (the codes' own reads form one dependency chain per symbol,
         * so one load instead of two is what counts) */
        uint64_t w = window64(buf, len, bitpos);
        int64_t z1 = w ? __builtin_clzll(w) : 64, u1 = 2 * z1 + 1;
        uint64_t w2 = w << (z1 < 28 ? u1 : 0);
        int64_t z2 = w2 ? __builtin_clzll(w2) : 64, u2 = 2 * z2 + 1 + k;
        if (z1 < 28 && k <= 16 && u1 + u2 <= 57 && bitpos + u1 + u2 <= 8 * len) {
            int64_t run = (((int64_t)1 << z1) | (int64_t)(((w << (z1 + 1)) >> 1) >> (63 - z1))) - 1;
            int64_t nb = z2 + k, v = (int64_t)(((w2 << (z2 + 1)) >> 1) >> (63 - nb));
            int64_t f = ((((int64_t)1 << z2) | (v >> k)) - 1) << k | (v & (((int64_t)1 << k) - 1));
            s += run;
            if (s >= nalpha || acc + f + 1 > total) return -1;
            bitpos += u1 + u2;
            freqs[s] = f + 1;
            acc += f + 1;
            s++;
            continue;
        }
        int64_t run = get_eg(buf, len, &bitpos, 0);
        if (run < 0) return -1;
        s += run;
        if (s >= nalpha) return -1;
        int64_t f = get_eg(buf, len, &bitpos, k);
        if (f < 0 || acc + f + 1 > total) return -1;
        freqs[s] = f + 1;
        acc += f + 1;
        s++;
    }
    return bitpos;
}

/* LEB128 at buf[*pos]: the value, -1 if the buffer ends first, -2 if malformed (lanes._uvarint_at) */
static int64_t uvarint_at(const uint8_t *buf, int64_t len, int64_t *pos) {
    int64_t v = 0;
    int shift = 0;
    for (;;) {
        if (*pos >= len) return -1;
        int64_t b = buf[(*pos)++];
        v |= (b & 0x7F) << shift;
        if (!(b & 0x80)) return v;
        shift += 7;
        if (shift > 56) return -2;
    }
}

/* one context's entry at buf[*pos] into freqs: 0 or a PARSE_* code; *has 1 if it has a table,
 * *fmax its largest frequency (lanes._next_table) */
static int64_t next_table(const uint8_t *buf, int64_t len, int64_t *pos, int64_t nalpha, int64_t total,
                          int64_t max_prec, int64_t *freqs, int *has, int64_t *fmax) {
    *has = 0;
    *fmax = 0;
    if (*pos >= len) return PARSE_TRUNCATED;
    int64_t k = buf[(*pos)++];
    if (k == 255) return 0;
    if (k > max_prec) return PARSE_HEADER;
    int64_t ln = uvarint_at(buf, len, pos);
    if (ln == -1) return PARSE_TRUNCATED;
    if (ln < 0 || ln > nalpha * 8) return PARSE_VARINT;
    if (*pos + ln > len) return PARSE_TRUNCATED;
    memset(freqs, 0, (size_t)nalpha * sizeof(int64_t));
    if (nz_read_table(buf + *pos, ln, k, nalpha, total, freqs) < 0) return PARSE_TABLE;
    *pos += ln;
    int64_t acc = 0, fm = 0;
    for (int64_t s = 0; s < nalpha; s++) {
        acc += freqs[s];
        if (freqs[s] > fm) fm = freqs[s];
    }
    if (acc != total) return PARSE_TABLE;
    *has = 1;
    *fmax = fm;
    return 0;
}

/* the packed entries of one frequency table (symbol | (f - 1) << 8 | bias << 20: pack_tables of
 * fill_slots) into table[0 .. sum of freqs) */
static void fill_packed(const int64_t *freqs, int64_t nalpha, uint32_t *table) {
    uint32_t *at = table;
    for (int64_t s = 0; s < nalpha; s++) {
        uint32_t f = (uint32_t)freqs[s];
        uint32_t head = (uint32_t)s | (f - 1) << 8;
        for (uint32_t b = 0; b < f; b++) at[b] = head + (b << 20);
        at += f;
    }
}

/* The per-context tables of a context blob from buf[pos] straight into the packed table (an unused
 * context's slots UNUSED_PACKED; used[c] = 1 for each context with a table). ret: status (0 or a
 * PARSE_* code), the position after the tables, the failing context, the largest frequency
 * (lanes.parse_ctx_packed). freqs: nalpha scratch entries. */
void nz_parse_ctx_packed(const uint8_t *buf, int64_t len, int64_t pos, int64_t nctx, int64_t nalpha, int64_t prec,
                         int64_t max_prec, uint32_t *table, uint8_t *used, int64_t *freqs, int64_t *ret) {
    int64_t total = (int64_t)1 << prec, fmax = 0;
    for (int64_t c = 0; c < nctx; c++) {
        int has;
        int64_t fm;
        int64_t st = next_table(buf, len, &pos, nalpha, total, max_prec, freqs, &has, &fm);
        if (st < 0) {
            ret[0] = st, ret[1] = pos, ret[2] = c, ret[3] = fmax;
            return;
        }
        if (fm > fmax) fmax = fm;
        uint32_t *seg = table + (c << prec);
        if (!has) {
            for (int64_t i = 0; i < total; i++) seg[i] = UNUSED_PACKED;
            continue;
        }
        used[c] = 1;
        fill_packed(freqs, nalpha, seg);
    }
    ret[0] = 0, ret[1] = pos, ret[2] = 0, ret[3] = fmax;
}

/* The slot tables of one frequency table: each slot's symbol (sym_bytes 1, 2 or 4) and
 * freq << 16 | slot - start; returns the slots filled (lanes.fill_slots) */
int64_t nz_fill_slots(const int64_t *freqs, int64_t nalpha, void *sym, int sym_bytes, uint32_t *pack) {
    int64_t pos = 0;
    for (int64_t s = 0; s < nalpha; s++) {
        uint64_t f = (uint64_t)freqs[s];
        for (int64_t k = 0; k < freqs[s]; k++, pos++) {
            if (sym_bytes == 1) ((uint8_t *)sym)[pos] = (uint8_t)s;
            else if (sym_bytes == 2) ((uint16_t *)sym)[pos] = (uint16_t)s;
            else ((uint32_t *)sym)[pos] = (uint32_t)s;
            pack[pos] = (uint32_t)((f << 16) | (uint64_t)k);
        }
    }
    return pos;
}

/* The packed table of slot arrays (lanes.pack_tables) */
void nz_pack_tables(const uint8_t *sym, const uint32_t *pack, uint32_t *out, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        out[i] = (uint32_t)sym[i] | ((pack[i] >> 16) - 1) << 8 | (pack[i] & 0xFFFu) << 20;
}

/* A STATIC blob of a byte alphabet (<= 256 symbols) at precision <= 12, parsed and decoded whole
 * into out (cap bytes): 0 and meta = (dtype code, offset, alphabet size, symbols) when every check
 * of coder.parse and the decode pass; 2 with meta[3] the number of symbols when out is too small
 * (call again); SMALL_DECLINED otherwise: the caller parses it the slow way, which names the
 * fault (lanes.decode_small_static: the same checks in the same order). */
int64_t nz_small_static(const uint8_t *buf, int64_t end, int64_t max_symbols, int64_t version, int64_t kind_static,
                        int64_t kind_max, int64_t ndtypes, int64_t max_lanes, int64_t max_prec, int64_t max_block,
                        int64_t max_alphabet, int64_t *meta, uint8_t *out, int64_t cap) {
    if (end < 5 || buf[0] != 78 || buf[1] != 90) return SMALL_DECLINED;
    int64_t vk = buf[2];
    if (vk >> 4 != version || (vk & 15) > kind_max || (vk & 15) != kind_static) return SMALL_DECLINED;
    int64_t code = buf[3];
    if (code >= ndtypes) return SMALL_DECLINED;
    int64_t pos = 4;
    int64_t n = uvarint_at(buf, end, &pos);
    if (n < 0 || n > max_symbols || pos >= end) return SMALL_DECLINED;
    int64_t lp = buf[pos++];
    int64_t lanes = (int64_t)1 << (lp >> 5), prec = lp & 31;
    if (lanes > max_lanes || prec < 1 || prec > max_prec || prec > 12) return SMALL_DECLINED;
    int64_t block = uvarint_at(buf, end, &pos);
    if (block < lanes || block > max_block || block % lanes) return SMALL_DECLINED;
    int64_t nblocks = (n + block - 1) / block;
    int64_t u = uvarint_at(buf, end, &pos);  /* the offset, zigzag */
    if (u < 0) return SMALL_DECLINED;
    int64_t offset = !(u & 1) ? u >> 1 : -((u + 1) >> 1);
    int64_t nalpha = uvarint_at(buf, end, &pos);
    if (nalpha < 2 || nalpha > 256 || nalpha > max_alphabet || pos >= end) return SMALL_DECLINED;
    int64_t k = buf[pos++];
    if (k > max_prec) return SMALL_DECLINED;
    int64_t tlen = uvarint_at(buf, end, &pos);
    if (tlen < 0 || tlen > max_alphabet * 8 || pos + tlen > end) return SMALL_DECLINED;
    int64_t freqs[256] = {0};
    if (nz_read_table(buf + pos, tlen, k, nalpha, (int64_t)1 << prec, freqs) < 0) return SMALL_DECLINED;
    pos += tlen;
    int64_t fmax = 0;
    for (int64_t s = 0; s < nalpha; s++)
        if (freqs[s] > fmax) fmax = freqs[s];
    if (nblocks * lanes * 4 > end - pos) return SMALL_DECLINED;
    int64_t *woff = malloc((size_t)(nblocks + 1) * (sizeof(int64_t) * 2) + (size_t)(nblocks * lanes) * 4);
    if (!woff) return SMALL_DECLINED;
    int64_t *status = woff + nblocks + 1;
    uint32_t *states = (uint32_t *)(status + nblocks + 1);
    int64_t ret = SMALL_DECLINED;
    woff[0] = 0;
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t c = uvarint_at(buf, end, &pos), left = n - b * block;
        if (c < 0 || c > (block < left ? block : left)) goto done;
        woff[b + 1] = woff[b] + c;
    }
    if (pos + nblocks * lanes * 4 > end) goto done;
    for (int64_t i = 0; i < nblocks * lanes; i++) {
        const uint8_t *p = buf + pos + 4 * i;
        uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if (v < RANS_L) goto done;
        states[i] = v;
    }
    pos += nblocks * lanes * 4;
    int64_t total = woff[nblocks];
    if (pos + total * 2 != end) goto done;  /* (the words, then nothing: trailing bytes are refused) */
    double min_bits = (double)prec - log2((double)fmax);
    double capacity_bits = 16.0 * (double)(total + nblocks * lanes);
    if (min_bits > 0 && (double)n * min_bits > capacity_bits * 1.0001 + 64) goto done;
    meta[0] = code, meta[1] = offset, meta[2] = nalpha, meta[3] = n;
    if (n > cap) {
        ret = 2;
        goto done;
    }
    uint32_t table[4096];
    uint16_t *words = malloc((size_t)(total > 0 ? total : 1) * 2);
    if (!words) goto done;
    if (total) memcpy(words, buf + pos, (size_t)total * 2);  /* (little-endian hosts, as numpy's view) */
    else words[0] = 0;
    fill_packed(freqs, nalpha, table);
    nz_decode_blocks(words, total > 0 ? (uint64_t)total : 1, woff, states, out, 1, (uint64_t)n, NULL, 0,
                     (uint64_t)block, (uint64_t)lanes, (uint32_t)prec, table, NULL, (uint64_t)1 << prec, status, 0,
                     (uint64_t)nblocks, 0);
    free(words);
    ret = 0;
    for (int64_t b = 0; b < nblocks; b++)
        if (status[b] != 0) ret = SMALL_DECLINED;
done:
    free(woff);
    return ret;
}

/* the positions of the values of v (itemsize 2 or 4) whose field (v >> shift) & mask is 0, into at
 * (NULL: only counted); returns their count (weights_lossless._zero_fields) */
int64_t nz_zero_fields(const void *v, int itemsize, uint64_t n, uint32_t shift, uint32_t mask, int64_t *at) {
    int64_t k = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t x = itemsize == 2 ? ((const uint16_t *)v)[i] : ((const uint32_t *)v)[i];
        if (((x >> shift) & mask) == 0) {
            if (at) at[k] = (int64_t)i;
            k++;
        }
    }
    return k;
}

/* sign | exponent | mantissa of 16-bit floats from the exponent and sign+mantissa bytes: bf16
 * (ebits 8, lo NULL) and fp16 (ebits 5, lo its 3 low mantissa bits) (weights_lossless._join16_part) */
void nz_join16(const uint8_t *e, const uint8_t *sm, const uint8_t *lo, uint32_t ebits, uint16_t *out, uint64_t n) {
    uint32_t shift = 15 - ebits;
    if (lo)
        for (uint64_t i = 0; i < n; i++)
            out[i] = (uint16_t)(((sm[i] & 0x80u) << 8) | ((uint32_t)e[i] << shift) | ((sm[i] & 0x7Fu) << 3) | lo[i]);
    else
        for (uint64_t i = 0; i < n; i++)
            out[i] = (uint16_t)(((sm[i] & 0x80u) << 8) | ((uint32_t)e[i] << shift) | (sm[i] & 0x7Fu));
}

/* fp32 bits from the exponent, sign+mantissa byte and two low bytes (weights_lossless._join32_part) */
void nz_join32(const uint8_t *e, const uint8_t *sm, const uint8_t *b1, const uint8_t *b0, uint32_t *out, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        out[i] = ((sm[i] & 0x80u) << 24) | ((uint32_t)e[i] << 23) | ((sm[i] & 0x7Fu) << 16) | ((uint32_t)b1[i] << 8) | b0[i];
}

/* fp32 bits from the top halves and the two low bytes (weights_lossless._join32_hi_part) */
void nz_join32_hi(const uint16_t *hi, const uint8_t *b1, const uint8_t *b0, uint32_t *out, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) out[i] = ((uint32_t)hi[i] << 16) | ((uint32_t)b1[i] << 8) | b0[i];
}

/* fp32's low 16 bits rebuilt row by row from the row precisions tz (weights_lossless._lo_join):
 * rows of tz >= 16 are zeros; with plain_full, rows of tz 0 copy their bytes from full1 / full0;
 * the others are (high byte where tz < 8, low byte) << tz. The caller checked the fields' sizes. */
void nz_lo_join(const uint8_t *tz, uint64_t rows, uint64_t per, const uint8_t *full1, const uint8_t *full0,
                const uint8_t *low, const uint8_t *high, uint8_t *b1, uint8_t *b0, int plain_full) {
    uint64_t li = 0, hi = 0, fi = 0;
    for (uint64_t r = 0; r < rows; r++) {
        uint32_t t = tz[r];
        uint8_t *o1 = b1 + r * per, *o0 = b0 + r * per;
        if (t >= 16) {
            memset(o1, 0, per);
            memset(o0, 0, per);
        } else if (t == 0 && plain_full) {
            memcpy(o1, full1 + fi, per);
            memcpy(o0, full0 + fi, per);
            fi += per;
        } else {
            const uint8_t *lw = low + li, *hw = high + hi;
            li += per;
            if (t < 8) hi += per;
            for (uint64_t j = 0; j < per; j++) {
                uint32_t v = ((uint32_t)lw[j] | (t < 8 ? (uint32_t)hw[j] << 8 : 0u)) << t;
                o1[j] = (uint8_t)(v >> 8);
                o0[j] = (uint8_t)v;
            }
        }
    }
}

/* small_static(data, max_symbols, version, kind_static, kind_max, ndtypes, max_lanes, max_prec,
 * max_block, max_alphabet) -> (status, dtype code, offset, alphabet size, symbols: bytearray or
 * None): nz_small_static as a Python function, taking the blob as any contiguous buffer (bytes, a
 * memoryview of the mapped file). A ctypes call and its numpy pointers cost ~20 us, several times
 * the decode of most of the small blobs it serves (a checkpoint has hundreds). */
static PyObject *py_small_static(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 10) {
        PyErr_SetString(PyExc_TypeError, "small_static takes 10 arguments");
        return NULL;
    }
    int64_t lim[9];
    for (int i = 0; i < 9; i++) {
        lim[i] = PyLong_AsLongLong(args[i + 1]);
        if (lim[i] == -1 && PyErr_Occurred()) return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0) return NULL;
    int64_t meta[4] = {0, 0, 0, 0};
    int64_t cap = 8 * (int64_t)view.len < lim[0] ? 8 * (int64_t)view.len : lim[0];
    PyObject *out = PyByteArray_FromStringAndSize(NULL, cap > 0 ? cap : 0);
    if (!out) {
        PyBuffer_Release(&view);
        return NULL;
    }
    int64_t st = nz_small_static(view.buf, view.len, lim[0], lim[1], lim[2], lim[3], lim[4], lim[5], lim[6], lim[7],
                                 lim[8], meta, (uint8_t *)PyByteArray_AS_STRING(out), cap);
    if (st == 2) {  /* more symbols than the first guess */
        cap = meta[3];
        if (PyByteArray_Resize(out, cap) < 0) {
            Py_DECREF(out);
            PyBuffer_Release(&view);
            return NULL;
        }
        st = nz_small_static(view.buf, view.len, lim[0], lim[1], lim[2], lim[3], lim[4], lim[5], lim[6], lim[7],
                             lim[8], meta, (uint8_t *)PyByteArray_AS_STRING(out), cap);
    }
    PyBuffer_Release(&view);
    if (st != 0) {
        Py_DECREF(out);
        out = Py_None;
        Py_INCREF(out);
    } else if (meta[3] != cap && PyByteArray_Resize(out, meta[3]) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("(LLLLN)", (long long)st, (long long)meta[0], (long long)meta[1], (long long)meta[2], out);
}

static PyMethodDef methods[] = {
    {"small_static", (PyCFunction)(void (*)(void))py_small_static, METH_FASTCALL,
     "Parse and decode a small static blob whole (see nz_small_static)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_lanes_c",
                                    "C lane decoder; called through ctypes by nzip.entropy.lanes_c (and small_static "
                                    "directly)", -1, methods};

PyMODINIT_FUNC PyInit__lanes_c(void) { return PyModule_Create(&module); }
