/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QMP's JSON reader (a lexer, a streamer that cuts the token stream into
 * top-level values by counting brackets, and a recursive-descent parser
 * into json-glib nodes).  See include/monitor/json-stream.h.
 *
 * Our own parser rather than json-glib's because QMP needs what a
 * document parser does not give: values cut out of an endless stream,
 * single-quoted strings, QEMU's error texts, and limits that hold before
 * memory is spent.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "monitor/json-stream.h"
#include "blockdev/registry.h"

typedef enum {
    TOK_LCURLY, TOK_RCURLY, TOK_LSQUARE, TOK_RSQUARE, TOK_COLON, TOK_COMMA,
    TOK_STRING, TOK_NUMBER, TOK_KEYWORD,
} TokType;

typedef struct Token {
    TokType type;
    char *text;              /* strings: with their quotes and escapes */
} Token;

typedef enum {
    LEX_IDLE, LEX_STRING, LEX_STRING_ESC, LEX_NUMBER, LEX_KEYWORD,
    LEX_DROP_STRING, LEX_DROP_STRING_ESC,
} LexState;

struct JsonStream {
    JsonStreamEmit *emit;
    void *opaque;
    LexState state;
    char quote;
    GString *tok;            /* the token being read */
    GPtrArray *tokens;       /* Token *, of the value being read */
    size_t bytes;            /* of those tokens */
    int depth_curly, depth_square;
};

static void token_free(gpointer p)
{
    Token *t = p;

    g_free(t->text);
    g_free(t);
}

JsonStream *json_stream_new(JsonStreamEmit *emit, void *opaque)
{
    JsonStream *s = g_new0(JsonStream, 1);

    s->emit = emit;
    s->opaque = opaque;
    s->tok = g_string_new(NULL);
    s->tokens = g_ptr_array_new_with_free_func(token_free);
    return s;
}

void json_stream_free(JsonStream *s)
{
    if (s) {
        g_string_free(s->tok, TRUE);
        g_ptr_array_unref(s->tokens);
        g_free(s);
    }
}

static GError *parse_error(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static GError *parse_error(const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    return g_error_new(BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                       "JSON parse error, %s", msg);
}

static void reset_value(JsonStream *s)
{
    g_ptr_array_set_size(s->tokens, 0);
    s->bytes = 0;
    s->depth_curly = s->depth_square = 0;
}

/* ---- the parser: tokens of one value to a node ---- */

typedef struct Parser {
    GPtrArray *tokens;
    guint pos;
    GError *err;
} Parser;

static Token *peek(Parser *p)
{
    return p->pos < p->tokens->len ? p->tokens->pdata[p->pos] : NULL;
}

static Token *next(Parser *p)
{
    Token *t = peek(p);

    if (t) {
        p->pos++;
    }
    return t;
}

static JsonNode *fail(Parser *p, GError *err)
{
    if (!p->err) {
        p->err = err;
    } else {
        g_error_free(err);
    }
    return NULL;
}

static void append_utf8(GString *out, gunichar c)
{
    g_string_append_unichar(out, c);
}

static bool read_hex4(const char *s, gunichar *out)
{
    *out = 0;
    for (int i = 0; i < 4; i++) {
        int v = g_ascii_xdigit_value(s[i]);
        if (v < 0) {
            return false;
        }
        *out = *out * 16 + v;
    }
    return true;
}

/* A string token's text without quotes, escapes decoded. */
static JsonNode *parse_string(Parser *p, Token *t)
{
    g_autoptr(GString) out = g_string_new(NULL);
    const char *s = t->text + 1;
    const char *end = t->text + strlen(t->text) - 1;

    while (s < end) {
        if (*s != '\\') {
            g_string_append_c(out, *s++);
            continue;
        }
        s++;
        switch (*s) {
        case '"': case '\'': case '\\': case '/':
            g_string_append_c(out, *s);
            break;
        case 'b': g_string_append_c(out, '\b'); break;
        case 'f': g_string_append_c(out, '\f'); break;
        case 'n': g_string_append_c(out, '\n'); break;
        case 'r': g_string_append_c(out, '\r'); break;
        case 't': g_string_append_c(out, '\t'); break;
        case 'u': {
            gunichar c, lo;
            if (end - s < 5 || !read_hex4(s + 1, &c)) {
                return fail(p, parse_error("\\u%.*s is not a valid Unicode "
                                           "character",
                                           (int)MIN(4, end - s - 1), s + 1));
            }
            s += 4;
            if (c >= 0xd800 && c < 0xdc00 && end - s >= 7 && s[1] == '\\' &&
                s[2] == 'u' && read_hex4(s + 3, &lo) &&
                lo >= 0xdc00 && lo < 0xe000) {
                c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
                s += 6;
            } else if (c >= 0xd800 && c < 0xe000) {
                return fail(p, parse_error("invalid escape sequence in "
                                           "string"));
            }
            if (c == 0) {
                return fail(p, parse_error("invalid escape sequence in "
                                           "string"));
            }
            append_utf8(out, c);
            break;
        }
        default:
            return fail(p, parse_error("invalid escape sequence in string"));
        }
        s++;
    }
    if (!g_utf8_validate(out->str, out->len, NULL) ||
        memchr(out->str, 0, out->len)) {
        return fail(p, parse_error("invalid UTF-8 sequence in string"));
    }
    return json_node_init_string(json_node_alloc(), out->str);
}

static JsonNode *parse_number(Parser *p, Token *t)
{
    char *end;

    if (!strpbrk(t->text, ".eE")) {
        long long v;
        errno = 0;
        v = strtoll(t->text, &end, 10);
        if (!*end && !errno) {
            return json_node_init_int(json_node_alloc(), v);
        }
    }
    {
        double d = g_ascii_strtod(t->text, &end);
        if (*end) {
            return fail(p, parse_error("invalid number '%s'", t->text));
        }
        return json_node_init_double(json_node_alloc(), d);
    }
}

static JsonNode *parse_value(Parser *p);

/* A member's value or an array's element: `missing` names the failure
 * when the tokens there make no value, as QEMU's parser words it. */
static JsonNode *parse_item(Parser *p, const char *missing)
{
    JsonNode *value;

    if (!peek(p)) {
        return fail(p, parse_error("premature EOI"));
    }
    value = parse_value(p);
    if (!value) {
        fail(p, parse_error("%s", missing));
    }
    return value;
}

/*
 * The token after an item: `close` ends the container (*closed), a comma
 * asks for another item; anything else, or the end of input, fails the
 * parse.  `kind` is the container as QEMU's message names it.
 */
static bool parse_separator(Parser *p, TokType close, const char *kind,
                            bool *closed)
{
    Token *t = next(p);

    if (!t) {
        fail(p, parse_error("premature EOI"));
        return false;
    }
    *closed = t->type == close;
    if (!*closed && t->type != TOK_COMMA) {
        fail(p, parse_error("expected separator in %s", kind));
        return false;
    }
    return true;
}

static JsonNode *parse_object(Parser *p)
{
    JsonObject *obj = json_object_new();
    JsonNode *node = json_node_init_object(json_node_alloc(), obj);
    Token *t = peek(p);

    json_object_unref(obj);
    if (!t) {
        goto eoi;
    }
    if (t->type == TOK_RCURLY) {
        next(p);
        return node;
    }
    for (;;) {
        g_autoptr(JsonNode) key = NULL;
        JsonNode *value;
        bool closed;

        if (!peek(p)) {
            goto eoi;
        }
        /* the key is read as any value first, as QEMU's parser does:
         * "{1: 2}" is a key error, "{"a": 1,}" a missing value */
        key = parse_value(p);
        if (!key) {
            goto err;
        }
        if (!JSON_NODE_HOLDS_VALUE(key) ||
            json_node_get_value_type(key) != G_TYPE_STRING) {
            fail(p, parse_error("key is not a string in object"));
            goto err;
        }
        t = next(p);
        if (!t) {
            goto eoi;
        }
        if (t->type != TOK_COLON) {
            fail(p, parse_error("missing : in object pair"));
            goto err;
        }
        value = parse_item(p, "Missing value in dict");
        if (!value) {
            goto err;
        }
        if (json_object_has_member(obj, json_node_get_string(key))) {
            json_node_unref(value);
            fail(p, parse_error("duplicate key"));
            goto err;
        }
        json_object_set_member(obj, json_node_get_string(key), value);
        if (!parse_separator(p, TOK_RCURLY, "dict", &closed)) {
            goto err;
        }
        if (closed) {
            return node;
        }
    }
eoi:
    fail(p, parse_error("premature EOI"));
err:
    json_node_unref(node);
    return NULL;
}

static JsonNode *parse_array(Parser *p)
{
    JsonArray *arr = json_array_new();
    JsonNode *node = json_node_init_array(json_node_alloc(), arr);
    Token *t = peek(p);

    json_array_unref(arr);
    if (!t) {
        goto eoi;
    }
    if (t->type == TOK_RSQUARE) {
        next(p);
        return node;
    }
    for (;;) {
        JsonNode *value = parse_item(p, "expecting value");
        bool closed;

        if (!value) {
            goto err;
        }
        json_array_add_element(arr, value);
        if (!parse_separator(p, TOK_RSQUARE, "list", &closed)) {
            goto err;
        }
        if (closed) {
            return node;
        }
    }
eoi:
    fail(p, parse_error("premature EOI"));
err:
    json_node_unref(node);
    return NULL;
}

static JsonNode *parse_value(Parser *p)
{
    Token *t = next(p);

    if (!t) {
        return fail(p, parse_error("premature EOI"));
    }
    switch (t->type) {
    case TOK_LCURLY:
        return parse_object(p);
    case TOK_LSQUARE:
        return parse_array(p);
    case TOK_STRING:
        return parse_string(p, t);
    case TOK_NUMBER:
        return parse_number(p, t);
    case TOK_KEYWORD:
        if (!strcmp(t->text, "true") || !strcmp(t->text, "false")) {
            return json_node_init_boolean(json_node_alloc(),
                                          t->text[0] == 't');
        }
        if (!strcmp(t->text, "null")) {
            return json_node_init_null(json_node_alloc());
        }
        return fail(p, parse_error("invalid keyword '%s'", t->text));
    default:
        return fail(p, parse_error("expecting value"));
    }
}

static void emit_value(JsonStream *s)
{
    Parser p = { s->tokens, 0, NULL };
    JsonNode *node = parse_value(&p);

    if (!node && !p.err) {
        p.err = parse_error("expecting value");
    }
    reset_value(s);
    s->emit(node, p.err, s->opaque);
}

static void emit_error(JsonStream *s, GError *err)
{
    reset_value(s);
    s->emit(NULL, err, s->opaque);
}

/* ---- the streamer: tokens in, whole values out ---- */

static void push_token(JsonStream *s, TokType type, const char *text,
                       size_t len)
{
    Token *t;

    switch (type) {
    case TOK_LCURLY: s->depth_curly++; break;
    case TOK_RCURLY: s->depth_curly--; break;
    case TOK_LSQUARE: s->depth_square++; break;
    case TOK_RSQUARE: s->depth_square--; break;
    default: break;
    }
    if (s->bytes + len + 1 > JSON_STREAM_MAX_BYTES) {
        emit_error(s, g_error_new(BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                                  "JSON token size limit exceeded"));
        return;
    }
    if (s->depth_curly + s->depth_square > JSON_STREAM_MAX_DEPTH) {
        emit_error(s, g_error_new(BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                                  "JSON nesting depth limit exceeded"));
        return;
    }
    t = g_new(Token, 1);
    t->type = type;
    t->text = g_strndup(text, len);
    s->bytes += len + sizeof(Token);
    g_ptr_array_add(s->tokens, t);
    if ((s->depth_curly > 0 || s->depth_square > 0) &&
        s->depth_curly >= 0 && s->depth_square >= 0) {
        return;          /* the value goes on */
    }
    emit_value(s);
}

static void end_token(JsonStream *s, TokType type)
{
    push_token(s, type, s->tok->str, s->tok->len);
    g_string_truncate(s->tok, 0);
    s->state = LEX_IDLE;
}

/* A token longer than the limit: refused now, its rest dropped unread. */
static bool token_too_long(JsonStream *s)
{
    if (s->tok->len < JSON_STREAM_MAX_BYTES) {
        return false;
    }
    g_string_truncate(s->tok, 0);
    emit_error(s, g_error_new(BLOCKDEV_ERROR, BLOCKDEV_ERROR_GENERIC,
                              "JSON token size limit exceeded"));
    return true;
}

static void lex_idle(JsonStream *s, char c)
{
    static const char punct[] = "{}[]:,";
    static const TokType punct_type[] = {
        TOK_LCURLY, TOK_RCURLY, TOK_LSQUARE, TOK_RSQUARE, TOK_COLON,
        TOK_COMMA,
    };
    const char *pc = c ? strchr(punct, c) : NULL;

    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
        return;
    }
    if (pc) {
        push_token(s, punct_type[pc - punct], &c, 1);
    } else if (c == '"' || c == '\'') {
        s->quote = c;
        g_string_append_c(s->tok, c);
        s->state = LEX_STRING;
    } else if (c == '-' || g_ascii_isdigit(c)) {
        g_string_append_c(s->tok, c);
        s->state = LEX_NUMBER;
    } else if (g_ascii_isalpha(c)) {
        g_string_append_c(s->tok, c);
        s->state = LEX_KEYWORD;
    } else {
        char text[2] = { c, 0 };
        emit_error(s, parse_error("stray '%s'", text));
    }
}

static void lex_char(JsonStream *s, char c)
{
    switch (s->state) {
    case LEX_IDLE:
        lex_idle(s, c);
        return;
    case LEX_STRING:
        g_string_append_c(s->tok, c);
        if (c == '\\') {
            s->state = LEX_STRING_ESC;
        } else if (c == s->quote) {
            end_token(s, TOK_STRING);
        } else if ((unsigned char)c < 0x20) {
            g_string_truncate(s->tok, 0);
            s->state = LEX_IDLE;
            emit_error(s, parse_error("stray '%s'", "\\x1f"));
        } else if (token_too_long(s)) {
            s->state = LEX_DROP_STRING;
        }
        return;
    case LEX_STRING_ESC:
        g_string_append_c(s->tok, c);
        s->state = LEX_STRING;
        return;
    case LEX_DROP_STRING:
        if (c == '\\') {
            s->state = LEX_DROP_STRING_ESC;
        } else if (c == s->quote) {
            s->state = LEX_IDLE;
        }
        return;
    case LEX_DROP_STRING_ESC:
        s->state = LEX_DROP_STRING;
        return;
    case LEX_NUMBER:
        if (g_ascii_isdigit(c) || strchr("+-.eE", c)) {
            g_string_append_c(s->tok, c);
            if (token_too_long(s)) {
                s->state = LEX_IDLE;
            }
            return;
        }
        end_token(s, TOK_NUMBER);
        lex_char(s, c);
        return;
    case LEX_KEYWORD:
        if (g_ascii_isalnum(c)) {
            g_string_append_c(s->tok, c);
            if (token_too_long(s)) {
                s->state = LEX_IDLE;
            }
            return;
        }
        end_token(s, TOK_KEYWORD);
        lex_char(s, c);
        return;
    }
}

void json_stream_feed(JsonStream *s, const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        lex_char(s, buf[i]);
    }
}

void json_stream_flush(JsonStream *s)
{
    if (s->state == LEX_NUMBER) {
        end_token(s, TOK_NUMBER);
    } else if (s->state == LEX_KEYWORD) {
        end_token(s, TOK_KEYWORD);
    }
    g_string_truncate(s->tok, 0);
    s->state = LEX_IDLE;
    if (s->tokens->len) {
        emit_value(s);
    }
}

typedef struct OneValue {
    JsonNode *value;
    GError *err;
} OneValue;

static void take_first(JsonNode *value, GError *err, void *opaque)
{
    OneValue *o = opaque;

    if (!o->value && !o->err) {
        o->value = value;
        o->err = err;
        return;
    }
    if (value) {
        json_node_unref(value);
    }
    if (err) {
        g_error_free(err);
    }
}

JsonNode *json_stream_parse_text(const char *text, GError **errp)
{
    OneValue o = { NULL, NULL };
    JsonStream *s = json_stream_new(take_first, &o);

    json_stream_feed(s, text, strlen(text));
    json_stream_flush(s);
    json_stream_free(s);
    if (!o.value && !o.err) {
        o.err = parse_error("premature EOI");
    }
    if (o.err) {
        g_propagate_error(errp, o.err);
    }
    return o.value;
}
