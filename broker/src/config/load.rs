//! Reading the configuration: a TOML file, `TERN_…` environment overrides
//! (`__` separates nesting levels), then validation before anything binds.
