"""The version of ses_core and of everything built from this repository (one version for all).

It comes from the git tag `x.y.z` on the commit, else `0.0.0.dev0+g<short sha>`
(`release/version.sh`). `./pants` writes it into the generated, git-ignored `_version.py` at build
time, so the relay PEX, the Lambda zip and the wheel all carry it without reading the environment
(the library reads none). An installed wheel also reports it through its metadata; a bare source
checkout that never ran `./pants` reports `0.0.0.dev0`.
"""

from __future__ import annotations

import importlib

#: What a checkout without the generated file and without an installed distribution reports.
UNKNOWN_VERSION = "0.0.0.dev0"


def _find_version() -> str:
    # Imported by name, not statically: the file exists only after `./pants` ran (BUILD adds the
    # dependency Pants cannot infer).
    try:
        generated = importlib.import_module("ses_core._version")
    except ImportError:
        pass
    else:
        return str(generated.VERSION)
    from importlib import metadata  # only now: importing it costs the Lambda's cold start

    try:
        return metadata.version("ses-core")
    except metadata.PackageNotFoundError:
        return UNKNOWN_VERSION


#: This build's version, e.g. `1.4.0` or `0.0.0.dev0+g1a2b3c4`.
VERSION = _find_version()
