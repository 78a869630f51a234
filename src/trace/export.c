/* trace/export.c: writes a trace's analysis (trace/analysis.c) as a Chrome
 * trace (Perfetto, chrome://tracing), a DOT graph and a text summary with the
 * critical path: write_chrome, write_dot and write_summary, each from the
 * same graph. Runs on the caller's thread once no emitter runs (after
 * parla_runtime_wait_all). */
#include "trace/analysis.h"

#include "util/util.h" /* parla__error */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Segment indices by device, worker (on the CPU), start (busy time: the union per worker on the CPU, per
 * device on a GPU). */
static int cmp_seg_dws(const void *a, const void *b, void *arg)
{
    const tseg_t *segs = arg;
    const tseg_t *x = &segs[*(const size_t *)a], *y = &segs[*(const size_t *)b];
    if (x->device != y->device)
        return x->device < y->device ? -1 : 1;
    if (x->device == 0 && x->worker != y->worker) /* the CPU: per worker; a GPU: one device */
        return x->worker < y->worker ? -1 : 1;
    return parla__trace_cmp_u64(x->start, y->start);
}

static int cmp_ditem(const void *a, const void *b)
{
    const ditem_t *x = a, *y = b;
    if (x->device != y->device)
        return x->device < y->device ? -1 : 1;
    int c = parla__trace_cmp_u64(x->start, y->start);
    return c ? c : -parla__trace_cmp_u64(x->end, y->end); /* the longer first: it may contain the other */
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static void dot_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '\n') {
            fputs("\\n", f);
            continue;
        }
        if (*s == '"' || *s == '\\')
            fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static const char *const edge_names[] = {"dependency", "data flow", "data order", "await"};


/* ------------------------------------------------------- string builder -- */

/* Appends formatted text to a fixed buffer of cap bytes, always
 * NUL-terminated; once full, the rest is cut off (len counts what was asked
 * for, so len >= cap tells that it was truncated). */
typedef struct sbuf {
    char *buf;
    size_t cap, len;
} sbuf_t;

static void sb_printf(sbuf_t *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *sb, const char *fmt, ...)
{
    if (sb->len >= sb->cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(sb->buf + sb->len, sb->cap - sb->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb->len += (size_t)n;
}

static const char *device_name(const tgraph_t *g, int d)
{
    return d >= 0 && d < g->meta->n_devices ? g->meta->devices[d].name : "?";
}


/* ------------------------------------------------------------ Chrome JSON -- */

/* Device tracks: one lane per concurrent slot, so that no two slices on a
 * track overlap (the Trace Event format nests slices; it cannot show partial
 * overlaps). Device d's lanes are tids lane_base[d] .. + n_lanes[d]. */
typedef struct lanes {
    int *base, *n;
} lanes_t;

static int assign_lanes(tgraph_t *g, lanes_t *ln)
{
    for (size_t i = 0; i < g->n_segs; i++) {
        if (g->n_items == g->cap_items && parla__trace_grow((void **)&g->items, &g->cap_items, sizeof *g->items) != 0)
            return PARLA_ENOMEM;
        g->items[g->n_items++] = (ditem_t){g->segs[i].start, g->segs[i].end, g->segs[i].device, 0, NULL, i};
    }
    qsort(g->items, g->n_items, sizeof *g->items, cmp_ditem);
    int n_devices = g->meta->n_devices;
    ln->base = calloc((size_t)n_devices + 1, sizeof *ln->base);
    ln->n = calloc((size_t)n_devices + 1, sizeof *ln->n);
    uint64_t *lane_end = malloc((g->n_items ? g->n_items : 1) * sizeof *lane_end);
    if (!ln->base || !ln->n || !lane_end) {
        free(lane_end);
        return PARLA_ENOMEM;
    }
    for (size_t i = 0; i < g->n_items;) {
        int d = g->items[i].device;
        int lanes = 0;
        for (; i < g->n_items && g->items[i].device == d; i++) {
            int l = 0;
            while (l < lanes && lane_end[l] > g->items[i].start)
                l++;
            if (l == lanes)
                lanes++;
            lane_end[l] = g->items[i].end;
            g->items[i].lane = l;
        }
        if (d >= 0 && d < n_devices)
            ln->n[d] = lanes;
    }
    free(lane_end);
    for (int d = 0; d < n_devices; d++) {
        if (ln->n[d] == 0)
            ln->n[d] = 1; /* every device has a track, used or not */
        ln->base[d + 1] = ln->base[d] + ln->n[d];
    }
    return 0;
}

/* The process and thread names: workers, other threads, device lanes. */
static void chrome_tracks(FILE *f, const tgraph_t *g, const lanes_t *ln)
{
    int n_workers = g->meta->n_workers;
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
    fprintf(f, "{\"ph\":\"M\",\"pid\":1,\"name\":\"process_name\",\"args\":{\"name\":\"workers\"}}");
    fprintf(f, ",\n{\"ph\":\"M\",\"pid\":2,\"name\":\"process_name\",\"args\":{\"name\":\"devices\"}}");
    for (int i = 0; i < n_workers; i++)
        fprintf(f, ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"worker %d\"}}",
                i, i);
    fprintf(f, ",\n{\"ph\":\"M\",\"pid\":1,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"other threads\"}}",
            n_workers);
    for (int d = 0; d < g->meta->n_devices; d++)
        for (int l = 0; l < ln->n[d]; l++) {
            int tid = ln->base[d] + l;
            fprintf(f, ",\n{\"ph\":\"M\",\"pid\":2,\"tid\":%d,\"name\":\"thread_name\",\"args\":{\"name\":\"%s%s", tid,
                    g->meta->devices[d].name, l ? " #" : "");
            if (l)
                fprintf(f, "%d", l + 1);
            fprintf(f, "\"}}");
            fprintf(f, ",\n{\"ph\":\"M\",\"pid\":2,\"tid\":%d,\"name\":\"thread_sort_index\",\"args\":"
                       "{\"sort_index\":%d}}", tid, tid);
        }
}

/* Task segments on their workers' tracks (a worker runs one body at a time; a
 * body that waits runs others inside it, nested). */
static void chrome_segments(FILE *f, const tgraph_t *g)
{
    int n_workers = g->meta->n_workers;
    for (size_t i = 0; i < g->n_segs; i++) {
        const tseg_t *s = &g->segs[i];
        const tinfo_t *t = &g->tasks[s->task];
        int tid = s->worker < 0 ? n_workers : s->worker;
        fprintf(f, ",\n{\"ph\":\"X\",\"pid\":1,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"name\":", tid,
                (double)s->start / 1e3, (double)(s->end - s->start) / 1e3);
        json_string(f, t->name);
        fprintf(f, ",\"cat\":\"task\",\"args\":{\"task\":%llu,\"device\":\"%s\",\"worker\":%d,\"state\":\"%s\"",
                (unsigned long long)s->serial, device_name(g, s->device), s->worker,
                parla_task_state_name((parla_task_state_t)s->state));
        if (t->nseg > 1)
            fprintf(f, ",\"segment\":%zu,\"segments\":%zu", i - t->seg0 + 1, t->nseg);
        if (t->critical)
            fprintf(f, ",\"critical\":true");
        if (s->scores)
            fprintf(f, ",\"locality\":%.4f,\"transfer\":%.4f,\"load\":%.4f,\"score\":%.4f", s->f[0], s->f[1], s->f[2],
                    s->f[3]);
        fprintf(f, "}}");
    }
}

/* Device lanes: task segments, device work after runahead, copies. */
static void chrome_device_items(FILE *f, const tgraph_t *g, const lanes_t *ln)
{
    for (size_t i = 0; i < g->n_items; i++) {
        const ditem_t *it = &g->items[i];
        if (it->device < 0 || it->device >= g->meta->n_devices)
            continue;
        int tid = ln->base[it->device] + it->lane;
        fprintf(f, ",\n{\"ph\":\"X\",\"pid\":2,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f,\"name\":", tid,
                (double)it->start / 1e3, (double)(it->end - it->start) / 1e3);
        const parla__trace_tev_t *e = it->ev;
        if (e == NULL) {
            const tseg_t *s = &g->segs[it->seg];
            json_string(f, g->tasks[s->task].name);
            fprintf(f, ",\"cat\":\"task\",\"args\":{\"task\":%llu,\"device\":\"%s\",\"worker\":%d,\"state\":\"%s\"%s}}",
                    (unsigned long long)s->serial, device_name(g, s->device), s->worker,
                    parla_task_state_name((parla_task_state_t)s->state),
                    g->tasks[s->task].critical ? ",\"critical\":true" : "");
        } else if (e->kind == PARLA__TEV_COPY) {
            fprintf(f, "\"copy %s -> %s\",\"cat\":\"copy\",\"args\":{\"bytes\":%llu,\"task\":%lld}}",
                    device_name(g, (int)e->f[0]), device_name(g, e->device), (unsigned long long)e->a,
                    e->serial == UINT64_MAX ? -1LL : (long long)e->serial);
        } else {
            /* From the body's return to the completion of the work it queued. */
            const tinfo_t *t = parla__trace_find(g, e->serial);
            json_string(f, t ? t->name : "task");
            fprintf(f, ",\"cat\":\"device work\",\"args\":{\"task\":%llu,\"runahead\":true}}",
                    (unsigned long long)e->serial);
        }
    }
}

/* Dependencies as flow arrows from the end of the predecessor to the start of
 * the segment it let run, on the worker tracks. */
static void chrome_flows(FILE *f, const tgraph_t *g)
{
    int n_workers = g->meta->n_workers;
    for (size_t e = 0; e < g->n_edges; e++) {
        const tinfo_t *p = parla__trace_find(g, g->edges[e].pred);
        const tinfo_t *s = parla__trace_find(g, g->edges[e].succ);
        if (!p || !s)
            continue;
        const tseg_t *from = &g->segs[p->seg0 + p->nseg - 1];
        const tseg_t *to = &g->segs[parla__trace_edge_target(g->segs, p, s, g->edges[e].kind)];
        int ptid = from->worker < 0 ? n_workers : from->worker;
        int stid = to->worker < 0 ? n_workers : to->worker;
        const char *name = edge_names[g->edges[e].kind >= 0 && g->edges[e].kind < 4 ? g->edges[e].kind : 0];
        fprintf(f, ",\n{\"ph\":\"s\",\"pid\":1,\"tid\":%d,\"ts\":%.3f,\"id\":%zu,\"name\":\"%s\",\"cat\":\"dep\"}",
                ptid, (double)from->end / 1e3 - 0.001, e, name);
        fprintf(f,
                ",\n{\"ph\":\"f\",\"bp\":\"e\",\"pid\":1,\"tid\":%d,\"ts\":%.3f,\"id\":%zu,\"name\":\"%s\","
                "\"cat\":\"dep\"}",
                stid, (double)to->start / 1e3 + 0.001, e, name);
    }
}

typedef struct evict_out {
    FILE *f;
    const tgraph_t *g;
    const lanes_t *ln;
} evict_out_t;

/* Evictions as instant events on their device's first lane. */
static int chrome_evict(const parla__trace_tev_t *e, void *arg)
{
    const evict_out_t *o = arg;
    if (e->kind == PARLA__TEV_EVICT && e->device >= 0 && e->device < o->g->meta->n_devices)
        fprintf(o->f,
                ",\n{\"ph\":\"i\",\"s\":\"t\",\"pid\":2,\"tid\":%d,\"ts\":%.3f,\"name\":\"evict\","
                "\"cat\":\"evict\",\"args\":{\"bytes\":%llu}}",
                o->ln->base[e->device], (double)(e->ts - o->g->t0) / 1e3, (unsigned long long)e->a);
    return 0;
}

static int write_chrome(tgraph_t *g, const char *path)
{
    lanes_t ln = {NULL, NULL};
    int rc = assign_lanes(g, &ln);
    FILE *f = NULL;
    if (rc == 0 && (f = fopen(path, "w")) == NULL)
        rc = parla__error(PARLA_ESYS, "cannot open %s for writing", path);
    if (f) {
        chrome_tracks(f, g, &ln);
        chrome_segments(f, g);
        chrome_device_items(f, g, &ln);
        chrome_flows(f, g);
        parla__trace_each_event(g->tr, chrome_evict, &(evict_out_t){f, g, &ln});
        fprintf(f, "\n]}\n");
        if (fclose(f) != 0)
            rc = parla__error(PARLA_ESYS, "cannot write %s", path);
    }
    free(ln.base);
    free(ln.n);
    return rc;
}

/* -------------------------------------------------------------------- DOT -- */

static const char *const dot_colors[] = {"lightgray", "lightblue", "palegreen", "lightsalmon", "plum", "khaki",
                                         "lightpink", "paleturquoise", "wheat"};
static const char *const dot_edge_styles[] = {"style=solid", "style=dashed, color=blue", "style=dotted, color=gray40",
                                              "style=bold, color=darkgreen"};

static int write_dot(const tgraph_t *g, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return parla__error(PARLA_ESYS, "cannot open %s for writing", path);
    fprintf(f, "digraph parla {\n  node [shape=box, style=filled];\n");
    for (size_t i = 0; i < g->n_tasks; i++) {
        const tinfo_t *t = &g->tasks[i];
        fprintf(f, "  t%llu [label=", (unsigned long long)t->serial);
        char label[320];
        snprintf(label, sizeof label, "%s\n%s %.3f ms", t->name, device_name(g, t->device),
                 (double)(t->end - t->start) / 1e6);
        dot_string(f, label);
        fprintf(f, ", fillcolor=%s%s];\n", dot_colors[(t->device < 0 ? 0 : t->device) % 9],
                t->critical ? ", color=red, penwidth=3" : "");
    }
    for (size_t e = 0; e < g->n_edges; e++) {
        const tinfo_t *p = parla__trace_find(g, g->edges[e].pred);
        const tinfo_t *s = parla__trace_find(g, g->edges[e].succ);
        if (!p || !s)
            continue;
        int kind = g->edges[e].kind >= 0 && g->edges[e].kind < 4 ? g->edges[e].kind : 0;
        bool crit = s->critical && s->crit_prev == p->serial;
        fprintf(f, "  t%llu -> t%llu [%s%s];\n", (unsigned long long)p->serial, (unsigned long long)s->serial,
                dot_edge_styles[kind], crit ? ", color=red, penwidth=2.5" : "");
    }
    /* The legend: devices' colours, the critical path, the kinds of edges. */
    fprintf(f, "  subgraph cluster_legend {\n    label=\"legend\"; fontsize=10; style=rounded;\n");
    for (int d = 0; d < g->meta->n_devices; d++)
        fprintf(f, "    legend_d%d [label=\"task on %s\", fillcolor=%s];\n", d, g->meta->devices[d].name,
                dot_colors[d % 9]);
    fprintf(f, "    legend_crit [label=\"critical path\", fillcolor=white, color=red, penwidth=3];\n");
    for (int k = 0; k < 4; k++)
        fprintf(f,
                "    legend_e%d [label=\"\", shape=point]; legend_f%d [label=\"%s\", shape=plaintext, style=\"\"];\n"
                "    legend_e%d -> legend_f%d [%s];\n",
                k, k, edge_names[k], k, k, dot_edge_styles[k]);
    fprintf(f, "  }\n}\n");
    if (fclose(f) != 0)
        return parla__error(PARLA_ESYS, "cannot write %s", path);
    return 0;
}

/* ---------------------------------------------------------------- summary -- */

/* Seconds device d was busy: the time bodies ran there, as a union per worker
 * on the CPU (a body that waits and runs others counts once) and per GPU
 * (bodies side by side on one device count once); suspended time is not busy.
 * order: the segments by device, worker on the CPU, start. */
static double device_busy(const tgraph_t *g, const size_t *order, int d)
{
    double busy = 0;
    uint64_t cur_lo = 0, cur_hi = 0;
    int cur_worker = INT32_MIN;
    for (size_t k = 0; k < g->n_segs; k++) {
        const tseg_t *s = &g->segs[order[k]];
        if (s->device != d)
            continue;
        if ((d == 0 && s->worker != cur_worker) || s->start > cur_hi) {
            busy += (double)(cur_hi - cur_lo) * 1e-9;
            cur_worker = s->worker;
            cur_lo = s->start;
            cur_hi = s->end;
        } else if (s->end > cur_hi) {
            cur_hi = s->end;
        }
    }
    return busy + (double)(cur_hi - cur_lo) * 1e-9;
}

/* The critical path's tasks, last first, at most 8 of them. */
static void summary_critical(const tgraph_t *g, sbuf_t *sb, double wall)
{
    sb_printf(sb, "critical path: %zu tasks, %.3f ms of task time (%.1f%% of the run): ", g->crit_tasks,
              g->crit_time * 1e3, wall > 0 ? 100.0 * g->crit_time / wall : 0.0);
    size_t shown = 0;
    uint64_t prev_task = UINT64_MAX;
    for (int64_t k = g->crit_last; k >= 0 && shown < 8; k = g->segs[k].prev) {
        if (g->segs[k].serial == prev_task)
            continue;
        prev_task = g->segs[k].serial;
        sb_printf(sb, "%s%s", shown ? " <- " : "", g->tasks[g->segs[k].task].name);
        shown++;
    }
    if (g->crit_tasks > 8)
        sb_printf(sb, " <- ... (%zu more)", g->crit_tasks - 8);
    sb_printf(sb, "\n");
}

static int write_summary(const tgraph_t *g, sbuf_t *sb)
{
    size_t *order = malloc((g->n_segs ? g->n_segs : 1) * sizeof *order);
    if (!order)
        return PARLA_ENOMEM;
    for (size_t i = 0; i < g->n_segs; i++)
        order[i] = i;
    qsort_r(order, g->n_segs, sizeof *order, cmp_seg_dws, g->segs);
    double wall = (double)g->span * 1e-9;
    sb_printf(sb, "Parla run: %zu tasks in %.3f ms (first task start to last task end), %zu copies\n", g->n_tasks,
              (double)g->span * 1e-6, g->n_copies);
    sb_printf(sb, "%-10s %8s %8s %14s %14s %10s\n", "device", "tasks", "busy%", "bytes in", "bytes out", "evictions");
    for (int d = 0; d < g->meta->n_devices; d++) {
        const parla__trace_device_t *dev = &g->meta->devices[d];
        size_t count = 0;
        for (size_t i = 0; i < g->n_tasks; i++)
            count += g->tasks[i].device == d;
        double busy = device_busy(g, order, d);
        /* The CPU's capacity is all its workers; a GPU's is one device. */
        double cap = d == 0 ? (double)g->meta->n_workers : 1.0;
        sb_printf(sb, "%-10s %8zu %7.1f%% %14llu %14llu %10llu\n", dev->name, count,
                  wall > 0 ? 100.0 * busy / (wall * cap) : 0.0, (unsigned long long)dev->bytes_in,
                  (unsigned long long)dev->bytes_out, (unsigned long long)dev->evictions);
    }
    if (g->crit_last >= 0)
        summary_critical(g, sb, wall);
    free(order);
    return 0;
}

/* ------------------------------------------------------------------------ */

int parla__trace_export(const parla__trace_t *tr, const parla__trace_meta_t *meta, const char *chrome,
                        const char *dot, char *summary, size_t cap)
{
    tgraph_t g = {.tr = tr, .meta = meta, .t0 = parla__trace_start(tr), .crit_last = -1};
    int rc = parla__trace_gather(tr, &g);
    if (rc == 0)
        rc = parla__trace_merge_segments(&g);
    if (rc == 0)
        rc = parla__trace_critical_path(&g);
    /* A file that cannot be written stops the files after it; the summary is
     * still filled. */
    if (rc == 0 && chrome)
        rc = write_chrome(&g, chrome);
    if (rc == 0 && dot)
        rc = write_dot(&g, dot);
    if (rc != PARLA_ENOMEM && summary && cap > 0) {
        int src = write_summary(&g, &(sbuf_t){summary, cap, 0});
        if (rc == 0)
            rc = src;
    }
    parla__trace_graph_free(&g);
    if (rc == PARLA_ENOMEM)
        return parla__error(rc, "parla_trace_write: out of memory");
    return rc;
}

