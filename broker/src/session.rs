//! A session's state.
