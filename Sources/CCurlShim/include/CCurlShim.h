#ifndef LLMQ_CCURLSHIM_H
#define LLMQ_CCURLSHIM_H
#include <curl/curl.h>
#include <sys/types.h>

/* Typed, non-variadic wrappers for the variadic libcurl calls Swift cannot make. */
CURLcode llmq_easy_setopt_long(CURL *h, CURLoption o, long v);
CURLcode llmq_easy_setopt_ptr(CURL *h, CURLoption o, const void *v);
CURLcode llmq_easy_setopt_off(CURL *h, CURLoption o, curl_off_t v);
typedef size_t (*llmq_data_cb)(char *ptr, size_t size, size_t nmemb, void *userdata);
typedef int (*llmq_xferinfo_cb)(void *userdata, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow);
CURLcode llmq_easy_setopt_write(CURL *h, llmq_data_cb cb);
CURLcode llmq_easy_setopt_header(CURL *h, llmq_data_cb cb);
CURLcode llmq_easy_setopt_xferinfo(CURL *h, llmq_xferinfo_cb cb);
CURLcode llmq_easy_getinfo_long(CURL *h, CURLINFO i, long *out);
CURLcode llmq_easy_getinfo_ptr(CURL *h, CURLINFO i, void **out);
CURLMcode llmq_multi_setopt_long(CURLM *m, CURLMoption o, long v);
CURLMcode llmq_multi_setopt_ptr(CURLM *m, CURLMoption o, void *v);
typedef int (*llmq_socket_cb)(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp);
typedef int (*llmq_timer_cb)(CURLM *multi, long timeout_ms, void *userp);
CURLMcode llmq_multi_setopt_socket(CURLM *m, llmq_socket_cb cb);
CURLMcode llmq_multi_setopt_timer(CURLM *m, llmq_timer_cb cb);

/* The sockets libcurl has opened for one upstream origin and not yet closed. */
typedef struct llmq_socket_count { long open; } llmq_socket_count;
/* Makes the transfer open and close its sockets through callbacks that keep `count`
   (CURLOPT_OPENSOCKETFUNCTION, CLOSESOCKETFUNCTION). A connection keeps the pointer of
   the transfer that opened it, for its whole life: `count` must outlive the multi handle. */
void llmq_easy_count_sockets(CURL *h, llmq_socket_count *count);

/* mallopt(M_TOP_PAD, bytes): how much more than asked malloc takes when it grows a heap
   (Swift's Glibc module does not export malloc.h). Returns mallopt's 1 on success. */
int llmq_malloc_top_pad(int bytes);

/* epoll and eventfd for the engine's socket loop (Swift's Glibc module has neither, and
   struct epoll_event is packed). Interest and readiness bits: 1 readable, 2 writable, 4 error. */
int llmq_epoll_create(void);
int llmq_epoll_watch(int ep, int fd, int interest);
int llmq_epoll_wait(int ep, int *fds, unsigned *ready, int max, int timeout_ms);
int llmq_eventfd(void);
void llmq_eventfd_signal(int fd);
void llmq_eventfd_drain(int fd);
#endif
