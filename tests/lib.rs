//! Workspace-level tests live in the `tests/` folder of this package.
