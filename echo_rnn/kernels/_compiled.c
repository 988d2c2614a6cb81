/* echo_rnn.kernels._compiled: the echo RNN's forward, loss, backward and training step in C,
 * for R independent members at once, with bits that depend on nothing but a member's own
 * config and inputs.
 *
 * The math is echo_rnn/kernels/reference.py's (read it there, one step at a time); this file only
 * fixes the order of every floating-point operation, because the bits depend on it:
 *
 *   - Shapes: R members, B batch, T time, I input size, H hidden size. A member's states are
 *     laid out (T + 1, H, B), batch innermost: every loop that the compiler vectorizes runs
 *     over b, and lane b only ever sees sequence b's numbers. So a vector of 4, 8 or 16 lanes
 *     (or none) computes each lane with the same scalar operations in the same order.
 *   - Sums over the hidden units run j = 0..H-1 (then k = 0..I-1 for inputs), written out.
 *   - Sums over time (the weight gradients) are kept per lane b, accumulated t = T..1, and
 *     only at the end reduced over b in the order b = 0..B-1. Nothing is summed as a tree.
 *     Losses and the gradient norm are summed in double, in the same fixed orders.
 *   - No FMA: the package is compiled with -ffp-contract=off, so a * b + c is two roundings
 *     on every CPU (and never -ffast-math: GCC reassociates floats only when told to).
 *   - tanh is ours (tanh_f32 / tanh_f64 below), straight-line code without libm, and the
 *     random numbers are ours (a counter-based hash, integer arithmetic only).
 *   - Members never share anything, so R, a member's place among them and the thread
 *     count cannot change its bits.
 *
 * The kernel body below is compiled twice, for float (suffix _f32) and double (_f64): this
 * file includes itself with REAL and SFX defined (see the end of the common part).
 * Tensors cross the boundary as raw data pointers checked by echo_rnn/kernels/compiled.py,
 * so this module links against neither PyTorch nor NumPy.
 */
#ifndef ECHO_KERNEL_BODY

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Function multiversioning: AVX-512, AVX2 and baseline clones of the hot loops, picked at
 * load time (AVX-512 over AVX2: about a fifth off a training step where the CPU has it). The
 * bits cannot depend on which (see above), only the speed does. Off under the sanitizers'
 * debug build and where the compiler lacks it. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    !defined(ECHO_NO_CLONES) && defined(__linux__)
#define HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HOT
#endif

/* ------------------------------------------------------------------------------------ */
/* Random numbers: a counter-based generator, the same values on every machine.          */
/* ------------------------------------------------------------------------------------ */

/* splitmix64's finalizer (Steele, Lea, Flood 2014): a bijection of 64-bit words whose
 * output bits each depend on every input bit. Integer arithmetic only, modulo 2^64. */
static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

#define GOLDEN 0x9E3779B97F4A7C15ULL

/* The key of (seed, stream, counter): each word folded in by a mix, so that neighbouring
 * seeds, streams and counters give unrelated keys. */
static inline uint64_t rng_key(uint64_t seed, uint64_t stream, uint64_t counter) {
    uint64_t h = mix64(seed + GOLDEN);
    h = mix64(h + stream + GOLDEN);
    return mix64(h + counter + GOLDEN);
}

/* The index-th 64-bit word of (seed, stream, counter). */
static inline uint64_t rng_word(uint64_t key, uint64_t index) {
    return mix64(key + index + GOLDEN);
}

/* A uniform double in (-1, 1) from the top 53 bits: (2 m + 1) / 2^53 - 1 with m < 2^52,
 * every operation exact. */
static inline double uniform_pm1(uint64_t word) {
    return (double)((word >> 11) | 1ULL) * (1.0 / 4503599627370496.0) - 1.0;
}

/* log(s) for s in (0, 1] with + - * / only (no libm, whose results differ between
 * libraries): s = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(f) with
 * f = (m - 1) / (m + 1), |f| <= 0.1716, summed as a series in f^2 (the first neglected
 * term is below 2^-60 of the sum). log 2 in two parts so that e * LN2_HI is exact. */
static double log_pos(double s) {
    uint64_t bits;
    memcpy(&bits, &s, sizeof bits);
    int e = (int)((bits >> 52) & 0x7ff) - 1023;
    bits = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL; /* m in [1, 2) */
    double m;
    memcpy(&m, &bits, sizeof m);
    if (m > 1.4142135623730951) {
        m *= 0.5;
        e += 1;
    }
    double f = (m - 1.0) / (m + 1.0);
    double f2 = f * f;
    double series = 1.0 / 23.0;
    for (int n = 21; n >= 1; n -= 2) series = 1.0 / n + f2 * series;
    const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
    return e * LN2_HI + (2.0 * f * series + e * LN2_LO);
}

/* A standard normal draw, Marsaglia's polar method (needs only log and sqrt, both above or
 * exactly rounded): attempt a uses words 2a and 2a + 1 of the key, until u^2 + v^2 is in
 * (0, 1). One draw per key, so each parameter has a key of its own. */
static double normal_draw(uint64_t key) {
    for (uint64_t a = 0;; a++) {
        double u = uniform_pm1(rng_word(key, 2 * a));
        double v = uniform_pm1(rng_word(key, 2 * a + 1));
        double s = u * u + v * v;
        if (s < 1.0 && s > 0.0) return u * sqrt(-2.0 * log_pos(s) / s);
    }
}

/* ------------------------------------------------------------------------------------ */
/* tanh without libm, straight-line (selects, no branches on the data): it vectorizes.    */
/* ------------------------------------------------------------------------------------ */

/* tanh |x| = e / (e + 2) with e = expm1(2 |x|): no cancellation anywhere, so the result is
 * accurate relative to its size down to the smallest x. expm1(y) = 2^k (1 + p) - 1 with
 * y = k ln2 + r, |r| <= ln2 / 2 + tiny, p = expm1(r) by its Taylor series (the first term
 * left out is below 2^-56 of p in double, 2^-30 in float); k is rounded by adding
 * 1.5 * 2^52 (the sum's low bits are k), and 2^k is built from its exponent bits. y is
 * clamped where tanh rounds to 1 (2|x| >= 40 in double, >= 20 in float).
 * The selects compare bit patterns as integers: for the non-negative |x| that ordering is
 * the floats' own, NaN above everything. Integer selects let GCC vectorize the loop without
 * -fno-trapping-math (a float comparison may raise a flag, so GCC keeps it a branch).
 * Accuracy (tests/test_compiled.py, test_tanh_*): float64 within TANH_F64_MAX_REL = 1e-15
 * relative of torch.tanh (measured 3.5e-16, 2 ulps); float32 within TANH_F32_MAX_ULP = 3
 * ulps of the float64 tanh (measured 2.41 ulps over every 7th float in [-1, 1] and a dense
 * sweep of [-10, 10]; 92% correctly rounded). Both in echo_rnn/kernels/compiled.py. */
static inline double tanh_f64(double x) {
    uint64_t xb;
    memcpy(&xb, &x, sizeof xb);
    const uint64_t sign = xb & 0x8000000000000000ULL;
    const uint64_t ab = xb ^ sign; /* |x| */
    const uint64_t CLAMP = 0x4034000000000000ULL; /* 20.0: tanh rounds to 1 above it */
    const uint64_t cb = ab > CLAMP ? CLAMP : ab; /* NaN too: the last select restores it */
    double ax;
    memcpy(&ax, &cb, sizeof ax);
    const double y = 2.0 * ax;
    const double SHIFT = 6755399441055744.0; /* 1.5 * 2^52 */
    double kf = (y * 1.4426950408889634 + SHIFT);
    uint64_t kb;
    memcpy(&kb, &kf, sizeof kb);
    kf = kf - SHIFT;
    const double LN2_HI = 6.93147180369123816490e-01, LN2_LO = 1.90821492927058770002e-10;
    const double r = (y - kf * LN2_HI) - kf * LN2_LO;
    double q = 1.0 / 6227020800.0;
    q = 1.0 / 479001600.0 + r * q;
    q = 1.0 / 39916800.0 + r * q;
    q = 1.0 / 3628800.0 + r * q;
    q = 1.0 / 362880.0 + r * q;
    q = 1.0 / 40320.0 + r * q;
    q = 1.0 / 5040.0 + r * q;
    q = 1.0 / 720.0 + r * q;
    q = 1.0 / 120.0 + r * q;
    q = 1.0 / 24.0 + r * q;
    q = 1.0 / 6.0 + r * q;
    q = 0.5 + r * q;
    const double p = r + (r * r) * q;
    const uint64_t sb = ((kb - 0x4338000000000000ULL) + 1023ULL) << 52; /* 2^k, k in [0, 58] */
    double scale;
    memcpy(&scale, &sb, sizeof scale);
    const double e = scale * p + (scale - 1.0);
    const double t = e / (e + 2.0);
    uint64_t tb;
    memcpy(&tb, &t, sizeof tb);
    /* NaN stays NaN, else the sign of x; as a mask, so that the arithmetic above is used on
     * both sides (a select would let GCC branch around it) */
    const uint64_t nan = (uint64_t)0 - (uint64_t)(ab > 0x7FF0000000000000ULL);
    tb = (xb & nan) | ((tb | sign) & ~nan);
    double out;
    memcpy(&out, &tb, sizeof out);
    return out;
}

static inline float tanh_f32(float x) {
    uint32_t xb;
    memcpy(&xb, &x, sizeof xb);
    const uint32_t sign = xb & 0x80000000u;
    const uint32_t ab = xb ^ sign;
    const uint32_t CLAMP = 0x41200000u; /* 10.0f */
    const uint32_t cb = ab > CLAMP ? CLAMP : ab;
    float ax;
    memcpy(&ax, &cb, sizeof ax);
    const float y = 2.0f * ax;
    const float SHIFT = 12582912.0f; /* 1.5 * 2^23 */
    float kf = (y * 1.44269504f + SHIFT);
    uint32_t kb;
    memcpy(&kb, &kf, sizeof kb);
    kf = kf - SHIFT;
    const float LN2_HI = 0.693145752f, LN2_LO = 1.42860677e-06f; /* LN2_HI: 16 bits */
    const float r = (y - kf * LN2_HI) - kf * LN2_LO;
    float q = 1.0f / 40320.0f;
    q = 1.0f / 5040.0f + r * q;
    q = 1.0f / 720.0f + r * q;
    q = 1.0f / 120.0f + r * q;
    q = 1.0f / 24.0f + r * q;
    q = 1.0f / 6.0f + r * q;
    q = 0.5f + r * q;
    const float p = r + (r * r) * q;
    const uint32_t sb = ((kb - 0x4B400000u) + 127u) << 23; /* 2^k, k in [0, 29] */
    float scale;
    memcpy(&scale, &sb, sizeof scale);
    const float e = scale * p + (scale - 1.0f);
    const float t = e / (e + 2.0f);
    uint32_t tb;
    memcpy(&tb, &t, sizeof tb);
    const uint32_t nan = 0u - (uint32_t)(ab > 0x7F800000u);
    tb = (xb & nan) | ((tb | sign) & ~nan);
    float out;
    memcpy(&out, &tb, sizeof out);
    return out;
}

/* Truncated BPTT's rule (echo_rnn/truncation.py): step t (1..T) starts a window, and
 * nothing is carried back from it into h_{t-1}, when k > 0, t > 1 and (t - 1) % k == 0. */
static inline int starts_window(long t, long k) { return k > 0 && t > 1 && (t - 1) % k == 0; }

/* b1^t by repeated squaring in double, t >= 0: the same bits everywhere (libm's pow need
 * not be correctly rounded, and differs between libraries). */
static double power_int(double base, int64_t t) {
    double result = 1.0;
    while (t > 0) {
        if (t & 1) result *= base;
        base *= base;
        t >>= 1;
    }
    return result;
}

/* The shapes of one call. */
typedef struct {
    long B, T, I, H;
    int bias;
    long truncate; /* 0: full BPTT */
} Dims;

static long param_count(long H, long I, int bias) { return H * H + H * I + H + (bias ? H : 0); }

/* Runs fn(ctx, r, workspace) for r = 0..R-1 on `threads` threads (the calling one among
 * them, at most MAX_THREADS), members dealt round-robin; each thread has its own workspace
 * of `work_bytes`. Members share nothing, so the split cannot change any bits. Every
 * workspace is allocated before any member runs, so that running out of memory (-1)
 * leaves the caller's tensors as they were; 0 otherwise. */
typedef void (*member_fn)(void *ctx, long r, void *work);

#define MAX_THREADS 64

typedef struct {
    member_fn fn;
    void *ctx;
    long R, first, stride;
    void *work;
} Job;

static void *run_job(void *arg) {
    const Job *job = (const Job *)arg;
    for (long r = job->first; r < job->R; r += job->stride) job->fn(job->ctx, r, job->work);
    return NULL;
}

static int for_members(member_fn fn, void *ctx, long R, size_t work_bytes, int threads) {
    if (R <= 0) return 0;
    if (threads > R) threads = (int)R;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if (threads < 1) threads = 1;
    Job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int i = 0; i < threads; i++) {
        jobs[i] = (Job){fn, ctx, R, i, threads, malloc(work_bytes ? work_bytes : 1)};
        if (!jobs[i].work) {
            for (int j = 0; j < i; j++) free(jobs[j].work);
            return -1;
        }
    }
    for (int i = 1; i < threads; i++)
        started[i] = pthread_create(&tids[i], NULL, run_job, &jobs[i]) == 0;
    run_job(&jobs[0]);
    for (int i = 1; i < threads; i++) {
        if (started[i])
            pthread_join(tids[i], NULL);
        else /* a thread that could not start: its members run here, after ours */
            run_job(&jobs[i]);
    }
    for (int i = 0; i < threads; i++) free(jobs[i].work);
    return 0;
}

/* The kernel body, once per real type. */
#define ECHO_KERNEL_BODY
#define REAL float
#define SFX(name) name##_f32
#define TANH tanh_f32
#define SQRT sqrtf
#include "_compiled.c"
#undef REAL
#undef SFX
#undef TANH
#undef SQRT
#define REAL double
#define SFX(name) name##_f64
#define TANH tanh_f64
#define SQRT sqrt
#include "_compiled.c"
#undef REAL
#undef SFX
#undef TANH
#undef SQRT
#undef ECHO_KERNEL_BODY

/* ------------------------------------------------------------------------------------ */
/* The Python face: pointers in, nothing out but numbers. echo_rnn/kernels/compiled.py    */
/* checks every shape, dtype and contiguity before calling.                               */
/* ------------------------------------------------------------------------------------ */

#define PTR(v) ((void *)(uintptr_t)(v))

/* Every echo step in [0, T), checked before anything is written (the caller's tensors stay
 * as they were); else a ValueError naming the first bad one. Here rather than in Python:
 * a tensor comparison there costs more than a small member's whole step. */
static int check_echo(const int64_t *echo, long R, long T) {
    for (long r = 0; r < R; r++)
        if (echo[r] < 0 || echo[r] >= T) {
            PyErr_Format(PyExc_ValueError, "echo_step must be in [0, T) = [0, %ld), got %lld "
                         "for member %ld", T, (long long)echo[r], r);
            return -1;
        }
    return 0;
}

static PyObject *py_forward_backward(PyObject *self, PyObject *args) {
    int dbl, threads;
    long R, B, T, I, H, truncate;
    unsigned long long x, y, U, V, w, b, h0, yhat, loss, dU, dV, dw, db, dh0, dh;
    if (!PyArg_ParseTuple(args, "illlllKKKKKKKlKKKKKKKKi", &dbl, &R, &B, &T, &I, &H, &x, &y, &U,
                          &V, &w, &b, &h0, &truncate, &yhat, &loss, &dU, &dV, &dw, &db, &dh0,
                          &dh, &threads))
        return NULL;
    Dims d = {B, T, I, H, b != 0, truncate};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    if (dbl)
        rc = pass_many_f64(&d, R, PTR(x), PTR(y), PTR(U), PTR(V), PTR(w), PTR(b), PTR(h0),
                           PTR(yhat), PTR(loss), PTR(dU), PTR(dV), PTR(dw), PTR(db), PTR(dh0),
                           PTR(dh), threads);
    else
        rc = pass_many_f32(&d, R, PTR(x), PTR(y), PTR(U), PTR(V), PTR(w), PTR(b), PTR(h0),
                           PTR(yhat), PTR(loss), PTR(dU), PTR(dV), PTR(dw), PTR(db), PTR(dh0),
                           PTR(dh), threads);
    Py_END_ALLOW_THREADS
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_train_step(PyObject *self, PyObject *args) {
    int dbl, bias, sgd, threads;
    long R, H, I, B, T, truncate;
    double clip, beta1, beta2, eps;
    unsigned long long params, m, v, steps, lr, seeds, counters, echo, loss, norm, finite;
    if (!PyArg_ParseTuple(args, "illlilllddddiKKKKKKKKKKKi", &dbl, &R, &H, &I, &bias, &B, &T,
                          &truncate, &clip, &beta1, &beta2, &eps, &sgd, &params, &m, &v, &steps,
                          &lr, &seeds, &counters, &echo, &loss, &norm, &finite, &threads))
        return NULL;
    if (check_echo(PTR(echo), R, T)) return NULL;
    Dims d = {B, T, I, H, bias, truncate};
    TrainArgs a = {beta1, beta2, eps, clip, sgd, PTR(steps), PTR(lr), PTR(seeds), PTR(counters),
                   PTR(echo), PTR(loss), PTR(norm), PTR(finite)};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    if (dbl)
        rc = train_many_f64(&d, R, &a, PTR(params), PTR(m), PTR(v), threads);
    else
        rc = train_many_f32(&d, R, &a, PTR(params), PTR(m), PTR(v), threads);
    Py_END_ALLOW_THREADS
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_evaluate(PyObject *self, PyObject *args) {
    int dbl, bias, shared, threads;
    long R, N, T, I, H;
    unsigned long long params, x, y, echo, loss, acc;
    if (!PyArg_ParseTuple(args, "illllliKiKKKKKi", &dbl, &R, &N, &T, &I, &H, &bias, &params,
                          &shared, &x, &y, &echo, &loss, &acc, &threads))
        return NULL;
    if (check_echo(PTR(echo), R, T)) return NULL;
    Dims d = {N, T, I, H, bias, 0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    if (dbl)
        rc = evaluate_many_f64(&d, R, PTR(params), shared, PTR(x), PTR(y), PTR(echo), PTR(loss),
                               PTR(acc), threads);
    else
        rc = evaluate_many_f32(&d, R, PTR(params), shared, PTR(x), PTR(y), PTR(echo), PTR(loss),
                               PTR(acc), threads);
    Py_END_ALLOW_THREADS
    if (rc) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_draw_bits(PyObject *self, PyObject *args) {
    int dbl;
    long long seed, stream, counter;
    long B, T, I;
    unsigned long long out;
    if (!PyArg_ParseTuple(args, "iLLLlllK", &dbl, &seed, &stream, &counter, &B, &T, &I, &out))
        return NULL;
    if (dbl)
        draw_bits_f64((uint64_t)seed, (uint64_t)stream, (uint64_t)counter, B, T, I, PTR(out));
    else
        draw_bits_f32((uint64_t)seed, (uint64_t)stream, (uint64_t)counter, B, T, I, PTR(out));
    Py_RETURN_NONE;
}

/* Initial parameters, in float64, flat in param_count's order: U, V, w, b. U is either
 * N(0, std^2) or gain times an orthogonal matrix: Q of A = Q R by modified Gram-Schmidt on
 * A's columns (R's diagonal comes out positive, which is what multiplying any QR's Q by the
 * signs of R's diagonal gives), A Gaussian. Parameter n (flat index) uses key
 * (seed, STREAM_INIT = 0, n); the orthogonal U's A[i][j] uses n = i H + j, as U would. */
static PyObject *py_init_params(PyObject *self, PyObject *args) {
    long long seed;
    long H, I;
    int bias;
    double std, input_std, gain;
    unsigned long long out;
    if (!PyArg_ParseTuple(args, "LllidddK", &seed, &H, &I, &bias, &std, &input_std, &gain, &out))
        return NULL;
    double *p = PTR(out);
    long P = param_count(H, I, bias);
    for (long n = 0; n < P; n++) {
        double s = (n >= H * H && n < H * H + H * I) ? input_std : std;
        p[n] = s * normal_draw(rng_key((uint64_t)seed, 0, (uint64_t)n));
    }
    if (gain > 0) {
        double *a = malloc(sizeof(double) * H * H);
        if (!a) return PyErr_NoMemory();
        for (long n = 0; n < H * H; n++) a[n] = normal_draw(rng_key((uint64_t)seed, 0, (uint64_t)n));
        for (long j = 0; j < H; j++) { /* column j of A becomes column j of Q */
            for (long c = 0; c < j; c++) {
                double dot = 0.0;
                for (long i = 0; i < H; i++) dot += a[i * H + c] * a[i * H + j];
                for (long i = 0; i < H; i++) a[i * H + j] -= dot * a[i * H + c];
            }
            double nrm = 0.0;
            for (long i = 0; i < H; i++) nrm += a[i * H + j] * a[i * H + j];
            nrm = sqrt(nrm);
            for (long i = 0; i < H; i++) a[i * H + j] /= nrm;
        }
        for (long n = 0; n < H * H; n++) p[n] = gain * a[n];
        free(a);
    }
    Py_RETURN_NONE;
}

static PyObject *py_rng_word(PyObject *self, PyObject *args) {
    long long seed, stream, counter, index;
    if (!PyArg_ParseTuple(args, "LLLL", &seed, &stream, &counter, &index)) return NULL;
    return PyLong_FromUnsignedLongLong(
        rng_word(rng_key((uint64_t)seed, (uint64_t)stream, (uint64_t)counter), (uint64_t)index));
}

static PyObject *py_normal(PyObject *self, PyObject *args) {
    long long seed, stream, counter;
    if (!PyArg_ParseTuple(args, "LLL", &seed, &stream, &counter)) return NULL;
    return PyFloat_FromDouble(
        normal_draw(rng_key((uint64_t)seed, (uint64_t)stream, (uint64_t)counter)));
}

static PyObject *py_tanh(PyObject *self, PyObject *args) {
    int dbl;
    long n;
    unsigned long long in, out;
    if (!PyArg_ParseTuple(args, "ilKK", &dbl, &n, &in, &out)) return NULL;
    Py_BEGIN_ALLOW_THREADS
    if (dbl)
        tanh_many_f64(n, PTR(in), PTR(out));
    else
        tanh_many_f32(n, PTR(in), PTR(out));
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"forward_backward", py_forward_backward, METH_VARARGS, "R members' pass (pointers)."},
    {"train_step", py_train_step, METH_VARARGS, "R members' training step (pointers)."},
    {"evaluate", py_evaluate, METH_VARARGS, "R members' held-out loss and accuracy (pointers)."},
    {"draw_bits", py_draw_bits, METH_VARARGS, "Bernoulli(1/2) bits (pointer)."},
    {"init_params", py_init_params, METH_VARARGS, "Initial parameters in float64 (pointer)."},
    {"rng_word", py_rng_word, METH_VARARGS, "rng_word(seed, stream, counter, index) -> int."},
    {"normal", py_normal, METH_VARARGS, "normal(seed, stream, counter) -> float."},
    {"tanh", py_tanh, METH_VARARGS, "The kernel's tanh over n values (pointers)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_compiled",
                                    "The echo RNN's compiled CPU kernel; use "
                                    "echo_rnn.kernels.compiled.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__compiled(void) { return PyModule_Create(&module); }

#else /* ECHO_KERNEL_BODY: everything below is compiled once per REAL */

#ifndef ECHO_TRAIN_ARGS
#define ECHO_TRAIN_ARGS
/* train_step's per-member arrays and settings (the type-independent part). */
typedef struct {
    double beta1, beta2, eps, clip; /* clip < 0: none */
    int sgd;
    int64_t *steps;
    const double *lr;
    const int64_t *seeds;
    int64_t *counters;
    const int64_t *echo;
    double *loss, *norm;
    uint8_t *finite;
} TrainArgs;
#endif

/* The workspace of one member's pass, in REALs, carved from one block. */
typedef struct {
    REAL *hs;   /* (T + 1, H, B): h_0 .. h_T */
    REAL *xs;   /* (T, I, B) */
    REAL *g;    /* (T, B): dJ/dyhat_t */
    REAL *yhat; /* (T, B) */
    REAL *dz;   /* (T, H, B): dJ/dz_t */
} SFX(Work);

static size_t SFX(work_reals)(const Dims *d) {
    long B = d->B, T = d->T, I = d->I, H = d->H;
    return (size_t)((T + 1) * H * B + T * I * B + 2 * T * B + T * H * B);
}

static SFX(Work) SFX(carve)(const Dims *d, REAL *p) {
    long B = d->B, T = d->T, I = d->I, H = d->H;
    SFX(Work) w;
    w.hs = p;
    p += (T + 1) * H * B;
    w.xs = p;
    p += T * I * B;
    w.g = p;
    p += T * B;
    w.yhat = p;
    p += T * B;
    w.dz = p;
    return w;
}

static void SFX(tanh_many)(long n, const REAL *restrict in, REAL *restrict out) {
    for (long i = 0; i < n; i++) out[i] = TANH(in[i]);
}

/* The loops below walk the batch in chunks of LANES sequences, each chunk's running sums in
 * a local array that the compiler keeps in vector registers (a sum kept in memory costs a
 * load and a store per term). Chunking changes nothing per lane, so not the bits; the last
 * chunk may be shorter (`nb`).
 *
 * Why several units (or weight gradients) at once: a running sum is a chain of dependent
 * additions, each waiting for the last (about 4 cycles), so one unit's sum over a chunk keeps
 * only LANES / width additions in flight. UNITS sums side by side share their loads and keep
 * UNITS times as many in flight; each is still its own sum in its own order, so the bits do
 * not change either. UNITS is a constant where these functions are inlined, so the compiler
 * unrolls over it. Measured at the frontier shape (R = 32, H = 6, 1 thread, CPU time per
 * run-step): 0.044 ms with one unit and LANES 32, 0.030-0.035 ms with UNITS 4 and LANES 64
 * on AVX-512; on AVX2 about the same either way (0.042-0.047 ms). */
#ifndef LANES
#define LANES 64
#endif
#ifndef UNITS
#define UNITS 4
#endif
#define ALWAYS_INLINE inline __attribute__((always_inline))

/* For units i = 0..nu-1 of a block (their rows of U and V at Ui + i H and Vi + i I):
 *   z_t[i] = b[i] + sum_k V[i,k] x_t[k] + sum_j U[i,j] h_{t-1}[j]   (that order, per lane),
 *   h_t[i] = tanh(z_t[i]),
 * for lanes [0, nb) of pointers already offset to the chunk; hi is unit 0's row of h_t. */
static ALWAYS_INLINE void SFX(forward_lanes)(const int nu, const long nb, const long B,
                                             const long I, const long H,
                                             const REAL *restrict Ui, const REAL *restrict Vi,
                                             const REAL *restrict bi, const REAL *restrict hp,
                                             const REAL *restrict xt, REAL *restrict hi) {
    REAL acc[UNITS][LANES];
    for (int u = 0; u < nu; u++) {
        const REAL b = bi ? bi[u] : (REAL)0;
        for (long l = 0; l < nb; l++) acc[u][l] = b;
    }
    for (long k = 0; k < I; k++)
        for (long l = 0; l < nb; l++) {
            const REAL xv = xt[k * B + l];
            for (int u = 0; u < nu; u++) acc[u][l] = acc[u][l] + Vi[u * I + k] * xv;
        }
    for (long j = 0; j < H; j++)
        for (long l = 0; l < nb; l++) {
            const REAL hv = hp[j * B + l];
            for (int u = 0; u < nu; u++) acc[u][l] = acc[u][l] + Ui[u * H + j] * hv;
        }
    for (int u = 0; u < nu; u++)
        for (long l = 0; l < nb; l++) hi[u * B + l] = TANH(acc[u][l]);
}

/* Units [i0, i0 + nu) of h_t, every chunk of the batch. */
static ALWAYS_INLINE void SFX(forward_units)(const int nu, const long i0, const long B,
                                             const long I, const long H, const REAL *U,
                                             const REAL *V, const REAL *bias, const REAL *hp,
                                             const REAL *xt, REAL *hc) {
    const REAL *bi = bias ? bias + i0 : NULL;
    long b0 = 0;
    for (; b0 + LANES <= B; b0 += LANES)
        SFX(forward_lanes)(nu, LANES, B, I, H, U + i0 * H, V + i0 * I, bi, hp + b0, xt + b0,
                           hc + i0 * B + b0);
    if (b0 < B)
        SFX(forward_lanes)(nu, B - b0, B, I, H, U + i0 * H, V + i0 * I, bi, hp + b0, xt + b0,
                           hc + i0 * B + b0);
}

/* yhat_t = sum_i w[i] h_t[i] (i = 0..H-1), lanes [0, nb). */
static ALWAYS_INLINE void SFX(readout_lanes)(const long nb, const long B, const long H,
                                             const REAL *restrict wv, const REAL *restrict hc,
                                             REAL *restrict yt) {
    REAL acc[LANES];
    for (long l = 0; l < nb; l++) acc[l] = 0;
    for (long i = 0; i < H; i++)
        for (long l = 0; l < nb; l++) acc[l] = acc[l] + wv[i] * hc[i * B + l];
    for (long l = 0; l < nb; l++) yt[l] = acc[l];
}

/* Forward, one member (reference.py's step_forward, t = 1..T), on hs[0] = h_0 already set:
 *   z_t[i] = b[i] + sum_k V[i,k] x_t[k] + sum_j U[i,j] h_{t-1}[j]   (that order, per lane)
 *   h_t = tanh(z_t);  yhat_t = sum_i w[i] h_t[i]  (i = 0..H-1)
 * hs (T + 1, H, B), xs (T, I, B), yhat (T, B). */
HOT static void SFX(forward_member)(const Dims *d, const REAL *restrict U,
                                    const REAL *restrict V, const REAL *restrict wv,
                                    const REAL *restrict bias, REAL *restrict hs,
                                    const REAL *restrict xs, REAL *restrict yhat) {
    const long B = d->B, T = d->T, I = d->I, H = d->H;
    for (long t = 1; t <= T; t++) {
        const REAL *restrict hp = hs + (t - 1) * H * B;
        REAL *restrict hc = hs + t * H * B;
        const REAL *restrict xt = xs + (t - 1) * I * B;
        long i = 0;
        for (; i + UNITS <= H; i += UNITS)
            SFX(forward_units)(UNITS, i, B, I, H, U, V, bias, hp, xt, hc);
        for (; i < H; i++) SFX(forward_units)(1, i, B, I, H, U, V, bias, hp, xt, hc);
        REAL *restrict yt = yhat + (t - 1) * B;
        long b0 = 0;
        for (; b0 + LANES <= B; b0 += LANES) SFX(readout_lanes)(LANES, B, H, wv, hc + b0, yt + b0);
        if (b0 < B) SFX(readout_lanes)(B - b0, B, H, wv, hc + b0, yt + b0);
    }
}

/* One step back, lanes [0, nb), for units i = 0..nu-1 of a block (column i of U at Ucol + i,
 * w[i] at wi[i], row i of each (H, B) buffer at i B):
 *   carried = sum_j U[j,i] dz_{t+1}[j]     (j = 0..H-1; 0 when cut or at t = T: dz_next NULL)
 *   dh_t[i] = w[i] g_t + carried           (the two sources of reference.py, in that order)
 *   dz_t[i] = dh_t[i] * (1 - h_t[i] h_t[i])
 * Also serves dh_0 = U^T dz_1 (with no w, g or h: `hc` NULL, the result is dh). */
static ALWAYS_INLINE void SFX(backward_lanes)(const int nu, const long nb, const long B,
                                              const long H, const REAL *restrict Ucol,
                                              const REAL *restrict wi, const REAL *restrict g,
                                              const REAL *restrict dz_next,
                                              const REAL *restrict hc, REAL *restrict dh_out,
                                              REAL *restrict dz) {
    REAL acc[UNITS][LANES];
    for (int u = 0; u < nu; u++)
        for (long l = 0; l < nb; l++) acc[u][l] = 0;
    if (dz_next)
        for (long j = 0; j < H; j++)
            for (long l = 0; l < nb; l++) {
                const REAL dv = dz_next[j * B + l];
                for (int u = 0; u < nu; u++) acc[u][l] = acc[u][l] + Ucol[j * H + u] * dv;
            }
    if (!hc) {
        for (int u = 0; u < nu; u++)
            for (long l = 0; l < nb; l++) dz[u * B + l] = acc[u][l];
        return;
    }
    for (int u = 0; u < nu; u++)
        for (long l = 0; l < nb; l++) acc[u][l] = wi[u] * g[l] + acc[u][l];
    if (dh_out)
        for (int u = 0; u < nu; u++)
            for (long l = 0; l < nb; l++) dh_out[u * B + l] = acc[u][l];
    for (int u = 0; u < nu; u++)
        for (long l = 0; l < nb; l++)
            dz[u * B + l] = acc[u][l] * ((REAL)1 - hc[u * B + l] * hc[u * B + l]);
}

/* Units [i0, i0 + nu) of step t back (or of dh_0), every chunk of the batch; the pointers
 * are unit 0's, as backward_member passes them. */
static ALWAYS_INLINE void SFX(backward_units)(const int nu, const long i0, const long B,
                                              const long H, const REAL *U, const REAL *wv,
                                              const REAL *g, const REAL *dz_next,
                                              const REAL *hc, REAL *dh_out, REAL *dz) {
    const long o = i0 * B;
    long b0 = 0;
    for (; b0 + LANES <= B; b0 += LANES)
        SFX(backward_lanes)(nu, LANES, B, H, U + i0, wv ? wv + i0 : NULL, g ? g + b0 : NULL,
                            dz_next ? dz_next + b0 : NULL, hc ? hc + o + b0 : NULL,
                            dh_out ? dh_out + o + b0 : NULL, dz + o + b0);
    if (b0 < B)
        SFX(backward_lanes)(nu, B - b0, B, H, U + i0, wv ? wv + i0 : NULL, g ? g + b0 : NULL,
                            dz_next ? dz_next + b0 : NULL, hc ? hc + o + b0 : NULL,
                            dh_out ? dh_out + o + b0 : NULL, dz + o + b0);
}

/* For n = 0..nu-1: total[n] + the sum over lanes l (in order) of the per-lane sums over
 * t = T..1 of a_t[l] * c_t[n][l] (c NULL: of a_t[l] alone), with a_t = a + (t - 1) a_step and
 * c_t[n] = c + n c_next + (t - 1) c_step. Each lane's sum runs over time in registers, then
 * the lanes are added in order. */
static ALWAYS_INLINE void SFX(time_sums)(const int nu, const long nb, const long T,
                                         const REAL *restrict a, const long a_step,
                                         const REAL *restrict c, const long c_next,
                                         const long c_step, REAL *restrict total) {
    REAL acc[UNITS][LANES];
    for (int n = 0; n < nu; n++)
        for (long l = 0; l < nb; l++) acc[n][l] = 0;
    for (long t = T; t >= 1; t--) {
        const REAL *restrict at = a + (t - 1) * a_step;
        if (c) {
            const REAL *restrict ct = c + (t - 1) * c_step;
            for (long l = 0; l < nb; l++) {
                const REAL av = at[l];
                for (int n = 0; n < nu; n++) acc[n][l] = acc[n][l] + av * ct[n * c_next + l];
            }
        } else {
            for (long l = 0; l < nb; l++)
                for (int n = 0; n < nu; n++) acc[n][l] = acc[n][l] + at[l];
        }
    }
    for (int n = 0; n < nu; n++)
        for (long l = 0; l < nb; l++) total[n] = total[n] + acc[n][l];
}

/* out[n] for n = 0..nu-1: sum over b (0..B-1, in order) of the per-lane sums over t = T..1 of
 * a_t[b] * c_t[n][b] (see time_sums): nu weight gradients that share a. */
static ALWAYS_INLINE void SFX(grad_sums)(const int nu, const long B, const long T, const REAL *a,
                                         const long a_step, const REAL *c, const long c_next,
                                         const long c_step, REAL *out) {
    REAL total[UNITS];
    for (int n = 0; n < nu; n++) total[n] = 0;
    long b0 = 0;
    for (; b0 + LANES <= B; b0 += LANES)
        SFX(time_sums)(nu, LANES, T, a + b0, a_step, c ? c + b0 : NULL, c_next, c_step, total);
    if (b0 < B)
        SFX(time_sums)(nu, B - b0, T, a + b0, a_step, c ? c + b0 : NULL, c_next, c_step, total);
    for (int n = 0; n < nu; n++) out[n] = total[n];
}

/* A row of weight gradients, out[n] for n = 0..N-1, c_t[n] = c + n c_next + (t - 1) c_step,
 * UNITS at a time. */
static ALWAYS_INLINE void SFX(grad_row)(const long N, const long B, const long T, const REAL *a,
                                        const long a_step, const REAL *c, const long c_next,
                                        const long c_step, REAL *out) {
    long n = 0;
    for (; n + UNITS <= N; n += UNITS)
        SFX(grad_sums)(UNITS, B, T, a, a_step, c + n * c_next, c_next, c_step, out + n);
    for (; n < N; n++) SFX(grad_sums)(1, B, T, a, a_step, c + n * c_next, c_next, c_step, out + n);
}

/* Backward, one member (reference.py's backward), given g = dJ/dyhat (T, B) and the forward's
 * hs. First the recurrence, t = T..1 (backward_lanes), keeping dJ/dz_t (T, H, B); then each
 * weight gradient as one sum over b of per-lane sums over t = T..1 (grad_sums):
 *   dU[i,j] = sum dz_t[i] h_{t-1}[j];  dV[i,k] = sum dz_t[i] x_t[k];  db[i] = sum dz_t[i];
 *   dw[i] = sum h_t[i] g_t.
 * dh_all (T, H, B) receives dJ/dh_t when not NULL; dh0 (H, B) receives U^T dz_1 when not
 * NULL (h_0 keeps its gradient under truncation). gb NULL: no bias. */
HOT static void SFX(backward_member)(const Dims *d, const REAL *restrict U,
                                     const REAL *restrict wv, const SFX(Work) *restrict wk,
                                     REAL *restrict dh_all, REAL *restrict dh0,
                                     REAL *restrict gU, REAL *restrict gV, REAL *restrict gw,
                                     REAL *restrict gb) {
    const long B = d->B, T = d->T, I = d->I, H = d->H;
    const REAL *restrict hs = wk->hs;
    REAL *restrict dz = wk->dz;
    for (long t = T; t >= 1; t--) {
        /* nothing is carried from beyond T, nor back from a step t + 1 that starts a window */
        const REAL *dz_next = (t < T && !starts_window(t + 1, d->truncate)) ? dz + t * H * B
                                                                           : NULL;
        const REAL *g = wk->g + (t - 1) * B;
        const REAL *hc = hs + t * H * B;
        REAL *dh_out = dh_all ? dh_all + (t - 1) * H * B : NULL; /* (t, 0) of (T, H, B) */
        REAL *dzt = dz + (t - 1) * H * B;
        long i = 0;
        for (; i + UNITS <= H; i += UNITS)
            SFX(backward_units)(UNITS, i, B, H, U, wv, g, dz_next, hc, dh_out, dzt);
        for (; i < H; i++) SFX(backward_units)(1, i, B, H, U, wv, g, dz_next, hc, dh_out, dzt);
    }
    if (dh0) {
        long i = 0;
        for (; i + UNITS <= H; i += UNITS)
            SFX(backward_units)(UNITS, i, B, H, U, NULL, NULL, dz, NULL, NULL, dh0);
        for (; i < H; i++) SFX(backward_units)(1, i, B, H, U, NULL, NULL, dz, NULL, NULL, dh0);
    }
    const long HB = H * B;
    for (long i = 0; i < H; i++) {
        SFX(grad_row)(H, B, T, dz + i * B, HB, hs, B, HB, gU + i * H);
        SFX(grad_row)(I, B, T, dz + i * B, HB, wk->xs, B, I * B, gV + i * I);
        if (gb) SFX(grad_sums)(1, B, T, dz + i * B, HB, NULL, 0, 0, gb + i);
        SFX(grad_sums)(1, B, T, hs + HB + i * B, HB, wk->g, 0, B, gw + i);
    }
}

/* The loss and its gradient from yhat and y, both (T, B) in the workspace's layout:
 *   J = sum_{b,t} (yhat - y)^2 / (2 T B), squares summed per lane over t = 1..T in double,
 *       then over b = 0..B-1;
 *   g = (2 (yhat - y)) * (1 / (2 T B))    as population_grads forms dJ/dyhat. */
static double SFX(loss_and_grad)(const Dims *d, const REAL *restrict yhat, const REAL *restrict y,
                                 REAL *restrict g, double *restrict lanes) {
    const long B = d->B, T = d->T;
    const REAL scale = (REAL)1 / (REAL)(2 * T * B);
    for (long b = 0; b < B; b++) lanes[b] = 0.0;
    for (long t = 0; t < T; t++) {
        for (long b = 0; b < B; b++) {
            REAL diff = yhat[t * B + b] - y[t * B + b];
            g[t * B + b] = ((REAL)2 * diff) * scale;
            double dd = (double)yhat[t * B + b] - (double)y[t * B + b];
            lanes[b] = lanes[b] + dd * dd;
        }
    }
    double s = 0.0;
    for (long b = 0; b < B; b++) s = s + lanes[b];
    return s / (double)(2 * T * B);
}

/* ---- forward_backward over R members ---- */

typedef struct {
    const Dims *d;
    const REAL *x, *y, *U, *V, *w, *b, *h0;
    REAL *yhat, *dU, *dV, *dw, *db, *dh0, *dh;
    double *loss;
} SFX(PassCtx);

static size_t SFX(pass_work_bytes)(const Dims *d) {
    /* the workspace, y (T, B), the loss lanes (B doubles), dJ/dh_t (T, H, B), dJ/dh_0 (H, B) */
    const size_t B = d->B, T = d->T, H = d->H;
    return sizeof(REAL) * (SFX(work_reals)(d) + T * B) + sizeof(double) * B +
           sizeof(REAL) * (T * H * B + H * B);
}

static void SFX(pass_member)(void *vctx, long r, void *work) {
    const SFX(PassCtx) *c = vctx;
    const Dims *d = c->d;
    const long B = d->B, T = d->T, I = d->I, H = d->H;
    /* the block: loss lanes (B doubles, first for their alignment), the workspace, y (T, B),
     * dJ/dh_t (T, H, B) and dJ/dh_0 (H, B) in the workspace's layout, transposed below */
    double *lanes = work;
    SFX(Work) wk = SFX(carve)(d, (REAL *)(lanes + B));
    REAL *ys = (REAL *)(lanes + B) + SFX(work_reals)(d);
    const REAL *x = c->x + r * B * T * I; /* (B, T, I) */
    for (long t = 0; t < T; t++)          /* transpose to (T, I, B) */
        for (long k = 0; k < I; k++)
            for (long b = 0; b < B; b++) wk.xs[(t * I + k) * B + b] = x[(b * T + t) * I + k];
    if (c->h0) {
        const REAL *h0 = c->h0 + r * B * H; /* (B, H) -> (H, B) */
        for (long i = 0; i < H; i++)
            for (long b = 0; b < B; b++) wk.hs[i * B + b] = h0[b * H + i];
    } else {
        for (long n = 0; n < H * B; n++) wk.hs[n] = 0;
    }
    const REAL *U = c->U + r * H * H, *w = c->w + r * H;
    const REAL *bias = c->b ? c->b + r * H : NULL;
    SFX(forward_member)(d, U, c->V + r * H * I, w, bias, wk.hs, wk.xs, wk.yhat);
    REAL *yh = c->yhat + r * B * T; /* (B, T) */
    for (long b = 0; b < B; b++)
        for (long t = 0; t < T; t++) yh[b * T + t] = wk.yhat[t * B + b];
    if (!c->y) return; /* forward only */
    const REAL *y = c->y + r * B * T;
    for (long t = 0; t < T; t++)
        for (long b = 0; b < B; b++) ys[t * B + b] = y[b * T + t];
    c->loss[r] = SFX(loss_and_grad)(d, wk.yhat, ys, wk.g, lanes);
    REAL *dh_all = c->dh ? ys + T * B : NULL;
    REAL *dh0 = c->dh0 ? ys + T * B + T * H * B : NULL;
    SFX(backward_member)(d, U, w, &wk, dh_all, dh0, c->dU + r * H * H, c->dV + r * H * I,
                         c->dw + r * H, c->db ? c->db + r * H : NULL);
    if (dh_all) {
        REAL *out = c->dh + r * B * T * H; /* (B, T, H) */
        for (long b = 0; b < B; b++)
            for (long t = 0; t < T; t++)
                for (long i = 0; i < H; i++) out[(b * T + t) * H + i] = dh_all[(t * H + i) * B + b];
    }
    if (dh0) {
        REAL *out = c->dh0 + r * B * H;
        for (long b = 0; b < B; b++)
            for (long i = 0; i < H; i++) out[b * H + i] = dh0[i * B + b];
    }
}

static int SFX(pass_many)(const Dims *d, long R, const REAL *x, const REAL *y, const REAL *U,
                          const REAL *V, const REAL *w, const REAL *b, const REAL *h0, REAL *yhat,
                          double *loss, REAL *dU, REAL *dV, REAL *dw, REAL *db, REAL *dh0,
                          REAL *dh, int threads) {
    SFX(PassCtx) c = {d, x, y, U, V, w, b, h0, yhat, dU, dV, dw, db, dh0, dh, loss};
    return for_members(SFX(pass_member), &c, R, SFX(pass_work_bytes)(d), threads);
}

/* ---- data ---- */

/* Bits (B, T, I), as 0.0 / 1.0, Bernoulli(1/2) exactly: element n = (b T + t) I + i is bit
 * 63 - n % 64 of word n / 64 of (seed, stream, counter), the words' bits read from the top.
 * (One hash per 64 bits: a hash per bit was a tenth of a training step.) */
static void SFX(draw_bits)(uint64_t seed, uint64_t stream, uint64_t counter, long B, long T,
                           long I, REAL *out) {
    const uint64_t key = rng_key(seed, stream, counter);
    const long n_all = B * T * I;
    for (long n0 = 0; n0 < n_all; n0 += 64) {
        const uint64_t word = rng_word(key, (uint64_t)(n0 >> 6));
        const long m = n_all - n0 < 64 ? n_all - n0 : 64;
        for (long l = 0; l < m; l++) out[n0 + l] = (REAL)((word >> (63 - l)) & 1);
    }
}

/* ---- train_step over R members ---- */

typedef struct {
    const Dims *d;
    const TrainArgs *a;
    REAL *params, *m, *v;
} SFX(TrainCtx);

static size_t SFX(train_work_bytes)(const Dims *d) {
    /* the pass's workspace, y (T, B), x drawn (B, T, I), the gradients (P), loss lanes */
    const long P = param_count(d->H, d->I, d->bias);
    return sizeof(REAL) * (SFX(work_reals)(d) + (size_t)(d->T * d->B + d->B * d->T * d->I + P)) +
           sizeof(double) * d->B;
}

static void SFX(train_member)(void *vctx, long r, void *work) {
    const SFX(TrainCtx) *c = vctx;
    const Dims *d = c->d;
    const TrainArgs *a = c->a;
    const long B = d->B, T = d->T, I = d->I, H = d->H;
    const long P = param_count(H, I, d->bias);
    /* the block: loss lanes (B doubles, first for their alignment), the workspace, y (T, B),
     * x as drawn (B, T, I), the gradients (P) */
    double *lanes = work;
    SFX(Work) wk = SFX(carve)(d, (REAL *)(lanes + B));
    REAL *ys = (REAL *)(lanes + B) + SFX(work_reals)(d);
    REAL *xb = ys + T * B;
    REAL *grad = xb + B * T * I;
    REAL *p = c->params + r * P, *m = c->m + r * P, *v = c->v + r * P;
    const REAL *U = p, *V = p + H * H, *w = V + H * I, *bias = d->bias ? w + H : NULL;

    /* the batch: x (B, T, I) from STREAM_TRAIN = 1 at this member's counter; y_t = channel 0
     * of x_{t-k} for t >= k, 0 before (echo_rnn.data.echo_targets) */
    SFX(draw_bits)((uint64_t)a->seeds[r], 1, (uint64_t)a->counters[r], B, T, I, xb);
    const long k = (long)a->echo[r];
    for (long t = 0; t < T; t++)
        for (long kk = 0; kk < I; kk++)
            for (long b = 0; b < B; b++) wk.xs[(t * I + kk) * B + b] = xb[(b * T + t) * I + kk];
    for (long t = 0; t < T; t++)
        for (long b = 0; b < B; b++) ys[t * B + b] = t >= k ? xb[(b * T + (t - k)) * I] : (REAL)0;
    for (long n = 0; n < H * B; n++) wk.hs[n] = 0;

    SFX(forward_member)(d, U, V, w, bias, wk.hs, wk.xs, wk.yhat);
    const double loss = SFX(loss_and_grad)(d, wk.yhat, ys, wk.g, lanes);
    SFX(backward_member)(d, U, w, &wk, NULL, NULL, grad, grad + H * H, grad + H * H + H * I,
                         d->bias ? grad + H * H + H * I + H : NULL);

    /* the norm of all gradients together, squares summed in double in flat order
     * (U, V, w, b); clipping as torch.nn.utils.clip_grad_norm_: coef = clip / (norm + 1e-6),
     * applied when below 1 */
    double sq = 0.0;
    for (long n = 0; n < P; n++) sq = sq + (double)grad[n] * (double)grad[n];
    const double norm = sqrt(sq);
    if (a->clip >= 0) {
        const double coef = a->clip / (norm + 1e-6);
        if (coef < 1.0) {
            const REAL cf = (REAL)coef;
            for (long n = 0; n < P; n++) grad[n] = grad[n] * cf;
        }
    }

    const double lr = a->lr[r];
    if (a->sgd) {
        const REAL lrr = (REAL)lr;
        for (long n = 0; n < P; n++) p[n] = p[n] - lrr * grad[n];
    } else {
        /* Adam (torch.optim.Adam's defaults, no weight decay), elementwise in REAL with the
         * step's scalars formed in double:
         *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g
         *   p = p - (lr / (1 - b1^t)) * (m / (sqrt(v) / sqrt(1 - b2^t) + eps)) */
        const int64_t step = ++a->steps[r];
        const double bc1 = 1.0 - power_int(a->beta1, step);
        const double bc2 = 1.0 - power_int(a->beta2, step);
        const REAL b1 = (REAL)a->beta1, c1 = (REAL)(1.0 - a->beta1);
        const REAL b2 = (REAL)a->beta2, c2 = (REAL)(1.0 - a->beta2);
        const REAL step_size = (REAL)(lr / bc1), bc2_sqrt = (REAL)sqrt(bc2), eps = (REAL)a->eps;
        for (long n = 0; n < P; n++) {
            const REAL gn = grad[n];
            m[n] = b1 * m[n] + c1 * gn;
            v[n] = b2 * v[n] + c2 * (gn * gn);
            const REAL denom = SQRT(v[n]) / bc2_sqrt + eps;
            p[n] = p[n] - step_size * (m[n] / denom);
        }
    }
    a->counters[r] += 1;

    int finite = loss - loss == 0.0;
    for (long n = 0; n < P; n++) finite &= (p[n] - p[n]) == 0;
    a->loss[r] = loss;
    a->norm[r] = norm;
    a->finite[r] = (uint8_t)finite;
}

static int SFX(train_many)(const Dims *d, long R, const TrainArgs *a, REAL *params, REAL *m,
                           REAL *v, int threads) {
    SFX(TrainCtx) c = {d, a, params, m, v};
    return for_members(SFX(train_member), &c, R, SFX(train_work_bytes)(d), threads);
}

/* ---- evaluate over R members ---- */

typedef struct {
    const Dims *d; /* B = N */
    const REAL *params, *x, *y;
    int shared;
    const int64_t *echo;
    double *loss, *acc;
} SFX(EvalCtx);

static size_t SFX(eval_work_bytes)(const Dims *d) {
    return sizeof(REAL) * ((size_t)((d->T + 1) * d->H * d->B + d->T * d->I * d->B + 2 * d->T * d->B));
}

/* loss = sum_{n,t} (yhat - y)^2 / (2 T N) in double (per lane over t, then over n);
 * accuracy = hits / (N (T - k)) over t >= k, a hit where (yhat > 0.5) == (y > 0.5). */
static void SFX(eval_member)(void *vctx, long r, void *work) {
    const SFX(EvalCtx) *c = vctx;
    const Dims *d = c->d;
    const long N = d->B, T = d->T, I = d->I, H = d->H;
    const long P = param_count(H, I, d->bias);
    REAL *hs = work, *xs = hs + (T + 1) * H * N, *yhat = xs + T * I * N;
    const REAL *p = c->params + r * P;
    const REAL *U = p, *V = p + H * H, *w = V + H * I, *bias = d->bias ? w + H : NULL;
    const REAL *x = c->shared ? c->x : c->x + r * N * T * I;
    for (long t = 0; t < T; t++)
        for (long k = 0; k < I; k++)
            for (long n = 0; n < N; n++) xs[(t * I + k) * N + n] = x[(n * T + t) * I + k];
    for (long n = 0; n < H * N; n++) hs[n] = 0;
    SFX(forward_member)(d, U, V, w, bias, hs, xs, yhat);
    const REAL *y = c->y + r * N * T;
    const long k = (long)c->echo[r];
    double total = 0.0;
    int64_t hits = 0;
    for (long n = 0; n < N; n++) {
        double lane = 0.0;
        for (long t = 0; t < T; t++) {
            const REAL yh = yhat[t * N + n], yt = y[n * T + t];
            const double dd = (double)yh - (double)yt;
            lane = lane + dd * dd;
            if (t >= k) hits += (yh > (REAL)0.5) == (yt > (REAL)0.5);
        }
        total = total + lane;
    }
    c->loss[r] = total / (double)(2 * T * N);
    c->acc[r] = (double)hits / (double)(N * (T - k));
}

static int SFX(evaluate_many)(const Dims *d, long R, const REAL *params, int shared,
                              const REAL *x, const REAL *y, const int64_t *echo, double *loss,
                              double *acc, int threads) {
    SFX(EvalCtx) c = {d, params, x, y, shared, echo, loss, acc};
    return for_members(SFX(eval_member), &c, R, SFX(eval_work_bytes)(d), threads);
}

#endif /* ECHO_KERNEL_BODY */
