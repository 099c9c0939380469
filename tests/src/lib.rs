//! Tiny helper programs for the end-to-end tests live in `src/bin/`.
