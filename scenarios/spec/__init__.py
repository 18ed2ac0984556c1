"""Scenario files: a TOML format (docs/scenarios.md) read into frozen dataclasses, checked with one-line errors
that name the file, the line and the key, and changed from the command line with `--set KEY=VALUE`.

`locate` finds keys' lines, `reader` makes the errors, `values` holds the kinds of value and their checks,
`steps` the table of step kinds and the walk over a scenario's steps, `overrides` the `--set` paths, `model` the
dataclasses, `load` the tables of the format and the entry points. This package knows no image format: the
caller passes the names in.
"""

from __future__ import annotations

from scenarios.spec.load import CATALOG, FS_TYPES, PAYLOADS, catalog, load
from scenarios.spec.model import DiskSpec, DriveSpec, Fill, FsSpec, LayerSpec, MachineSpec, Scenario, Step
from scenarios.spec.overrides import SHORT_NAMES
from scenarios.spec.reader import ScenarioError
from scenarios.spec.steps import CONTENTS, STEPS, steps_table

__all__ = [
    "CATALOG",
    "CONTENTS",
    "FS_TYPES",
    "PAYLOADS",
    "SHORT_NAMES",
    "STEPS",
    "DiskSpec",
    "DriveSpec",
    "Fill",
    "FsSpec",
    "LayerSpec",
    "MachineSpec",
    "Scenario",
    "ScenarioError",
    "Step",
    "catalog",
    "load",
    "steps_table",
]
