"""Where the installed package keeps the C library, for C programs using the engine directly.

    python -m parla.config --cflags --libs     # compiler and linker flags
    PKG_CONFIG_PATH=$(python -m parla.config --pkgconfigdir) pkg-config --cflags --libs parla

The wheel carries ``parla/include/parla.h``, ``parla/lib/libparla.so`` and ``parla/lib/pkgconfig/parla.pc``.
"""
from __future__ import annotations

import argparse
import importlib.resources
import os
import sys
from typing import List, Optional, Sequence

__all__ = ["get_include", "get_lib", "get_pkgconfig_dir", "main"]

_HERE = os.path.dirname(os.path.abspath(__file__))


def _installed(*parts: str) -> str:
    """The path of an installed file of the package (in an editable install, in the build folder)."""
    path = os.path.join(_HERE, *parts)
    if os.path.exists(path):
        return path
    try:
        with importlib.resources.as_file(importlib.resources.files("parla").joinpath(*parts)) as p:
            if os.path.exists(p):
                return str(p)
    except (FileNotFoundError, TypeError):
        pass
    raise FileNotFoundError(f"{'/'.join(parts)} is not installed with this parla (an editable install keeps it "
                            f"in the build folder: use the wheel, or include/ and build/ of the source tree)")


def get_include() -> str:
    """The folder holding ``parla.h``."""
    return os.path.dirname(_installed("include", "parla.h"))


def get_lib() -> str:
    """The folder holding ``libparla.so``."""
    return os.path.dirname(_installed("lib", "libparla.so"))


def get_pkgconfig_dir() -> str:
    """The folder holding ``parla.pc`` (for ``PKG_CONFIG_PATH``)."""
    return os.path.dirname(_installed("lib", "pkgconfig", "parla.pc"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m parla.config", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cflags", action="store_true", help="compiler flags")
    parser.add_argument("--libs", action="store_true", help="linker flags")
    parser.add_argument("--pkgconfigdir", action="store_true", help="the folder of parla.pc")
    args = parser.parse_args(argv)
    out: List[str] = []
    try:
        if args.pkgconfigdir:
            out.append(get_pkgconfig_dir())
        if args.cflags:
            out.append(f"-I{get_include()}")
        if args.libs:
            lib = get_lib()
            out.append(f"-L{lib} -Wl,-rpath,{lib} -lparla")
    except FileNotFoundError as e:
        print(f"python -m parla.config: {e}", file=sys.stderr)
        return 1
    print(" ".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
