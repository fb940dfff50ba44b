/* The file format described for tools and tests that look inside a channel:
 * every offset and constant below is taken from the definitions the core
 * itself uses (rr_format.h), so no reader keeps a copy of its own. */
#include "rr_format.h"

#define FIELD(group, type, member, name) \
    {group, name, offsetof(type, member), sizeof(((type *)0)->member)}
#define CONST(group, name, value) {group, name, (uint64_t)(value), 0}

static const rr_format_entry entries[] = {
    /* the header: the fixed geometry, then the hot words on lines of their own */
    FIELD("header", rr_header, geom.magic, "magic"),
    FIELD("header", rr_header, geom.version, "version"),
    FIELD("header", rr_header, geom.variant, "variant"),
    FIELD("header", rr_header, geom.total_size, "total_size"),
    FIELD("header", rr_header, geom.req_cap, "req_cap"),
    FIELD("header", rr_header, geom.resp_slots, "resp_slots"),
    FIELD("header", rr_header, geom.resp_size, "resp_size"),
    FIELD("header", rr_header, geom.slot_stride, "slot_stride"),
    FIELD("header", rr_header, geom.arena_cap, "arena_cap"),
    FIELD("header", rr_header, geom.off_cells, "off_cells"),
    FIELD("header", rr_header, geom.off_slots, "off_slots"),
    FIELD("header", rr_header, geom.off_arena, "off_arena"),
    FIELD("header", rr_header, geom.off_bells, "off_bells"),
    FIELD("header", rr_header, geom.codec, "codec"),
    FIELD("header", rr_header, head, "head"),
    FIELD("header", rr_header, tail, "tail"),
    FIELD("header", rr_header, lock, "lock"),
    FIELD("header", rr_header, seen_head, "seen_head"),
    FIELD("header", rr_header, seen_first, "seen_first"),
    FIELD("header", rr_header, not_empty.seq, "not_empty_seq"),
    FIELD("header", rr_header, not_empty.waiters, "not_empty_waiters"),
    FIELD("header", rr_header, not_full.seq, "not_full_seq"),
    FIELD("header", rr_header, not_full.waiters, "not_full_waiters"),
    FIELD("header", rr_header, slot_free.seq, "slot_free_seq"),
    FIELD("header", rr_header, slot_free.waiters, "slot_free_waiters"),
    FIELD("header", rr_header, send_full, "send_full"),
    FIELD("header", rr_header, recv_empty, "recv_empty"),
    FIELD("header", rr_header, recoveries, "recoveries"),
    FIELD("header", rr_header, last_sweep, "last_sweep"),
    FIELD("header", rr_header, pins, "pins"),
    FIELD("header", rr_header, pin, "pin"),
    CONST("header", "arena_pins", RR_ARENA_PINS),
    /* an arena pin (header.pin holds arena_pins of them) */
    FIELD("pin", rr_pin, owner, "owner"),
    FIELD("pin", rr_pin, beg, "beg"),
    CONST("pin", "size", sizeof(rr_pin)),
    /* a Str request cell (entries of up to str_inline bytes lie in `small`) */
    FIELD("str_cell", rr_str_cell, mark, "mark"),
    FIELD("str_cell", rr_str_cell, beg, "beg"),
    FIELD("str_cell", rr_str_cell, len, "len"),
    FIELD("str_cell", rr_str_cell, flags, "flags"),
    FIELD("str_cell", rr_str_cell, id, "id"),
    FIELD("str_cell", rr_str_cell, small, "small"),
    /* an Int request cell */
    FIELD("int_cell", rr_int_cell, turn, "turn"),
    FIELD("int_cell", rr_int_cell, value, "value"),
    FIELD("int_cell", rr_int_cell, id, "id"),
    /* a response slot's header (a Str reply over slot_inline bytes follows it) */
    FIELD("slot", rr_slot, ctl, "ctl"),
    FIELD("slot", rr_slot, owner, "owner"),
    FIELD("slot", rr_slot, waiters, "waiters"),
    FIELD("slot", rr_slot, len, "len"),
    FIELD("slot", rr_slot, flags, "flags"),
    FIELD("slot", rr_slot, bell, "bell"),
    FIELD("slot", rr_slot, value, "value"),
    FIELD("slot", rr_slot, small, "small"),
    FIELD("slot", rr_slot, worker, "worker"),
    FIELD("slot", rr_slot, replies, "replies"),
    /* a bell */
    FIELD("bell", rr_bell, seq, "seq"),
    FIELD("bell", rr_bell, waiters, "waiters"),
    FIELD("bell", rr_bell, owner, "owner"),
    /* sizes and fixed numbers */
    CONST("file", "magic", RR_MAGIC),
    CONST("file", "version", RR_FORMAT_VERSION),
    CONST("file", "line", RR_LINE),
    CONST("file", "header_size", RR_HEADER_SIZE),
    CONST("file", "cell_size", sizeof(rr_str_cell)),
    CONST("file", "slot_header", RR_SLOT_HEADER),
    CONST("file", "slot_inline", RR_SLOT_INLINE),
    CONST("file", "str_inline", RR_STR_INLINE),
    CONST("file", "bells", RR_BELLS),
    CONST("file", "bell_size", sizeof(rr_bell)),
    CONST("file", "page", RR_PAGE), /* the file's size is a multiple of it */
    CONST("file", "codec_max", RR_CODEC_MAX),
    CONST("variant", "str", RR_VARIANT_STR),
    CONST("variant", "int", RR_VARIANT_INT),
    /* a slot's ctl word: generation << gen_shift | (generation << state_bits | state) */
    CONST("ctl", "gen_shift", RR_CTL_GEN_SHIFT),
    CONST("ctl", "state_bits", RR_CTL_STATE_BITS),
    /* a cell's and a slot's flags */
    CONST("flag", "utf8", RR_FLAG_UTF8),
    CONST("flag", "error", RR_FLAG_ERROR),
    CONST("slot_state", "free", RR_SLOT_FREE),
    CONST("slot_state", "acquired", RR_SLOT_ACQUIRED),
    CONST("slot_state", "writing", RR_SLOT_WRITING),
    CONST("slot_state", "ready", RR_SLOT_READY),
    CONST("slot_state", "reading", RR_SLOT_READING),
    CONST("slot_state", "pinned", RR_SLOT_PINNED),
    CONST("slot_state", "cancelled", RR_SLOT_CANCELLED),
    /* the worker record: generation << gen_shift | writing << writing_shift
     * | start << pid_bits | pid */
    CONST("worker", "gen_bits", RR_WORKER_GEN_BITS),
    CONST("worker", "start_bits", RR_WORKER_START_BITS),
    CONST("worker", "pid_bits", RR_WORKER_PID_BITS),
    CONST("worker", "writing_shift", RR_WORKER_WRITING_SHIFT),
    CONST("worker", "gen_shift", RR_WORKER_GEN_SHIFT),
    /* a slot's owner: generation tag << tag_shift | start << pid_bits | pid,
     * with the worker record's start and pid bits */
    CONST("owner", "tag_shift", RR_OWNER_TAG_SHIFT),
    CONST("owner", "tag_bits", RR_OWNER_TAG_BITS),
    /* an Int cell's turn: lap << lap_shift | state << who_bits | who, where
     * who = start << worker pid_bits | pid */
    CONST("turn", "lap_shift", RR_TURN_LAP_SHIFT),
    CONST("turn", "who_bits", RR_TURN_WHO_BITS),
    CONST("turn_state", "free", RR_TURN_FREE),
    CONST("turn_state", "claimed", RR_TURN_CLAIMED),
    CONST("turn_state", "full", RR_TURN_FULL),
    CONST("turn_state", "taken", RR_TURN_TAKEN),
    /* an identity word (the Str lock's holder, a bell's owner): start << 32 | pid;
     * the lock word adds its waiters flag */
    CONST("ident", "pid_bits", RR_IDENT_PID_BITS),
    CONST("ident", "pid_limit", RR_PID_LIMIT),
    CONST("ident", "lock_waiters", RR_LOCK_WAITERS),
};

const rr_format_entry *rr_format_describe(size_t *n)
{
    *n = sizeof entries / sizeof entries[0];
    return entries;
}
