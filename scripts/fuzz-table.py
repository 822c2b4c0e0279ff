#!/usr/bin/env python3
"""The fuzz block of docs/reliability.md: one row per target, its latest campaign's. Prints the
block with the rows in ROWS (this campaign's) in place of the same targets' rows in DOC, and
the rows of the targets this campaign did not run kept as they were.

    scripts/fuzz-table.py DOC ROWS MACHINE
"""
import re
import sys

doc, rows_path, machine = sys.argv[1:4]
text = open(doc).read()
start, end = "<!-- fuzz:start -->", "<!-- fuzz:end -->"
old = text[text.index(start) + len(start):text.index(end)]
row = re.compile(r"\| `([a-z_]+)` \|")
COLUMNS = 8
rows = {}
for line in old.splitlines():
    m = row.match(line)
    # Rows of an older layout (without the run column) are dropped, not misread.
    if m and line.count("|") == COLUMNS + 1:
        rows[m.group(1)] = line
for line in open(rows_path).read().splitlines():
    rows[row.match(line).group(1)] = line
print(
    f"Each row is that target's latest run of `scripts/fuzz.sh`, on {machine}, with "
    "`-timeout=10 -rss_limit_mb=2048`; its last column says when, on which commit and how.\n"
)
print(
    "| target | executions | seconds | executions/s | findings | corpus kept (files) "
    "| edges covered | run: date, commit, executions asked, sanitizer, max_len, targets at a time |"
)
print("|---|---|---|---|---|---|---|---|")
for name in sorted(rows):
    print(rows[name])
