/* The file format's numbers the C tests use, looked up in the core's exported
 * description (rr_format_describe), the one every reader derives from. */
#ifndef RR_TEST_FORMAT_INFO_H
#define RR_TEST_FORMAT_INFO_H

#include "reqrep.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct rr_format_info {
    uint64_t magic;
    uint32_t version, header_size, cell_size, slot_header;
    uint32_t off_head, off_tail, off_lock, off_recoveries; /* in the header */
    uint32_t off_bells, bells;                             /* after the header */
    uint32_t slot_off_ctl, slot_off_owner, slot_off_worker, slot_off_len, slot_off_flags,
        slot_inline;
    uint32_t str_cell_off_mark, str_cell_off_beg, str_cell_off_len, str_cell_off_flags,
        str_cell_off_id, str_inline;
    uint32_t worker_gen_bits, worker_start_bits, worker_pid_bits, worker_writing_shift,
        worker_gen_shift, owner_tag_shift, turn_who_bits;
} rr_format_info;

static inline uint64_t rr_format_lookup(const char *group, const char *name)
{
    size_t n;
    const rr_format_entry *e = rr_format_describe(&n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(e[i].group, group) == 0 && strcmp(e[i].name, name) == 0)
            return e[i].value;
    fprintf(stderr, "format: no %s.%s\n", group, name);
    abort();
}

static inline void rr_format(rr_format_info *f)
{
#define F(g, n) (uint32_t) rr_format_lookup(g, n)
    *f = (rr_format_info){
        .magic = rr_format_lookup("file", "magic"),
        .version = F("file", "version"),
        .header_size = F("file", "header_size"),
        .cell_size = F("file", "cell_size"),
        .slot_header = F("file", "slot_header"),
        .off_head = F("header", "head"),
        .off_tail = F("header", "tail"),
        .off_lock = F("header", "lock"),
        .off_recoveries = F("header", "recoveries"),
        .off_bells = F("file", "header_size"),
        .bells = F("file", "bells"),
        .slot_off_ctl = F("slot", "ctl"),
        .slot_off_owner = F("slot", "owner"),
        .slot_off_worker = F("slot", "worker"),
        .slot_off_len = F("slot", "len"),
        .slot_off_flags = F("slot", "flags"),
        .slot_inline = F("file", "slot_inline"),
        .str_cell_off_mark = F("str_cell", "mark"),
        .str_cell_off_beg = F("str_cell", "beg"),
        .str_cell_off_len = F("str_cell", "len"),
        .str_cell_off_flags = F("str_cell", "flags"),
        .str_cell_off_id = F("str_cell", "id"),
        .str_inline = F("file", "str_inline"),
        .worker_gen_bits = F("worker", "gen_bits"),
        .worker_start_bits = F("worker", "start_bits"),
        .worker_pid_bits = F("worker", "pid_bits"),
        .worker_writing_shift = F("worker", "writing_shift"),
        .worker_gen_shift = F("worker", "gen_shift"),
        .owner_tag_shift = F("owner", "tag_shift"),
        .turn_who_bits = F("turn", "who_bits"),
    };
#undef F
}

#endif
