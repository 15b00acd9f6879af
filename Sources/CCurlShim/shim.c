#include "CCurlShim.h"
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

CURLcode llmq_easy_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
CURLcode llmq_easy_setopt_ptr(CURL *h, CURLoption o, const void *v) { return curl_easy_setopt(h, o, v); }
CURLcode llmq_easy_setopt_off(CURL *h, CURLoption o, curl_off_t v) { return curl_easy_setopt(h, o, v); }
CURLcode llmq_easy_setopt_write(CURL *h, llmq_data_cb cb) { return curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, cb); }
CURLcode llmq_easy_setopt_header(CURL *h, llmq_data_cb cb) { return curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, cb); }
CURLcode llmq_easy_setopt_xferinfo(CURL *h, llmq_xferinfo_cb cb) { return curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, cb); }
CURLcode llmq_easy_getinfo_long(CURL *h, CURLINFO i, long *out) { return curl_easy_getinfo(h, i, out); }
CURLcode llmq_easy_getinfo_ptr(CURL *h, CURLINFO i, void **out) { return curl_easy_getinfo(h, i, out); }
CURLMcode llmq_multi_setopt_long(CURLM *m, CURLMoption o, long v) { return curl_multi_setopt(m, o, v); }
CURLMcode llmq_multi_setopt_ptr(CURLM *m, CURLMoption o, void *v) { return curl_multi_setopt(m, o, v); }
CURLMcode llmq_multi_setopt_socket(CURLM *m, llmq_socket_cb cb) { return curl_multi_setopt(m, CURLMOPT_SOCKETFUNCTION, cb); }
CURLMcode llmq_multi_setopt_timer(CURLM *m, llmq_timer_cb cb) { return curl_multi_setopt(m, CURLMOPT_TIMERFUNCTION, cb); }

/* What libcurl does without an open callback, plus the count. */
static curl_socket_t count_open(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
    (void)purpose;
    curl_socket_t s = socket(a->family, a->socktype, a->protocol);
    if (s != CURL_SOCKET_BAD) ((llmq_socket_count *)clientp)->open++;
    return s;
}

static int count_close(void *clientp, curl_socket_t s) {
    ((llmq_socket_count *)clientp)->open--;
    return close(s);
}

void llmq_easy_count_sockets(CURL *h, llmq_socket_count *count) {
    curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, count_open);
    curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, count);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, count_close);
    curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, count);
}

int llmq_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

/* interest 0 removes fd; otherwise modifies its registration, adding it when it has none. */
int llmq_epoll_watch(int ep, int fd, int interest) {
    if (interest == 0) return epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    struct epoll_event ev = {0};
    ev.events = ((interest & 1) ? EPOLLIN : 0) | ((interest & 2) ? EPOLLOUT : 0);
    ev.data.fd = fd;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) == 0) return 0;
    if (errno != ENOENT) return -1;
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int llmq_epoll_wait(int ep, int *fds, unsigned *ready, int max, int timeout_ms) {
    struct epoll_event evs[256];
    if (max > 256) max = 256;
    int n = epoll_wait(ep, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) {
        uint32_t e = evs[i].events;
        fds[i] = evs[i].data.fd;
        ready[i] = ((e & EPOLLIN) ? 1u : 0u) | ((e & EPOLLOUT) ? 2u : 0u) | ((e & (EPOLLERR | EPOLLHUP)) ? 4u : 0u);
    }
    return n;
}

int llmq_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

void llmq_eventfd_signal(int fd) {
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r;
}

void llmq_eventfd_drain(int fd) {
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
}

int llmq_malloc_top_pad(int bytes) { return mallopt(M_TOP_PAD, bytes); }
