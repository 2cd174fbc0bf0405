#!/usr/bin/env python3
"""upgrade-extract.py FILE NAME...: print the CREATE statements (with their
COMMENT/REVOKE/GRANT lines) of the named functions or views from an install
script source, as CREATE OR REPLACE, for pasting into an upgrade script.
A development aid: the upgrade TAP test checks the result."""
import re, sys
src = open(sys.argv[1]).read()
for name in sys.argv[2:]:
    m = re.search(r'^CREATE (FUNCTION|VIEW|PROCEDURE) ' + re.escape(name) + r'[ (]', src, re.M)
    if not m:
        sys.exit('not found: ' + name)
    start = m.start()
    kind = m.group(1)
    # end: the statement ends with "$$;" (functions) or ";" at line end (views)
    if kind in ('FUNCTION', 'PROCEDURE'):
        body_end = src.index('$$;', src.index('$$', start) + 2) + 3 if 'AS $$' in src[start:src.find(';', start)+200] or '$$' in src[start:src.find('\n\n', start)] else src.index(';', start) + 1
    else:
        body_end = src.index(';\n', start) + 1
    stmt = src[start:body_end]
    tail = ''
    pos = body_end
    while True:
        m2 = re.match(r'\s*\n(COMMENT ON|REVOKE|GRANT)', src[pos:])
        if not m2:
            break
        begin = pos + m2.start(1)
        end = src.index("';\n", begin) + 2 if m2.group(1) == 'COMMENT ON' else src.index(';\n', begin) + 1
        tail += '\n' + src[begin:end]
        pos = end
    print(stmt.replace('CREATE ' + kind, 'CREATE OR REPLACE ' + kind, 1) + tail + '\n')
