/* scan.c: the allocation-free msgpack walk (see scan.h). Iterative: an
 * explicit stack of "elements left" per open container, so no input can
 * make it recurse. */
#include "scan.h"

#include <string.h>

static const char *const texts[] = {
    [JQ_SCAN_OK] = "valid",
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
    return (unsigned)s < sizeof texts / sizeof *texts ? texts[s] : "invalid";
}

static uint64_t be(const unsigned char *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        /* ASCII eight bytes at a time: the common case. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i == n)
            break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false; /* a continuation byte, 0xc0/0xc1 or above 0xf4 */
        }
        if (n - i - 1 < k)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

typedef enum { K_SCALAR, K_STR, K_BIN, K_ARRAY, K_MAP } kind_t;

bool jq_scan(const void *data, size_t len, const jq_scan_limits_t *limits,
             jq_scan_result_t *out)
{
    const unsigned char *p = data;
    size_t max_depth = limits && limits->max_depth ? limits->max_depth : JOBQ_SCAN_MAX_DEPTH;
    size_t max_objects = limits && limits->max_objects ? limits->max_objects : JOBQ_SCAN_MAX_OBJECTS;
    bool utf8 = limits && limits->check_utf8;
    if (max_depth > JOBQ_SCAN_MAX_DEPTH)
        max_depth = JOBQ_SCAN_MAX_DEPTH;
    memset(out, 0, sizeof *out);
    /* left[d]: elements still to read in the container open at level d;
     * level 0 is the one value the buffer holds. */
    uint64_t left[JOBQ_SCAN_MAX_DEPTH + 2];
    size_t level = 0, pos = 0;
    left[0] = 1;
    bool root_map = false, want_id = false;
    jq_scan_status_t st = JQ_SCAN_OK;
    for (;;) {
        while (left[level] == 0) {
            if (level == 0)
                goto done;
            level--;
        }
        /* A key of the top-level map: the elements read so far are even. */
        bool is_key = root_map && level == 1 && left[1] % 2 == 0;
        bool is_id_value = root_map && level == 1 && !is_key && want_id;
        want_id = false;
        left[level]--;
        if (++out->objects > max_objects) {
            st = JQ_SCAN_TOO_MANY;
            break;
        }
        if (pos >= len) {
            st = JQ_SCAN_TRUNCATED;
            break;
        }
        size_t at = pos;
        unsigned char c = p[pos++];
        kind_t kind = K_SCALAR;
        uint64_t n = 0;      /* length of a str/bin/ext, count of an array/map */
        unsigned lenbytes = 0, fixed = 0;
        if (c <= 0x7f || c >= 0xe0) {
            if (is_id_value && c <= 0x7f) {
                out->has_id = true;
                out->id = c;
            }
        } else if (c >= 0x80 && c <= 0x8f) {
            kind = K_MAP;
            n = c & 0x0f;
        } else if (c >= 0x90 && c <= 0x9f) {
            kind = K_ARRAY;
            n = c & 0x0f;
        } else if (c >= 0xa0 && c <= 0xbf) {
            kind = K_STR;
            n = c & 0x1f;
        } else {
            switch (c) {
            case 0xc0: case 0xc2: case 0xc3: break;              /* nil, false, true */
            case 0xc1: st = JQ_SCAN_BAD_BYTE; break;
            case 0xc4: kind = K_BIN; lenbytes = 1; break;
            case 0xc5: kind = K_BIN; lenbytes = 2; break;
            case 0xc6: kind = K_BIN; lenbytes = 4; break;
            case 0xc7: kind = K_BIN; lenbytes = 1; fixed = 1; break; /* ext: + type byte */
            case 0xc8: kind = K_BIN; lenbytes = 2; fixed = 1; break;
            case 0xc9: kind = K_BIN; lenbytes = 4; fixed = 1; break;
            case 0xca: fixed = 4; break;
            case 0xcb: fixed = 8; break;
            case 0xcc: fixed = 1; break;
            case 0xcd: fixed = 2; break;
            case 0xce: fixed = 4; break;
            case 0xcf: fixed = 8; break;
            case 0xd0: fixed = 1; break;
            case 0xd1: fixed = 2; break;
            case 0xd2: fixed = 4; break;
            case 0xd3: fixed = 8; break;
            case 0xd4: fixed = 2; break; /* fixext 1..16: type + data */
            case 0xd5: fixed = 3; break;
            case 0xd6: fixed = 5; break;
            case 0xd7: fixed = 9; break;
            case 0xd8: fixed = 17; break;
            case 0xd9: kind = K_STR; lenbytes = 1; break;
            case 0xda: kind = K_STR; lenbytes = 2; break;
            case 0xdb: kind = K_STR; lenbytes = 4; break;
            case 0xdc: kind = K_ARRAY; lenbytes = 2; break;
            case 0xdd: kind = K_ARRAY; lenbytes = 4; break;
            case 0xde: kind = K_MAP; lenbytes = 2; break;
            case 0xdf: kind = K_MAP; lenbytes = 4; break;
            }
            if (st != JQ_SCAN_OK) {
                out->offset = at;
                break;
            }
            if (len - pos < lenbytes) {
                st = JQ_SCAN_TRUNCATED;
                break;
            }
            if (lenbytes) {
                n = be(p + pos, lenbytes);
                pos += lenbytes;
            }
            if (kind == K_SCALAR) {
                if (len - pos < fixed) {
                    st = JQ_SCAN_TRUNCATED;
                    break;
                }
                /* An unsigned int, or a signed one that is not negative. */
                if (is_id_value && c >= 0xcc && c <= 0xd3) {
                    uint64_t v = be(p + pos, fixed);
                    bool neg = c >= 0xd0 && (p[pos] & 0x80);
                    if (!neg) {
                        out->has_id = true;
                        out->id = v;
                    }
                }
                pos += fixed;
            } else if (kind == K_BIN) {
                n += fixed; /* an ext's type byte */
            }
        }
        if (kind == K_STR || kind == K_BIN) {
            if (n > len - pos) {
                st = JQ_SCAN_TRUNCATED;
                break;
            }
            if (kind == K_STR && utf8 && !utf8_valid(p + pos, (size_t)n)) {
                out->offset = at;
                st = JQ_SCAN_BAD_UTF8;
                break;
            }
            if (is_key && n == 2 && p[pos] == 'i' && p[pos + 1] == 'd')
                want_id = true;
            pos += (size_t)n;
        } else if (kind == K_ARRAY || kind == K_MAP) {
            uint64_t need = kind == K_MAP ? 2 * n : n; /* n < 2^32: no overflow */
            if (need > len - pos) {
                out->offset = at;
                st = JQ_SCAN_BAD_COUNT;
                break;
            }
            if (level + 1 > max_depth) {
                out->offset = at;
                st = JQ_SCAN_TOO_DEEP;
                break;
            }
            if (level == 0 && kind == K_MAP)
                root_map = true;
            left[++level] = need;
            if (level > out->depth)
                out->depth = level;
        }
    }
    out->status = st;
    if (st == JQ_SCAN_TRUNCATED)
        out->offset = len;
    return false;
done:
    if (pos != len) {
        out->status = JQ_SCAN_TRAILING;
        out->offset = pos;
        return false;
    }
    out->status = JQ_SCAN_OK;
    return true;
}
