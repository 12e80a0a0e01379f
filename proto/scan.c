/* scan.c: the allocation-free msgpack pre-scan (see scan.h).
 *
 * One pass over the bytes, iterative: an explicit stack holds, per open
 * non-empty container, the items (elements, or keys and values) still to
 * read, so no input can make it recurse and the stack is bounded by the
 * depth limit. Every length is compared with the bytes that remain as
 * `n > len - pos` (pos <= len always holds), never `pos + n > len`, which
 * could wrap. Peer input is validated, never asserted. */
#include "scan.h"

#include <string.h>

static const char *const status_texts[] = {
    [JQ_SCAN_OK] = "the request is well-formed msgpack",
    [JQ_SCAN_TRUNCATED] = "the request ends inside a msgpack value",
    [JQ_SCAN_TRAILING] = "bytes follow the request's msgpack value",
    [JQ_SCAN_BAD_BYTE] = "the request holds the byte 0xc1, which msgpack never uses",
    [JQ_SCAN_TOO_DEEP] = "the request nests arrays and maps too deeply",
    [JQ_SCAN_TOO_MANY] = "the request holds too many msgpack objects",
    [JQ_SCAN_BAD_COUNT] = "a container declares more elements than the request holds",
    [JQ_SCAN_BAD_UTF8] = "a string in the request is not valid UTF-8",
};

const char *jq_scan_status_text(jq_scan_status_t s)
{
    if ((unsigned)s < sizeof status_texts / sizeof *status_texts && status_texts[s])
        return status_texts[s];
    return "the request could not be scanned";
}

/* Big-endian loads: msgpack lengths and integers are big-endian whatever
 * the host. Callers have checked the bytes are there. */
static inline uint32_t load16(const unsigned char *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static inline uint32_t load32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t load64(const unsigned char *p)
{
    return (uint64_t)load32(p) << 32 | load32(p + 4);
}

#define ASCII_HIGH_BITS UINT64_C(0x8080808080808080)

/* Offset of the first byte of the first ill-formed sequence in s[0..n), or
 * n when it is all UTF-8. Well-formed means Unicode's table 3-7: no
 * overlong forms (C0, C1, E0 80..9F, F0 80..8F), no surrogates (ED A0..BF),
 * nothing above U+10FFFF (F4 90.., F5..FF), no stray continuation byte, no
 * sequence cut by the end of the string. NUL is plain ASCII. */
static size_t utf8_bad_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* Request strings are nearly all ASCII: test 8 bytes at a time. */
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, sizeof w);
            if (w & ASCII_HIGH_BITS) {
                while (s[i] < 0x80) /* a high byte is among these 8 */
                    i++;
                break;
            }
            i += 8;
        }
        if (i == n)
            break;
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t more;                  /* continuation bytes after the lead */
        unsigned lo = 0x80, hi = 0xbf; /* range of the first of them */
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            more = 2;
            if (c == 0xe0)
                lo = 0xa0; /* below: overlong */
            else if (c == 0xed)
                hi = 0x9f; /* above: surrogates */
        } else if (c >= 0xf0 && c <= 0xf4) {
            more = 3;
            if (c == 0xf0)
                lo = 0x90; /* below: overlong */
            else if (c == 0xf4)
                hi = 0x8f; /* above: beyond U+10FFFF */
        } else {
            return i; /* continuation byte, C0/C1 (overlong), F5..FF */
        }
        if (more > n - i - 1)
            return i;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= more; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
        i += more + 1;
    }
    return n;
}

/* Fixints, nil, false and true: a whole object in one byte. */
static inline bool one_byte_object(unsigned b)
{
    return (unsigned char)(b + 0x20) < 0xa0 /* 0x00..0x7f, 0xe0..0xff */ ||
           b == 0xc0 || b == 0xc2 || b == 0xc3;
}

/* The "id" of the top-level map, tracked while its keys go by. */
typedef enum {
    ID_NOT_YET,  /* no "id" key read so far */
    ID_VALUE,    /* the last key was "id": the next object is its value */
    ID_FINISHED, /* first "id" value read (or the value is not a map) */
} id_state_t;

bool jq_scan(const void *data, size_t len, const jq_scan_limits_t *limits,
             jq_scan_result_t *out)
{
    const unsigned char *p = data;
    size_t max_depth = JOBQ_SCAN_MAX_DEPTH, max_objects = JOBQ_SCAN_MAX_OBJECTS;
    bool check_utf8 = false;
    if (limits) {
        if (limits->max_depth && limits->max_depth < JOBQ_SCAN_MAX_DEPTH)
            max_depth = limits->max_depth;
        if (limits->max_objects)
            max_objects = limits->max_objects;
        check_utf8 = limits->check_utf8;
    }
    memset(out, 0, sizeof *out);

    /* left[k]: items still to read in the open container at level k + 1.
     * Only non-empty containers are pushed, so `top` is also the nesting
     * level of the next object, and top < max_depth <= the array's size
     * whenever something is pushed. */
    size_t left[JOBQ_SCAN_MAX_DEPTH];
    size_t top = 0, pos = 0, objects = 0, deepest = 0;
    id_state_t id_state = ID_FINISHED; /* until the value proves a map */
    jq_scan_status_t st = JQ_SCAN_OK;
    size_t at = 0; /* where st was found */

    for (;;) {
        /* Big requests are mostly long runs of one-byte objects inside the
         * innermost container (arrays of small ints, flags, nils): take a
         * run at once, without the general dispatch below. Not among the
         * top-level map's items while its "id" is looked for. */
        if (top && (top > 1 || id_state == ID_FINISHED)) {
            size_t run = left[top - 1], k = 0;
            if (run > len - pos)
                run = len - pos;
            if (run > max_objects - objects) /* objects <= max_objects here */
                run = max_objects - objects;
            while (k < run && one_byte_object(p[pos + k]))
                k++;
            if (k) {
                pos += k;
                objects += k;
                left[top - 1] -= k;
                if (left[top - 1] == 0) { /* as at `complete` below */
                    while (top && left[top - 1] == 0)
                        top--;
                    if (top == 0)
                        break;
                    continue;
                }
            }
        }

        size_t start = pos;
        if (pos == len) {
            st = JQ_SCAN_TRUNCATED;
            at = pos;
            goto stop;
        }
        if (++objects > max_objects) {
            st = JQ_SCAN_TOO_MANY;
            at = start;
            goto stop;
        }
        /* Among the top-level map's items, a key comes when an even number
         * remains (2n at the first key). */
        bool is_key = false, is_id = false;
        if (top) {
            if (top == 1 && id_state != ID_FINISHED) {
                is_key = (left[0] & 1) == 0;
                if (!is_key && id_state == ID_VALUE) {
                    is_id = true;
                    id_state = ID_FINISHED; /* only the first "id" counts */
                }
            }
            left[top - 1]--;
        }

        unsigned b = p[pos++];
        uint64_t n = 0; /* str/bin/ext payload bytes, or container items */
        bool is_str = false;
        if (b <= 0x7f) { /* positive fixint */
            if (is_id) {
                out->has_id = true;
                out->id = b;
            }
            goto complete;
        }
        if (b >= 0xe0) /* negative fixint */
            goto complete;
        if (b <= 0x8f) { /* fixmap */
            n = 2 * (uint64_t)(b & 0x0f);
            goto container;
        }
        if (b <= 0x9f) { /* fixarray */
            n = b & 0x0f;
            goto container;
        }
        if (b <= 0xbf) { /* fixstr */
            n = b & 0x1f;
            is_str = true;
            goto payload;
        }

        /* 0xc0..0xdf: the rest of the type bytes. */
        unsigned hdr; /* length or value bytes after the type byte */
        switch (b) {
        case 0xc0: /* nil */
        case 0xc2: /* false */
        case 0xc3: /* true */
            goto complete;
        case 0xc1:
            st = JQ_SCAN_BAD_BYTE;
            at = start;
            goto stop;
        case 0xc4: /* bin 8, 16, 32 */
        case 0xc5:
        case 0xc6:
        case 0xd9: /* str 8, 16, 32 */
        case 0xda:
        case 0xdb:
            hdr = b <= 0xc6 ? 1u << (b - 0xc4) : 1u << (b - 0xd9);
            is_str = b >= 0xd9;
            if (hdr > len - pos)
                goto truncated;
            n = hdr == 1 ? p[pos] : hdr == 2 ? load16(p + pos) : load32(p + pos);
            pos += hdr;
            goto payload;
        case 0xc7: /* ext 8, 16, 32: length, type byte, data */
        case 0xc8:
        case 0xc9:
            hdr = 1u << (b - 0xc7);
            if (hdr > len - pos)
                goto truncated;
            n = hdr == 1 ? p[pos] : hdr == 2 ? load16(p + pos) : load32(p + pos);
            n += 1; /* the type byte; n < 2^32 + 1 in 64 bits */
            pos += hdr;
            goto payload;
        case 0xca: /* float 32 */
            n = 4;
            goto payload;
        case 0xcb: /* float 64 */
            n = 8;
            goto payload;
        case 0xcc: /* uint 8, 16, 32, 64 */
        case 0xcd:
        case 0xce:
        case 0xcf:
        case 0xd0: /* int 8, 16, 32, 64 */
        case 0xd1:
        case 0xd2:
        case 0xd3: {
            hdr = 1u << (b & 0x03);
            if (hdr > len - pos)
                goto truncated;
            if (is_id) {
                const unsigned char *v = p + pos;
                uint64_t u = hdr == 1 ? v[0]
                             : hdr == 2 ? load16(v)
                             : hdr == 4 ? load32(v)
                                        : load64(v);
                /* A signed int counts when its sign bit is clear. */
                if (b <= 0xcf || !(v[0] & 0x80)) {
                    out->has_id = true;
                    out->id = u;
                }
            }
            pos += hdr;
            goto complete;
        }
        case 0xd4: /* fixext 1, 2, 4, 8, 16: type byte and data */
        case 0xd5:
        case 0xd6:
        case 0xd7:
        case 0xd8:
            n = 1 + ((uint64_t)1 << (b - 0xd4));
            goto payload;
        case 0xdc: /* array 16, 32 */
        case 0xdd:
            hdr = b == 0xdc ? 2 : 4;
            if (hdr > len - pos)
                goto truncated;
            n = hdr == 2 ? load16(p + pos) : load32(p + pos);
            pos += hdr;
            goto container;
        case 0xde: /* map 16, 32: keys and values, 2n < 2^33 in 64 bits */
        case 0xdf:
            hdr = b == 0xde ? 2 : 4;
            if (hdr > len - pos)
                goto truncated;
            n = 2 * (uint64_t)(hdr == 2 ? load16(p + pos) : load32(p + pos));
            pos += hdr;
            goto container;
        default: /* unreachable: every byte 0xc0..0xdf is a case */
            st = JQ_SCAN_BAD_BYTE;
            at = start;
            goto stop;
        }

    payload:
        /* n bytes of str, bin, ext or fixed-width scalar follow. */
        if (n > len - pos)
            goto truncated;
        if (is_str) {
            if (check_utf8) {
                size_t bad = utf8_bad_at(p + pos, (size_t)n);
                if (bad != n) {
                    st = JQ_SCAN_BAD_UTF8;
                    at = pos + bad;
                    goto stop;
                }
            }
            if (is_key && id_state == ID_NOT_YET && n == 2 && p[pos] == 'i' &&
                p[pos + 1] == 'd')
                id_state = ID_VALUE;
        }
        pos += (size_t)n;
        goto complete;

    container:
        /* n items follow, each at least one byte: anything more than the
         * bytes left can never complete, and is what would make msgpack-c
         * reserve memory out of all proportion to the request. */
        if (n > len - pos) {
            st = JQ_SCAN_BAD_COUNT;
            at = start;
            goto stop;
        }
        if (top >= max_depth) {
            st = JQ_SCAN_TOO_DEEP;
            at = start;
            goto stop;
        }
        if (top + 1 > deepest)
            deepest = top + 1;
        if (start == 0 && b >= 0x80 && (b <= 0x8f || b >= 0xde))
            id_state = ID_NOT_YET; /* the value is a map */
        if (n) {
            left[top++] = (size_t)n;
            continue;
        }
        /* An empty container is complete at once. */

    complete:
        while (top && left[top - 1] == 0)
            top--;
        if (top == 0)
            break;
        continue;

    truncated:
        st = JQ_SCAN_TRUNCATED;
        at = start;
        goto stop;
    }

    if (pos != len) {
        st = JQ_SCAN_TRAILING;
        at = pos;
    }
stop:
    out->status = st;
    out->offset = st == JQ_SCAN_OK ? 0 : at;
    out->objects = objects;
    out->depth = deepest;
    return st == JQ_SCAN_OK;
}
