/* Paced OpenAI-compatible streaming upstream whose tokens carry the wall clock,
 * for measuring what a farm adds on top of the provider: a C twin of
 * ../shared/bench/upstream/ts_upstream.js, the same over HTTP byte for byte
 * except the stamps (and the Date header).
 *
 *   cc -O2 -o ts_upstream ts_upstream.c && ./ts_upstream PORT
 *
 * Why it exists: node spends about 470 us of CPU per new connection, so a burst
 * of 10,000 new streams costs it 4.7 s of one core and the benchmark measures
 * node rather than the farm. This is one thread on epoll with a min-heap of
 * the streams' next-frame times; Ops/bench/overhead.sh runs it in place of the
 * node one when LLMQ_BENCH_UPSTREAM=c.
 *
 * POST .../chat/completions with stream=true; the model name "ts-N-D-F" streams
 * N tokens D ms apart, the first F ms after the request arrived (default
 * ts-20-20-50). Each token's text is "@RECV_US:SEND_US " -- when this server
 * had the request's headers and when it wrote the token, in microseconds of
 * CLOCK_REALTIME -- which loadgen.c turns into pickup, token lag and added TTFT.
 * GET /stats answers {"active": streams open now, "peak": most open at once,
 * "served": streams finished}.
 *
 * HTTP/1.1 keep-alive, one request at a time per connection (a pipelined one
 * waits for the stream before it); Content-Length bodies only (a chunked
 * request gets a 400). Node's ways kept: headers in node's order, Date,
 * Keep-Alive: timeout=60 and idle connections closed after 60 s, 100 Continue,
 * 400 without Host on HTTP/1.1, HTTP/1.0 answered unchunked then closed,
 * timers of less than 1 ms taking 1 ms. A non-string "model" counts as absent.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEADER 16384          /* node's default --max-http-header-size */
#define MAX_BODY (64u << 20)
#define KEEPALIVE_US 60000000LL   /* server.keepAliveTimeout = 60000 */
#define LINGER_US 5000000LL       /* after our FIN, how long to wait for the peer's */
#define DEFAULT_MODEL "ts-20-20-50"

struct buf { char *p; size_t len, cap; };

enum { READING, STREAMING, CLOSING };

struct conn {
    int fd, state, dead, want_out, shut;
    int heap_idx;
    int64_t due;                  /* CLOCK_MONOTONIC us of this connection's one timer */
    int64_t last_active;
    struct buf in, out;
    size_t out_off;
    /* the request being read */
    int hdr_done, is_stats, chunked, keep;
    size_t hdr_len, clen;
    int64_t recv_us;
    /* the stream */
    struct buf prefix;            /* data: {"id":...,"model":"...", */
    int64_t n, i, d_ms;
};

static int64_t active, peak, served;
static int ep;
static struct buf scratch, frame;

static void die(const char *what) { perror(what); exit(1); }

static int64_t mono_us(void) {
    struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}
static int64_t wall_us(void) {
    struct timespec t; clock_gettime(CLOCK_REALTIME, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

/* ---- growable buffers ---- */
static void buf_need(struct buf *b, size_t extra) {
    if (b->len + extra <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) die("realloc");
    b->p = p; b->cap = cap;
}
static void buf_put(struct buf *b, const void *p, size_t n) { buf_need(b, n); memcpy(b->p + b->len, p, n); b->len += n; }
static void buf_str(struct buf *b, const char *s) { buf_put(b, s, strlen(s)); }
static void buf_i64(struct buf *b, int64_t v) { char t[24]; buf_put(b, t, (size_t)snprintf(t, sizeof t, "%lld", (long long)v)); }
static void buf_free(struct buf *b) { free(b->p); b->p = NULL; b->len = b->cap = 0; }

/* ---- timers: a binary min-heap of connections by due time ---- */
static struct conn **heap;
static int heap_n, heap_cap;

static void heap_swap(int a, int b) {
    struct conn *t = heap[a]; heap[a] = heap[b]; heap[b] = t;
    heap[a]->heap_idx = a; heap[b]->heap_idx = b;
}
static void sift_up(int i) {
    while (i > 0) { int p = (i - 1) / 2; if (heap[p]->due <= heap[i]->due) break; heap_swap(i, p); i = p; }
}
static void sift_down(int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < heap_n && heap[l]->due < heap[m]->due) m = l;
        if (r < heap_n && heap[r]->due < heap[m]->due) m = r;
        if (m == i) return;
        heap_swap(i, m); i = m;
    }
}
static void timer_set(struct conn *c, int64_t due) {
    c->due = due;
    if (c->heap_idx < 0) {
        if (heap_n == heap_cap) {
            heap_cap = heap_cap ? heap_cap * 2 : 1024;
            heap = realloc(heap, (size_t)heap_cap * sizeof *heap);
            if (!heap) die("realloc");
        }
        heap[heap_n] = c; c->heap_idx = heap_n++;
        sift_up(c->heap_idx);
    } else {
        sift_up(c->heap_idx); sift_down(c->heap_idx);
    }
}
static void timer_del(struct conn *c) {
    int i = c->heap_idx;
    if (i < 0) return;
    c->heap_idx = -1;
    if (i != --heap_n) {
        struct conn *m = heap[heap_n];
        heap[i] = m; m->heap_idx = i;
        sift_up(i); sift_down(m->heap_idx);
    }
}

/* node's setTimeout: a delay under 1 ms or over 2^31-1 ms is 1 ms */
static int64_t node_delay_us(int64_t ms) { return (ms < 1 || ms > INT32_MAX ? 1 : ms) * 1000; }

/* ---- output: write now, or buffer until EPOLLOUT ---- */
static void watch(struct conn *c, int out) {
    struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP | (out ? EPOLLOUT : 0), .data.ptr = c };
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) c->dead = 1;
    c->want_out = out;
}

static void conn_send(struct conn *c, const char *p, size_t n) {
    if (c->dead) return;
    if (c->out.len == c->out_off) {
        c->out.len = c->out_off = 0;
        while (n > 0) {
            ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
            if (w > 0) { p += w; n -= (size_t)w; continue; }
            if (w < 0 && errno == EINTR) continue;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            c->dead = 1; return;
        }
        if (n == 0) return;
    }
    buf_put(&c->out, p, n);
    if (!c->want_out) watch(c, 1);
}

static void begin_shutdown(struct conn *c) {
    shutdown(c->fd, SHUT_WR);
    c->shut = 1;
    timer_set(c, mono_us() + LINGER_US);
}

static void conn_flush(struct conn *c) {
    while (c->out_off < c->out.len) {
        ssize_t w = send(c->fd, c->out.p + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (w > 0) { c->out_off += (size_t)w; c->last_active = mono_us(); continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        c->dead = 1; return;
    }
    c->out_off = 0;
    if (c->out.cap > 65536) buf_free(&c->out); else c->out.len = 0;
    watch(c, 0);
    if (c->state == CLOSING && !c->shut) begin_shutdown(c);
}

/* ---- response pieces ---- */
static const char *http_date(void) {
    static char s[64];
    static time_t last = -1;
    time_t t = time(NULL);
    if (t != last) { struct tm tm; gmtime_r(&t, &tm); strftime(s, sizeof s, "%a, %d %b %Y %H:%M:%S GMT", &tm); last = t; }
    return s;
}

/* Date, Connection[, Keep-Alive] as node writes them after the handler's own headers */
static void put_common_headers(struct buf *b, int keep) {
    buf_str(b, "Date: "); buf_str(b, http_date());
    buf_str(b, keep ? "\r\nConnection: keep-alive\r\nKeep-Alive: timeout=60\r\n" : "\r\nConnection: close\r\n");
}

/* one res.write(): a chunk, or the bare bytes on HTTP/1.0 */
static void put_chunk(struct buf *b, int chunked, const char *p, size_t n) {
    if (chunked) { char h[24]; buf_put(b, h, (size_t)snprintf(h, sizeof h, "%zx\r\n", n)); }
    buf_put(b, p, n);
    if (chunked) buf_str(b, "\r\n");
}

/* the response is complete: wait for the next request, or close */
static void finish_response(struct conn *c) {
    if (c->keep) {
        c->state = READING;
        c->last_active = mono_us();
        timer_set(c, c->last_active + KEEPALIVE_US);
    } else {
        c->state = CLOSING;
        timer_set(c, mono_us() + LINGER_US);   /* bounds the wait for a client that stops reading */
        if (c->out.len == c->out_off) begin_shutdown(c);
    }
}

/* what llhttp's errors get from node: a bare status line, then close */
static void fail_request(struct conn *c, const char *status) {
    char t[128];
    conn_send(c, t, (size_t)snprintf(t, sizeof t, "HTTP/1.1 %s\r\nConnection: close\r\n\r\n", status));
    c->keep = 0;
    finish_response(c);
}

/* ---- the request's JSON body ---- */
static const char *skip_ws(const char *s, const char *e) {
    while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++;
    return s;
}
/* s points at an opening quote; returns the closing quote, or NULL */
static const char *string_end(const char *s, const char *e) {
    for (s++; s < e; s++) {
        if (*s == '\\') s++;
        else if (*s == '"') return s;
    }
    return NULL;
}
static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}
static int hex4(const char *s, const char *e) {
    if (e - s < 4) return -1;
    int v = 0;
    for (int k = 0; k < 4; k++) { int h = hexval(s[k]); if (h < 0) return -1; v = v * 16 + h; }
    return v;
}
static void put_utf8(struct buf *b, unsigned v) {
    char u[4]; size_t n;
    if (v < 0x80) { u[0] = (char)v; n = 1; }
    else if (v < 0x800) { u[0] = (char)(0xC0 | v >> 6); u[1] = (char)(0x80 | (v & 0x3F)); n = 2; }
    else if (v < 0x10000) { u[0] = (char)(0xE0 | v >> 12); u[1] = (char)(0x80 | ((v >> 6) & 0x3F)); u[2] = (char)(0x80 | (v & 0x3F)); n = 3; }
    else { u[0] = (char)(0xF0 | v >> 18); u[1] = (char)(0x80 | ((v >> 12) & 0x3F)); u[2] = (char)(0x80 | ((v >> 6) & 0x3F)); u[3] = (char)(0x80 | (v & 0x3F)); n = 4; }
    buf_put(b, u, n);
}
/* a code unit as JSON.stringify writes it: short escapes, \u00xx, or the character */
static void put_json_unit(struct buf *out, unsigned v) {
    char t[16];
    switch (v) {
    case '"': buf_str(out, "\\\""); return;
    case '\\': buf_str(out, "\\\\"); return;
    case '\b': buf_str(out, "\\b"); return;
    case '\f': buf_str(out, "\\f"); return;
    case '\n': buf_str(out, "\\n"); return;
    case '\r': buf_str(out, "\\r"); return;
    case '\t': buf_str(out, "\\t"); return;
    }
    if (v < 0x20 || (v >= 0xD800 && v <= 0xDFFF)) { snprintf(t, sizeof t, "\\u%04x", v & 0xFFFF); buf_str(out, t); }
    else put_utf8(out, v);
}

/* The JSON string s..e (without its quotes) re-encoded as JSON.stringify would
 * (into out, quotes included) and decoded (into dec, for the model regex).
 * Returns -1 if it is not a valid JSON string. */
static int restringify(const char *s, const char *e, struct buf *out, struct buf *dec) {
    buf_str(out, "\"");
    while (s < e) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20) return -1;
        if (ch != '\\') {
            if (ch == '"') return -1;
            buf_put(out, s, 1); buf_put(dec, s, 1); s++; continue;
        }
        if (e - s < 2) return -1;
        char k = s[1]; s += 2;
        unsigned v;
        switch (k) {
        case '"': v = '"'; break;
        case '\\': v = '\\'; break;
        case '/': v = '/'; break;
        case 'b': v = '\b'; break;
        case 'f': v = '\f'; break;
        case 'n': v = '\n'; break;
        case 'r': v = '\r'; break;
        case 't': v = '\t'; break;
        case 'u': {
            int h = hex4(s, e);
            if (h < 0) return -1;
            s += 4; v = (unsigned)h;
            if (v >= 0xD800 && v <= 0xDBFF && e - s >= 6 && s[0] == '\\' && s[1] == 'u') {
                int lo = hex4(s + 2, e);
                if (lo >= 0xDC00 && lo <= 0xDFFF) { v = 0x10000 + ((v - 0xD800) << 10) + ((unsigned)lo - 0xDC00); s += 6; }
            }
            break;
        }
        default: return -1;
        }
        put_json_unit(out, v);
        if (v >= 0xD800 && v <= 0xDFFF) buf_str(dec, "?"); else put_utf8(dec, v);
    }
    buf_str(out, "\"");
    return 0;
}

/* The top-level "model" of a JSON object body: *ms..*me is the raw text between
 * its quotes, or *ms = NULL if absent (or not a string). -1 if the body is not
 * a JSON object (a light check, not a full parse). */
static int find_model(const char *s, const char *e, const char **ms, const char **me) {
    *ms = *me = NULL;
    s = skip_ws(s, e);
    if (s == e || *s != '{') return -1;
    int depth = 0;
    while (s < e) {
        char ch = *s;
        if (ch == '"') {
            const char *q = string_end(s, e);
            if (!q) return -1;
            const char *after = skip_ws(q + 1, e);
            if (depth == 1 && after < e && *after == ':') {
                int is_model = q - s - 1 == 5 && memcmp(s + 1, "model", 5) == 0;
                const char *v = skip_ws(after + 1, e);
                if (is_model) {
                    *ms = *me = NULL;   /* the last "model" wins, as in JSON.parse */
                    if (v < e && *v == '"') {
                        const char *vq = string_end(v, e);
                        if (!vq) return -1;
                        *ms = v + 1; *me = vq;
                        s = vq + 1; continue;
                    }
                }
                s = v; continue;
            }
            s = q + 1; continue;
        }
        if (ch == '{' || ch == '[') depth++;
        else if (ch == '}' || ch == ']') {
            if (--depth < 0) return -1;
            if (depth == 0) return skip_ws(s + 1, e) == e ? 0 : -1;
        }
        s++;
    }
    return -1;
}

/* Number("123") for a digit run, saturating far beyond anything a timer takes */
static int64_t digits_value(const char *s, const char *e) {
    int64_t v = 0;
    for (; s < e; s++) v = v > INT64_MAX / 20 ? INT64_MAX / 2 : v * 10 + (*s - '0');
    return v;
}
static const char *digit_run(const char *s, const char *e) { while (s < e && *s >= '0' && *s <= '9') s++; return s; }

/* /ts-(\d+)-(\d+)-(\d+)/.exec(model) */
static int match_ts(const char *s, size_t n, int64_t v[3]) {
    const char *e = s + n;
    for (const char *p = s; p + 3 <= e; p++) {
        if (memcmp(p, "ts-", 3) != 0) continue;
        const char *q = p + 3;
        int k;
        for (k = 0; k < 3; k++) {
            const char *r = digit_run(q, e);
            if (r == q) break;
            v[k] = digits_value(q, r);
            q = r;
            if (k < 2) { if (q >= e || *q != '-') break; q++; }
        }
        if (k == 3) return 1;
    }
    return 0;
}

/* ---- handlers ---- */
static void answer_stats(struct conn *c) {
    char body[160];
    int n = snprintf(body, sizeof body, "{\"active\":%lld,\"peak\":%lld,\"served\":%lld}",
                     (long long)active, (long long)peak, (long long)served);
    scratch.len = 0;
    buf_str(&scratch, "HTTP/1.1 200 OK\r\n");
    put_common_headers(&scratch, c->keep);
    if (c->chunked) { buf_str(&scratch, "Content-Length: "); buf_i64(&scratch, n); buf_str(&scratch, "\r\n"); }
    buf_str(&scratch, "\r\n");
    buf_put(&scratch, body, (size_t)n);
    conn_send(c, scratch.p, scratch.len);
    finish_response(c);
}

static void answer_bad_json(struct conn *c) {
    static const char body[] = "{\"error\":{\"message\":\"bad json\"}}";
    scratch.len = 0;
    buf_str(&scratch, "HTTP/1.1 400 Bad Request\r\n");
    put_common_headers(&scratch, c->keep);
    if (c->chunked) buf_str(&scratch, "Transfer-Encoding: chunked\r\n");
    buf_str(&scratch, "\r\n");
    put_chunk(&scratch, c->chunked, body, sizeof body - 1);
    if (c->chunked) buf_str(&scratch, "0\r\n\r\n");
    conn_send(c, scratch.p, scratch.len);
    finish_response(c);
}

static void frame_begin(struct conn *c) { frame.len = 0; buf_put(&frame, c->prefix.p, c->prefix.len); }

static void start_stream(struct conn *c, const char *body, size_t blen) {
    const char *ms, *me;
    static struct buf dec;
    if (find_model(body, body + blen, &ms, &me) < 0) { answer_bad_json(c); return; }
    c->prefix.len = 0; dec.len = 0;
    buf_str(&c->prefix, "data: {\"id\":\"chatcmpl-ts\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":");
    if (ms && ms < me) {
        if (restringify(ms, me, &c->prefix, &dec) < 0) { buf_free(&c->prefix); answer_bad_json(c); return; }
    } else {
        buf_str(&c->prefix, "\"" DEFAULT_MODEL "\""); buf_str(&dec, DEFAULT_MODEL);
    }
    buf_str(&c->prefix, ",");
    int64_t v[3] = { 20, 20, 50 };
    if (!match_ts(dec.p, dec.len, v)) { v[0] = 20; v[1] = 20; v[2] = 50; }
    c->n = v[0]; c->d_ms = v[1]; c->i = 0;

    scratch.len = 0;
    buf_str(&scratch, "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n");
    put_common_headers(&scratch, c->keep);
    if (c->chunked) buf_str(&scratch, "Transfer-Encoding: chunked\r\n");
    buf_str(&scratch, "\r\n");
    frame_begin(c);
    buf_str(&frame, "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n");
    put_chunk(&scratch, c->chunked, frame.p, frame.len);
    active++; if (active > peak) peak = active;
    c->state = STREAMING;
    conn_send(c, scratch.p, scratch.len);
    timer_set(c, mono_us() + node_delay_us(v[2]));
}

/* a stream's timer: the next token, or the end */
static void tick(struct conn *c) {
    scratch.len = 0;
    if (c->i < c->n) {
        frame_begin(c);
        buf_str(&frame, "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"@");
        buf_i64(&frame, c->recv_us); buf_str(&frame, ":"); buf_i64(&frame, wall_us());
        buf_str(&frame, " \"},\"finish_reason\":null}]}\n\n");
        put_chunk(&scratch, c->chunked, frame.p, frame.len);
        conn_send(c, scratch.p, scratch.len);
        c->i++;
        timer_set(c, mono_us() + node_delay_us(c->d_ms));
        return;
    }
    frame_begin(c);
    buf_str(&frame, "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
    put_chunk(&scratch, c->chunked, frame.p, frame.len);
    frame_begin(c);
    buf_str(&frame, "\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":");
    buf_i64(&frame, c->n); buf_str(&frame, ",\"total_tokens\":"); buf_i64(&frame, 7 + c->n);
    buf_str(&frame, "}}\n\n");
    put_chunk(&scratch, c->chunked, frame.p, frame.len);
    put_chunk(&scratch, c->chunked, "data: [DONE]\n\n", 14);
    if (c->chunked) buf_str(&scratch, "0\r\n\r\n");
    conn_send(c, scratch.p, scratch.len);
    active--; served++;
    buf_free(&c->prefix);
    finish_response(c);
}

/* header name match, case-insensitive */
static int hname(const char *p, size_t n, const char *want) { return strlen(want) == n && strncasecmp(p, want, n) == 0; }

/* does a comma-separated header value hold this token (case-insensitive)? */
static int has_token(const char *v, const char *e, const char *tok) {
    size_t tl = strlen(tok);
    while (v < e) {
        while (v < e && (*v == ' ' || *v == '\t' || *v == ',')) v++;
        const char *t = v;
        while (v < e && *v != ',') v++;
        const char *te = v;
        while (te > t && (te[-1] == ' ' || te[-1] == '\t')) te--;
        if ((size_t)(te - t) == tl && strncasecmp(t, tok, tl) == 0) return 1;
    }
    return 0;
}

static int is_tchar(unsigned char ch) {
    return ch > 0x20 && ch < 0x7F && !strchr("\"(),/:;<=>?@[\\]{}", ch);
}

/* The request line and headers, if they are all here: 1 parsed, 0 need more,
 * -1 answered with an error. */
static int parse_head(struct conn *c) {
    char *s = c->in.p, *e = s + c->in.len;
    size_t skip = 0;
    while (skip < c->in.len && (s[skip] == '\r' || s[skip] == '\n')) skip++;  /* stray CRLFs between requests */
    if (skip) { memmove(s, s + skip, c->in.len - skip); c->in.len -= skip; e = s + c->in.len; if (!c->in.len) return 0; }

    /* the end of the head: an empty line */
    char *end = NULL;
    size_t lim = c->in.len < MAX_HEADER ? c->in.len : MAX_HEADER;
    for (char *p = memchr(s, '\n', lim); p; p = memchr(p + 1, '\n', (size_t)(s + lim - p - 1))) {
        char *q = p + 1;
        if (q < e && *q == '\n') { end = q + 1; break; }
        if (q + 1 < e && q[0] == '\r' && q[1] == '\n') { end = q + 2; break; }
    }
    if (!end) {
        if (c->in.len >= MAX_HEADER) { fail_request(c, "431 Request Header Fields Too Large"); return -1; }
        return 0;
    }
    c->recv_us = wall_us();   /* where node calls the handler */

    /* request line: METHOD SP TARGET SP HTTP/1.x */
    char *le = memchr(s, '\n', (size_t)(end - s));
    char *line_end = le > s && le[-1] == '\r' ? le - 1 : le;
    char *m = s;
    while (m < line_end && is_tchar((unsigned char)*m)) m++;
    if (m == s || m >= line_end || *m != ' ') { fail_request(c, "400 Bad Request"); return -1; }
    char *t = m + 1, *te = t;
    while (te < line_end && *te != ' ') te++;
    if (te == t || te >= line_end || line_end - (te + 1) != 8 || memcmp(te + 1, "HTTP/1.", 7) != 0
        || (te[8] != '0' && te[8] != '1')) { fail_request(c, "400 Bad Request"); return -1; }
    int http11 = te[8] == '1';
    c->is_stats = m - s == 3 && memcmp(s, "GET", 3) == 0 && te - t == 6 && memcmp(t, "/stats", 6) == 0;

    int have_host = 0, conn_close = 0, expect = 0, have_len = 0;
    size_t clen = 0;
    for (char *h = le + 1; h < end; ) {
        char *hl = memchr(h, '\n', (size_t)(end - h));
        char *he = hl > h && hl[-1] == '\r' ? hl - 1 : hl;
        if (he == h) break;   /* the empty line */
        char *colon = h;
        while (colon < he && is_tchar((unsigned char)*colon)) colon++;
        if (colon == h || colon >= he || *colon != ':') { fail_request(c, "400 Bad Request"); return -1; }
        char *v = colon + 1, *ve = he;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        size_t nl = (size_t)(colon - h);
        if (hname(h, nl, "content-length")) {
            size_t x = 0;
            if (v == ve) { fail_request(c, "400 Bad Request"); return -1; }
            for (char *d = v; d < ve; d++) {
                if (*d < '0' || *d > '9' || x > MAX_BODY) { fail_request(c, "400 Bad Request"); return -1; }
                x = x * 10 + (size_t)(*d - '0');
            }
            if (have_len && x != clen) { fail_request(c, "400 Bad Request"); return -1; }
            clen = x; have_len = 1;
        } else if (hname(h, nl, "transfer-encoding")) {
            fail_request(c, "400 Bad Request"); return -1;   /* chunked request bodies: not needed here */
        } else if (hname(h, nl, "host")) have_host = 1;
        else if (hname(h, nl, "connection")) conn_close |= has_token(v, ve, "close");
        else if (hname(h, nl, "expect")) expect |= has_token(v, ve, "100-continue");
        h = hl + 1;
    }
    if (clen > MAX_BODY) { fail_request(c, "413 Payload Too Large"); return -1; }
    c->hdr_len = (size_t)(end - s);
    c->clen = clen;
    c->chunked = http11;              /* node answers HTTP/1.0 unchunked ... */
    c->keep = http11 && !conn_close;  /* ... and so closes after it */
    c->hdr_done = 1;
    if (http11 && !have_host) {
        /* node 20's requireHostHeader: writeHead(400, ['Connection', 'close']); end() */
        scratch.len = 0;
        buf_str(&scratch, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nDate: ");
        buf_str(&scratch, http_date());
        buf_str(&scratch, "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        conn_send(c, scratch.p, scratch.len);
        c->keep = 0;
        finish_response(c);
        return -1;
    }
    if (expect && http11) conn_send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    return 1;
}

/* handle every complete request in the input, one at a time */
static void process(struct conn *c) {
    while (!c->dead && c->state == READING && c->in.len > 0) {
        if (!c->hdr_done && parse_head(c) <= 0) break;
        if (c->state != READING || c->in.len < c->hdr_len + c->clen) break;
        size_t used = c->hdr_len + c->clen;
        if (c->is_stats) answer_stats(c);
        else start_stream(c, c->in.p + c->hdr_len, c->clen);
        c->hdr_done = 0;
        memmove(c->in.p, c->in.p + used, c->in.len - used);
        c->in.len -= used;
    }
    if (c->in.len == 0 && c->in.cap > 0) buf_free(&c->in);
}

static void conn_read(struct conn *c) {
    static char rbuf[65536];
    for (;;) {
        ssize_t r = recv(c->fd, rbuf, sizeof rbuf, 0);
        if (r > 0) {
            if (c->state != CLOSING) {
                if (c->in.len + (size_t)r > MAX_HEADER + MAX_BODY) { c->dead = 1; return; }
                buf_put(&c->in, rbuf, (size_t)r);
                c->last_active = mono_us();
                process(c);
                if (c->dead) return;
            }
            if ((size_t)r < sizeof rbuf) return;   /* drained, most likely; epoll says if not */
            continue;
        }
        if (r == 0) { c->dead = 1; return; }   /* the client went away (node: res 'close') */
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) c->dead = 1;
        return;
    }
}

static void conn_free(struct conn *c) {
    if (c->state == STREAMING) active--;
    timer_del(c);
    close(c->fd);
    buf_free(&c->in); buf_free(&c->out); buf_free(&c->prefix);
    free(c);
}

static void accept_all(int lfd, int *reserve) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if ((errno == EMFILE || errno == ENFILE) && *reserve >= 0) {
                /* out of descriptors: refuse this one rather than spin on it */
                static int warned;
                if (!warned++) fprintf(stderr, "ts_upstream: out of file descriptors, refusing connections\n");
                close(*reserve);
                fd = accept(lfd, NULL, NULL);
                if (fd >= 0) close(fd);
                *reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (fd >= 0) continue;
            }
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);   /* node's default */
        struct conn *c = calloc(1, sizeof *c);
        if (!c) die("calloc");
        c->fd = fd; c->heap_idx = -1; c->state = READING;
        struct epoll_event ev = { .events = EPOLLIN | EPOLLRDHUP, .data.ptr = c };
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) { close(fd); free(c); continue; }
        c->last_active = mono_us();
        timer_set(c, c->last_active + KEEPALIVE_US);
    }
}

static void run_timers(void) {
    int64_t now = mono_us();
    while (heap_n > 0 && heap[0]->due <= now) {
        struct conn *c = heap[0];
        timer_del(c);
        if (c->state == STREAMING) tick(c);
        else if (c->state == CLOSING) c->dead = 1;
        else if (c->out.len > c->out_off) timer_set(c, mono_us() + KEEPALIVE_US);   /* still sending: not idle */
        else if (mono_us() - c->last_active >= KEEPALIVE_US) c->dead = 1;   /* idle: node's keepAliveTimeout */
        else timer_set(c, c->last_active + KEEPALIVE_US);
        if (!c->dead && c->state == READING && c->in.len > 0) process(c);   /* a pipelined request */
        if (c->dead) conn_free(c);
    }
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 18091;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(lfd, 65535) < 0) die("listen");

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev) < 0) die("epoll_ctl");
    int reserve = open("/dev/null", O_RDONLY | O_CLOEXEC);

    static struct epoll_event evs[1024];
    for (;;) {
        int timeout = -1;
        if (heap_n > 0) {
            int64_t dt = heap[0]->due - mono_us();   /* rounded up to whole ms */
            if (dt <= 0) timeout = 0;
            else if (dt >= (int64_t)INT_MAX * 1000) timeout = INT_MAX;
            else timeout = (int)((dt + 999) / 1000);
        }
        int k = epoll_wait(ep, evs, 1024, timeout);
        if (k < 0 && errno != EINTR) die("epoll_wait");
        for (int j = 0; j < k; j++) {
            struct conn *c = evs[j].data.ptr;
            if (!c) { accept_all(lfd, &reserve); continue; }
            uint32_t e = evs[j].events;
            if (e & EPOLLERR) c->dead = 1;
            if (!c->dead && (e & EPOLLOUT)) conn_flush(c);
            if (!c->dead && (e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP))) conn_read(c);
            if (c->dead) conn_free(c);
        }
        run_timers();
    }
}
