/*
 * check.h: the tiny assertion helper shared by the C tests.
 *
 * CHECK(cond, fmt, ...) prints file:line, the failed condition and a message,
 * then exits with status 1, so a failed assertion fails the meson test. The
 * other helpers read PARLA_TEST_SCALE (a factor in (0, 1], default 1.0) that
 * sanitizer builds use to shrink the big counts, give a monotonic clock, and
 * install a watchdog so that a deadlock is reported as a failure with the
 * phase it happened in instead of as a bare timeout.
 */
#ifndef PARLA_TEST_CHECK_H
#define PARLA_TEST_CHECK_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "parla.h"

#define CHECK(cond, ...)                                                             \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                            \
            fputc('\n', stderr);                                                     \
            fflush(stderr);                                                          \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

/* Checks that a parla call returns 0 and shows the code and message if not. */
#define CHECK_OK(expr)                                                                   \
    do {                                                                                 \
        int check_rc_ = (expr);                                                          \
        CHECK(check_rc_ == 0, "%s returned %d (%s): %s", #expr, check_rc_,               \
              parla_strerror(check_rc_), parla_last_error_message());                    \
    } while (0)

/* Checks that a parla call returns exactly the expected code. */
#define CHECK_RC(expr, want)                                                             \
    do {                                                                                 \
        int check_rc_ = (expr);                                                          \
        int check_want_ = (want);                                                        \
        CHECK(check_rc_ == check_want_, "%s returned %d (%s), expected %d (%s): %s",     \
              #expr, check_rc_, parla_strerror(check_rc_), check_want_,                  \
              parla_strerror(check_want_), parla_last_error_message());                  \
    } while (0)

/* PARLA_TEST_SCALE, clamped to [0.001, 1]. */
static inline double test_scale(void)
{
    const char *s = getenv("PARLA_TEST_SCALE");
    if (s == NULL || *s == '\0')
        return 1.0;
    double v = strtod(s, NULL);
    if (!(v > 0.0))
        return 1.0;
    if (v < 0.001)
        v = 0.001;
    if (v > 1.0)
        v = 1.0;
    return v;
}

/* n scaled by PARLA_TEST_SCALE, never below min (which keeps every assertion
 * meaningful however small the scale). */
static inline long scaled(long n, long min)
{
    long v = (long)((double)n * test_scale());
    return v < min ? min : v;
}

/* Monotonic time in seconds. */
static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Busy-waits for the given number of seconds. */
static inline void spin_for(double seconds)
{
    double end = now_s() + seconds;
    while (now_s() < end) {
    }
}

static inline void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The watchdog: the phase a test is in, printed when it fires. */
static const char *volatile check_phase_ = "start";

static inline void check_set_phase(const char *phase)
{
    check_phase_ = phase;
}

static inline void check_watchdog_fire_(int sig)
{
    (void)sig;
    const char *p = check_phase_;
    static const char head[] = "watchdog: test timed out (deadlock?) in phase: ";
    ssize_t r = write(2, head, sizeof head - 1);
    r = write(2, p, strlen(p));
    r = write(2, "\n", 1);
    (void)r;
    _exit(1);
}

/* Fails the test after the given number of seconds, multiplied by
 * PARLA_TEST_TIMEOUT_MULT when set (sanitizer builds). Must be shorter than
 * the meson timeout so the message is seen. */
static inline void check_watchdog(unsigned seconds)
{
    const char *m = getenv("PARLA_TEST_TIMEOUT_MULT");
    double mult = (m != NULL && *m != '\0') ? strtod(m, NULL) : 1.0;
    if (!(mult >= 1.0))
        mult = 1.0;
    signal(SIGALRM, check_watchdog_fire_);
    alarm((unsigned)((double)seconds * mult));
}

#endif
