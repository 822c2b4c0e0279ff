#!/usr/bin/env python3
"""Puts measured figures into a document: replaces what lies between `<!-- NAME:start -->`
and `<!-- NAME:end -->` in DOC with the text of FILE. The scripts that measure (chaos.sh,
abuse.sh, soak.sh, fuzz.sh) write their blocks of docs/reliability.md with it, so no figure there is
typed by hand.

    scripts/doc-block.py DOC NAME FILE
"""
import sys

doc_path, name, text_path = sys.argv[1:4]
text = open(text_path).read().strip()
start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
doc = open(doc_path).read()
a, b = doc.index(start) + len(start), doc.index(end)
open(doc_path, "w").write(doc[:a] + "\n" + text + "\n" + doc[b:])
