/*
 * Compiled inner loops of the NEX core (optional; nexscore.core.kernels falls back to numpy).
 *
 * Why C: the per-entry steps of learning and scoring (first occurrence of a key within its
 * response, per-row float32 sums with numpy's own pairwise rounding, the masked sums of the
 * reuse rule, scatter-adds into 2^22 accumulators) cost numpy a dozen passes over the cache's
 * arrays each; here each is one pass. A JIT (numba) would need more time to import than the
 * whole job takes, so these few loops are compiled with the package.
 *
 * Every function takes contiguous buffers (numpy arrays), checks their sizes, and releases
 * the GIL while it loops, so chunks can run on several threads.
 *
 * Exactness: sums reproduce numpy's float32 `np.sum` bit for bit (the pairwise scheme of
 * numpy's loops_utils: under 8 values in sequence, up to 128 in 8 interleaved accumulators,
 * above that split in halves on a multiple of 8), started from the reduction's identity 0 or
 * from the first element, as the installed numpy does (the caller probes which). Build
 * without -ffast-math and with -ffp-contract=off, so no operation is reordered or fused.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#define BLOCK 128

#define PAIRWISE(NAME, T)                                                        \
    static T NAME(const T *a, Py_ssize_t n)                                      \
    {                                                                            \
        if (n < 8) {                                                             \
            T res = (T)-0.0;                                                     \
            for (Py_ssize_t i = 0; i < n; i++) res += a[i];                      \
            return res;                                                          \
        }                                                                        \
        if (n <= BLOCK) {                                                        \
            T r[8];                                                              \
            Py_ssize_t i;                                                        \
            for (int j = 0; j < 8; j++) r[j] = a[j];                             \
            for (i = 8; i < n - (n % 8); i += 8)                                 \
                for (int j = 0; j < 8; j++) r[j] += a[i + j];                    \
            T res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7])); \
            for (; i < n; i++) res += a[i];                                      \
            return res;                                                          \
        }                                                                        \
        Py_ssize_t n2 = n / 2;                                                   \
        n2 -= n2 % 8;                                                            \
        return NAME(a, n2) + NAME(a + n2, n - n2);                               \
    }

PAIRWISE(pairwise_f32, float)
PAIRWISE(pairwise_f64, double)

/* np.sum of a contiguous run: identity + pairwise(all), or first + pairwise(rest). */
static float sum_f32(const float *a, Py_ssize_t n, int from_first)
{
    if (n == 0) return 0.0f;
    if (from_first) return a[0] + pairwise_f32(a + 1, n - 1);
    return 0.0f + pairwise_f32(a, n);
}

static double sum_f64(const double *a, Py_ssize_t n, int from_first)
{
    if (n == 0) return 0.0;
    if (from_first) return a[0] + pairwise_f64(a + 1, n - 1);
    return 0.0 + pairwise_f64(a, n);
}

/* ---- buffer helpers ------------------------------------------------------------------ */

typedef struct {
    Py_buffer view;
    Py_ssize_t n;
} Buf;

static int get_buf(PyObject *obj, Buf *b, Py_ssize_t itemsize, int writable, const char *name)
{
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) return -1;
    if (b->view.len % itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "%s: buffer of %zd bytes is not a whole number of %zd-byte items",
                     name, b->view.len, itemsize);
        PyBuffer_Release(&b->view);
        return -1;
    }
    b->n = b->view.len / itemsize;
    return 0;
}

static void release(Buf *bufs, int count)
{
    for (int i = 0; i < count; i++) PyBuffer_Release(&bufs[i].view);
}

/* What a function takes: per argument its name, item size and whether it is written. */
typedef struct {
    const char *name;
    Py_ssize_t itemsize;
    int writable;
} Spec;

/* The buffers of objs[0..n) as spec says; on failure the ones taken are released. */
static int take(PyObject **objs, Buf *b, const Spec *spec, int n)
{
    for (int i = 0; i < n; i++) {
        if (get_buf(objs[i], &b[i], spec[i].itemsize, spec[i].writable, spec[i].name) < 0) {
            release(b, i);
            return -1;
        }
    }
    return 0;
}

#define NEED(cond, ...)                                          \
    do {                                                         \
        if (!(cond)) {                                           \
            PyErr_Format(PyExc_ValueError, __VA_ARGS__);         \
            goto fail;                                           \
        }                                                        \
    } while (0)

/* Segments [starts[j], starts[j] + lengths[j]) must lie inside an array of n items. */
static int segments_ok(const int64_t *starts, const int64_t *lengths, Py_ssize_t m, Py_ssize_t n,
                       Py_ssize_t *longest)
{
    Py_ssize_t best = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        if (starts[j] < 0 || lengths[j] < 0 || starts[j] + lengths[j] > n) return 0;
        if (lengths[j] > best) best = lengths[j];
    }
    if (longest) *longest = best;
    return 1;
}

/* ---- first_positions ----------------------------------------------------------------- */

PyDoc_STRVAR(first_positions_doc,
"first_positions(keys u32, resp_ptr i64, table i32[key space], first i32 out, is_new u8 out, base)\n\n"
"For every entry: the index of the first entry of its response with the same key, and\n"
"whether it is that first one. `table` maps a key to base + the position of its latest\n"
"first occurrence; no reset is needed between responses or calls as long as every call\n"
"gets a base at or above the previous call's base + its number of keys (a slot below the\n"
"current response's start, or at/after the current entry, is stale).");

static PyObject *first_positions(PyObject *self, PyObject *args)
{
    PyObject *o[5];
    long long base;
    Buf b[5];
    if (!PyArg_ParseTuple(args, "OOOOOL", &o[0], &o[1], &o[2], &o[3], &o[4], &base)) return NULL;
    static const Spec spec[5] = {
        {"keys", 4, 0},
        {"resp_ptr", 8, 0},
        {"table", 4, 1},
        {"first", 4, 1},
        {"is_new", 1, 1},
    };
    if (take(o, b, spec, 5) < 0) return NULL;
    const uint32_t *keys = b[0].view.buf;
    const int64_t *ptr = b[1].view.buf;
    int32_t *table = b[2].view.buf, *first = b[3].view.buf;
    uint8_t *is_new = b[4].view.buf;
    Py_ssize_t n = b[0].n, n_resp = b[1].n - 1, key_space = b[2].n;
    NEED(b[3].n == n && b[4].n == n, "first/is_new must have one item per key");
    NEED(base >= 0 && base + (long long)n < INT32_MAX, "base + entries must fit in int32");
    NEED(n_resp >= 0 && (n_resp == 0 || (ptr[0] == 0 && ptr[n_resp] == n)),
         "resp_ptr must run from 0 to the number of keys");
    for (Py_ssize_t r = 0; r < n_resp; r++) NEED(ptr[r] <= ptr[r + 1], "resp_ptr must not decrease");
    for (Py_ssize_t i = 0; i < n; i++)
        NEED(keys[i] < (uint64_t)key_space, "a key lies outside the key space of the table");
    Py_BEGIN_ALLOW_THREADS
    const int32_t b32 = (int32_t)base;
    for (Py_ssize_t r = 0; r < n_resp; r++) {
        const int32_t lo = b32 + (int32_t)ptr[r], hi = b32 + (int32_t)ptr[r + 1];
        for (int32_t g = lo; g < hi; g++) {
            const uint32_t k = keys[g - b32];
            const int32_t t = table[k];
            const int seen = (t >= lo) & (t < g);
            const int32_t f = seen ? t : g;
            table[k] = f;
            first[g - b32] = f - b32;
            is_new[g - b32] = (uint8_t)!seen;
        }
    }
    Py_END_ALLOW_THREADS
    release(b, 5);
    Py_RETURN_NONE;
fail:
    release(b, 5);
    return NULL;
}

/* ---- segment_sums -------------------------------------------------------------------- */

PyDoc_STRVAR(segment_sums_doc,
"segment_sums(values f32|f64, starts i64, lengths i64, out (same dtype), from_first, double)\n\n"
"out[j] = np.sum(values[starts[j]:starts[j] + lengths[j]]) with numpy's rounding.");

static PyObject *segment_sums(PyObject *self, PyObject *args)
{
    PyObject *o[4];
    int from_first, is_double;
    Buf b[4];
    if (!PyArg_ParseTuple(args, "OOOOpp", &o[0], &o[1], &o[2], &o[3], &from_first, &is_double))
        return NULL;
    Py_ssize_t item = is_double ? 8 : 4;
    Spec spec[4] = {
        {"values", item, 0},
        {"starts", 8, 0},
        {"lengths", 8, 0},
        {"out", item, 1},
    };
    if (take(o, b, spec, 4) < 0) return NULL;
    const int64_t *starts = b[1].view.buf, *lengths = b[2].view.buf;
    Py_ssize_t m = b[1].n;
    NEED(b[2].n == m && b[3].n == m, "starts, lengths and out must have the same size");
    NEED(segments_ok(starts, lengths, m, b[0].n, NULL), "a segment lies outside the values");
    Py_BEGIN_ALLOW_THREADS
    if (is_double) {
        const double *v = b[0].view.buf;
        double *out = b[3].view.buf;
        for (Py_ssize_t j = 0; j < m; j++) out[j] = sum_f64(v + starts[j], lengths[j], from_first);
    } else {
        const float *v = b[0].view.buf;
        float *out = b[3].view.buf;
        for (Py_ssize_t j = 0; j < m; j++) out[j] = sum_f32(v + starts[j], lengths[j], from_first);
    }
    Py_END_ALLOW_THREADS
    release(b, 4);
    Py_RETURN_NONE;
fail:
    release(b, 4);
    return NULL;
}

/* ---- window_sums --------------------------------------------------------------------- */

PyDoc_STRVAR(window_sums_doc,
"window_sums(mass f32, first i32, starts i64, lengths i64, lo i32, hi i32, total f32 out,\n"
"            inside f32 out, from_first)\n\n"
"Per row j: total[j] = np.sum of the row's masses; inside[j] = np.sum of the masses of the\n"
"row's entries whose first occurrence lies in [lo[j], hi[j]) (the reuse rule's numerator).");

static PyObject *window_sums(PyObject *self, PyObject *args)
{
    PyObject *o[8];
    int from_first;
    Buf b[8];
    float *scratch = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOOOOp", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6],
                          &o[7], &from_first))
        return NULL;
    static const Spec spec[8] = {
        {"mass", 4, 0},
        {"first", 4, 0},
        {"starts", 8, 0},
        {"lengths", 8, 0},
        {"lo", 4, 0},
        {"hi", 4, 0},
        {"total", 4, 1},
        {"inside", 4, 1},
    };
    if (take(o, b, spec, 8) < 0) return NULL;
    const float *mass = b[0].view.buf;
    const int32_t *first = b[1].view.buf, *lo = b[4].view.buf, *hi = b[5].view.buf;
    const int64_t *starts = b[2].view.buf, *lengths = b[3].view.buf;
    float *total = b[6].view.buf, *inside = b[7].view.buf;
    Py_ssize_t m = b[2].n, longest = 0;
    NEED(b[1].n == b[0].n, "mass and first must have the same size");
    for (int i = 3; i < 8; i++) NEED(b[i].n == m, "%s must have one item per row", spec[i].name);
    NEED(segments_ok(starts, lengths, m, b[0].n, &longest), "a row lies outside the entries");
    scratch = malloc(sizeof(float) * (size_t)(longest > 0 ? longest : 1));
    if (!scratch) { PyErr_NoMemory(); goto fail; }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < m; j++) {
        const float *row = mass + starts[j];
        const int32_t *f = first + starts[j];
        Py_ssize_t count = 0;
        for (Py_ssize_t e = 0; e < lengths[j]; e++)
            if (f[e] >= lo[j] && f[e] < hi[j]) scratch[count++] = row[e];
        total[j] = sum_f32(row, lengths[j], from_first);
        inside[j] = sum_f32(scratch, count, from_first);
    }
    Py_END_ALLOW_THREADS
    free(scratch);
    release(b, 8);
    Py_RETURN_NONE;
fail:
    free(scratch);
    release(b, 8);
    return NULL;
}

/* ---- credit_add ---------------------------------------------------------------------- */

PyDoc_STRVAR(credit_add_doc,
"credit_add(effective f32[key space], redundant f32[key space], keys u32, entries i64,\n"
"           values f32, is_effective u8)\n\n"
"In order: (effective if is_effective[i] else redundant)[keys[entries[i]]] += values[i],\n"
"the float32 additions np.add.at makes.");

static PyObject *credit_add(PyObject *self, PyObject *args)
{
    PyObject *o[6];
    Buf b[6];
    if (!PyArg_ParseTuple(args, "OOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5])) return NULL;
    static const Spec spec[6] = {
        {"effective", 4, 1},
        {"redundant", 4, 1},
        {"keys", 4, 0},
        {"entries", 8, 0},
        {"values", 4, 0},
        {"is_effective", 1, 0},
    };
    if (take(o, b, spec, 6) < 0) return NULL;
    float *eff = b[0].view.buf, *red = b[1].view.buf;
    const uint32_t *keys = b[2].view.buf;
    const int64_t *entries = b[3].view.buf;
    const float *values = b[4].view.buf;
    const uint8_t *is_eff = b[5].view.buf;
    Py_ssize_t n = b[3].n, key_space = b[0].n;
    NEED(b[1].n == key_space, "both accumulators must have the same size");
    NEED(b[4].n == n && b[5].n == n, "entries, values and is_effective must have the same size");
    for (Py_ssize_t i = 0; i < n; i++) {
        NEED(entries[i] >= 0 && entries[i] < b[2].n, "an entry index lies outside the keys");
        NEED(keys[entries[i]] < (uint64_t)key_space, "a key lies outside the accumulators");
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t k = keys[entries[i]];
        if (is_eff[i]) eff[k] += values[i];
        else red[k] += values[i];
    }
    Py_END_ALLOW_THREADS
    release(b, 6);
    Py_RETURN_NONE;
fail:
    release(b, 6);
    return NULL;
}

/* ---- gmf_sums ------------------------------------------------------------------------ */

PyDoc_STRVAR(gmf_sums_doc,
"gmf_sums(keys u32, mass f32, weights f32, starts i64, lengths i64, good f32 out,\n"
"         credible f32 out, from_first)\n\n"
"Per list j: good[j] = np.sum(m * np.maximum(w, 0)) and credible[j] = np.sum(m * |w|) over\n"
"its entries, w = weights[key]: the two sums of the Good-Mass Fraction.");

static PyObject *gmf_sums(PyObject *self, PyObject *args)
{
    PyObject *o[7];
    int from_first;
    Buf b[7];
    float *scratch = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOOOp", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6],
                          &from_first))
        return NULL;
    static const Spec spec[7] = {
        {"keys", 4, 0},
        {"mass", 4, 0},
        {"weights", 4, 0},
        {"starts", 8, 0},
        {"lengths", 8, 0},
        {"good", 4, 1},
        {"credible", 4, 1},
    };
    if (take(o, b, spec, 7) < 0) return NULL;
    const uint32_t *keys = b[0].view.buf;
    const float *mass = b[1].view.buf, *w = b[2].view.buf;
    const int64_t *starts = b[3].view.buf, *lengths = b[4].view.buf;
    float *good = b[5].view.buf, *cred = b[6].view.buf;
    Py_ssize_t n = b[0].n, m = b[3].n, longest = 0;
    NEED(b[1].n == n, "keys and mass must have the same size");
    NEED(b[4].n == m && b[5].n == m && b[6].n == m, "starts, lengths and outputs must match");
    NEED(segments_ok(starts, lengths, m, n, &longest), "a list lies outside the entries");
    for (Py_ssize_t i = 0; i < n; i++)
        NEED(keys[i] < (uint64_t)b[2].n, "a key lies outside the weights");
    scratch = malloc(2 * sizeof(float) * (size_t)(longest > 0 ? longest : 1));
    if (!scratch) { PyErr_NoMemory(); goto fail; }
    Py_BEGIN_ALLOW_THREADS
    float *pos = scratch, *abs_w = scratch + (longest > 0 ? longest : 1);
    for (Py_ssize_t j = 0; j < m; j++) {
        const uint32_t *k = keys + starts[j];
        const float *mj = mass + starts[j];
        for (Py_ssize_t e = 0; e < lengths[j]; e++) {
            float wk = w[k[e]];
            /* np.maximum(w, 0): w where w >= 0 or w is NaN */
            pos[e] = mj[e] * ((wk >= 0.0f || wk != wk) ? wk : 0.0f);
            abs_w[e] = mj[e] * fabsf(wk);
        }
        good[j] = sum_f32(pos, lengths[j], from_first);
        cred[j] = sum_f32(abs_w, lengths[j], from_first);
    }
    Py_END_ALLOW_THREADS
    free(scratch);
    release(b, 7);
    Py_RETURN_NONE;
fail:
    free(scratch);
    release(b, 7);
    return NULL;
}


/* ---- flag_counts --------------------------------------------------------------------- */

PyDoc_STRVAR(flag_counts_doc,
"flag_counts(flags u8, starts i64, lengths i64, out i64)\n\n"
"out[j] = number of set flags in flags[starts[j]:starts[j] + lengths[j]].");

static PyObject *flag_counts(PyObject *self, PyObject *args)
{
    PyObject *o[4];
    Buf b[4];
    if (!PyArg_ParseTuple(args, "OOOO", &o[0], &o[1], &o[2], &o[3])) return NULL;
    static const Spec spec[4] = {
        {"flags", 1, 0},
        {"starts", 8, 0},
        {"lengths", 8, 0},
        {"out", 8, 1},
    };
    if (take(o, b, spec, 4) < 0) return NULL;
    const uint8_t *flags = b[0].view.buf;
    const int64_t *starts = b[1].view.buf, *lengths = b[2].view.buf;
    int64_t *out = b[3].view.buf;
    Py_ssize_t m = b[1].n;
    NEED(b[2].n == m && b[3].n == m, "starts, lengths and out must have the same size");
    NEED(segments_ok(starts, lengths, m, b[0].n, NULL), "a segment lies outside the flags");
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < m; j++) {
        int64_t c = 0;
        const uint8_t *f = flags + starts[j];
        for (int64_t e = 0; e < lengths[j]; e++) c += f[e] != 0;
        out[j] = c;
    }
    Py_END_ALLOW_THREADS
    release(b, 4);
    Py_RETURN_NONE;
fail:
    release(b, 4);
    return NULL;
}

/* ---- half_to_float ------------------------------------------------------------------- */

PyDoc_STRVAR(half_to_float_doc,
"half_to_float(table f32[65536], half u16, out f32) -> (all finite, smallest value)\n\n"
"out[i] = table[half[i]] (the exact float16 -> float32 conversion, tabulated by numpy),\n"
"with the two facts sanitising needs, found in the same pass.");

static PyObject *half_to_float(PyObject *self, PyObject *args)
{
    PyObject *o[3];
    Buf b[3];
    if (!PyArg_ParseTuple(args, "OOO", &o[0], &o[1], &o[2])) return NULL;
    static const Spec spec[3] = {
        {"table", 4, 0},
        {"half", 2, 0},
        {"out", 4, 1},
    };
    if (take(o, b, spec, 3) < 0) return NULL;
    const float *table = b[0].view.buf;
    const uint16_t *half = b[1].view.buf;
    float *out = b[2].view.buf;
    Py_ssize_t n = b[1].n;
    NEED(b[0].n == 65536, "the table must have 65536 entries");
    NEED(b[2].n == n, "out must have one item per value");
    int finite = 1;
    float lowest = INFINITY;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        float v = table[half[i]];
        out[i] = v;
        /* float16 exponent bits all set: inf or NaN */
        finite &= (half[i] & 0x7c00) != 0x7c00;
        lowest = v < lowest ? v : lowest;
    }
    Py_END_ALLOW_THREADS
    release(b, 3);
    return Py_BuildValue("Nd", PyBool_FromLong(finite), (double)lowest);
fail:
    release(b, 3);
    return NULL;
}

/* ---- viterbi2 ------------------------------------------------------------------------ */

PyDoc_STRVAR(viterbi2_doc,
"viterbi2(log_frame f64 (B, N, 2), n i64 (B,), log_start, log_stay, log_move, states i8 out (B, N))\n\n"
"Most likely path of a two-state HMM with a symmetric transition matrix per row, with\n"
"hmmlearn's tie rules: at the end the first maximum wins, backtracking prefers state 1 on\n"
"a tie. The same float64 operations as the numpy version, in the same order.");

static PyObject *viterbi2(PyObject *self, PyObject *args)
{
    PyObject *o[3];
    double log_start, log_stay, log_move;
    Buf b[3];
    double *lattice = NULL;
    if (!PyArg_ParseTuple(args, "OOdddO", &o[0], &o[1], &log_start, &log_stay, &log_move, &o[2]))
        return NULL;
    static const Spec spec[3] = {
        {"log_frame", 8, 0},
        {"n", 8, 0},
        {"states", 1, 1},
    };
    if (take(o, b, spec, 3) < 0) return NULL;
    const double *frame = b[0].view.buf;
    const int64_t *n = b[1].view.buf;
    int8_t *states = b[2].view.buf;
    Py_ssize_t B = b[1].n;
    NEED(B > 0 && b[2].n % B == 0, "states must be (B, N)");
    Py_ssize_t N = b[2].n / B;
    NEED(b[0].n == B * N * 2, "log_frame must be (B, N, 2)");
    for (Py_ssize_t r = 0; r < B; r++) NEED(n[r] >= 1 && n[r] <= N, "row lengths must lie in 1..N");
    lattice = malloc(sizeof(double) * 2 * (size_t)N);
    if (!lattice) { PyErr_NoMemory(); goto fail; }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < B; r++) {
        const double *f = frame + r * N * 2;
        int8_t *st = states + r * N;
        Py_ssize_t len = n[r];
        lattice[0] = log_start + f[0];
        lattice[1] = log_start + f[1];
        for (Py_ssize_t t = 1; t < len; t++) {
            const double *p = lattice + 2 * (t - 1);
            for (int i = 0; i < 2; i++) {
                double stay = p[i] + log_stay, move = p[1 - i] + log_move;
                /* np.maximum: the first unless the second is larger, NaN propagates */
                double best = (stay >= move || stay != stay) ? stay : move;
                lattice[2 * t + i] = best + f[2 * t + i];
            }
        }
        int8_t s = lattice[2 * (len - 1) + 1] > lattice[2 * (len - 1)];
        for (Py_ssize_t t = len; t < N; t++) st[t] = 0;
        st[len - 1] = s;
        for (Py_ssize_t t = len - 2; t >= 0; t--) {
            const double *c = lattice + 2 * t;
            double from1 = c[1] + (s == 1 ? log_stay : log_move);
            double from0 = c[0] + (s == 1 ? log_move : log_stay);
            s = from1 >= from0;
            st[t] = s;
        }
    }
    Py_END_ALLOW_THREADS
    free(lattice);
    release(b, 3);
    Py_RETURN_NONE;
fail:
    free(lattice);
    release(b, 3);
    return NULL;
}


/* ---- new_entry_credit ---------------------------------------------------------------- */

PyDoc_STRVAR(new_entry_credit_doc,
"new_entry_credit(starts i64, lengths i64, scale f32, is_new u8, mass f32, entries i64 out,\n"
"                 values f32 out)\n\n"
"The entries of the given rows whose key is new to their response, in order, with their\n"
"credit mass[e] * scale[row] (a float32 product). The outputs must have room for exactly\n"
"the new entries of these rows.");

static PyObject *new_entry_credit(PyObject *self, PyObject *args)
{
    PyObject *o[7];
    Buf b[7];
    if (!PyArg_ParseTuple(args, "OOOOOOO", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6])) return NULL;
    static const Spec spec[7] = {
        {"starts", 8, 0},
        {"lengths", 8, 0},
        {"scale", 4, 0},
        {"is_new", 1, 0},
        {"mass", 4, 0},
        {"entries", 8, 1},
        {"values", 4, 1},
    };
    if (take(o, b, spec, 7) < 0) return NULL;
    const int64_t *starts = b[0].view.buf, *lengths = b[1].view.buf;
    const float *scale = b[2].view.buf, *mass = b[4].view.buf;
    const uint8_t *is_new = b[3].view.buf;
    int64_t *entries = b[5].view.buf;
    float *values = b[6].view.buf;
    Py_ssize_t m = b[0].n, room = b[5].n, count = 0;
    NEED(b[1].n == m && b[2].n == m, "starts, lengths and scale must have one item per row");
    NEED(b[4].n == b[3].n, "is_new and mass must have one item per entry");
    NEED(b[6].n == room, "entries and values must have the same size");
    NEED(segments_ok(starts, lengths, m, b[3].n, NULL), "a row lies outside the entries");
    for (Py_ssize_t j = 0; j < m; j++)
        for (int64_t e = starts[j]; e < starts[j] + lengths[j]; e++) count += is_new[e] != 0;
    NEED(count == room, "the outputs have room for %zd entries, the rows hold %zd new ones", room, count);
    Py_BEGIN_ALLOW_THREADS
    Py_ssize_t o_ = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        const float sj = scale[j];
        for (int64_t e = starts[j]; e < starts[j] + lengths[j]; e++) {
            if (is_new[e]) {
                entries[o_] = e;
                values[o_] = mass[e] * sj;
                o_++;
            }
        }
    }
    Py_END_ALLOW_THREADS
    release(b, 7);
    Py_RETURN_NONE;
fail:
    release(b, 7);
    return NULL;
}

/* ---- base_agreement ------------------------------------------------------------------ */

PyDoc_STRVAR(base_agreement_doc,
"base_agreement(keys u32, half u16, table f32[65536], entry_ptr i64, base_keys u32, base_half u16,\n"
"               base_ptr i64, slots i32[key space], offset, rtol, atol, inf_from,\n"
"               missing i64 out, extra i64 out, mass_bad i64 out, first_bad i64 out\n"
"               [, row_ptr i64 | None, unordered i64 out | None, by_cpu=True])\n\n"
"Per response r (row entries [entry_ptr[r], entry_ptr[r+1]), base entries\n"
"[base_ptr[r], base_ptr[r+1]), base keys unique and ascending): missing[r] = row entries whose\n"
"key is not in the base list; extra[r] = base keys in none of its rows; mass_bad[r] = base\n"
"masses (of keys found in its rows) that differ from the float64 sum, in entry order, of their\n"
"row masses (float16 values, exact) by the rule of nexscore.cache.rules.masses_agree with\n"
"rtol, atol and inf_from; first_bad[r] = the base index of the first of those, or -1.\n"
"`slots` maps a key below its size to offset + 1 + its base index; it needs no reset as long\n"
"as every call gets an offset at or above the previous call's offset + its number of base\n"
"entries (a slot below the current response's first value is stale). Keys beyond it are\n"
"searched. Base keys unique and ascending within a response is the reader's rule and is not\n"
"checked again here: on other input the counts mean nothing, but every access stays in bounds.\n"
"With row_ptr (the row starts, from 0 to the number of entries), the same pass applies the\n"
"rows' order rule (nexscore.cache.rules.ascending): unordered[r] = entries of response r not\n"
"above the entry before them that do not start a row (learning and this pass read the same\n"
"keys, so `nex run` checks their order here rather than in a pass of its own).\n"
"by_cpu: float16 converted by the CPU's F16C instruction where it has one (`half_by_cpu()`),\n"
"else through `table`; the values are the same.");

PyDoc_STRVAR(half_by_cpu_doc,
"half_by_cpu()\n\nWhether base_agreement(by_cpu=True) converts float16 with the CPU's F16C instruction.");

/* rules.masses_agree: got (a float16 base mass) against want (the float64 sum of its rows) */
static int mass_agrees(double want, double got, double rtol, double atol, double inf_from)
{
    if (!isfinite(want)) return !isfinite(got);
    if (fabs(got - want) <= rtol * fabs(want) + atol) return 1;
    return fabs(want) >= inf_from && isinf(got) && ((got > 0) == (want > 0));
}

/* One call's arrays, as the pass below reads them (rptr NULL: no order rule). */
typedef struct {
    const uint32_t *keys, *bkeys;
    const uint16_t *half, *bhalf;
    const float *table;
    const int64_t *eptr, *bptr, *rptr;
    int32_t *slots;
    uint64_t n_slots;
    int64_t offset, n_resp, n_row_ptr;
    double rtol, atol, inf_from;
    int64_t *missing, *extra, *mass_bad, *first_bad, *unordered;
    double *sums;
} Agreement;

/*
 * The pass, written once and compiled twice (float16 through the table, or by F16C): per
 * response its base keys go into the slots, then its rows' entries are looked up one by one
 * and their masses summed per base key. Speed (it runs beside the learning, see
 * nexscore.core.agreement): a base key's sum starts at -0.0, which no entry's term can leave
 * (a term is its mass + 0.0, and -0.0 + 0.0 is +0.0), so a sum still -0.0 marks a key no entry
 * reached without a store per entry; the sums are those of the rule all the same (+0.0 in place
 * of a -0.0 term changes no sum: 0.0 + -0.0 is +0.0 too). The order rule is applied row by row
 * (an entry against the one before it), so no entry asks whether it starts a row.
 */
#define SUM_UNREACHED 0x8000000000000000ULL     /* the bits of -0.0 */

/* One row entry (index F, key K) of response r: its mass added to its base key's sum, or a miss. */
#define AGREEMENT_STEP(F, K, HALF) do {                                                         \
        const uint32_t k_ = (K);                                                                \
        if (k_ < n_slots) {                                                                     \
            const uint32_t t_ = (uint32_t)slots[k_] - slot0;    /* < nr: written for r */       \
            if (t_ < nr32) sums[t_] += (double)HALF(half[F]) + 0.0;                             \
            else miss++;                                                                        \
        } else {                                        /* beyond the slots: binary search */   \
            int64_t lo_ = 0, hi_ = nr;                                                          \
            while (lo_ < hi_) {                                                                 \
                const int64_t mid_ = lo_ + (hi_ - lo_) / 2;                                     \
                if (bk[mid_] < k_) lo_ = mid_ + 1; else hi_ = mid_;                             \
            }                                                                                   \
            if (lo_ < nr && bk[lo_] == k_) sums[lo_] += (double)HALF(half[F]) + 0.0;            \
            else miss++;                                                                        \
        }                                                                                       \
    } while (0)

#define AGREEMENT_PASS(NAME, ATTR, HALF)                                                        \
static ATTR void NAME(const Agreement *A)                                                       \
{                                                                                               \
    const uint32_t *keys = A->keys, *bkeys = A->bkeys;                                          \
    const uint16_t *half = A->half, *bhalf = A->bhalf;                                          \
    const float *table = A->table;                                                              \
    const int64_t *eptr = A->eptr, *bptr = A->bptr, *rptr = A->rptr;                           \
    int32_t *slots = A->slots;                                                                  \
    double *sums = A->sums;                                                                     \
    const uint64_t n_slots = A->n_slots;                                                        \
    (void)table;                                                                                \
    int64_t ri = 0;                     /* rptr[ri]: the first row start after the entry */     \
    for (int64_t r = 0; r < A->n_resp; r++) {                                                   \
        const int64_t b0 = bptr[r], nr = bptr[r + 1] - b0, first_slot = A->offset + 1 + b0;    \
        const uint32_t *bk = bkeys + b0;                                                        \
        const uint32_t slot0 = (uint32_t)first_slot, nr32 = (uint32_t)nr;                       \
        for (int64_t j = 0; j < nr; j++) {                                                      \
            sums[j] = -0.0;                                                                     \
            if (bk[j] < n_slots) slots[bk[j]] = (int32_t)(first_slot + j);                      \
        }                                                                                       \
        int64_t miss = 0, disorder = 0;                                                         \
        const int64_t e_end = eptr[r + 1];                                                      \
        int64_t e = eptr[r];                                                                    \
        while (e < e_end) {                                                                     \
            int64_t run_end = e_end;            /* a row (with rptr), else the response */      \
            if (rptr) {                                                                         \
                while (ri < A->n_row_ptr && rptr[ri] <= e) ri++;        /* past empty rows */   \
                if (ri < A->n_row_ptr && rptr[ri] < e_end) run_end = rptr[ri];                  \
                if (e > 0 && rptr[ri - 1] != e) disorder += keys[e] <= keys[e - 1];             \
            }                                                                                   \
            if (rptr) {                                                                         \
                uint32_t prev = keys[e];                                                        \
                AGREEMENT_STEP(e, prev, HALF);                                                  \
                for (int64_t f = e + 1; f < run_end; f++) {                                     \
                    const uint32_t k = keys[f];                                                 \
                    disorder += k <= prev;                                                      \
                    prev = k;                                                                   \
                    AGREEMENT_STEP(f, k, HALF);                                                 \
                }                                                                               \
            } else {                                                                            \
                for (int64_t f = e; f < run_end; f++) AGREEMENT_STEP(f, keys[f], HALF);         \
            }                                                                                   \
            e = run_end;                                                                        \
        }                                                                                       \
        int64_t ext = 0, bad = 0, first = -1;                                                   \
        for (int64_t j = 0; j < nr; j++) {                                                      \
            uint64_t bits;                                                                      \
            memcpy(&bits, &sums[j], sizeof bits);                                               \
            if (bits == SUM_UNREACHED) { ext++; continue; }                                     \
            if (!mass_agrees(sums[j], (double)HALF(bhalf[b0 + j]), A->rtol, A->atol, A->inf_from)) { \
                if (first < 0) first = b0 + j;                                                  \
                bad++;                                                                          \
            }                                                                                   \
        }                                                                                       \
        A->missing[r] = miss;                                                                   \
        if (rptr) A->unordered[r] = disorder;                                                   \
        A->extra[r] = ext;                                                                      \
        A->mass_bad[r] = bad;                                                                   \
        A->first_bad[r] = first;                                                                \
    }                                                                                           \
}

#define HALF_BY_TABLE(h) table[h]
AGREEMENT_PASS(agreement_by_table, , HALF_BY_TABLE)

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
#include <immintrin.h>
AGREEMENT_PASS(agreement_by_f16c, __attribute__((target("f16c"))), _cvtsh_ss)

/* F16C present and usable (its VEX encoding needs the OS to save the AVX state). */
static int cpu_has_f16c(void)
{
    unsigned int a, b, c, d, lo, hi;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (!(c & bit_F16C) || !(c & bit_AVX) || !(c & bit_OSXSAVE)) return 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (lo & 6) == 6;
}
#else
#define agreement_by_f16c agreement_by_table
static int cpu_has_f16c(void) { return 0; }
#endif

static int has_f16c = -1;

static PyObject *half_by_cpu(PyObject *self, PyObject *args)
{
    if (has_f16c < 0) has_f16c = cpu_has_f16c();
    return PyBool_FromLong(has_f16c);
}

static PyObject *base_agreement(PyObject *self, PyObject *args)
{
    PyObject *o[14] = {NULL};
    long long offset;
    double rtol, atol, inf_from;
    int by_cpu = 1;
    Buf b[14];
    double *sums = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOOOOLdddOOOO|OOp", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7],
                          &offset, &rtol, &atol, &inf_from, &o[8], &o[9], &o[10], &o[11], &o[12], &o[13], &by_cpu))
        return NULL;
    if (o[12] == Py_None) o[12] = NULL;
    if (o[13] == Py_None) o[13] = NULL;
    const int check_order = o[12] != NULL;
    if (check_order != (o[13] != NULL)) {
        PyErr_SetString(PyExc_TypeError, "row_ptr and unordered go together");
        return NULL;
    }
    const int n_bufs = check_order ? 14 : 12;
    static const Spec spec[14] = {
        {"keys", 4, 0},
        {"half", 2, 0},
        {"table", 4, 0},
        {"entry_ptr", 8, 0},
        {"base_keys", 4, 0},
        {"base_half", 2, 0},
        {"base_ptr", 8, 0},
        {"slots", 4, 1},
        {"missing", 8, 1},
        {"extra", 8, 1},
        {"mass_bad", 8, 1},
        {"first_bad", 8, 1},
        {"row_ptr", 8, 0},
        {"unordered", 8, 1},
    };
    if (take(o, b, spec, n_bufs) < 0) return NULL;
    const int64_t *eptr = b[3].view.buf, *bptr = b[6].view.buf;
    Py_ssize_t n = b[0].n, nb = b[4].n, n_resp = b[3].n - 1, longest = 0;
    NEED(b[1].n == n, "keys and half must have the same size");
    NEED(b[5].n == nb, "base_keys and base_half must have the same size");
    NEED(b[2].n == 65536, "the table must have 65536 entries");
    NEED(n_resp >= 0 && b[6].n == n_resp + 1, "entry_ptr and base_ptr must have one item per response plus one");
    NEED(offset >= 0 && offset + (long long)nb < INT32_MAX, "offset + base entries must fit in int32");
    for (int i = 8; i < 12; i++) NEED(b[i].n == n_resp, "%s must have one item per response", spec[i].name);
    const int64_t *rptr = check_order ? b[12].view.buf : NULL;
    const Py_ssize_t n_row_ptr = check_order ? b[12].n : 0;
    if (check_order) {
        NEED(b[13].n == n_resp, "unordered must have one item per response");
        NEED(n_row_ptr >= 1 && rptr[0] == 0 && rptr[n_row_ptr - 1] == n,
             "row_ptr must run from 0 to the number of entries");
        for (Py_ssize_t i = 1; i < n_row_ptr; i++) NEED(rptr[i - 1] <= rptr[i], "row_ptr must not decrease");
    }
    NEED(n_resp == 0 || (eptr[0] == 0 && eptr[n_resp] == n && bptr[0] == 0 && bptr[n_resp] == nb),
         "entry_ptr and base_ptr must run from 0 to the number of entries");
    for (Py_ssize_t r = 0; r < n_resp; r++) {
        NEED(eptr[r] <= eptr[r + 1] && bptr[r] <= bptr[r + 1], "entry_ptr and base_ptr must not decrease");
        if (bptr[r + 1] - bptr[r] > longest) longest = bptr[r + 1] - bptr[r];
    }
    sums = malloc(sizeof(double) * (size_t)(longest > 0 ? longest : 1));
    if (!sums) { PyErr_NoMemory(); goto fail; }
    if (has_f16c < 0) has_f16c = cpu_has_f16c();
    const Agreement A = {
        .keys = b[0].view.buf, .bkeys = b[4].view.buf, .half = b[1].view.buf, .bhalf = b[5].view.buf,
        .table = b[2].view.buf, .eptr = eptr, .bptr = bptr, .rptr = rptr, .slots = b[7].view.buf,
        .n_slots = (uint64_t)b[7].n, .offset = offset, .n_resp = n_resp, .n_row_ptr = n_row_ptr,
        .rtol = rtol, .atol = atol, .inf_from = inf_from, .missing = b[8].view.buf, .extra = b[9].view.buf,
        .mass_bad = b[10].view.buf, .first_bad = b[11].view.buf,
        .unordered = check_order ? b[13].view.buf : NULL, .sums = sums,
    };
    Py_BEGIN_ALLOW_THREADS
    if (by_cpu && has_f16c) agreement_by_f16c(&A);
    else agreement_by_table(&A);
    Py_END_ALLOW_THREADS
    free(sums);
    release(b, n_bufs);
    Py_RETURN_NONE;
fail:
    free(sums);
    release(b, n_bufs);
    return NULL;
}

static PyMethodDef methods[] = {
    {"first_positions", first_positions, METH_VARARGS, first_positions_doc},
    {"segment_sums", segment_sums, METH_VARARGS, segment_sums_doc},
    {"window_sums", window_sums, METH_VARARGS, window_sums_doc},
    {"credit_add", credit_add, METH_VARARGS, credit_add_doc},
    {"gmf_sums", gmf_sums, METH_VARARGS, gmf_sums_doc},
    {"flag_counts", flag_counts, METH_VARARGS, flag_counts_doc},
    {"half_to_float", half_to_float, METH_VARARGS, half_to_float_doc},
    {"viterbi2", viterbi2, METH_VARARGS, viterbi2_doc},
    {"new_entry_credit", new_entry_credit, METH_VARARGS, new_entry_credit_doc},
    {"base_agreement", base_agreement, METH_VARARGS, base_agreement_doc},
    {"half_by_cpu", half_by_cpu, METH_NOARGS, half_by_cpu_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "Compiled inner loops of the NEX core (see nexscore.core.kernels).", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
