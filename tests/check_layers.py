#!/usr/bin/env python3
"""Fails when a lower layer includes a higher one (docs/architecture.md).

Every source under src/<layer>/ and every public header under include/mpx/ belongs to
one layer; an #include "..." of a project file may name only the same layer or a lower
one. A file this script cannot place fails the check too, so that a new folder or
header is given its layer here and in docs/architecture.md.

Usage: check_layers.py <repository root>
"""
import pathlib
import re
import sys

# Bottom up, as in docs/architecture.md.
LAYERS = ["sys", "codec", "shm", "sync", "ipc", "process", "pool", "managers", "mpi"]

# Public headers (include/mpx/...) by layer.
PUBLIC = {
    "sys": ["errors.hpp", "detail/deadline.hpp", "detail/waiter.hpp", "detail/bound_call.hpp",
            "detail/function_id.hpp", "detail/handoff_trait.hpp"],
    "codec": ["codec.hpp", "detail/codec_impl.hpp", "detail/codec_wire.hpp",
              "detail/codec_cereal.hpp", "detail/scratch.hpp"],
    "shm": ["shared_memory.hpp"],
    "sync": ["synchronize.hpp", "sharedctypes.hpp"],
    "ipc": ["connection.hpp", "queues.hpp", "listener.hpp"],
    "process": ["process.hpp", "thread.hpp", "context.hpp", "subprocess.hpp",
                "detail/handoff.hpp"],
    "pool": ["pool.hpp", "futures.hpp", "detail/pool_checks.hpp", "detail/pool_entry.hpp",
             "detail/pool_frontend.hpp", "detail/pool_future.hpp", "detail/pool_iterator.hpp",
             "detail/pool_map.hpp",
             "detail/pool_progress.hpp", "detail/pool_task.hpp"],
    "managers": ["managers.hpp", "detail/managers_proxy.hpp", "detail/managers_objects.hpp",
                 "detail/managers_sync.hpp"],
    "mpi": ["mpi.hpp"],
}
UMBRELLA = "mpx.hpp"  # includes everything; users only


def layer_of_public(name):
    for layer, names in PUBLIC.items():
        if name in names:
            return layer
    return None


def layer_of_include(path):
    """The layer of an include written as in the sources: "mpx/x.hpp" or "<layer>/x.hpp"."""
    if path.startswith("mpx/"):
        return layer_of_public(path[len("mpx/"):])
    head = path.split("/", 1)[0]
    return head if head in LAYERS else None


def main():
    root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    include_re = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
    problems = []
    files = []
    for f in sorted((root / "src").rglob("*")):
        if f.suffix in (".cpp", ".hpp"):
            rel = f.relative_to(root / "src")
            own = rel.parts[0] if len(rel.parts) > 1 else None
            if own not in LAYERS:
                problems.append(f"{f.relative_to(root)}: not in a layer folder of src/")
                continue
            files.append((f, own))
    for f in sorted((root / "include" / "mpx").rglob("*.hpp")):
        rel = str(f.relative_to(root / "include" / "mpx"))
        if rel == UMBRELLA:
            continue
        own = layer_of_public(rel)
        if own is None:
            problems.append(f"{f.relative_to(root)}: no layer (add it to tests/check_layers.py "
                            "and docs/architecture.md)")
            continue
        files.append((f, own))
    for f, own in files:
        for inc in include_re.findall(f.read_text()):
            if inc == "mpx/" + UMBRELLA:
                problems.append(f"{f.relative_to(root)}: includes the umbrella header")
                continue
            other = layer_of_include(inc)
            if other is None:
                problems.append(f"{f.relative_to(root)}: includes \"{inc}\", which has no layer")
            elif LAYERS.index(other) > LAYERS.index(own):
                problems.append(f"{f.relative_to(root)} ({own}) includes \"{inc}\" ({other}): "
                                "a lower layer may not include a higher one")
    for p in problems:
        print(p)
    print(f"{len(files)} files checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
