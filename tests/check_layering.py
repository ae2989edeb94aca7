#!/usr/bin/env python3
"""The module map of docs/architecture.md as a check: every #include "dir/..." in a module
must name a module that module may call. A wrong-way include (storage/ including engine/,
the public header including anything internal) fails the test suite.

    python3 tests/check_layering.py [SOURCE_DIR]
"""
import os
import re
import sys

# module -> the modules whose headers it may include (itself always)
ALLOWED = {
    "common": set(),
    "format": {"common", "model/tokenizer.h"},  # the tokenizer only
    "model": {"common", "format"},
    "compress": {"common", "format", "model"},
    "generate": {"common", "format", "model", "compress"},
    "storage": {"common"},
    "index": {"common", "model", "storage"},
    "ingest": {"common"},
    "engine": {"cocom", "common", "format", "model", "compress", "generate", "storage", "index",
               "ingest"},
    "eval": {"cocom", "common", "format", "model", "compress", "generate", "storage", "index",
             "ingest", "engine"},
    "train": {"common", "format", "model", "compress", "generate"},
    "serve": {"cocom"},  # the public API only
    "include/cocom": set(),
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def allowed(module, target):
    top = target.split("/", 1)[0]
    if "/" not in target:  # a file beside this one
        return True
    if top == module.split("/")[-1] or target.startswith(module + "/"):
        return True
    rules = ALLOWED[module]
    return top in rules or target in rules


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bad = []
    files = 0
    for module in ALLOWED:
        base = os.path.join(root, module)
        for dirpath, _, names in os.walk(base):
            for name in names:
                if not name.endswith((".h", ".cpp")):
                    continue
                path = os.path.join(dirpath, name)
                files += 1
                with open(path, encoding="utf-8") as f:
                    for no, line in enumerate(f, 1):
                        m = INCLUDE.match(line)
                        if m and not allowed(module, m.group(1)):
                            bad.append(f"{os.path.relpath(path, root)}:{no}: {module}/ may not include "
                                       f'"{m.group(1)}" (docs/architecture.md: module map)')
    for b in bad:
        print(b)
    print(f"layering: {files} files checked, {len(bad)} wrong-way includes")
    return 1 if bad or files == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
