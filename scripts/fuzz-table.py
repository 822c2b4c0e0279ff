#!/usr/bin/env python3
"""The fuzz block of docs/reliability.md: one row per target, its latest campaign's. Prints the
block with the rows in ROWS (this campaign's) in place of the same targets' rows in DOC, and
the rows of the targets this campaign did not run kept as they were.

Each row also carries the executions of all of that target's campaigns so far: every campaign
starts from the corpus the one before it left (fuzz/corpus/TARGET, committed), so together
they are one longer run, cut into sessions. The sum is carried from the row a campaign
replaces; a row written before the sum was kept (a row of eight columns) starts it with its
own executions, so campaigns older than that row are not counted in it.

    scripts/fuzz-table.py DOC ROWS MACHINE
"""
import re
import sys

doc, rows_path, machine = sys.argv[1:4]
text = open(doc).read()
start, end = "<!-- fuzz:start -->", "<!-- fuzz:end -->"
old = text[text.index(start) + len(start):text.index(end)]
row = re.compile(r"\| `([a-z_]+)` \|")
COLUMNS = 9


def cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def number(cell):
    return int(cell) if cell.isdigit() else None


rows = {}
for line in old.splitlines():
    m = row.match(line)
    if not m:
        continue
    c = cells(line)
    if len(c) == COLUMNS - 1:
        # The layout before the sum: it starts at this row's own executions.
        c.insert(2, c[1])
    # Rows of any other layout are dropped, not misread.
    if len(c) == COLUMNS:
        rows[m.group(1)] = c
for line in open(rows_path).read().splitlines():
    c = cells(line)
    name = row.match(line).group(1)
    before = number(rows[name][2]) if name in rows else 0
    now = number(c[1])
    c.insert(2, str(before + now) if before is not None and now is not None else "?")
    rows[name] = c
print(
    f"Each row is that target's latest run of `scripts/fuzz.sh`, on {machine}, with "
    "`-timeout=10 -rss_limit_mb=2048`; its last column says when, on which commit and how. "
    "*All campaigns* adds the executions of the target's earlier campaigns, each of which "
    "started from the corpus the one before it left (counted since 2026-12-04: an earlier "
    "campaign's row started the sum with its own figure).\n"
)
print(
    "| target | executions | all campaigns | seconds | executions/s | findings "
    "| corpus kept (files) | edges covered "
    "| run: date, commit, executions asked, sanitizer, max_len, targets at a time |"
)
print("|---|---|---|---|---|---|---|---|---|")
for name in sorted(rows):
    print("| " + " | ".join(rows[name]) + " |")
