#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Generates the QMP argument types and their descriptors from qapi/*.json.

What lives here: a reader for the subset of QAPI's schema language that
strata's schema uses (enum, struct, flat union, alternate, command; list
types as [T]; optional members as '*name'), and the writer of two files:

  qapi-gen.h  a C type per struct/union (a member per schema member, with
              has_<member> for optional ones), a C enum per enum, the
              descriptor of every type and the prototype of every
              command's handler: JsonNode *qmp_<name>(const <Args> *, GError **);
              for every type a command's result reaches, its serialiser
              JsonNode *qapi_<T>_to_json(const T *) and qapi_free_<T>()
              (with g_autoptr), and for list results the same over a
              GPtrArray (qapi_<T>List_to_json, qapi_free_<T>List)
  qapi-gen.c  the descriptors (member names, types, offsets) that
              monitor/qapi-visit.c walks to check and convert input and to
              serialise results, the command table (name, argument type,
              handler), and the text query-qmp-schema returns (QEMU's
              SchemaInfo list, return types included); commands with the
              feature __org.strata_test-only (qapi/test.json) go to a
              second table and text, enabled at run time only.

The schema stays the one source of truth: no C code names a JSON member
of a command's arguments or results by hand.

Usage: qapi-gen.py OUT_H OUT_C SCHEMA.json...
"""

import ast
import json
import re
import sys

BUILTIN = {'str': 'QAPI_KIND_STR', 'int': 'QAPI_KIND_INT',
           'bool': 'QAPI_KIND_BOOL', 'null': 'QAPI_KIND_NULL',
           'any': 'QAPI_KIND_ANY'}
C_OF_BUILTIN = {'str': 'char *', 'int': 'int64_t ', 'bool': 'bool ',
                'null': 'bool ', 'any': 'JsonNode *'}


def read_exprs(path):
    """The top-level expressions of a schema file (comments dropped)."""
    text = ''.join(re.sub(r'#.*', '', line) for line in open(path))
    exprs, depth, start, quote = [], 0, None, False
    for i, ch in enumerate(text):
        if quote:
            quote = ch != "'"
            continue
        if ch == "'":
            quote = True
        elif ch == '{':
            if depth == 0:
                start = i
            depth += 1
        elif ch == '}':
            depth -= 1
            if depth == 0:
                # QAPI's true/false are JSON's; Python spells them so
                expr = re.sub(r"\btrue\b", 'True', text[start:i + 1])
                expr = re.sub(r"\bfalse\b", 'False', expr)
                exprs.append(ast.literal_eval(expr))
    return exprs


C_KEYWORDS = {'auto', 'break', 'case', 'char', 'const', 'continue',
              'default', 'do', 'double', 'else', 'enum', 'extern', 'float',
              'for', 'goto', 'if', 'inline', 'int', 'long', 'register',
              'restrict', 'return', 'short', 'signed', 'sizeof', 'static',
              'struct', 'switch', 'typedef', 'union', 'unsigned', 'void',
              'volatile', 'while', 'bool'}


def c_name(name):
    return re.sub(r'[^A-Za-z0-9_]', '_', name)


def c_member(name):
    """The C field of a member: a C keyword ('default', 'case') gets
    QEMU's q_ prefix."""
    field = c_name(name).lower()
    return 'q_' + field if field in C_KEYWORDS else field


class Schema:
    def __init__(self):
        self.types = {}        # name -> expr dict with 'meta'
        self.order = []
        self.commands = []
        self.implicit = 0

    def add(self, expr):
        for meta in ('enum', 'struct', 'union', 'alternate', 'command'):
            if meta in expr:
                name = expr[meta]
                break
        else:
            raise SystemExit('unknown expression %r' % expr)
        expr['meta'] = meta
        expr['name'] = name
        if meta == 'command':
            data = expr.get('data')
            if isinstance(data, dict):
                expr['data'] = self.add_implicit(
                    'q_obj_%s_arg' % name, data)
            self.commands.append(expr)
            return
        if meta == 'union' and isinstance(expr['base'], dict):
            expr['base'] = self.add_implicit('q_obj_%s_base' % name,
                                             expr['base'])
        self.types[name] = expr
        self.order.append(name)

    def add_implicit(self, name, members):
        self.add({'struct': name, 'data': members})
        return name

    def members(self, struct_name):
        """[(json name, type, optional)] of a struct."""
        out = []
        for key, typ in self.types[struct_name]['data'].items():
            opt = key.startswith('*')
            out.append((key[1:] if opt else key, typ, opt))
        return out


def type_ref(t):
    """C expression of the descriptor of type t (a name or [name])."""
    if isinstance(t, list):
        return '&qapi_list_of_%s' % c_name(t[0])
    if t in BUILTIN:
        return '&qapi_type_%s' % t
    return '&qapi_type_%s' % c_name(t)


def c_type(schema, t):
    if isinstance(t, list):
        return 'GPtrArray *'
    if t in C_OF_BUILTIN:
        return C_OF_BUILTIN[t]
    meta = schema.types[t]['meta']
    if meta == 'enum':
        return 'int '
    if meta == 'alternate':
        return 'JsonNode *'
    return '%s *' % c_name(t)


def gen(schema):
    h, c = [], []
    lists = sorted({t[0] for e in schema.types.values()
                    if e['meta'] in ('struct',)
                    for t in e['data'].values() if isinstance(t, list)} |
                   {c['returns'][0] for c in schema.commands
                    if isinstance(c.get('returns'), list)})
    h.append('/* Generated by scripts/qapi-gen.py from the qapi schema: '
             'do not edit. */')
    h.append('#ifndef STRATA_QAPI_GEN_H\n#define STRATA_QAPI_GEN_H\n')
    h.append('#include "monitor/qapi-visit.h"\n')
    c.append('/* Generated by scripts/qapi-gen.py from the qapi schema: '
             'do not edit. */')
    c.append('#include <stddef.h>\n#include "qapi-gen.h"\n')
    # forward declarations
    for name in schema.order:
        e = schema.types[name]
        if e['meta'] in ('struct', 'union'):
            h.append('typedef struct %s %s;' % (c_name(name), c_name(name)))
        h.append('extern const QapiType qapi_type_%s;' % c_name(name))
    for t in lists:
        h.append('extern const QapiType qapi_list_of_%s;' % c_name(t))
    h.append('')
    for name in schema.order:
        e = schema.types[name]
        cn = c_name(name)
        if e['meta'] == 'enum':
            h.append('typedef enum %s {' % cn)
            for v in e['data']:
                h.append('    %s_%s,' % (cn.upper(), c_name(v).upper()))
            h.append('    %s__MAX,\n} %s;\n' % (cn.upper(), cn))
            c.append('static const char *const %s_values[] = {' % cn)
            c.append(''.join('    "%s",\n' % v for v in e['data']) + '};')
            c.append('const QapiType qapi_type_%s = { .name = "%s", '
                     '.kind = QAPI_KIND_ENUM, .values = %s_values, '
                     '.n_values = %d };' % (cn, name, cn, len(e['data'])))
        elif e['meta'] == 'struct':
            gen_struct(schema, name, schema.members(name), h, c, None)
        elif e['meta'] == 'union':
            base = schema.members(e['base'])
            gen_struct(schema, name, base, h, c, e)
        elif e['meta'] == 'alternate':
            alts = list(e['data'].values())
            c.append('static const QapiType *const %s_alts[] = { %s };'
                     % (cn, ', '.join(type_ref(a) for a in alts)))
            c.append('const QapiType qapi_type_%s = { .name = "%s", '
                     '.kind = QAPI_KIND_ALTERNATE, .alts = %s_alts, '
                     '.n_alts = %d };' % (cn, name, cn, len(alts)))
    for t in lists:
        c.append('const QapiType qapi_list_of_%s = { .name = "%s", '
                 '.kind = QAPI_KIND_LIST, .elem = %s };'
                 % (c_name(t), '[' + t + ']', type_ref(t)))
    # commands
    h.append('/* Command handlers (monitor/qmp-cmd-*.c). */')
    rows, test_rows = [], []
    for cmd in schema.commands:
        fn = 'qmp_' + c_name(cmd['name']).replace('-', '_')
        args = cmd.get('data')
        if args:
            h.append('JsonNode *%s(const %s *args, GError **errp);'
                     % (fn, c_name(args)))
            c.append('static JsonNode *dispatch_%s(const void *args, '
                     'GError **errp)\n{\n    return %s(args, errp);\n}'
                     % (fn, fn))
            table_of(cmd, rows, test_rows).append(
                '    { "%s", %s, dispatch_%s },'
                % (cmd['name'], type_ref(args), fn))
        else:
            h.append('JsonNode *%s(GError **errp);' % fn)
            c.append('static JsonNode *dispatch_%s(const void *args, '
                     'GError **errp)\n{\n    return %s(errp);\n}' % (fn, fn))
            table_of(cmd, rows, test_rows).append(
                '    { "%s", NULL, dispatch_%s },' % (cmd['name'], fn))
    c.append('const QapiCommand qapi_commands[] = {')
    c.extend(rows)
    c.append('    { NULL, NULL, NULL },\n};')
    gen_results(schema, h, c)
    # test-only commands: a table of their own, gated at run time
    h.append('extern const QapiCommand qapi_test_commands[];')
    c.append('const QapiCommand qapi_test_commands[] = {')
    c.extend(test_rows)
    c.append('    { NULL, NULL, NULL },\n};')
    h.append('\n#endif')
    return '\n'.join(h) + '\n', '\n'.join(c) + '\n'


def result_types(schema):
    """(objects, lists): the struct/union names reachable from some
    command's 'returns', in schema order, and the element types of the
    list results."""
    seen, lists = set(), set()

    def walk(t):
        if isinstance(t, list):
            walk(t[0])
            return
        if t in BUILTIN or t in seen:
            return
        e = schema.types[t]
        if e['meta'] not in ('struct', 'union'):
            return
        seen.add(t)
        members = e['data'].values()
        if e['meta'] == 'union':
            # the base's members are the union's own; variants by name
            members = list(schema.types[e['base']]['data'].values()) + \
                list(members)
        for typ in members:
            walk(typ)

    for cmd in schema.commands:
        ret = cmd.get('returns')
        if ret is None:
            continue
        if isinstance(ret, list) and ret[0] not in BUILTIN:
            lists.add(ret[0])
        walk(ret)
    return [n for n in schema.order if n in seen], sorted(lists)


def gen_results(schema, h, c):
    """The serialiser and destructor of each result type: thin typed
    names over the descriptor walker (qapi_output/qapi_free), so a
    handler fills a C struct and never spells a JSON member itself."""
    objects, lists = result_types(schema)
    h.append('\n/* Result serialisers (members in QEMU\'s output order, '
             'optional ones only when has_x) and destructors. */')
    for name in objects:
        cn = c_name(name)
        h.append('JsonNode *qapi_%s_to_json(const %s *value);' % (cn, cn))
        h.append('void qapi_free_%s(%s *value);' % (cn, cn))
        h.append('G_DEFINE_AUTOPTR_CLEANUP_FUNC(%s, qapi_free_%s)'
                 % (cn, cn))
        c.append('JsonNode *qapi_%s_to_json(const %s *value)\n{\n'
                 '    return qapi_output(&qapi_type_%s, value);\n}'
                 % (cn, cn, cn))
        c.append('void qapi_free_%s(%s *value)\n{\n'
                 '    qapi_free(&qapi_type_%s, value);\n}' % (cn, cn, cn))
    for name in lists:
        cn = c_name(name)
        h.append('/* A GPtrArray made with g_ptr_array_new() of %s *. */'
                 % cn)
        h.append('JsonNode *qapi_%sList_to_json(const GPtrArray *list);'
                 % cn)
        h.append('void qapi_free_%sList(GPtrArray *list);' % cn)
        c.append('JsonNode *qapi_%sList_to_json(const GPtrArray *list)\n{\n'
                 '    return qapi_output_value(&qapi_list_of_%s, &list);\n}'
                 % (cn, cn))
        c.append('void qapi_free_%sList(GPtrArray *list)\n{\n'
                 '    qapi_free_value(&qapi_list_of_%s, &list);\n}'
                 % (cn, cn))
TEST_ONLY = '__org.strata_test-only'


def test_only(cmd):
    """A command of qapi/test.json: in qapi_test_commands[], not in
    qapi_commands[], and in the schema text only when enabled."""
    return TEST_ONLY in cmd.get('features', [])


def table_of(cmd, rows, test_rows):
    return test_rows if test_only(cmd) else rows


def gen_struct(schema, name, members, h, c, union):
    cn = c_name(name)
    h.append('struct %s {' % cn)
    rows = []
    for (mname, typ, opt) in members:
        field = c_member(mname)
        if opt:
            h.append('    bool has_%s;' % field)
        h.append('    %s%s;' % (c_type(schema, typ), field))
        rows.append('    { "%s", %s, %s, offsetof(%s, %s), %s },'
                    % (mname, type_ref(typ), 'true' if opt else 'false',
                       cn, field,
                       'offsetof(%s, has_%s)' % (cn, field) if opt
                       else '0'))
    extra = ''
    if union:
        h.append('    void *u;    /* the variant\'s members, '
                 'by the discriminator */')
        disc = union['discriminator']
        enum = dict((m, t) for m, t, _ in members)[disc]
        values = schema.types[enum]['data']
        variants = ', '.join(
            type_ref(union['data'][v]) if v in union['data'] else 'NULL'
            for v in values)
        c.append('static const QapiType *const %s_variants[] = { %s };'
                 % (cn, variants))
        extra = (', .discriminator = "%s", .variants = %s_variants, '
                 '.variant_offset = offsetof(%s, u)' % (disc, cn, cn))
    h.append('};\n')
    c.append('static const QapiMember %s_members[] = {' % cn)
    c.extend(rows)
    c.append('    { NULL, NULL, false, 0, 0 },\n};')
    c.append('const QapiType qapi_type_%s = { .name = "%s", .kind = %s, '
             '.size = sizeof(%s), .members = %s_members%s };'
             % (cn, name, 'QAPI_KIND_UNION' if union else 'QAPI_KIND_STRUCT',
                cn, cn, extra))


BUILTIN_JSON_TYPE = {'str': 'string', 'int': 'int', 'bool': 'boolean',
                     'null': 'null', 'any': 'value'}


def introspect(schema, with_test=False):
    """query-qmp-schema's SchemaInfo list, as QEMU builds it: commands by
    name, every type they reach under a number (QEMU hides type names),
    builtins by name; a command's ret-type names its result's entry."""
    ids, out = {}, []

    def ref(t):
        if isinstance(t, list):
            key = '[%s]' % ref(t[0])
            if key not in ids:
                ids[key] = key
                out.append({'name': key, 'meta-type': 'array',
                            'element-type': ref(t[0])})
            return key
        if t in BUILTIN:
            if t not in ids:
                ids[t] = t
                out.append({'name': t, 'meta-type': 'builtin',
                            'json-type': BUILTIN_JSON_TYPE[t]})
            return t
        if t in ids:
            return ids[t]
        ids[t] = str(len([k for k in ids if not k.startswith('[')
                          and k not in BUILTIN]))
        e = schema.types[t]
        info = {'name': ids[t]}
        out.append(info)
        if e['meta'] == 'enum':
            info.update({'meta-type': 'enum', 'values': e['data'],
                         'members': [{'name': v} for v in e['data']]})
        elif e['meta'] == 'alternate':
            info.update({'meta-type': 'alternate', 'members': [
                {'type': ref(a)} for a in e['data'].values()]})
        else:
            base = e['base'] if e['meta'] == 'union' else t
            members = []
            for name, typ, opt in schema.members(base):
                m = {'name': name, 'type': ref(typ)}
                if opt:
                    m['default'] = None
                members.append(m)
            info.update({'meta-type': 'object', 'members': members})
            if e['meta'] == 'union':
                info['tag'] = e['discriminator']
                info['variants'] = [{'case': v, 'type': ref(vt)}
                                    for v, vt in e['data'].items()]
        return ids[t]

    empty = '__empty'
    schema.types[empty] = {'meta': 'struct', 'data': {}, 'name': empty}
    for c in schema.commands:
        if test_only(c) and not with_test:
            continue
        ret = c.get('returns')
        out.append({'name': c['name'], 'meta-type': 'command',
                    'arg-type': ref(c.get('data') or empty),
                    'ret-type': ref(empty if ret is None else ret)})
    del schema.types[empty]
    return out


def qdict_bucket(name):
    """QEMU's QDict bucket of a member name (gdbm's hash, 512 buckets)."""
    value = (0x238F13AF * len(name)) & 0xffffffff
    for i, ch in enumerate(name.encode()):
        value = (value + (ch << (i * 5 % 24))) & 0xffffffff
    return ((1103515243 * value + 12345) & 0xffffffff) % 512


def qemu_order(value):
    """value with every object's members in the order QEMU writes them:
    by QDict bucket, the later-inserted first within one (the same rule
    as monitor/qapi-visit.c's output), so the text is QEMU's byte for
    byte."""
    if isinstance(value, list):
        return [qemu_order(v) for v in value]
    if not isinstance(value, dict):
        return value
    keys = sorted(enumerate(value), key=lambda p: (qdict_bucket(p[1]), -p[0]))
    return {k: qemu_order(value[k]) for _, k in keys}


def main():
    out_h, out_c = sys.argv[1], sys.argv[2]
    schema = Schema()
    for path in sys.argv[3:]:
        for expr in read_exprs(path):
            schema.add(expr)
    info = json.dumps(qemu_order(introspect(schema)), separators=(',', ':'))
    h, c = gen(schema)
    h = h.replace('\n#endif', '\n/* query-qmp-schema\'s JSON text. */\n'
                  'extern const char qapi_schema_json[];\n\n#endif')
    c += 'const char qapi_schema_json[] = %s;\n' % json.dumps(info)
    # the same with the test-only commands (monitor/qmp-cmd-test.c)
    info = json.dumps(introspect(schema, True), separators=(',', ':'))
    h = h.replace('\n#endif', 'extern const char qapi_schema_test_json[];'
                  '\n\n#endif')
    c += 'const char qapi_schema_test_json[] = %s;\n' % json.dumps(info)
    with open(out_h, 'w') as f:
        f.write(h)
    with open(out_c, 'w') as f:
        f.write(c)


if __name__ == '__main__':
    main()
